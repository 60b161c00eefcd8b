//! The ledger rules, free of I/O: what a create, a fund or a transfer does
//! to wallet states, and which entries (one event each) it writes.
//!
//! The store locks and loads the wallets, asks these functions, then writes
//! what they return. Amounts arrive as [`Amount`] (positive, four places,
//! bounded), so the rules only decide what the balances allow. Ids come
//! from an [`IdSource`], so a caller can draw them from a seed instead of
//! the system's randomness.
//!
//! The rules assert what they promise, in release builds too (the checks
//! are a few decimal additions): a change numbers its entry `last_seq + 1`,
//! and a transfer creates and destroys nothing.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::{Amount, EventKind, MONEY_MAX, SCHEMA_VERSION, UserId, WalletEvent};

/// Where new wallet, event and transfer ids come from.
pub trait IdSource {
    fn next_id(&mut self) -> Uuid;
}

/// Time-ordered random ids (UUIDv7) for the real service.
pub struct SystemIds;

impl IdSource for SystemIds {
    fn next_id(&mut self) -> Uuid {
        Uuid::now_v7()
    }
}

/// A wallet as the rules see it, locked for the length of the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    pub id: Uuid,
    pub user_id: String,
    pub balance: Decimal,
    pub last_seq: i64,
}

/// One ledger entry still to be written; `committed_at` is filled in by the
/// store from the database clock once the rows are locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: String,
    pub seq: i64,
    pub kind: EventKind,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
}

impl NewEntry {
    pub fn event(&self, committed_at: DateTime<Utc>) -> WalletEvent {
        WalletEvent {
            schema_version: SCHEMA_VERSION,
            event_id: self.event_id,
            wallet_id: self.wallet_id,
            user_id: self.user_id.clone(),
            seq: self.seq,
            kind: self.kind,
            amount: self.amount,
            balance_after: self.balance_after,
            transfer_id: self.transfer_id,
            counterparty_wallet_id: self.counterparty_wallet_id,
            committed_at,
        }
    }
}

/// A change the rules refuse; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        balance: Decimal,
        requested: Decimal,
    },
    #[error("a wallet cannot transfer to itself")]
    SelfTransfer,
    #[error("the balance would exceed the largest supported value")]
    BalanceLimit,
}

/// A new wallet and its `created` entry (seq 1, amount zero).
pub fn open(user_id: &UserId, ids: &mut impl IdSource) -> (WalletState, NewEntry) {
    let wallet = WalletState {
        id: ids.next_id(),
        user_id: user_id.as_str().to_owned(),
        balance: Decimal::ZERO,
        last_seq: 1,
    };
    let entry = NewEntry {
        event_id: ids.next_id(),
        wallet_id: wallet.id,
        user_id: wallet.user_id.clone(),
        seq: 1,
        kind: EventKind::Created,
        amount: Decimal::ZERO,
        balance_after: Decimal::ZERO,
        transfer_id: None,
        counterparty_wallet_id: None,
    };
    (wallet, entry)
}

/// Adds `amount` to the wallet.
pub fn fund(
    wallet: &WalletState,
    amount: Amount,
    ids: &mut impl IdSource,
) -> Result<(WalletState, NewEntry), Refusal> {
    let amount = amount.value();
    let balance = wallet.balance + amount;
    if balance > MONEY_MAX {
        return Err(Refusal::BalanceLimit);
    }
    let after = WalletState {
        balance,
        last_seq: wallet.last_seq + 1,
        ..wallet.clone()
    };
    let entry = entry_for(&after, EventKind::Funded, amount, None, None, ids);
    assert_next(wallet, &entry);
    assert_eq!(
        after.balance - wallet.balance,
        entry.amount,
        "a fund adds its amount"
    );
    Ok((after, entry))
}

/// The outcome of a transfer: both wallets after it, and its two legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub transfer_id: Uuid,
    pub from: WalletState,
    pub to: WalletState,
    pub debit: NewEntry,
    pub credit: NewEntry,
}

