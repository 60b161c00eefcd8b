//! `loadgen up`: the system on fixed local ports until Ctrl-C, for trying
//! the API by hand (the README's curl walk-through).

use std::time::Duration;

use anyhow::Context;
use harness::system::{Launcher, System, SystemOptions};
use serde_json::{Value, json};

use crate::cli::UpArgs;

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let options = SystemOptions {
        run_dir: args.dir.clone(),
        launcher: Launcher::multi_call(exe),
        database_url: args.infra.database_url.clone(),
        kafka_brokers: args.infra.kafka_brokers.clone(),
        wallet_port: args.wallet_port,
        history_port: args.history_port,
        wallet_instances: 1,
        history_instances: 1,
        broker_port: args.broker_port,
        topic: wallet_events::DEFAULT_TOPIC.into(),
        group_id: "history-service-group".into(),
        partitions: args.infra.partitions,
        session_timeout_ms: args.infra.session_timeout_ms,
        database_prefix: format!("up_{}", std::process::id()),
        service_env: Vec::new(),
        network_faults: false,
    };
    println!(
        "starting PostgreSQL, broker, wallet and history (logs in {}) ...",
        args.dir.display()
    );
    let system = System::start(options).await?;
    println!("wallet   {}", system.wallet_url);
    println!("history  {}", system.history_url);
    println!("broker   {}", system.kafka_brokers);
    println!("wallet database   {}", system.wallet_db);
    println!("history database  {}", system.history_db);
    if args.demo
        && let Err(err) = demo(&system).await
    {
        eprintln!("demo traffic failed: {err:#}");
    }
    println!("up; press Ctrl-C to stop everything");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping ...");
    system.shutdown().await?;
    println!("stopped; nothing left running");
    Ok(())
}

/// Two wallets, a fund and a transfer, then the history it produced.
async fn demo(system: &System) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        let url = format!("{}{path}", system.wallet_url);
        async move {
            let reply: Value = http.post(url).json(&body).send().await?.json().await?;
            anyhow::Ok(reply)
        }
    };
    let alice = post("/wallets".into(), json!({"user_id": "alice"})).await?;
    let bob = post("/wallets".into(), json!({"user_id": "bob"})).await?;
    let alice_id = alice["data"]["id"]
        .as_str()
        .context("no wallet id")?
        .to_owned();
    let bob_id = bob["data"]["id"]
        .as_str()
        .context("no wallet id")?
        .to_owned();
    post(
        format!("/wallets/{alice_id}/fund"),
        json!({"amount": "100.00"}),
    )
    .await?;
    let transfer = post(
        format!("/wallets/{alice_id}/transfer"),
        json!({"to_wallet_id": bob_id, "amount": "30.00"}),
    )
    .await?;
    println!("demo transfer: {}", transfer["data"]);
    for _ in 0..50 {
        let url = format!("{}/wallets/{alice_id}/history", system.history_url);
        let history: Value = http.get(url).send().await?.json().await?;
        let entries = history["data"]["entries"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        if entries == 3 {
            println!("alice's history: {}", history["data"]["entries"]);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("history did not show alice's 3 entries within 5 s")
}
