//! When a healed part counts as recovered: the broker and PostgreSQL
//! accept TCP connections, the healed wallet instance answers `/health`
//! with 200, and the history members have taken the partitions over: each
//! member's `/health` answers 200, together they list every partition of
//! the topic, each exactly once, AND the broker describes the consumer
//! group as `Stable` with as many members as the system runs. Every
//! partition, because after a kill the dead member keeps its share until
//! its session times out while the others may already hold the rest.
//! Exactly once and the broker's view, because a member stopped past its
//! session timeout still lists its old partitions for a moment after it
//! continues, until it learns the group has moved on.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use harness::system::{Role, System};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

/// How long a healed part may take to answer again before the fault is
/// recorded as not recovered. A history member may wait a full session
/// timeout for its dead predecessor to be evicted, then a rebalance; the
/// run's session timeouts are well below this.
pub const RECOVERY_TIMEOUT_MS: u64 = 90_000;
/// Pause between recovery probes: fine enough to time a takeover to a
/// tenth of a second, coarse enough to cost nothing.
const RECOVERY_POLL_MS: u64 = 100;
/// Upper bound for one probe (an HTTP request, a group description).
const PROBE_TIMEOUT_MS: u64 = 2_000;

/// Waits up to `within` until instance `instance` of `role` serves again
/// (see the module docs for what that means per part; for history, the
/// whole group).
pub async fn wait_recovered(
    system: &System,
    role: Role,
    instance: usize,
    within: Duration,
) -> Result<()> {
    match role {
        Role::History => wait_history_takeover(system, within).await,
        _ => match tokio::time::timeout(within, system.wait_instance_ready(role, instance)).await {
            Ok(ready) => ready,
            Err(_) => bail!(
                "{} did not answer within {} ms",
                role.as_str(),
                within.as_millis()
            ),
        },
    }
}

async fn wait_history_takeover(system: &System, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .build()?;
    let urls: Vec<String> = system
        .history_urls()
        .iter()
        .map(|url| format!("{url}/health"))
        .collect();
    let probe = GroupProbe::new(
        &system.kafka_brokers,
        &system.options.topic,
        &system.options.group_id,
        urls.len(),
    )?;
    let outcome = loop {
        let waiting_for = match members_partitions(&client, &urls).await {
            Ok(held) if held.is_empty() => "history holds no partitions".to_owned(),
            Ok(held) => match probe.unsettled(held).await {
                Ok(None) => break Ok(()),
                Ok(Some(why)) => why,
                Err(err) => format!("asking the broker: {err:#}"),
            },
            Err(err) => format!("{err:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow!(
                "history did not take over the partitions within {} ms; last: {waiting_for}",
                within.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(RECOVERY_POLL_MS)).await;
    };
    // Destroying a librdkafka client joins its threads; keep that off the
    // async workers.
    let _ = tokio::task::spawn_blocking(move || drop(probe)).await;
    outcome
}

/// The partitions the history members say they hold, all together (a
/// partition twice when two members claim it); an error unless each
/// answers 200.
async fn members_partitions(client: &reqwest::Client, urls: &[String]) -> Result<Vec<i32>> {
    let mut held = Vec::new();
    for url in urls {
        held.extend(
            history_partitions(client, url)
                .await
                .with_context(|| format!("GET {url}"))?,
        );
    }
    held.sort_unstable();
    Ok(held)
}

/// The partitions the history member says it holds (`assigned_partitions:`
/// line of `/health`); an error unless it answers 200.
async fn history_partitions(client: &reqwest::Client, url: &str) -> Result<Vec<i32>> {
    let response = client.get(url).send().await?;
    let code = response.status();
    let body = response.text().await?;
    if code != reqwest::StatusCode::OK {
        bail!("status {code}: {}", body.lines().next().unwrap_or_default());
    }
    let line = body
        .lines()
        .find_map(|line| line.strip_prefix("assigned_partitions:"))
        .context("no assigned_partitions line in /health")?;
    line.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse()
                .with_context(|| format!("bad partition {part:?}"))
        })
        .collect()
}

/// Asks the broker about the topic and the history consumer group.
struct GroupProbe {
    client: Arc<BaseConsumer>,
    topic: String,
    group: String,
    /// Members the group must have.
    members: usize,
}

impl GroupProbe {
    fn new(brokers: &str, topic: &str, group: &str, members: usize) -> Result<Self> {
        // No group.id: this client only reads metadata and describes
        // groups, it never joins one.
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .context("creating a Kafka client to describe the consumer group")?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_owned(),
            group: group.to_owned(),
            members,
        })
    }

    /// `None` once the takeover is complete: the members together hold
    /// every partition of the topic exactly once (`held` is sorted), and
    /// the broker describes the group as `Stable` with every member. Else
    /// what is still missing.
    ///
    /// Every partition, not just one: after a kill, the dead member keeps
    /// its share until its session times out, and the new member may hold
    /// the other share meanwhile; events on the dead share wait.
    async fn unsettled(&self, held: Vec<i32>) -> Result<Option<String>> {
        let client = Arc::clone(&self.client);
        let (topic, group) = (self.topic.clone(), self.group.clone());
        let wanted_members = self.members;
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if partitions == 0 {
                return Ok(Some(format!("topic {topic} has no partitions yet")));
            }
            let all: Vec<i32> = (0..partitions)
                .filter_map(|p| i32::try_from(p).ok())
                .collect();
            if held != all {
                return Ok(Some(format!(
                    "history holds {held:?} of {partitions} partitions"
                )));
            }
            let list = client.fetch_group_list(Some(&group), timeout)?;
            let Some(info) = list.groups().iter().find(|info| info.name() == group) else {
                return Ok(Some(format!("group {group} unknown to the broker")));
            };
            let members = info.members().len();
            if info.state().eq_ignore_ascii_case("stable") && members == wanted_members {
                Ok(None)
            } else {
                Ok(Some(format!(
                    "group {group} is {} with {members} members",
                    info.state()
                )))
            }
        })
        .await?
    }
}
