//! A TCP fault proxy for one network link of the system under test.
//!
//! The chaos harness puts a [`FaultProxy`] on each link (client → wallet HTTP,
//! services → PostgreSQL, services → the broker) and its seeded schedule
//! switches the proxy's [`LinkMode`] at run time. Everything listens and
//! connects on 127.0.0.1 only.
//!
//! How each mode behaves (a change takes effect at once, for open and new
//! connections alike):
//! - [`LinkMode::Pass`]: bytes pass untouched.
//! - [`LinkMode::Latency`]: every chunk read in either direction is held for
//!   the delay before it is written on. A direction handles one chunk at a
//!   time, which keeps order and bounds memory, and also caps a bulk transfer
//!   at one chunk per delay.
//! - [`LinkMode::Partition`]: every open connection is reset on both sides,
//!   and new connections are accepted and reset at once, never forwarded,
//!   until the mode changes. Healing is `set_mode(LinkMode::Pass)`.
//! - [`LinkMode::LoseResponses`]: requests reach the upstream, but the first
//!   bytes the upstream sends back on a connection are discarded and the
//!   connection is reset, so the client sees it drop without an answer.
//!
//! [`FaultProxy::drop_connections`] is the one-shot "dropped connections"
//! fault: it resets every open connection and leaves the mode alone.
//!
//! Cuts are abortive closes (`SO_LINGER` 0, so a RST) because a peer that has
//! to notice a partition should see an error promptly, not a clean end of
//! stream it might take for a finished response.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

/// Bytes read per chunk in each direction; also the memory a direction holds
/// while a chunk waits out a latency.
const CHUNK_BYTES_MAX: usize = 16 * 1024;

/// Open connections per proxy; more are refused, so a client that leaks
/// connections cannot make the proxy grow without bound (each holds two
/// chunk buffers).
const CONNECTIONS_MAX: usize = 1024;

/// Bound on connecting to the upstream; on loopback a refusal is immediate,
/// so only a stopped (SIGSTOPped) upstream with a full backlog gets near it.
const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Pause after a failed accept, so running out of file descriptors cannot
/// turn the accept loop into a busy loop.
const ACCEPT_RETRY_MS: u64 = 10;

/// How long [`FaultProxy::shutdown`] waits for the cut connections to close
/// before it aborts their tasks.
const SHUTDOWN_DRAIN_TIMEOUT_MS: u64 = 2_000;

/// What a link does to the bytes crossing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Bytes pass untouched.
    Pass,
    /// Every chunk in each direction is delayed by this much (order kept per
    /// direction).
    Latency { ms: u64 },
    /// Open connections are cut and new ones are closed at once, until the
    /// mode changes.
    Partition,
    /// Requests reach the upstream; the first answer on each connection is
    /// discarded and the connection is cut.
    LoseResponses,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections the listener accepted, refused ones included.
    pub connections_accepted: u64,
    /// Accepted connections closed at once: by a partition or the connection
    /// limit.
    pub connections_refused: u64,
    /// Open connections cut by a partition, `drop_connections` or shutdown.
    pub connections_cut: u64,
    /// Connections closed because the upstream could not be reached.
    pub upstream_connect_failures: u64,
    /// Connections whose answer was discarded under `LoseResponses`.
    pub responses_lost: u64,
    /// Bytes written to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients.
    pub bytes_to_client: u64,
}

