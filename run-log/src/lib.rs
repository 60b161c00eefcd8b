//! The record formats of a run directory, one owner for each, shared by the
//! code that writes them (loadgen and the chaos runner inside it, the
//! checker) and the code that reads them (the checker, the reports).
//!
//! - [`OpRecord`] (`ops.jsonl`): every operation loadgen attempted, with its
//!   outcome. Mutating operations carry the idempotency key they were sent
//!   with; the wallet stores that key on the ledger entries it wrote, which
//!   is how the checker finds an operation in the ledger.
//! - [`ChaosEvent`] (`chaos.jsonl`): each fault's injection, healing and
//!   recovery, so a violation or a latency spike can be placed in its fault
//!   window.
//! - [`summary`]: the run's figures (`summary.json`, `timeline.json`,
//!   `lag.json`) and how the liveness phase ended ([`summary::Convergence`]).
//! - [`checker`]: the checker's verdict (`checker.json`).
//! - [`latency`]: the conventions of the latency interval log
//!   (`latency.hlog`): bounds, precision, tags, per-second percentiles.
//! - [`recorder`]: records operations into `latency.hlog`,
//!   `timeline.json` and the endpoint figures of `summary.json`.
//! - [`walk`] (`walk.json`): every page of every wallet's history and
//!   user's activity, read after convergence.
//! - [`service_metrics`] (`metrics.jsonl`): the services' own backlog and
//!   lag, scraped from their `/metrics` during the run.
//! - [`ci`] (`junit.xml`, `summary.md`): the verdict for CI systems.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

pub mod bench;
pub mod checker;
pub mod ci;
pub mod latency;
pub mod observed;
pub mod recorder;
pub mod service_metrics;
pub mod summary;
pub mod walk;

pub use observed::{Observed, ObservedEntry, answered};
pub use walk::{ShownEntry, ShownPage, Walk, WalkedList};

/// What loadgen asked the system to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    CreateWallet,
    Fund,
    Transfer,
    GetWallet,
    GetHistory,
}

impl OpKind {
    pub fn is_mutating(self) -> bool {
        matches!(self, OpKind::CreateWallet | OpKind::Fund | OpKind::Transfer)
    }
}

/// How an attempt, or a whole operation, ended from the client's side.
///
/// For one attempt: `Ok` is a 2xx; `Failed` is a definite refusal, either a
/// 4xx answer or a transport error that provably happened before the
/// request left the client (the connection was never made); everything
/// else (timeout, reset, 5xx) is `Indeterminate`.
///
/// For an operation, [`Outcome::fold`] over its attempts: `Ok` if any
/// attempt was acknowledged, `Failed` only if every attempt was definitely
/// refused, otherwise `Indeterminate`. A later refusal never undoes an
/// earlier attempt that may have applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The service confirmed it (2xx).
    Ok,
    /// The service definitely refused it (4xx), or it never reached the
    /// service: it must not have applied.
    Failed,
    /// Unknown: timeout, connection reset, 5xx. It may have applied, once.
    Indeterminate,
}

impl Outcome {
    /// The outcome of an operation from its attempts' outcomes, in any
    /// order; `None` for no attempts.
    pub fn fold(attempts: impl IntoIterator<Item = Outcome>) -> Option<Outcome> {
        attempts.into_iter().fold(None, |folded, next| {
            Some(match (folded, next) {
                (Some(Outcome::Ok), _) | (_, Outcome::Ok) => Outcome::Ok,
                (Some(Outcome::Indeterminate), _) | (_, Outcome::Indeterminate) => {
                    Outcome::Indeterminate
                }
                (None | Some(Outcome::Failed), Outcome::Failed) => Outcome::Failed,
            })
        })
    }

    /// Whether the client knows for certain whether it applied.
    pub fn is_definite(self) -> bool {
        self != Outcome::Indeterminate
    }
}

/// One HTTP attempt of an operation. Retries of an operation carry the
/// same idempotency key, so at most one of its attempts can apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub outcome: Outcome,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The service's error code, or a client-side cause (`timeout`, ...).
    pub error_code: Option<String>,
    /// When the attempt started, from the operation's intended start.
    pub started_us: u64,
    /// How long the attempt took, from its own start.
    pub latency_us: u64,
    /// What a 2xx response showed (entries of a write, a balance read),
    /// for the checker to verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

