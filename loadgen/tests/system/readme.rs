//! The README's curl walk-throughs, run as written against a system on
//! free ports: the one with tokens, and the original one in open mode.

use std::process::Command;

use crate::helpers::{TestSystem, start, start_with};

/// The bash block after `<!-- walk-through: NAME -->` in the README.
fn walk_through(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let marker = format!("<!-- walk-through: {name} -->");
    let after = &readme[readme.find(&marker).expect("the marker") + marker.len()..];
    let block = after
        .split_once("```bash\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a bash block after the marker")
        .0;
    block.to_owned()
}

/// Runs `script` with the README's ports replaced by `t`'s, `cargo run`
/// by this package's binary, and `env`; returns what it printed.
fn run(t: &TestSystem, script: &str, env: &[(&str, String)]) -> String {
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let script = script
        .replace("localhost:3000", &host(&t.system.wallet_url))
        .replace("localhost:3001", &host(&t.system.history_url))
        .replace("cargo run -q --release --", env!("CARGO_BIN_EXE_loadgen"));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the walk-through failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// History shows alice's three entries once the consumer applied them.
async fn wait_for_history(t: &TestSystem, alice_wallet: &str) {
    for _ in 0..100 {
        let (_, page) = t
            .get_history(&format!("/wallets/{alice_wallet}/history"))
            .await;
        if page["data"]["entries"].as_array().map(Vec::len) == Some(3) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("history never showed alice's 3 entries");
}

fn alice_wallet(stdout: &str) -> String {
    let at = stdout
        .find(r#""user_id":"alice""#)
        .expect("alice's wallet shown");
    let id = stdout[..at].rsplit_once(r#""id":""#).expect("its id").1;
    id[..36].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_mode_walk_through_runs_unchanged() {
    let t = start_with(|options| options.auth_secret = None).await;
    let stdout = run(&t, &walk_through("open"), &[]);
    assert!(stdout.contains(r#""balance":"100.0000""#), "{stdout}");
    assert!(stdout.contains(r#""balance":"70.0000""#), "{stdout}");
    assert!(stdout.contains(r#""balance":"30.0000""#), "{stdout}");
    assert!(
        stdout.contains(r#""code":"insufficient_funds""#),
        "{stdout}"
    );
    assert!(stdout.contains("OK\nconsumer:"), "{stdout}");
    wait_for_history(&t, &alice_wallet(&stdout)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_with_tokens_runs_as_written() {
    let t = start().await;
    let secret = t.system.options.auth_secret.clone().expect("tokens on");
    let admin = t.bearer(None).expect("tokens on");
    let admin = admin.trim_start_matches("Bearer ").to_owned();
    let stdout = run(
        &t,
        &walk_through("tokens"),
        &[("AUTH_SECRET", secret), ("ADMIN_TOKEN", admin)],
    );
    assert!(stdout.contains(r#""balance":"100.0000""#), "{stdout}");
    assert!(stdout.contains(r#""kind":"transfer_out""#), "{stdout}");
    assert!(stdout.contains(r#""code":"forbidden""#), "{stdout}");
    assert!(stdout.contains(r#""code":"missing_token""#), "{stdout}");
    assert_eq!(
        stdout.matches(r#""balance":"70.0000""#).count(),
        1,
        "bob's attempt moved nothing: {stdout}"
    );
    wait_for_history(&t, &alice_wallet(&stdout)).await;
}