/// A running proxy: a listener task and one task per open connection.
/// [`FaultProxy::shutdown`] (or dropping it) stops the listener and closes
/// every connection.
pub struct FaultProxy {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    listener_task: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle, its listener and its connections.
struct Shared {
    name: String,
    upstream: SocketAddr,
    mode: watch::Sender<LinkMode>,
    /// Bumped to cut every open connection; each connection watches it.
    cut_generation: watch::Sender<u64>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_cut: AtomicU64,
    upstream_connect_failures: AtomicU64,
    responses_lost: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl FaultProxy {
    /// Binds 127.0.0.1:`listen_port` (0 picks a free port) and forwards every
    /// accepted connection to `upstream`, starting in [`LinkMode::Pass`].
    pub async fn start(name: &str, listen_port: u16, upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port))
            .await
            .with_context(|| format!("proxy {name}: binding 127.0.0.1:{listen_port}"))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            upstream,
            mode: watch::Sender::new(LinkMode::Pass),
            cut_generation: watch::Sender::new(0),
            counters: Counters::default(),
        });
        let (stop, stop_rx) = oneshot::channel();
        let listener_task = tokio::spawn(accept_loop(shared.clone(), listener, stop_rx));
        info!(proxy = name, %local_addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            shared,
            local_addr,
            stop: Some(stop),
            listener_task: Some(listener_task),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Switches the fault mode; open connections see it at their next chunk,
    /// and a partition cuts them at once.
    pub fn set_mode(&self, mode: LinkMode) {
        let previous = self.shared.mode.send_replace(mode);
        info!(proxy = %self.shared.name, ?mode, ?previous, "link mode set");
    }

    pub fn mode(&self) -> LinkMode {
        *self.shared.mode.borrow()
    }

    /// Cuts every open connection once, without changing the mode.
    pub fn drop_connections(&self) {
        self.shared
            .cut_generation
            .send_modify(|generation| *generation += 1);
        info!(proxy = %self.shared.name, "dropping open connections");
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections_accepted: load(&c.connections_accepted),
            connections_refused: load(&c.connections_refused),
            connections_cut: load(&c.connections_cut),
            upstream_connect_failures: load(&c.upstream_connect_failures),
            responses_lost: load(&c.responses_lost),
            bytes_to_upstream: load(&c.bytes_to_upstream),
            bytes_to_client: load(&c.bytes_to_client),
        }
    }

    /// Stops accepting, cuts every open connection and waits (bounded) for
    /// them to close.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the listener task already ended; nothing to stop.
            let _ = stop.send(());
        }
        if let Some(task) = self.listener_task.take()
            && let Err(err) = task.await
        {
            warn!(proxy = %self.shared.name, "listener task failed: {err}");
        }
        info!(proxy = %self.shared.name, "fault proxy stopped");
    }
}

impl Drop for FaultProxy {
    /// Aborting the listener task drops its `JoinSet`, which aborts every
    /// connection task and so closes their sockets (without the reset that
    /// `shutdown` sends, as a destructor cannot wait for the tasks).
    fn drop(&mut self) {
        if let Some(task) = self.listener_task.take() {
            task.abort();
        }
    }
}

impl Shared {
    fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    // Owning the connection tasks here means aborting this task aborts them.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = joined {
                    warn!(proxy = %shared.name, "connection task failed: {err}");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(proxy = %shared.name, "accept failed: {err}");
                sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        add(&shared.counters.connections_accepted, 1);
        let mode = shared.mode();
        if mode == LinkMode::Partition || connections.len() >= CONNECTIONS_MAX {
            debug!(proxy = %shared.name, %peer, ?mode, "connection refused");
            add(&shared.counters.connections_refused, 1);
            reset(&client);
            continue;
        }
        debug!(proxy = %shared.name, %peer, "connection accepted");
        // Subscribed here, not in the task, so a cut issued before the task
        // first runs still reaches this connection.
        let mode_rx = shared.mode.subscribe();
        let cut_rx = shared.cut_generation.subscribe();
        connections.spawn(serve_connection(
            shared.clone(),
            client,
            peer,
            mode_rx,
            cut_rx,
        ));
    }
    drop(listener);
    shared
        .cut_generation
        .send_modify(|generation| *generation += 1);
    let drain = async { while connections.join_next().await.is_some() {} };
    if timeout(Duration::from_millis(SHUTDOWN_DRAIN_TIMEOUT_MS), drain)
        .await
        .is_err()
    {
        warn!(proxy = %shared.name, "connections did not close in time; aborting them");
    }
}

