//! Full tier: a real system (private PostgreSQL cluster, our broker, wallet
//! and history processes) with chaos acting on its processes.
//!
//! The services are started through the multi-call `loadgen` binary
//! (`cargo build -p loadgen` first; `cargo test --workspace` builds it);
//! without it the tests fail and say so, they never skip. Set `TEST_LOG`
//! (e.g. `TEST_LOG=info`) to see the harness's and the runner's tracing,
//! and `TEST_KEEP_RUN_DIR=1` to keep the run directories (process logs,
//! chaos.jsonl) for a look afterwards.

use std::{
    path::{Path, PathBuf},
    sync::Once,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use chaos::{
    ChaosEvent, ChaosLog, ChaosStatus, FaultKind, FaultPhase, explicit, heal_all, run_plan,
    runner::{RECOVERY_TIMEOUT_MS, SKIPPED_NOT_STARTED, wait_recovered},
};
use harness::system::{Launcher, Link, Role, System, SystemOptions, instance_name};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Short, so a paused history member is evicted within seconds.
const SESSION_TIMEOUT_MS: u32 = 3_000;
/// The whole of one test, system start to shutdown; far above the minute
/// or two a test takes, low enough that a hang fails rather than stalls CI.
const TEST_TIMEOUT_MS: u64 = 400_000;
/// How often the pause watcher re-reads chaos.jsonl.
const WATCH_POLL_MS: u64 = 20;
/// A stop must end `run_plan` long before its next fault is due.
const STOP_REACTION_MAX_MS: u64 = 5_000;

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

fn launcher() -> Result<Launcher> {
    Launcher::locate().context(
        "the chaos tests run the real services through the loadgen binary: \
         run `cargo build -p loadgen` (same profile) before `cargo test -p chaos`",
    )
}

/// A client that sends the admin's token of `system` with every request.
fn http(system: &System) -> Result<reqwest::Client> {
    use service_kit::auth::{Keys, Subject, unix_now};
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = &system.options.auth_secret {
        let keys = Keys::new(secret.as_bytes())?;
        let bearer = keys.bearer(&Subject::Admin, unix_now(), Duration::from_secs(3600));
        headers.insert(reqwest::header::AUTHORIZATION, bearer.parse()?);
    }
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()?)
}

/// Starts a system in `dir`, runs `scenario` on it with a time bound, and
/// shuts it down whatever the scenario's outcome.
async fn with_system<F>(
    dir: &Path,
    configure: impl FnOnce(&mut SystemOptions),
    scenario: F,
) -> Result<()>
where
    F: AsyncFnOnce(&mut System) -> Result<()>,
{
    init_tracing();
    let mut options = SystemOptions::isolated(dir.join("run"), launcher()?);
    options.session_timeout_ms = SESSION_TIMEOUT_MS;
    configure(&mut options);
    let mut system = System::start(options)
        .await
        .context("starting the system")?;
    let outcome = tokio::time::timeout(
        Duration::from_millis(TEST_TIMEOUT_MS),
        scenario(&mut system),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "the scenario took over {TEST_TIMEOUT_MS} ms"
        ))
    });
    let stopped = system.shutdown().await;
    if std::env::var_os("TEST_KEEP_RUN_DIR").is_some() {
        println!("run directory kept: {}", dir.join("run").display());
    }
    outcome?;
    stopped
}

/// A temporary directory, kept when `TEST_KEEP_RUN_DIR` is set.
fn temp_dir() -> Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new().prefix("chaos-test-").tempdir()?;
    if std::env::var_os("TEST_KEEP_RUN_DIR").is_some() {
        dir.disable_cleanup(true);
    }
    Ok(dir)
}

async fn create_wallet(client: &reqwest::Client, system: &System) -> Result<String> {
    let response = client
        .post(format!("{}/wallets", system.wallet_url))
        .json(&json!({ "user_id": "x" }))
        .send()
        .await?;
    ensure!(
        response.status() == 201,
        "POST /wallets: {}",
        response.status()
    );
    let body: Value = response.json().await?;
    body["data"]["id"]
        .as_str()
        .map(str::to_owned)
        .context("no data.id in the answer")
}

async fn get_status(client: &reqwest::Client, url: &str) -> Result<u16> {
    Ok(client.get(url).send().await?.status().as_u16())
}

fn pid_of(system: &mut System, role: Role) -> Result<u32> {
    pid_at(system, role, 0)
}

