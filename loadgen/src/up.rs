//! `loadgen up`: the system on fixed local ports until Ctrl-C, for trying
//! the API by hand (the README's curl walk-through).

use std::time::Duration;

use std::path::Path;

use anyhow::Context;
use harness::system::{Launcher, System, SystemOptions};
use serde_json::{Value, json};
use service_kit::auth::{Keys, Subject, unix_now};

use crate::cli::UpArgs;

/// How long the admin token `up` prints lasts: a working day.
const ADMIN_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long one of the demo's requests may take.
const DEMO_TIMEOUT: Duration = Duration::from_secs(10);

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
        auth_secret: (!args.infra.open).then(harness::system::random_secret),
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
    // The keys, and the admin token printed (and written) once.
    let credentials = match &system.options.auth_secret {
        None => {
            println!("OPEN MODE: the services authenticate no one");
            None
        }
        Some(secret) => {
            let keys = Keys::new(secret.as_bytes())?;
            let admin = keys.mint(&Subject::Admin, unix_now(), ADMIN_TOKEN_TTL);
            println!("export AUTH_SECRET={secret}");
            println!("export ADMIN_TOKEN={admin}");
            println!(
                "(tokens: `loadgen token --user alice` with AUTH_SECRET set; send \
                 `Authorization: Bearer <token>`)"
            );
            Some((keys, admin))
        }
    };
    if let Some(env_file) = &args.env_file {
        let admin = credentials.as_ref().map(|(_, admin)| admin.as_str());
        write_env_file(env_file, &system, admin)?;
    }
    if args.demo
        && let Err(err) = demo(&system, credentials.as_ref().map(|(keys, _)| keys)).await
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

/// The addresses and credentials of the system, as `KEY=value` lines a
/// shell or a script can source (`set -a; . FILE`); `admin` is the token
/// `up` printed.
fn write_env_file(path: &Path, system: &System, admin: Option<&str>) -> anyhow::Result<()> {
    let mut text = format!(
        "WALLET_URL={}\nHISTORY_URL={}\nKAFKA_BROKERS={}\nWALLET_DB={}\nHISTORY_DB={}\n",
        system.wallet_url,
        system.history_url,
        system.kafka_brokers,
        system.wallet_db,
        system.history_db
    );
    if let (Some(secret), Some(admin)) = (&system.options.auth_secret, admin) {
        text.push_str(&format!("AUTH_SECRET={secret}\nADMIN_TOKEN={admin}\n"));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Two wallets, a fund and a transfer, then the history it produced: as
/// each owner and the admin, unless the system is open.
async fn demo(system: &System, keys: Option<&Keys>) -> anyhow::Result<()> {
    // One client per caller, its token a default header.
    let client_of = |subject: Subject| {
        let bearer = keys.map(|keys| keys.bearer(&subject, unix_now(), ADMIN_TOKEN_TTL));
        crate::auth::client(bearer.as_deref(), DEMO_TIMEOUT)
    };
    let user = |name: &str| Subject::user(name).expect("a valid user id");
    let (alice, bob, admin) = (
        client_of(user("alice"))?,
        client_of(user("bob"))?,
        client_of(Subject::Admin)?,
    );
    let post = |client: &reqwest::Client, path: String, body: Value| {
        let request = client
            .post(format!("{}{path}", system.wallet_url))
            .json(&body);
        async move {
            let reply: Value = request.send().await?.json().await?;
            anyhow::Ok(reply)
        }
    };
    let wallet_id = |reply: Value| {
        reply["data"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("no wallet id")
    };
    let alice_id = wallet_id(post(&alice, "/wallets".into(), json!({"user_id": "alice"})).await?)?;
    let bob_id = wallet_id(post(&bob, "/wallets".into(), json!({"user_id": "bob"})).await?)?;
    post(
        &admin,
        format!("/wallets/{alice_id}/fund"),
        json!({"amount": "100.00"}),
    )
    .await?;
    let transfer = post(
        &alice,
        format!("/wallets/{alice_id}/transfer"),
        json!({"to_wallet_id": bob_id, "amount": "30.00"}),
    )
    .await?;
    println!("demo transfer: {}", transfer["data"]);
    let url = format!("{}/wallets/{alice_id}/history", system.history_url);
    for _ in 0..50 {
        let history: Value = alice.get(&url).send().await?.json().await?;
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
