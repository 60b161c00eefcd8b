//! What a CI system shows of a run without opening its report:
//! `junit.xml` (one test case per invariant and per latency threshold,
//! the violations as failure text) and `summary.md` (the verdict, the
//! invariants, the thresholds and the endpoints' figures, in Markdown for
//! a job summary or a merge-request comment). Both are derived from
//! `summary.json` and `checker.json` alone, so they say nothing the run
//! directory does not.

use std::fmt::Write;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use crate::{
    checker::{CheckResult, Report, Status},
    summary::RunSummary,
};

/// The JUnit XML of a run: suite `invariants` with one case per invariant
/// (a not-evaluated one is skipped) and suite `thresholds` with one case
/// per threshold the run was given.
pub fn junit_xml(summary: &RunSummary, report: &Report) -> anyhow::Result<String> {
    let mut junit = quick_junit::Report::new(format!(
        "wallet-system {} seed {}",
        summary.scenario, summary.seed
    ));

    let mut invariants = TestSuite::new("invariants");
    invariants.add_test_cases(report.checks.iter().map(invariant_case));
    junit.add_test_suite(invariants);

    let mut thresholds = TestSuite::new("thresholds");
    thresholds.add_test_cases(summary.thresholds.checked.iter().map(|threshold| {
        let missed = missed_by(summary, threshold);
        let status = if missed.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!("{threshold} missed"));
            status.set_description(missed.join("\n"));
            status
        };
        let mut case = TestCase::new(threshold.as_str(), status);
        case.set_classname("thresholds");
        case
    }));
    junit.add_test_suite(thresholds);

    Ok(junit.to_string()?)
}

fn invariant_case(check: &CheckResult) -> TestCase {
    let status = match check.status {
        Status::Passed => TestCaseStatus::success(),
        Status::NotEvaluated => {
            let mut status = TestCaseStatus::skipped();
            status.set_message("not evaluated: the run lacks what this check needs");
            status
        }
        Status::Violated => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!(
                "{} violated {} time(s) over {} examined",
                check.invariant, check.violations_total, check.examined
            ));
            status.set_description(violations_text(check));
            status
        }
    };
    let mut case = TestCase::new(check.invariant.as_str(), status);
    case.set_classname("invariants");
    case
}

/// One line per stored violation, then how many were not stored.
fn violations_text(check: &CheckResult) -> String {
    let mut text: String = check
        .violations
        .iter()
        .map(|v| format!("{}\n", v.message))
        .collect();
    let unstored = check.violations_total - check.violations.len() as u64;
    if unstored > 0 {
        let _ = writeln!(text, "... and {unstored} more (checker.json counts them)");
    }
    text
}

/// The measurements that missed `threshold` (`summary.thresholds.missed`
/// names each as `"{threshold}: {endpoint} measured ..."`).
fn missed_by<'a>(summary: &'a RunSummary, threshold: &str) -> Vec<&'a str> {
    let prefix = format!("{threshold}: ");
    summary
        .thresholds
        .missed
        .iter()
        .filter(|m| m.starts_with(&prefix))
        .map(String::as_str)
        .collect()
}

/// The Markdown summary of a run.
pub fn markdown(summary: &RunSummary, report: &Report) -> String {
    let passed = report.passed && summary.thresholds.missed.is_empty();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## {} `{}` seed {}: {}\n",
        if passed { "✅" } else { "❌" },
        summary.scenario,
        summary.seed,
        if passed { "passed" } else { "FAILED" }
    );
    let _ = writeln!(
        md,
        "`{}` · {:.0} s of load, {} requests ({:.1}/s), {} fault window(s), commit `{}`\n",
        summary.command,
        summary.duration_s,
        summary.totals.requests,
        summary.totals.rps,
        summary.faults.len(),
        summary.versions.commit
    );

    let _ = writeln!(md, "| invariant | verdict | examined | violations |");
    let _ = writeln!(md, "|---|---|---:|---:|");
    for check in &report.checks {
        let verdict = match check.status {
            Status::Passed => "passed",
            Status::Violated => "**violated**",
            Status::NotEvaluated => "not evaluated",
        };
        let _ = writeln!(
            md,
            "| `{}` | {verdict} | {} | {} |",
            check.invariant, check.examined, check.violations_total
        );
    }
    for check in report
        .checks
        .iter()
        .filter(|c| c.status == Status::Violated)
    {
        let _ = writeln!(
            md,
            "\n<details><summary><code>{}</code></summary>\n",
            check.invariant
        );
        for violation in &check.violations {
            let _ = writeln!(md, "- {}", violation.message);
        }
        let _ = writeln!(md, "\n</details>");
    }

    if !summary.thresholds.checked.is_empty() {
        let _ = writeln!(md, "\n| threshold | verdict |");
        let _ = writeln!(md, "|---|---|");
        for threshold in &summary.thresholds.checked {
            let missed = missed_by(summary, threshold);
            let verdict = if missed.is_empty() {
                "met".to_owned()
            } else {
                format!("**missed**: {}", missed.join("; "))
            };
            let _ = writeln!(md, "| `{threshold}` | {verdict} |");
        }
    }

    let _ = writeln!(
        md,
        "\n| endpoint | count | ok | failed | indeterminate | dropped | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for e in &summary.endpoints {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            e.endpoint,
            e.count,
            e.ok,
            e.failed,
            e.indeterminate,
            e.dropped,
            e.p50_ms,
            e.p99_ms,
            e.max_ms
        );
    }
    let _ = writeln!(
        md,
        "\nThe run directory holds the evidence: `report.html`, `checker.json`, `ops.jsonl`, `chaos.jsonl`."
    );
    md
}
