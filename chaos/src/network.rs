//! Faults on the network links of a system, through the fault proxies the
//! harness put on them ([`harness::system::Proxies`]): a slow link, dropped
//! connections, a partition that heals, and answers lost after the request
//! reached the wallet. A network fault acts on no process, so it has no
//! pid; it is healed by letting bytes pass again, and recovered when the
//! parts behind the link answer through it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::{
    proxy::LinkMode,
    system::{Link, Role, System},
};
use run_log::FaultKind;

use crate::recovery::wait_recovered;

/// The delay a `net_latency` fault adds to every chunk, each way: a few
/// times a transfer's usual latency, far below the clients' timeouts.
pub const NET_LATENCY_MS: u64 = 150;

/// Why a fault on `link` cannot be injected, if it cannot.
pub fn skip_reason(system: &System, link: Link) -> Option<String> {
    system.proxy(link).is_none().then(|| {
        format!(
            "skipped: no fault proxy on {} (network faults are off, or the part behind it is not this run's)",
            link.name()
        )
    })
}

/// Puts `kind` on `link`; in effect when this returns.
pub fn inject(system: &System, kind: FaultKind, link: Link) -> Result<()> {
    let proxy = system
        .proxy(link)
        .with_context(|| format!("no fault proxy on {}", link.name()))?;
    match kind {
        FaultKind::NetLatency => proxy.set_mode(LinkMode::Latency { ms: NET_LATENCY_MS }),
        FaultKind::NetDrop => proxy.drop_connections(),
        FaultKind::NetPartition => proxy.set_mode(LinkMode::Partition),
        FaultKind::LostResponse => proxy.set_mode(LinkMode::LoseResponses),
        other => bail!("{other} is not a network fault"),
    }
    Ok(())
}

/// Lets bytes pass on `link` again.
pub fn heal(system: &System, link: Link) -> Result<()> {
    system
        .proxy(link)
        .with_context(|| format!("no fault proxy on {}", link.name()))?
        .set_mode(LinkMode::Pass);
    Ok(())
}

/// Waits until the parts behind `link` answer through it: the wallet
/// instance through its client proxy; every service's health (which asks
/// PostgreSQL) for the database link; the history group's takeover (which
/// needs the broker) for the broker link.
pub async fn wait_recovered_through(system: &System, link: Link, within: Duration) -> Result<()> {
    match link {
        Link::ClientWallet(index) => {
            let url = system
                .wallets
                .get(index)
                .map(|wallet| format!("{}/health", wallet.client_url))
                .with_context(|| format!("no wallet instance {index}"))?;
            harness::net::wait_for_http_ok(&url, within).await
        }
        Link::Postgres => {
            let both = async {
                system.wait_ready(Role::Wallet).await?;
                system.wait_ready(Role::History).await
            };
            match tokio::time::timeout(within, both).await {
                Ok(ready) => ready,
                Err(_) => bail!(
                    "the services did not answer within {} ms",
                    within.as_millis()
                ),
            }
        }
        Link::Broker => wait_recovered(system, Role::History, 0, within).await,
    }
}
