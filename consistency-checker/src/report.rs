//! The checker's verdict for a terminal ([`render_text`]). The verdict's
//! types are `checker.json`'s, defined in [`run_log::checker`] so the
//! reports read them without this crate.

use std::fmt::Write as _;

pub use run_log::checker::{
    CheckResult, Facts, Invariant, Report, Status, VIOLATIONS_STORED_MAX, Violation,
};

/// The report for a terminal: one line per invariant, its violations
/// indented below it, then the facts and the verdict.
pub fn render_text(report: &Report) -> String {
    let width = Invariant::ALL
        .iter()
        .map(|i| i.as_str().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in &report.checks {
        let (mark, summary) = match check.status {
            Status::Passed => ('✔', format!("examined {}", check.examined)),
            Status::Violated => (
                '✘',
                format!(
                    "{} violation{} (examined {})",
                    check.violations_total,
                    plural(check.violations_total),
                    check.examined
                ),
            ),
            Status::NotEvaluated => ('–', "not evaluated".to_owned()),
        };
        let _ = writeln!(
            out,
            "{mark} {:<width$}  {summary}",
            check.invariant.as_str()
        );
        for violation in &check.violations {
            let _ = writeln!(out, "    {}", violation.message);
        }
        let unstored = check.violations_total - check.violations.len() as u64;
        if unstored > 0 {
            let _ = writeln!(out, "    … and {unstored} more");
        }
    }
    render_facts(&mut out, &report.facts);
    let violated = report.violated();
    if violated.is_empty() {
        let _ = writeln!(out, "PASSED: every invariant held");
    } else {
        let names: Vec<&str> = violated.iter().map(|i| i.as_str()).collect();
        let _ = writeln!(
            out,
            "FAILED: {} of {} invariants violated ({})",
            violated.len(),
            report.checks.len(),
            names.join(", ")
        );
    }
    out
}

/// The facts as three indented lines.
fn render_facts(out: &mut String, f: &Facts) {
    let _ = writeln!(
        out,
        "facts: {} wallets, {} ledger entries, {} history entries, {} outbox rows ({} unpublished), \
         {} parked events, {} dead letters",
        f.wallets,
        f.ledger_entries,
        f.history_entries,
        f.outbox_rows,
        f.outbox_unpublished,
        f.parked_events,
        f.dead_letters
    );
    let _ = writeln!(
        out,
        "       balances total {}, funding total {}; {} ops ({} ok, {} failed, {} indeterminate, \
         {} unverifiable); {} attempts, {} ops retried, {} resolved by a retry; {} fault windows",
        wallet_events::format_money(f.total_balance),
        wallet_events::format_money(f.total_funded),
        f.ops,
        f.ops_ok,
        f.ops_failed,
        f.ops_indeterminate,
        f.ops_unverifiable,
        f.attempts,
        f.ops_retried,
        f.ops_resolved_by_retry,
        f.fault_windows
    );
    if let Some(c) = f.convergence {
        let _ = writeln!(
            out,
            "       convergence: {} after {} ms (bound {} ms)",
            if c.converged {
                "converged"
            } else {
                "did not converge"
            },
            c.took_ms,
            c.bound_ms
        );
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}