fn pid_at(system: &mut System, role: Role, instance: usize) -> Result<u32> {
    system
        .instance_mut(role, instance)
        .and_then(|process| process.pid())
        .with_context(|| format!("{} has no pid", instance_name(role, instance)))
}

/// Tails chaos.jsonl (which must be flushed line by line) until the
/// history_pause fault is injected, then reads the paused pid's state.
async fn watch_pause(path: PathBuf) -> Result<(u32, char)> {
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let injected = text
            .lines()
            .filter_map(|line| serde_json::from_str::<ChaosEvent>(line).ok())
            .find(|e| e.kind == FaultKind::HistoryPause && e.phase == FaultPhase::Injected);
        if let Some(event) = injected {
            let pid = event.pid.context("pause recorded without a pid")?;
            let state = harness::procfs::state(pid).context("no /proc entry for the paused pid")?;
            return Ok((pid, state));
        }
        tokio::time::sleep(Duration::from_millis(WATCH_POLL_MS)).await;
    }
}

/// `detail` of a Recovered line → seconds as printed ("recovered in 6.8 s").
fn recovery_seconds(event: &ChaosEvent) -> Option<&str> {
    event
        .detail
        .strip_prefix("recovered in ")?
        .strip_suffix(" s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_is_injected_healed_and_recovered_and_the_wallet_survives() -> Result<()> {
    let dir = temp_dir()?;
    let test_started = Instant::now();
    with_system(
        dir.path(),
        |options| {
            options.wallet_instances = 2;
            options.history_instances = 2;
        },
        async |system: &mut System| {
            let started_in = test_started.elapsed();
            let client = http(system)?;
            let wallet_id = create_wallet(&client, system).await?;
            // The second instances are the ones killed below.
            let targets = [
                (Role::Broker, 0),
                (Role::History, 1),
                (Role::Wallet, 1),
                (Role::Postgres, 0),
            ];
            let before: Vec<((Role, usize), u32)> = targets
                .into_iter()
                .map(|(role, i)| Ok(((role, i), pid_at(system, role, i)?)))
                .collect::<Result<_>>()?;
            let spared_wallet = pid_at(system, Role::Wallet, 0)?;

            // The history member holds the partitions before it is killed, so
            // the kill measures a real takeover from a dead member.
            wait_recovered(
                system,
                Role::History,
                0,
                Duration::from_millis(RECOVERY_TIMEOUT_MS),
            )
            .await?;

            let path = system.options.run_dir.join("chaos.jsonl");
            let mut log = ChaosLog::create_now(&path)?;
            let status = ChaosStatus::new();
            // Each fault is due at once; the runner starts it as soon as the one
            // before has recovered, except the wallet kill, which overlaps the
            // broker kill on purpose (injected while the broker is down,
            // healed first).
            let pause_hold_ms = u64::from(SESSION_TIMEOUT_MS) + 1_000;
            let mut plan = explicit(vec![
                (0, FaultKind::HistoryKill, 1_000),
                (1, FaultKind::HistoryPause, pause_hold_ms),
                (2, FaultKind::BrokerKill, 2_500),
                (3, FaultKind::WalletKill, 1_000),
                (4, FaultKind::PostgresRestart, 1_000),
                (5, FaultKind::PostgresKill, 1_000),
                (6, FaultKind::HistoryJoin, 3_000),
            ]);
            plan[0] = plan[0].on_instance(1);
            plan[3] = plan[3].on_instance(1).overlapping();

            // A stop that fired before the first fault acts on nothing.
            let stopped = CancellationToken::new();
            stopped.cancel();
            run_plan(system, &plan, &mut log, &status, &stopped).await?;
            ensure!(
                log.events().is_empty(),
                "a stopped run injected {:?}",
                log.events()
            );

            let watcher = tokio::spawn(watch_pause(path.clone()));
            let faults_started = Instant::now();
            run_plan(system, &plan, &mut log, &status, &CancellationToken::new()).await?;
            let faults_took = faults_started.elapsed();
            let (paused_pid, paused_state) = tokio::time::timeout(Duration::from_secs(10), watcher)
                .await
                .context("the pause watcher never saw the pause")???;
            ensure!(
                paused_state == 'T',
                "paused history pid {paused_pid} was in state {paused_state}, not T"
            );

            // The timeline: per fault, Injected, Healed, Recovered, in that
            // order; faults in plan order but for the overlapping pair.
            let events: Vec<ChaosEvent> = run_log::read_jsonl(&path)?;
            ensure!(events == log.events(), "file and memory disagree");
            ensure!(events.len() == 21, "{} events: {events:#?}", events.len());
            let order: Vec<(u32, FaultPhase)> =
                events.iter().map(|e| (e.fault_id, e.phase)).collect();
            use FaultPhase::{Healed as H, Injected as I, Recovered as R};
            ensure!(
                order
                    == [
                        (1, I),
                        (1, H),
                        (1, R),
                        (2, I),
                        (2, H),
                        (2, R),
                        (3, I),
                        (4, I),
                        (4, H),
                        (3, H),
                        (4, R),
                        (3, R),
                        (5, I),
                        (5, H),
                        (5, R),
                        (6, I),
                        (6, H),
                        (6, R),
                        (7, I),
                        (7, H),
                        (7, R),
                    ],
                "{order:?}"
            );
            let mut recovery = Vec::new();
            for fault in &plan {
                let phases: Vec<&ChaosEvent> = events
                    .iter()
                    .filter(|e| e.fault_id == fault.fault_id)
                    .collect();
                ensure!(
                    phases
                        .iter()
                        .all(|e| e.kind == fault.kind && e.target == fault.target()),
                    "fault #{}: {phases:#?}",
                    fault.fault_id
                );
                let (injected, healed, recovered) = (phases[0], phases[1], phases[2]);
                let seconds = recovery_seconds(recovered).with_context(|| {
                    format!(
                        "fault #{} did not recover: {}",
                        fault.fault_id, recovered.detail
                    )
                })?;
                recovery.push(format!("{} {seconds} s", fault.kind));
                let old = injected.pid.context("Injected without a pid")?;
                let new = healed.pid.context("Healed without a pid")?;
                let hold_ms = healed.offset_ms - injected.offset_ms;
                ensure!(
                    hold_ms >= fault.hold_ms,
                    "fault #{} held {hold_ms} ms < {}",
                    fault.fault_id,
                    fault.hold_ms
                );
                match fault.kind {
                    FaultKind::HistoryPause => ensure!(
                        old == new && old == paused_pid,
                        "a pause keeps the pid: {old} → {new}"
                    ),
                    // The late instance is started, then stopped.
                    FaultKind::HistoryJoin => {
                        ensure!(old == new, "the late instance was {old}, stopped {new}")
                    }
                    _ => ensure!(
                        old != new,
                        "{} was healed with the same pid {old}",
                        fault.kind
                    ),
                }
            }
            ensure!(
                plan[0].target() == "history-2" && plan[3].target() == "wallet-2",
                "{plan:?}"
            );
            ensure!(
                status.injected() == 7 && status.recovered() == 7,
                "{}",
                status.progress()
            );
            ensure!(status.active().is_empty(), "{}", status.progress());
            // The late instance ran in its own group and is gone again.
            ensure!(
                system.late_history.is_none(),
                "the late instance still runs"
            );
            let late_log =
                std::fs::read_to_string(system.options.run_dir.join("history-late-1.log"))?;
            ensure!(
                late_log.contains("-late-1"),
                "the late instance's log does not name its fresh group:\n{late_log}"
            );
            // The kill was a crash: the next start recovered from the WAL,
            // which the fast shutdown before it never needs.
            let pg_log = std::fs::read_to_string(
                system
                    .postgres
                    .as_ref()
                    .context("this run's PostgreSQL")?
                    .log_path(),
            )?;
            ensure!(
                pg_log.matches("automatic recovery in progress").count() == 1,
                "one crash recovery expected in the PostgreSQL log:\n{pg_log}"
            );
            for ((role, i), old) in before {
                ensure!(
                    pid_at(system, role, i)? != old,
                    "{} still has its first pid {old}",
                    instance_name(role, i)
                );
            }
            ensure!(
                pid_at(system, Role::Wallet, 0)? == spared_wallet,
                "the fault on wallet-2 touched wallet"
            );

            // heal_all brings back what a run left broken: a dead wallet and a
            // stopped history member.
            let wallet_pid = pid_of(system, Role::Wallet)?;
            let history_pid = pid_of(system, Role::History)?;
            system.wallets[0].process.as_mut().unwrap().kill().await?;
            system.histories[0]
                .process
                .as_mut()
                .unwrap()
                .pause()
                .await?;
            heal_all(system, Some(&mut log)).await?;
            ensure!(
                pid_of(system, Role::Wallet)? != wallet_pid,
                "the dead wallet was not restarted"
            );
            ensure!(
                pid_of(system, Role::History)? == history_pid,
                "the paused history was replaced"
            );
            ensure!(
                harness::procfs::state(history_pid) != Some('T'),
                "history is still stopped"
            );
            let heals: Vec<(u32, &str, FaultPhase)> = log.events()[21..]
                .iter()
                .map(|e| (e.fault_id, e.target.as_str(), e.phase))
                .collect();
            ensure!(
                heals
                    == [
                        (0, "wallet", FaultPhase::Healed),
                        (0, "history", FaultPhase::Healed)
                    ],
                "{heals:?}"
            );

            // The wallet serves, and the wallet made before the faults is there.
            let health = get_status(&client, &format!("{}/health", system.wallet_url)).await?;
            ensure!(health == 200, "wallet /health answered {health}");
            let url = format!("{}/wallets/{wallet_id}", system.wallet_url);
            let response = client.get(&url).send().await?;
            ensure!(response.status() == 200, "GET {url}: {}", response.status());
            let body: Value = response.json().await?;
            ensure!(body["data"]["id"] == wallet_id.as_str(), "{body}");

            println!(
                "system started in {:.1} s; seven faults took {:.1} s; recovery: {}",
                started_in.as_secs_f64(),
                faults_took.as_secs_f64(),
                recovery.join(", ")
            );
            Ok(())
        },
    )
    .await?;
    println!("test took {:.1} s", test_started.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_parts_this_run_did_not_start_are_skipped_and_stop_ends_the_run() -> Result<()> {
    let dir = temp_dir()?;
    let server = harness::test_server().await?;
    let admin_url = server.admin_url().to_owned();
    with_system(
        dir.path(),
        |options| options.database_url = Some(admin_url),
        async |system: &mut System| {
            ensure!(
                system.postgres.is_none(),
                "the system started its own PostgreSQL"
            );
            let path = system.options.run_dir.join("chaos.jsonl");
            let mut log = ChaosLog::create_now(&path)?;
            let status = ChaosStatus::new();
            // The second fault is far away: the stop must end the wait for it.
            let plan = explicit(vec![
                (0, FaultKind::PostgresRestart, 1_000),
                (600_000, FaultKind::BrokerKill, 1_000),
            ]);
            let stop = CancellationToken::new();
            let stopper = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    stop.cancel();
                })
            };
            let broker_pid = pid_of(system, Role::Broker)?;
            let began = Instant::now();
            run_plan(system, &plan, &mut log, &status, &stop).await?;
            stopper.await?;
            let took = began.elapsed();
            ensure!(
                took < Duration::from_millis(STOP_REACTION_MAX_MS),
                "run_plan took {took:?} to notice the stop"
            );

            let events: Vec<ChaosEvent> = run_log::read_jsonl(&path)?;
            let got: Vec<(u32, FaultPhase, Option<u32>, &str)> = events
                .iter()
                .map(|e| (e.fault_id, e.phase, e.pid, e.detail.as_str()))
                .collect();
            ensure!(
                got == [
                    (1, FaultPhase::Injected, None, SKIPPED_NOT_STARTED),
                    (1, FaultPhase::Healed, None, SKIPPED_NOT_STARTED),
                ],
                "{got:#?}"
            );
            ensure!(
                status.skipped() == 1 && status.injected() == 0,
                "{}",
                status.progress()
            );
            ensure!(
                pid_of(system, Role::Broker)? == broker_pid,
                "the stopped plan touched the broker"
            );
            ensure!(
                status.active().is_empty(),
                "faults still active: {}",
                status.progress()
            );
            Ok(())
        },
    )
    .await
}

