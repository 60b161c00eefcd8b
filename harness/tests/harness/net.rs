//! Free ports and readiness probes against loopback listeners.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use harness::net::{free_port, wait_for_http_ok, wait_for_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn free_port_can_be_bound() -> Result<()> {
    let port = free_port()?;
    ensure!(port != 0);
    let _listener = TcpListener::bind(("127.0.0.1", port))?;
    Ok(())
}

#[tokio::test]
async fn wait_for_tcp_sees_a_listener_and_times_out_without_one() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    wait_for_tcp(listener.local_addr()?, Duration::from_secs(5)).await?;

    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let started = Instant::now();
    let err = wait_for_tcp(closed, Duration::from_millis(300))
        .await
        .expect_err("nothing listens there");
    ensure!(
        started.elapsed() >= Duration::from_millis(250),
        "gave up after {:?}",
        started.elapsed()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    ensure!(format!("{err:#}").contains(&closed.to_string()), "{err:#}");
    Ok(())
}

/// Serves `statuses[i]` to the i-th request (the last one repeats) and
/// records the request heads.
async fn serve(statuses: Vec<u16>) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/health?deep=1", listener.local_addr()?);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            let mut buf = [0u8; 1024];
            let read = stream.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..read]).into_owned();
            assert!(
                head.starts_with("GET /health?deep=1 HTTP/1.1\r\n"),
                "request: {head:?}"
            );
            let response =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    Ok((url, served))
}

#[tokio::test]
async fn wait_for_http_ok_retries_until_200() -> Result<()> {
    let (url, served) = serve(vec![503, 503, 200]).await?;
    wait_for_http_ok(&url, Duration::from_secs(5)).await?;
    assert_eq!(served.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test]
async fn wait_for_http_ok_fails_on_persistent_errors() -> Result<()> {
    let (url, _served) = serve(vec![500]).await?;
    let err = wait_for_http_ok(&url, Duration::from_millis(300))
        .await
        .expect_err("500 is not ok");
    ensure!(format!("{err:#}").contains("status 500"), "{err:#}");
    ensure!(
        wait_for_http_ok("https://127.0.0.1:1/", Duration::from_millis(100))
            .await
            .is_err()
    );
    Ok(())
}