/// One attempted operation: a line of `ops.jsonl`, with every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Position in the seed's schedule: the same seed gives the same
    /// operations in the same positions.
    pub op_id: u64,
    pub kind: OpKind,
    /// Seed-determined wallet indices (stable across runs of one seed).
    pub wallet_index: Option<u32>,
    pub to_wallet_index: Option<u32>,
    /// The ids the indices resolved to in this run.
    pub wallet_id: Option<Uuid>,
    pub to_wallet_id: Option<Uuid>,
    #[serde(default, with = "wallet_events::money_str_opt")]
    pub amount: Option<Decimal>,
    pub idempotency_key: Option<String>,
    /// [`Outcome::fold`] over `attempts`.
    pub outcome: Outcome,
    /// HTTP status of the attempt that decided the outcome (the last one
    /// whose outcome equals it), when a response arrived.
    pub status: Option<u16>,
    /// The error code of that attempt: the service's, or a client-side
    /// cause (`timeout`, `connect_refused`, ...).
    pub error_code: Option<String>,
    /// When the operation was meant to start (its schedule slot).
    pub intended_at: DateTime<Utc>,
    /// From the intended start to the end of the last attempt.
    pub latency_us: u64,
    /// Every attempt, in order. Empty only in logs written before attempts
    /// were recorded; then `outcome` stands for the one attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl OpRecord {
    /// The record after `attempts` (at least one): the outcome folded over
    /// them, the deciding attempt's status and code, the latency to the end
    /// of the last. The operation's own fields are kept as they are.
    pub fn settle(self, attempts: Vec<Attempt>) -> OpRecord {
        let outcome = Outcome::fold(attempts.iter().map(|a| a.outcome))
            .expect("an operation is recorded after at least one attempt");
        let deciding = attempts
            .iter()
            .rev()
            .find(|a| a.outcome == outcome)
            .expect("the folded outcome is one of the attempts' outcomes");
        let last = attempts.last().expect("at least one attempt");
        OpRecord {
            outcome,
            status: deciding.status,
            error_code: deciding.error_code.clone(),
            latency_us: last.started_us + last.latency_us,
            attempts,
            ..self
        }
    }

    /// The outcomes of its attempts (the record's own outcome for a log
    /// without attempts).
    pub fn attempt_outcomes(&self) -> Vec<Outcome> {
        if self.attempts.is_empty() {
            vec![self.outcome]
        } else {
            self.attempts.iter().map(|a| a.outcome).collect()
        }
    }

    /// How many HTTP attempts it took.
    pub fn attempt_count(&self) -> usize {
        self.attempts.len().max(1)
    }

    /// An attempt could have applied but a later one settled the question:
    /// a retry with the same key was acknowledged.
    pub fn resolved_by_retry(&self) -> bool {
        self.outcome == Outcome::Ok
            && self
                .attempts
                .iter()
                .any(|a| a.outcome == Outcome::Indeterminate)
    }
}

/// The faults the chaos module can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL the broker, restart it after a pause.
    BrokerKill,
    /// SIGKILL the history process, restart it after a pause.
    HistoryKill,
    /// SIGSTOP the history process past its session timeout, then SIGCONT.
    HistoryPause,
    /// SIGKILL the wallet process, restart it after a pause.
    WalletKill,
    /// Fast shutdown of PostgreSQL, start it again after a pause.
    PostgresRestart,
    /// SIGKILL PostgreSQL's postmaster (a crash: no checkpoint, sessions cut
    /// mid-transaction), start it again after a pause (crash recovery).
    PostgresKill,
    /// Start another history instance in a fresh consumer group on the
    /// topic that already holds events (it reads from the start, beside the
    /// running group), stop it after a pause.
    HistoryJoin,
    /// Delay every chunk crossing a network link, both ways, then restore it.
    NetLatency,
    /// Cut every open connection on a network link once (clients reconnect).
    NetDrop,
    /// Cut a network link: open connections are reset and new ones refused
    /// until it heals.
    NetPartition,
    /// Requests from the load reach a wallet instance, but the answers are
    /// lost (the connection drops): the client cannot tell whether it
    /// applied, and retries.
    LostResponse,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::BrokerKill,
        FaultKind::HistoryKill,
        FaultKind::HistoryPause,
        FaultKind::WalletKill,
        FaultKind::PostgresRestart,
        FaultKind::PostgresKill,
        FaultKind::HistoryJoin,
        FaultKind::NetLatency,
        FaultKind::NetDrop,
        FaultKind::NetPartition,
        FaultKind::LostResponse,
    ];

    /// A fault on a network link (through a fault proxy), not a process.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::NetLatency
                | FaultKind::NetDrop
                | FaultKind::NetPartition
                | FaultKind::LostResponse
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::BrokerKill => "broker_kill",
            FaultKind::HistoryKill => "history_kill",
            FaultKind::HistoryPause => "history_pause",
            FaultKind::WalletKill => "wallet_kill",
            FaultKind::PostgresRestart => "postgres_restart",
            FaultKind::PostgresKill => "postgres_kill",
            FaultKind::HistoryJoin => "history_join",
            FaultKind::NetLatency => "net_latency",
            FaultKind::NetDrop => "net_drop",
            FaultKind::NetPartition => "net_partition",
            FaultKind::LostResponse => "lost_response",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network link a fault can act on (through the harness's fault proxy).
/// In files it is written as its name: `client->wallet`, `client->wallet-2`,
/// `services->postgres`, `services->broker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Link {
    /// Load generator → wallet instance `n` (from 0): the HTTP API.
    ClientWallet(usize),
    /// Every service instance → PostgreSQL.
    Postgres,
    /// Every service instance → the broker (which advertises the proxy, so
    /// clients stay behind it after bootstrap).
    Broker,
}