/// Each network fault acts on its link only, through the proxies the
/// system puts there, and healing lets bytes pass again: a lost answer
/// leaves the operation applied (its retry is a replay, and the money moved
/// once), a cut database link makes the services unhealthy, a cut broker
/// link stops the consumer group's traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_act_on_their_link_and_heal() -> Result<()> {
    let dir = temp_dir()?;
    with_system(
        dir.path(),
        |options| options.network_faults = true,
        async |system: &mut System| {
            let client = http(system)?;
            let wallet_id = create_wallet(&client, system).await?;
            let through_proxy = system.wallets[0].client_url.clone();
            ensure!(through_proxy != system.wallet_url, "no client proxy");
            let fault = |kind, link| explicit(vec![(0, kind, 1_000)])[0].on_link(link);

            // A lost answer: the fund applies, the client sees no response.
            let lost = fault(FaultKind::LostResponse, Link::ClientWallet(0));
            chaos::runner::inject(system, &lost).await?;
            let fund = || {
                client
                    .post(format!("{through_proxy}/wallets/{wallet_id}/fund"))
                    .header("Idempotency-Key", "net-test-fund-1")
                    .json(&json!({ "amount": "12.5000" }))
                    .send()
            };
            let answer = fund().await;
            ensure!(answer.is_err(), "an answer got through: {answer:?}");
            chaos::runner::heal(system, &lost).await?;
            let replay = fund().await?;
            ensure!(
                replay.status() == 200 || replay.status() == 201,
                "{}",
                replay.status()
            );
            let body: Value = client
                .get(format!("{}/wallets/{wallet_id}", system.wallet_url))
                .send()
                .await?
                .json()
                .await?;
            ensure!(
                body["data"]["balance"] == "12.5000",
                "funded twice or never: {body}"
            );
            let stats = system
                .proxy(Link::ClientWallet(0))
                .context("proxy")?
                .stats();
            ensure!(stats.responses_lost >= 1, "{stats:?}");

            // A cut database link: the services' health fails, then heals.
            let cut = fault(FaultKind::NetPartition, Link::Postgres);
            chaos::runner::inject(system, &cut).await?;
            let health = format!("{}/health", system.wallet_url);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = 200;
            while Instant::now() < deadline {
                seen = get_status(&client, &health).await?;
                if seen != 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ensure!(
                seen == 503,
                "wallet /health stayed {seen} with PostgreSQL cut off"
            );
            chaos::runner::heal(system, &cut).await?;
            chaos::network::wait_recovered_through(system, Link::Postgres, Duration::from_secs(60))
                .await?;

            // A cut broker link: new connections are refused while it holds.
            let cut = fault(FaultKind::NetPartition, Link::Broker);
            let before = system.proxy(Link::Broker).context("proxy")?.stats();
            chaos::runner::inject(system, &cut).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            chaos::runner::heal(system, &cut).await?;
            let after = system.proxy(Link::Broker).context("proxy")?.stats();
            ensure!(
                after.connections_cut + after.connections_refused
                    > before.connections_cut + before.connections_refused,
                "the broker link was never cut: {before:?} → {after:?}"
            );
            chaos::network::wait_recovered_through(system, Link::Broker, Duration::from_secs(90))
                .await?;
            Ok(())
        },
    )
    .await
}