/// Moves `amount` from one wallet to another.
pub fn transfer(
    from: &WalletState,
    to: &WalletState,
    amount: Amount,
    ids: &mut impl IdSource,
) -> Result<Transfer, Refusal> {
    let amount = amount.value();
    if from.id == to.id {
        return Err(Refusal::SelfTransfer);
    }
    if from.balance < amount {
        return Err(Refusal::InsufficientFunds {
            balance: from.balance,
            requested: amount,
        });
    }
    if to.balance + amount > MONEY_MAX {
        return Err(Refusal::BalanceLimit);
    }
    let transfer_id = ids.next_id();
    let from_after = WalletState {
        balance: from.balance - amount,
        last_seq: from.last_seq + 1,
        ..from.clone()
    };
    let to_after = WalletState {
        balance: to.balance + amount,
        last_seq: to.last_seq + 1,
        ..to.clone()
    };
    let debit = entry_for(
        &from_after,
        EventKind::TransferOut,
        amount,
        Some(transfer_id),
        Some(to.id),
        ids,
    );
    let credit = entry_for(
        &to_after,
        EventKind::TransferIn,
        amount,
        Some(transfer_id),
        Some(from.id),
        ids,
    );
    assert_next(from, &debit);
    assert_next(to, &credit);
    assert_eq!(
        from_after.balance + to_after.balance,
        from.balance + to.balance,
        "a transfer creates and destroys nothing"
    );
    assert!(
        from_after.balance >= Decimal::ZERO,
        "a transfer never overdraws"
    );
    Ok(Transfer {
        transfer_id,
        from: from_after,
        to: to_after,
        debit,
        credit,
    })
}

/// A change's entry is the wallet's next one, carries the balance after it,
/// and never a negative amount.
fn assert_next(before: &WalletState, entry: &NewEntry) {
    assert_eq!(entry.wallet_id, before.id, "an entry belongs to its wallet");
    assert_eq!(entry.seq, before.last_seq + 1, "seq = last_seq + 1");
    assert!(
        entry.amount > Decimal::ZERO,
        "a change moves a positive amount"
    );
    assert_eq!(
        entry.balance_after,
        before.balance + entry.kind.signed(entry.amount),
        "balance_after is the balance plus the signed amount"
    );
}