/// Why a connection ended.
enum End {
    /// Both directions finished (or failed) on their own.
    Closed(io::Result<()>),
    /// The upstream could not be reached.
    UpstreamUnreachable(io::Error),
    /// A partition or `drop_connections` cut it.
    Cut(&'static str),
    /// `LoseResponses` discarded the upstream's answer.
    ResponseLost,
}

async fn serve_connection(
    shared: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut mode_rx: watch::Receiver<LinkMode>,
    mut cut_rx: watch::Receiver<u64>,
) {
    let mut upstream = None;
    let end = tokio::select! {
        end = forward(&shared, &mut client, &mut upstream) => end,
        reason = cut_signal(&mut mode_rx, &mut cut_rx) => End::Cut(reason),
    };
    let name = &shared.name;
    match end {
        End::Closed(Ok(())) => {
            debug!(proxy = %name, %peer, "connection closed");
            return;
        }
        End::Closed(Err(err)) => {
            debug!(proxy = %name, %peer, "connection failed: {err}");
            return;
        }
        End::UpstreamUnreachable(err) => {
            debug!(proxy = %name, %peer, "upstream unreachable: {err}");
            add(&shared.counters.upstream_connect_failures, 1);
        }
        End::Cut(reason) => {
            debug!(proxy = %name, %peer, reason, "connection cut");
            add(&shared.counters.connections_cut, 1);
        }
        End::ResponseLost => {
            debug!(proxy = %name, %peer, "response discarded, connection cut");
            add(&shared.counters.responses_lost, 1);
        }
    }
    // Counted before the close, so a client that sees the close sees the count.
    reset(&client);
    if let Some(upstream) = &upstream {
        reset(upstream);
    }
}

/// Connects to the upstream (into `upstream`, so the caller can reset it) and
/// pumps both directions until both end or one fails.
async fn forward(shared: &Shared, client: &mut TcpStream, upstream: &mut Option<TcpStream>) -> End {
    let connect = timeout(
        Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS),
        TcpStream::connect(shared.upstream),
    );
    let upstream = match connect.await {
        Ok(Ok(stream)) => upstream.insert(stream),
        Ok(Err(err)) => return End::UpstreamUnreachable(err),
        Err(_) => return End::UpstreamUnreachable(io::ErrorKind::TimedOut.into()),
    };
    // Nagle would add its own delay to small chunks and blur the latency mode.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let result = tokio::try_join!(
        pump(shared, Direction::ToUpstream, client_read, upstream_write),
        pump(shared, Direction::ToClient, upstream_read, client_write),
    );
    match result {
        Ok(_) => End::Closed(Ok(())),
        Err(end) => end,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToUpstream,
    ToClient,
}

/// Copies one direction chunk by chunk, applying the mode to each chunk.
/// An end of stream is passed on as a write shutdown, so half-closed
/// connections keep working.
async fn pump(
    shared: &Shared,
    direction: Direction,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
) -> Result<(), End> {
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        let read = from
            .read(&mut buf)
            .await
            .map_err(|err| End::Closed(Err(err)))?;
        if read == 0 {
            return to.shutdown().await.map_err(|err| End::Closed(Err(err)));
        }
        match shared.mode() {
            LinkMode::Pass => {}
            LinkMode::Latency { ms } => sleep(Duration::from_millis(ms)).await,
            // The cut watcher acts on this too; checking here keeps a chunk
            // that raced it from crossing the partition.
            LinkMode::Partition => return Err(End::Cut("partition")),
            LinkMode::LoseResponses if direction == Direction::ToClient => {
                return Err(End::ResponseLost);
            }
            LinkMode::LoseResponses => {}
        }
        to.write_all(&buf[..read])
            .await
            .map_err(|err| End::Closed(Err(err)))?;
        let written = read as u64;
        match direction {
            Direction::ToUpstream => add(&shared.counters.bytes_to_upstream, written),
            Direction::ToClient => add(&shared.counters.bytes_to_client, written),
        }
    }
}

/// Resolves when the connection must be cut: the mode is (or becomes)
/// `Partition`, or `drop_connections` (or shutdown) bumps the generation.
async fn cut_signal(
    mode_rx: &mut watch::Receiver<LinkMode>,
    cut_rx: &mut watch::Receiver<u64>,
) -> &'static str {
    loop {
        if *mode_rx.borrow_and_update() == LinkMode::Partition {
            return "partition";
        }
        tokio::select! {
            changed = mode_rx.changed() => if changed.is_err() { return "proxy gone" },
            changed = cut_rx.changed() => {
                return if changed.is_err() { "proxy gone" } else { "dropped" };
            }
        }
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// Makes the coming close abortive (RST), so the peer sees an error at once.
fn reset(stream: &TcpStream) {
    // Failing only means the socket is already dead; the close still happens.
    let _ = stream.set_zero_linger();
}