/// A fault that cannot be put in is recorded as skipped with the reason,
/// and the faults already holding are still healed and recovered: a second
/// late instance while one runs is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_that_cannot_be_injected_is_recorded_and_the_others_still_heal() -> Result<()> {
    let dir = temp_dir()?;
    with_system(
        dir.path(),
        |_| {},
        async |system: &mut System| {
            let path = system.options.run_dir.join("chaos.jsonl");
            let mut log = ChaosLog::create_now(&path)?;
            let status = ChaosStatus::new();
            let mut plan = explicit(vec![
                (0, FaultKind::HistoryJoin, 2_000),
                (1, FaultKind::HistoryJoin, 500),
            ]);
            plan[1] = plan[1].overlapping();
            run_plan(system, &plan, &mut log, &status, &CancellationToken::new()).await?;
            let got: Vec<(u32, FaultPhase)> =
                log.events().iter().map(|e| (e.fault_id, e.phase)).collect();
            use FaultPhase::{Healed as H, Injected as I, Recovered as R};
            ensure!(got == [(1, I), (2, I), (2, H), (1, H), (1, R)], "{got:?}");
            let refused = &log.events()[1];
            ensure!(
                refused.detail.contains("injection failed")
                    && refused.detail.contains("already running"),
                "{}",
                refused.detail
            );
            ensure!(
                status.skipped() == 1 && status.recovered() == 1,
                "{}",
                status.progress()
            );
            ensure!(
                system.late_history.is_none(),
                "the late instance still runs"
            );
            Ok(())
        },
    )
    .await
}