impl Link {
    /// The name chaos.jsonl and scenario files use.
    pub fn name(self) -> String {
        match self {
            Link::ClientWallet(0) => "client->wallet".to_owned(),
            Link::ClientWallet(index) => format!("client->wallet-{}", index + 1),
            Link::Postgres => "services->postgres".to_owned(),
            Link::Broker => "services->broker".to_owned(),
        }
    }
}

impl From<Link> for String {
    fn from(link: Link) -> String {
        link.name()
    }
}

impl TryFrom<String> for Link {
    type Error = String;

    fn try_from(name: String) -> Result<Link, String> {
        let wallet = |n: &str| match n.parse::<usize>() {
            Ok(n) if n >= 2 => Ok(Link::ClientWallet(n - 1)),
            _ => Err(format!("bad wallet instance in link {name:?}")),
        };
        match name.as_str() {
            "client->wallet" => Ok(Link::ClientWallet(0)),
            "services->postgres" => Ok(Link::Postgres),
            "services->broker" => Ok(Link::Broker),
            other => match other.strip_prefix("client->wallet-") {
                Some(n) => wallet(n),
                None => Err(format!(
                    "unknown link {name:?}: client->wallet[-N], services->postgres or services->broker"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// The fault took effect (process killed, stopped, shut down).
    Injected,
    /// The fault was undone (process started again, continued).
    Healed,
    /// The target answered its health check again after healing.
    Recovered,
}

/// A line of `chaos.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosEvent {
    /// Numbers the faults of a run from 1; the phases of one fault share it.
    pub fault_id: u32,
    pub kind: FaultKind,
    pub phase: FaultPhase,
    pub at: DateTime<Utc>,
    /// Milliseconds since the load started.
    pub offset_ms: u64,
    /// The process acted on (`broker`, `history`, ...) and its pid.
    pub target: String,
    pub pid: Option<u32>,
    #[serde(default)]
    pub detail: String,
}

/// One fault from injection to recovery (or to healing, if it never
/// recovered; or open, if it was never healed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub fault_id: u32,
    pub kind: FaultKind,
    pub target: String,
    pub start: DateTime<Utc>,
    pub healed: Option<DateTime<Utc>>,
    pub recovered: Option<DateTime<Utc>>,
}

impl FaultWindow {
    /// The end of the window: recovery, else healing, else open.
    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.recovered.or(self.healed)
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.start && self.end().is_none_or(|end| at <= end)
    }

    pub fn label(&self) -> String {
        format!("fault #{} {} ({})", self.fault_id, self.kind, self.target)
    }
}

/// Folds a timeline into one window per fault, in injection order.
pub fn fault_windows(events: &[ChaosEvent]) -> Vec<FaultWindow> {
    let mut windows: Vec<FaultWindow> = Vec::new();
    for event in events {
        let existing = windows.iter_mut().find(|w| w.fault_id == event.fault_id);
        match (event.phase, existing) {
            (FaultPhase::Injected, None) => windows.push(FaultWindow {
                fault_id: event.fault_id,
                kind: event.kind,
                target: event.target.clone(),
                start: event.at,
                healed: None,
                recovered: None,
            }),
            (FaultPhase::Healed, Some(window)) => window.healed = Some(event.at),
            (FaultPhase::Recovered, Some(window)) => window.recovered = Some(event.at),
            _ => {}
        }
    }
    windows.sort_by_key(|w| (w.start, w.fault_id));
    windows
}

/// The windows that contain `at`, as labels; empty outside every fault.
pub fn windows_at(windows: &[FaultWindow], at: DateTime<Utc>) -> Vec<String> {
    windows
        .iter()
        .filter(|w| w.contains(at))
        .map(FaultWindow::label)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines file; a missing file is an error, blank lines are skipped.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReadError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: name.clone(),
        source,
    })?;
    let mut records = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ReadError::Io {
            path: name.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| ReadError::Parse {
            path: name.clone(),
            line: index + 1,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Appends records as JSON lines.
pub fn write_jsonl<T: Serialize>(out: &mut impl Write, records: &[T]) -> std::io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes `records` to a new file at `path`, one JSON line each.
pub fn write_jsonl_file<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(File::create(path)?);
    write_jsonl(&mut out, records)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn event(fault_id: u32, phase: FaultPhase, seconds: i64) -> ChaosEvent {
        ChaosEvent {
            fault_id,
            kind: FaultKind::BrokerKill,
            phase,
            at: at(seconds),
            offset_ms: 0,
            target: "broker".into(),
            pid: Some(42),
            detail: String::new(),
        }
    }

    #[test]
    fn windows_span_injection_to_recovery() {
        let events = [
            event(1, FaultPhase::Injected, 10),
            event(2, FaultPhase::Injected, 12),
            event(1, FaultPhase::Healed, 15),
            event(1, FaultPhase::Recovered, 16),
        ];
        let windows = fault_windows(&events);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].end(), Some(at(16)));
        assert!(windows[0].contains(at(16)) && !windows[0].contains(at(17)));
        // Never healed: open to the end of the run.
        assert!(windows[1].contains(at(1_000)));
        assert_eq!(
            windows_at(&windows, at(11)),
            ["fault #1 broker_kill (broker)"]
        );
        assert!(windows_at(&windows, at(5)).is_empty());
    }