fn entry_for(
    after: &WalletState,
    kind: EventKind,
    amount: Decimal,
    transfer_id: Option<Uuid>,
    counterparty_wallet_id: Option<Uuid>,
    ids: &mut impl IdSource,
) -> NewEntry {
    NewEntry {
        event_id: ids.next_id(),
        wallet_id: after.id,
        user_id: after.user_id.clone(),
        seq: after.last_seq,
        kind,
        amount,
        balance_after: after.balance,
        transfer_id,
        counterparty_wallet_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    struct Counter(u128);
    impl IdSource for Counter {
        fn next_id(&mut self) -> Uuid {
            self.0 += 1;
            Uuid::from_u128(self.0)
        }
    }

    fn amount(value: Decimal) -> Amount {
        Amount::new(value).unwrap()
    }

    fn wallet(id: u128, balance: Decimal, last_seq: i64) -> WalletState {
        WalletState {
            id: Uuid::from_u128(id),
            user_id: format!("user{id}"),
            balance,
            last_seq,
        }
    }

    #[test]
    fn open_writes_seq_one_with_zero() {
        let (w, e) = open(&UserId::parse("alice").unwrap(), &mut Counter(0));
        assert_eq!((w.balance, w.last_seq), (dec!(0), 1));
        assert_eq!((e.seq, e.kind, e.amount), (1, EventKind::Created, dec!(0)));
        assert_ne!(w.id, e.event_id);
    }

    #[test]
    fn fund_adds_and_numbers_the_entry() {
        let (after, entry) =
            fund(&wallet(1, dec!(5), 3), amount(dec!(2.5)), &mut Counter(9)).unwrap();
        assert_eq!((after.balance, after.last_seq), (dec!(7.5), 4));
        assert_eq!((entry.seq, entry.balance_after), (4, dec!(7.5)));
        assert_eq!(
            fund(
                &wallet(1, MONEY_MAX, 3),
                amount(dec!(0.0001)),
                &mut Counter(0)
            ),
            Err(Refusal::BalanceLimit)
        );
    }

    #[test]
    fn transfer_moves_money_and_pairs_legs() {
        let t = transfer(
            &wallet(1, dec!(100), 2),
            &wallet(2, dec!(0), 1),
            amount(dec!(30)),
            &mut Counter(9),
        )
        .unwrap();
        assert_eq!((t.from.balance, t.to.balance), (dec!(70), dec!(30)));
        assert_eq!((t.debit.seq, t.credit.seq), (3, 2));
        assert_eq!(t.debit.transfer_id, Some(t.transfer_id));
        assert_eq!(t.credit.transfer_id, Some(t.transfer_id));
        assert_eq!(t.debit.counterparty_wallet_id, Some(t.to.id));
        assert_eq!(
            t.debit.kind.signed(t.debit.amount) + t.credit.kind.signed(t.credit.amount),
            dec!(0)
        );
    }

    #[test]
    fn transfer_refusals() {
        let rich = wallet(1, dec!(10), 2);
        assert_eq!(
            transfer(&rich, &rich, amount(dec!(1)), &mut Counter(0)),
            Err(Refusal::SelfTransfer)
        );
        assert_eq!(
            transfer(
                &rich,
                &wallet(2, dec!(0), 1),
                amount(dec!(10.0001)),
                &mut Counter(0)
            ),
            Err(Refusal::InsufficientFunds {
                balance: dec!(10),
                requested: dec!(10.0001)
            })
        );
        assert!(
            transfer(
                &rich,
                &wallet(2, dec!(0), 1),
                amount(dec!(10)),
                &mut Counter(0)
            )
            .is_ok()
        );
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use uuid::Uuid;
    use wallet_events::{Amount, UserId};

    use super::*;

    struct Counter(u128);
    impl IdSource for Counter {
        fn next_id(&mut self) -> Uuid {
            self.0 += 1;
            Uuid::from_u128(self.0)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Fund(usize, i64),
        Transfer(usize, usize, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 1..100_000i64).prop_map(|(w, c)| Op::Fund(w, c)),
            (0..4usize, 0..4usize, 1..100_000i64).prop_map(|(a, b, c)| Op::Transfer(a, b, c)),
        ]
    }

    proptest! {
        /// Over any sequence of funds and transfers: money is conserved
        /// (balances sum to what was funded), every wallet's entries are
        /// numbered 1, 2, 3, ... with each balance_after the running sum,
        /// no balance goes negative, and a refusal changes nothing.
        #[test]
        fn the_ledger_rules_keep_their_promises(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ids = Counter(0);
            let mut wallets: Vec<WalletState> = Vec::new();
            let mut entries: BTreeMap<Uuid, Vec<NewEntry>> = BTreeMap::new();
            for i in 0..4 {
                let (wallet, created) = open(&UserId::parse(&format!("u{i}")).unwrap(), &mut ids);
                entries.entry(wallet.id).or_default().push(created);
                wallets.push(wallet);
            }
            let mut funded = Decimal::ZERO;
            for op in ops {
                let before = wallets.clone();
                match op {
                    Op::Fund(w, cents) => {
                        let amount = Amount::new(Decimal::new(cents, 2)).unwrap();
                        if let Ok((after, entry)) = fund(&wallets[w], amount, &mut ids) {
                            funded += amount.value();
                            entries.entry(after.id).or_default().push(entry);
                            wallets[w] = after;
                        }
                    }
                    Op::Transfer(a, b, cents) => {
                        let amount = Amount::new(Decimal::new(cents, 2)).unwrap();
                        match transfer(&wallets[a], &wallets[b], amount, &mut ids) {
                            Ok(t) => {
                                entries.entry(t.from.id).or_default().push(t.debit);
                                entries.entry(t.to.id).or_default().push(t.credit);
                                wallets[a] = t.from;
                                wallets[b] = t.to;
                            }
                            Err(_) => prop_assert_eq!(&wallets, &before, "a refusal changes nothing"),
                        }
                    }
                }
                let total: Decimal = wallets.iter().map(|w| w.balance).sum();
                prop_assert_eq!(total, funded, "money is conserved");
                prop_assert!(wallets.iter().all(|w| w.balance >= Decimal::ZERO));
            }
            for wallet in &wallets {
                let list = &entries[&wallet.id];
                let mut running = Decimal::ZERO;
                for (n, entry) in list.iter().enumerate() {
                    prop_assert_eq!(entry.seq, n as i64 + 1, "seq runs 1, 2, 3, ...");
                    running += entry.kind.signed(entry.amount);
                    prop_assert_eq!(entry.balance_after, running);
                }
                prop_assert_eq!(wallet.last_seq, list.len() as i64);
                prop_assert_eq!(wallet.balance, running);
            }
        }
    }
}
