//! `converged-in-time`: the only liveness invariant, judged after faults
//! stop.

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::Snapshot;

/// `converged-in-time`: the history caught up within the bound after load
/// and faults stopped. Not evaluated without a measurement.
pub fn converged_in_time(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let Some(c) = s.convergence else {
        return f.not_evaluated(Invariant::ConvergedInTime);
    };
    f.examined = 1;
    if !c.converged {
        f.push(Finding {
            message: format!(
                "history did not catch up with the ledger: gave up after {} ms (bound {} ms)",
                c.took_ms, c.bound_ms
            ),
            ..Finding::default()
        });
    } else if c.took_ms > c.bound_ms {
        f.push(Finding {
            message: format!(
                "history caught up after {} ms, over the {} ms bound",
                c.took_ms, c.bound_ms
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::ConvergedInTime)
}