    #[test]
    fn op_records_round_trip_with_string_amounts() {
        let record = OpRecord {
            op_id: 7,
            kind: OpKind::Transfer,
            wallet_index: Some(1),
            to_wallet_index: Some(2),
            wallet_id: Some(Uuid::from_u128(1)),
            to_wallet_id: Some(Uuid::from_u128(2)),
            amount: Some("12.3400".parse().unwrap()),
            idempotency_key: Some("k".into()),
            outcome: Outcome::Indeterminate,
            status: None,
            error_code: Some("timeout".into()),
            intended_at: at(0),
            latency_us: 1_500,
            attempts: Vec::new(),
        };
        let mut out = Vec::new();
        write_jsonl(&mut out, std::slice::from_ref(&record)).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(r#""amount":"12.3400""#), "{line}");
        assert!(line.contains(r#""outcome":"indeterminate""#), "{line}");
        let back: OpRecord = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(back, record);
    }

    fn attempt(outcome: Outcome, code: &str, started_us: u64) -> Attempt {
        Attempt {
            outcome,
            status: (outcome != Outcome::Indeterminate).then_some(200),
            error_code: Some(code.to_owned()),
            started_us,
            latency_us: 100,
            observed: None,
        }
    }

    #[test]
    fn an_operation_fails_only_if_every_attempt_was_refused() {
        use Outcome::*;
        assert_eq!(Outcome::fold([]), None);
        assert_eq!(Outcome::fold([Failed]), Some(Failed));
        assert_eq!(Outcome::fold([Failed, Failed]), Some(Failed));
        // The case of the false alarm: cut off by a kill, then refused at
        // connect while the service was down. It may have applied.
        assert_eq!(Outcome::fold([Indeterminate, Failed]), Some(Indeterminate));
        assert_eq!(Outcome::fold([Failed, Indeterminate]), Some(Indeterminate));
        assert_eq!(Outcome::fold([Indeterminate, Failed, Ok]), Some(Ok));
        assert_eq!(Outcome::fold([Ok, Indeterminate]), Some(Ok));
    }

    #[test]
    fn a_record_keeps_every_attempt_and_the_deciding_ones_code() {
        let intent = OpRecord {
            op_id: 9,
            kind: OpKind::Fund,
            wallet_index: Some(1),
            to_wallet_index: None,
            wallet_id: Some(Uuid::from_u128(1)),
            to_wallet_id: None,
            amount: Some(Decimal::ONE),
            idempotency_key: Some("k".into()),
            outcome: Outcome::Indeterminate,
            status: None,
            error_code: None,
            intended_at: at(0),
            latency_us: 0,
            attempts: Vec::new(),
        };
        let attempts = vec![
            attempt(Outcome::Indeterminate, "connection_error", 0),
            attempt(Outcome::Failed, "connect_refused", 300),
        ];
        let record = intent.clone().settle(attempts);
        assert_eq!(record.outcome, Outcome::Indeterminate);
        assert_eq!(record.error_code.as_deref(), Some("connection_error"));
        assert_eq!(record.latency_us, 400);
        assert_eq!(record.attempt_count(), 2);
        assert!(!record.resolved_by_retry());

        let mut attempts = record.attempts.clone();
        attempts.push(attempt(Outcome::Ok, "", 2_000));
        let record = intent.settle(attempts);
        assert_eq!(record.outcome, Outcome::Ok);
        assert!(record.resolved_by_retry());
        let line = serde_json::to_string(&record).unwrap();
        let back: OpRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
    }
}
