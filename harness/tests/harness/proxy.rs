//! The fault proxy between a client socket and a loopback echo server, one
//! test per mode: what the client sees, and what reached the server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::net::free_port;
use harness::proxy::{FaultProxy, LinkMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

use crate::common::eventually;

/// Bound on any read or write that should succeed.
const IO_TIMEOUT_MS: u64 = 5_000;
/// Bound on a cut reaching the client: "promptly", with room for a loaded
/// machine.
const CUT_TIMEOUT_MS: u64 = 2_000;

/// An echo server on 127.0.0.1 that keeps every byte it received, so a test
/// can tell a request that reached the server from one that did not.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Echo {
    async fn start() -> Result<Echo> {
        Ok(Echo::serve(TcpListener::bind("127.0.0.1:0").await?))
    }

    fn serve(listener: TcpListener) -> Echo {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let read = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        record
                            .lock()
                            .expect("not poisoned")
                            .extend_from_slice(&buf[..read]);
                        if stream.write_all(&buf[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo { addr, received }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().expect("not poisoned").clone()
    }

    fn has_received(&self, needle: &[u8]) -> bool {
        self.received().windows(needle.len()).any(|w| w == needle)
    }
}

async fn connect(proxy: &FaultProxy) -> Result<TcpStream> {
    Ok(TcpStream::connect(proxy.local_addr()).await?)
}

/// Writes `message` and reads back as many bytes, concurrently so a large
/// message cannot deadlock on full socket buffers.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Result<Vec<u8>> {
    let (mut read, mut write) = stream.split();
    let mut echoed = vec![0u8; message.len()];
    let exchange =
        async { tokio::try_join!(write.write_all(message), read.read_exact(&mut echoed)) };
    timeout(Duration::from_millis(IO_TIMEOUT_MS), exchange)
        .await
        .context("round trip timed out")??;
    Ok(echoed)
}

/// The client sees the connection end (EOF or an error) within
/// [`CUT_TIMEOUT_MS`], without receiving any byte.
async fn assert_closed(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 1024];
    match timeout(Duration::from_millis(CUT_TIMEOUT_MS), stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Ok(()),
        Ok(Ok(read)) => bail!("received {read} bytes on a connection that should be cut"),
        Err(_) => bail!("connection still open after {CUT_TIMEOUT_MS} ms"),
    }
}

/// Sends `message` (the write may already fail on a reset connection) and
/// expects the connection to end without an answer.
async fn assert_no_reply(stream: &mut TcpStream, message: &[u8]) -> Result<()> {
    let _ = stream.write_all(message).await;
    assert_closed(stream).await
}

