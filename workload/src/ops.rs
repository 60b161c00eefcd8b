//! The workload, drawn from the seed: which wallets exist and how they are
//! funded, and for every operation slot what it does (kind, wallets,
//! amount). Operation `op_id` is drawn from its own ChaCha stream, so it is
//! the same in every run of the seed no matter which goose user executes
//! it or when: two runs issue the same logical operations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use run_log::OpKind;
use rust_decimal::Decimal;

use crate::scenario::Scenario;

/// Separates the workload's random streams from other uses of the seed
/// (the fault plan has its own constant).
const SETUP_STREAM_KEY: u64 = 0x5345_5455_5000_0001;
const OPS_STREAM_KEY: u64 = 0x4f50_5300_0000_0002;

/// One operation as the seed defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    pub op_id: u64,
    pub kind: OpKind,
    pub wallet_index: u32,
    pub to_wallet_index: Option<u32>,
    pub amount: Option<Decimal>,
}

/// A wallet of the setup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWallet {
    pub index: u32,
    pub user_id: String,
    pub initial_balance: Decimal,
}

#[derive(Debug, Clone)]
pub struct Workload {
    seed: u64,
    wallets: u32,
    mix: [(OpKind, u32); 4],
    mix_total: u32,
    zipf: Option<Zipf<f64>>,
    amount_min_units: i64,
    amount_max_units: i64,
    balance_min_units: i64,
    balance_max_units: i64,
}

/// Amounts are drawn as whole ten-thousandths (the money scale), so every
/// drawn amount is exact.
fn units(amount: Decimal) -> i64 {
    let mut scaled = amount;
    scaled.rescale(wallet_events::MONEY_SCALE);
    i64::try_from(scaled.mantissa()).unwrap_or(i64::MAX)
}

fn money(units: i64) -> Decimal {
    Decimal::new(units, wallet_events::MONEY_SCALE)
}

impl Workload {
    pub fn new(seed: u64, scenario: &Scenario) -> Self {
        let mix = [
            (OpKind::Transfer, scenario.mix.transfer),
            (OpKind::Fund, scenario.mix.fund),
            (OpKind::GetWallet, scenario.mix.get_wallet),
            (OpKind::GetHistory, scenario.mix.get_history),
        ];
        let zipf = (scenario.skew > 0.0)
            .then(|| Zipf::new(f64::from(scenario.wallets), scenario.skew).ok())
            .flatten();
        Self {
            seed,
            wallets: scenario.wallets,
            mix,
            mix_total: mix.iter().map(|(_, w)| w).sum(),
            zipf,
            amount_min_units: units(scenario.amount_min),
            amount_max_units: units(scenario.amount_max),
            balance_min_units: units(scenario.initial_balance_min),
            balance_max_units: units(scenario.initial_balance_max),
        }
    }

    fn stream(&self, key: u64, index: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ key);
        rng.set_stream(index);
        rng
    }

    /// The wallets to create before the load, in index order.
    pub fn wallets(&self) -> Vec<PlannedWallet> {
        (0..self.wallets)
            .map(|index| {
                let mut rng = self.stream(SETUP_STREAM_KEY, u64::from(index));
                PlannedWallet {
                    index,
                    user_id: self.owner(index),
                    initial_balance: money(
                        rng.random_range(self.balance_min_units..=self.balance_max_units),
                    ),
                }
            })
            .collect()
    }

    /// The user who owns wallet `index`: a handful of wallets per user, so
    /// activity queries span several.
    pub fn owner(&self, index: u32) -> String {
        format!("user-{}", index / 3)
    }

    /// The operation in slot `op_id`.
    pub fn op(&self, op_id: u64) -> PlannedOp {
        let mut rng = self.stream(OPS_STREAM_KEY, op_id);
        let mut pick = rng.random_range(0..self.mix_total);
        let kind = self
            .mix
            .iter()
            .find(|(_, weight)| {
                if pick < *weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .map(|(kind, _)| *kind)
            .unwrap_or(OpKind::Transfer);
        let wallet_index = self.pick_wallet(&mut rng);
        let to_wallet_index = (kind == OpKind::Transfer).then(|| {
            // Any other wallet, drawn with the same skew.
            let mut to = self.pick_wallet(&mut rng);
            if to == wallet_index {
                to = (to + 1 + rng.random_range(0..self.wallets - 1)) % self.wallets;
            }
            to
        });
        let amount = matches!(kind, OpKind::Transfer | OpKind::Fund)
            .then(|| money(rng.random_range(self.amount_min_units..=self.amount_max_units)));
        PlannedOp {
            op_id,
            kind,
            wallet_index,
            to_wallet_index,
            amount,
        }
    }

    fn pick_wallet(&self, rng: &mut ChaCha8Rng) -> u32 {
        match &self.zipf {
            // Zipf draws ranks 1..=n; rank 1 is the hottest wallet.
            Some(zipf) => (zipf.sample(rng) as u32).clamp(1, self.wallets) - 1,
            None => rng.random_range(0..self.wallets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::find_builtin;

    #[test]
    fn the_same_seed_gives_the_same_operations() {
        let scenario = find_builtin("transfers").unwrap();
        let (a, b) = (Workload::new(42, &scenario), Workload::new(42, &scenario));
        for op_id in [0, 1, 2, 999, 123_456] {
            assert_eq!(a.op(op_id), b.op(op_id));
        }
        assert_eq!(a.wallets(), b.wallets());
        let other = Workload::new(43, &scenario);
        assert!((0..50).any(|i| other.op(i) != a.op(i)));
    }

    #[test]
    fn operations_respect_the_scenario() {
        let scenario = find_builtin("transfers").unwrap();
        let workload = Workload::new(7, &scenario);
        let ops: Vec<PlannedOp> = (0..5_000).map(|i| workload.op(i)).collect();
        let transfers = ops.iter().filter(|op| op.kind == OpKind::Transfer).count();
        assert!(
            (3_700..4_300).contains(&transfers),
            "{transfers} transfers of 5000 at weight 80%"
        );
        for op in &ops {
            assert!(op.wallet_index < scenario.wallets);
            if let Some(to) = op.to_wallet_index {
                assert_ne!(to, op.wallet_index);
                assert!(to < scenario.wallets);
            }
            if let Some(amount) = op.amount {
                assert!(amount >= scenario.amount_min && amount <= scenario.amount_max);
                assert!(amount.scale() <= 4);
            }
        }
    }

    #[test]
    fn skew_concentrates_on_hot_wallets() {
        let hotspot = find_builtin("hotspot").unwrap();
        let workload = Workload::new(1, &hotspot);
        let hot = (0..4_000)
            .filter(|i| workload.op(*i).wallet_index < 5)
            .count();
        assert!(
            hot > 1_500,
            "only {hot} of 4000 ops on the 5 hottest wallets"
        );
    }
}
