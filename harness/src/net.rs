//! Ports and readiness probes for the processes the harness starts.
//!
//! A started process is not a ready process: callers wait until its port
//! accepts connections ([`wait_for_tcp`]) or its health endpoint answers 200
//! ([`wait_for_http_ok`]) before driving traffic at it. The HTTP probe speaks
//! plain HTTP/1.1 over a Tokio `TcpStream` so the harness does not pull in an
//! HTTP client stack for one GET.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// Pause between probe attempts.
const PROBE_RETRY_MS: u64 = 50;

/// Upper bound for one probe attempt, so a peer that accepts but never
/// answers cannot eat the whole budget in one go.
const PROBE_ATTEMPT_TIMEOUT_MS: u64 = 2_000;

/// Upper bound on the response bytes read to find the status line.
const STATUS_LINE_BYTES_MAX: usize = 1024;

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process can take it in
/// between; callers that bind later should be prepared to retry.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until a TCP connection to `addr` succeeds, for at most `within`.
pub async fn wait_for_tcp(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let attempt_ms = attempt_budget(deadline);
        let err = match timeout(attempt_ms, TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(err)) => anyhow!(err),
            Err(_) => anyhow!("connect timed out"),
        };
        if Instant::now() + Duration::from_millis(PROBE_RETRY_MS) >= deadline {
            return Err(err.context(format!(
                "{addr} did not accept TCP connections within {} ms",
                within.as_millis()
            )));
        }
        sleep(Duration::from_millis(PROBE_RETRY_MS)).await;
    }
}

/// Waits until `GET url` answers with status 200, for at most `within`.
/// Only `http://` URLs are supported.
pub async fn wait_for_http_ok(url: &str, within: Duration) -> Result<()> {
    let target = HttpTarget::parse(url)?;
    let deadline = Instant::now() + within;
    loop {
        let err = match timeout(attempt_budget(deadline), get_status(&target)).await {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(status)) => anyhow!("status {status}"),
            Ok(Err(err)) => err,
            Err(_) => anyhow!("request timed out"),
        };
        if Instant::now() + Duration::from_millis(PROBE_RETRY_MS) >= deadline {
            return Err(err.context(format!(
                "GET {url} did not answer 200 within {} ms",
                within.as_millis()
            )));
        }
        sleep(Duration::from_millis(PROBE_RETRY_MS)).await;
    }
}

fn attempt_budget(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).clamp(
        Duration::from_millis(1),
        Duration::from_millis(PROBE_ATTEMPT_TIMEOUT_MS),
    )
}

struct HttpTarget {
    host: String,
    port: u16,
    /// Path plus query, as sent in the request line.
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("parsing URL {url}"))?;
        if parsed.scheme() != "http" {
            bail!("wait_for_http_ok supports only http:// URLs, got {url}");
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("URL {url} has no host"))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let mut path = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Self { host, port, path })
    }

    /// The host as it goes into a socket address (IPv6 without brackets).
    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

async fn get_status(target: &HttpTarget) -> Result<u16> {
    let mut stream = TcpStream::connect((target.connect_host(), target.port)).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: */*\r\n\r\n",
        target.path, target.host, target.port
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < STATUS_LINE_BYTES_MAX {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let status_line = line.lines().next().unwrap_or_default();
    // "HTTP/1.1 200 OK"
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => code
            .parse()
            .with_context(|| format!("bad status line {status_line:?}")),
        _ => bail!("bad status line {status_line:?}"),
    }
}