/// Distinct bytes per `seed`, so a mixed-up connection cannot pass.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn pass_forwards_bytes_unchanged_on_several_connections() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("pass", 0, echo.addr).await?;
    assert_eq!(proxy.mode(), LinkMode::Pass);

    let message_len = 256 * 1024;
    let clients = (0..4u8).map(|seed| {
        let addr = proxy.local_addr();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            let message = pattern(seed, message_len);
            let echoed = round_trip(&mut stream, &message).await?;
            ensure!(
                echoed == message,
                "connection {seed} got different bytes back"
            );
            anyhow::Ok(())
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await??;
    }

    let total = 4 * message_len as u64;
    ensure!(echo.received().len() as u64 == total);
    eventually("every byte counted", IO_TIMEOUT_MS, || {
        let stats = proxy.stats();
        stats.bytes_to_upstream == total && stats.bytes_to_client == total
    })
    .await?;
    let stats = proxy.stats();
    ensure!(stats.connections_accepted == 4, "{stats:?}");
    ensure!(
        stats.connections_cut + stats.connections_refused == 0,
        "{stats:?}"
    );
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn latency_delays_each_direction_and_keeps_data_intact() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("latency", 0, echo.addr).await?;
    let mut open = connect(&proxy).await?;
    ensure!(round_trip(&mut open, b"before").await? == b"before");

    // Applies to a connection opened before the change.
    proxy.set_mode(LinkMode::Latency { ms: 200 });
    assert_eq!(proxy.mode(), LinkMode::Latency { ms: 200 });
    let started = Instant::now();
    ensure!(round_trip(&mut open, b"ping").await? == b"ping");
    let elapsed = started.elapsed();
    // 200 ms to the server plus 200 ms back; one delayed direction is not enough.
    ensure!(
        elapsed >= Duration::from_millis(400),
        "round trip took {elapsed:?}"
    );

    // Several chunks in a row (more than one read buffer) arrive intact and
    // in order on a new connection.
    let mut fresh = connect(&proxy).await?;
    let message = pattern(7, 40 * 1024);
    let started = Instant::now();
    ensure!(round_trip(&mut fresh, &message).await? == message);
    ensure!(started.elapsed() >= Duration::from_millis(400));

    proxy.set_mode(LinkMode::Pass);
    ensure!(round_trip(&mut open, b"after").await? == b"after");
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn partition_cuts_open_connections_and_refuses_new_ones_until_healed() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("partition", 0, echo.addr).await?;
    let mut open = connect(&proxy).await?;
    ensure!(round_trip(&mut open, b"hello").await? == b"hello");

    proxy.set_mode(LinkMode::Partition);
    assert_closed(&mut open).await.context("open connection")?;

    let mut during = connect(&proxy).await?;
    assert_no_reply(&mut during, b"lost in the partition")
        .await
        .context("new connection during the partition")?;
    ensure!(
        !echo.has_received(b"lost in the partition"),
        "a request crossed the partition"
    );
    let stats = proxy.stats();
    ensure!(stats.connections_cut == 1, "{stats:?}");
    ensure!(stats.connections_refused == 1, "{stats:?}");

    proxy.set_mode(LinkMode::Pass);
    let mut healed = connect(&proxy).await?;
    ensure!(round_trip(&mut healed, b"healed").await? == b"healed");
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn lose_responses_delivers_the_request_but_drops_the_answer() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("lose", 0, echo.addr).await?;
    let mut open = connect(&proxy).await?;
    ensure!(round_trip(&mut open, b"hello").await? == b"hello");

    proxy.set_mode(LinkMode::LoseResponses);
    assert_no_reply(&mut open, b"request-1")
        .await
        .context("connection opened before the change")?;
    let mut fresh = connect(&proxy).await?;
    assert_no_reply(&mut fresh, b"request-2")
        .await
        .context("connection opened after the change")?;
    eventually("the server received both requests", IO_TIMEOUT_MS, || {
        echo.has_received(b"request-1") && echo.has_received(b"request-2")
    })
    .await?;
    let stats = proxy.stats();
    ensure!(stats.responses_lost == 2, "{stats:?}");

    proxy.set_mode(LinkMode::Pass);
    let mut healed = connect(&proxy).await?;
    ensure!(round_trip(&mut healed, b"answered").await? == b"answered");
    ensure!(proxy.stats().responses_lost == 2);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn drop_connections_cuts_open_connections_and_keeps_the_mode() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("drop", 0, echo.addr).await?;
    // A mode other than the initial one, to see that dropping keeps it.
    proxy.set_mode(LinkMode::Latency { ms: 1 });
    let mut first = connect(&proxy).await?;
    let mut second = connect(&proxy).await?;
    ensure!(round_trip(&mut first, b"one").await? == b"one");
    ensure!(round_trip(&mut second, b"two").await? == b"two");

    proxy.drop_connections();
    assert_closed(&mut first)
        .await
        .context("first connection")?;
    assert_closed(&mut second)
        .await
        .context("second connection")?;
    assert_eq!(proxy.mode(), LinkMode::Latency { ms: 1 });
    ensure!(proxy.stats().connections_cut == 2, "{:?}", proxy.stats());

    let mut fresh = connect(&proxy).await?;
    ensure!(round_trip(&mut fresh, b"three").await? == b"three");
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unreachable_upstream_closes_the_client_and_the_proxy_recovers() -> Result<()> {
    let upstream: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let proxy = FaultProxy::start("down", 0, upstream).await?;

    let mut client = connect(&proxy).await?;
    assert_no_reply(&mut client, b"anyone there?").await?;
    ensure!(
        proxy.stats().upstream_connect_failures == 1,
        "{:?}",
        proxy.stats()
    );

    // The upstream comes back on the same port.
    let listener = TcpListener::bind(upstream)
        .await
        .with_context(|| format!("rebinding {upstream}"))?;
    let _echo = Echo::serve(listener);
    let mut client = connect(&proxy).await?;
    ensure!(round_trip(&mut client, b"back").await? == b"back");
    ensure!(proxy.stats().upstream_connect_failures == 1);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_connections_and_the_listener() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = FaultProxy::start("shutdown", 0, echo.addr).await?;
    let addr = proxy.local_addr();
    let mut open = connect(&proxy).await?;
    ensure!(round_trip(&mut open, b"hello").await? == b"hello");

    proxy.shutdown().await;
    assert_closed(&mut open).await?;
    ensure!(
        TcpStream::connect(addr).await.is_err(),
        "the proxy still accepts after shutdown"
    );
    Ok(())
}
