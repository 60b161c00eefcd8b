use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use harness::system::{Launcher, System, SystemOptions};
use serde_json::{Value, json};
use service_kit::auth::{Keys, Subject, unix_now};

/// A started system, a client for it (sending the admin's token), and the
/// directory of its logs.
pub struct TestSystem {
    pub system: System,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    keys: Option<Keys>,
    /// Each wallet [`TestSystem::create_wallet`] opened, with its owner.
    owners: Mutex<HashMap<String, String>>,
}

/// A system with tokens checked.
pub async fn start() -> TestSystem {
    start_with(|_| {}).await
}

/// A system whose options `adjust` changed first.
pub async fn start_with(adjust: impl FnOnce(&mut SystemOptions)) -> TestSystem {
    let dir = tempfile::Builder::new()
        .prefix("wallet-system-test-")
        .tempdir()
        .unwrap();
    let server = harness::test_server().await.expect("test PostgreSQL");
    let mut options = SystemOptions::isolated(
        dir.path(),
        Launcher::multi_call(env!("CARGO_BIN_EXE_loadgen")),
    );
    options.database_url = Some(server.admin_url().to_owned());
    adjust(&mut options);
    let system = System::start(options).await.expect("system starts");
    let keys =
        system.options.auth_secret.as_ref().map(|secret| {
            Keys::new(secret.as_bytes()).expect("the harness's secret is long enough")
        });
    let mut target = TestSystem {
        system,
        http: reqwest::Client::new(),
        dir,
        keys,
        owners: Mutex::default(),
    };
    target.http =
        loadgen::auth::client(target.bearer(None).as_deref(), Duration::from_secs(30)).unwrap();
    target
}

impl TestSystem {
    /// An `Authorization` value for `user` (the admin for `None`); none in
    /// open mode.
    pub fn bearer(&self, user: Option<&str>) -> Option<String> {
        let subject = user.map_or(Subject::Admin, |user| Subject::user(user).unwrap());
        let keys = self.keys.as_ref()?;
        Some(keys.bearer(&subject, unix_now(), Duration::from_secs(3600)))
    }

    /// The token of the owner of `wallet` (one this helper opened), the
    /// admin's for any other.
    pub fn owner_bearer(&self, wallet: &str) -> Option<String> {
        let owner = self.owners.lock().unwrap().get(wallet).cloned();
        self.bearer(owner.as_deref())
    }

    /// POSTs to the wallet service: a transfer as its source wallet's
    /// owner, anything else as the admin.
    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.system.wallet_url))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let source = path
            .strip_prefix("/wallets/")
            .and_then(|rest| rest.strip_suffix("/transfer"));
        if let Some(bearer) = source.and_then(|from| self.owner_bearer(from)) {
            request = request.header("Authorization", bearer);
        }
        let response = request.send().await.expect("wallet answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_history(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.system.history_url))
            .send()
            .await
            .expect("history answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn history_health(&self) -> String {
        let url = format!("{}/health", self.system.history_url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET {base}/metrics`, parsed as Prometheus text.
    pub async fn scrape(&self, base: &str) -> Metrics {
        let response = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = response.text().await.unwrap();
        Metrics(
            openmetrics_parser::prometheus::parse_prometheus(&text)
                .unwrap_or_else(|err| panic!("not the Prometheus text format: {err:?}\n{text}")),
        )
    }

    pub async fn create_wallet(&self, user: &str) -> String {
        let (status, body) = self
            .post("/wallets", json!({ "user_id": user }), None)
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        self.owners
            .lock()
            .unwrap()
            .insert(id.clone(), user.to_owned());
        id
    }

    pub async fn fund(&self, wallet: &str, amount: &str) {
        let (status, body) = self
            .post(
                &format!("/wallets/{wallet}/fund"),
                json!({ "amount": amount }),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Funded wallets to move money between.
    pub async fn wallets(&self, count: usize, funds: &str) -> Vec<String> {
        let mut wallets = Vec::new();
        for i in 0..count {
            let id = self.create_wallet(&format!("user{}", i % 3)).await;
            self.fund(&id, funds).await;
            wallets.push(id);
        }
        wallets
    }

    /// Waits until the checker finds every invariant held: outbox drained,
    /// history an exact image of the ledger. Panics with its report if that
    /// does not happen within `within`.
    pub async fn converge(&self, within: Duration) -> consistency_checker::Report {
        let start = Instant::now();
        loop {
            let snapshot =
                consistency_checker::load(&self.system.wallet_db, &self.system.history_db)
                    .await
                    .expect("snapshot loads");
            let report = consistency_checker::check(&snapshot);
            if report.passed {
                return report;
            }
            if start.elapsed() > within {
                panic!(
                    "not converged after {within:?}:\n{}\nlogs in {}",
                    consistency_checker::render_text(&report),
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// [`TestSystem::converge`], then the plain count check on top of the
    /// checker: history holds as many entries as the ledger. Returns it.
    pub async fn converge_exactly(&self, within: Duration) -> i64 {
        assert!(self.converge(within).await.passed);
        let ledger = self
            .count(
                &self.system.wallet_db,
                "SELECT count(*) FROM ledger_entries",
            )
            .await;
        let history = self
            .count(
                &self.system.history_db,
                "SELECT count(*) FROM history_entries",
            )
            .await;
        assert_eq!(ledger, history);
        ledger
    }

    pub async fn count(&self, database: &str, sql: &str) -> i64 {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(database)
            .await
            .unwrap();
        sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    }
}

/// Transfers between `wallets` from `workers` concurrent clients until
/// `stop` is set; returns (succeeded, every non-2xx or transport error).
pub async fn transfer_load(
    target: &TestSystem,
    wallets: &[String],
    workers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, Vec<String>) {
    let bearers: HashMap<String, Option<String>> = wallets
        .iter()
        .map(|w| (w.clone(), target.owner_bearer(w)))
        .collect();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let http = target.http.clone();
            let bearers = bearers.clone();
            let url = target.system.wallet_url.clone();
            let wallets = wallets.to_vec();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, Vec::new());
                let mut n: usize = worker * 7919;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 1;
                    let from = &wallets[n % wallets.len()];
                    let to = &wallets[(n / 7 + 1 + n % (wallets.len() - 1)) % wallets.len()];
                    if from == to {
                        continue;
                    }
                    let body = json!({ "to_wallet_id": to, "amount": format!("{}.{:02}", n % 5 + 1, n % 100) });
                    let key = format!("w{worker}-{ok}-{}", errors.len());
                    let mut request = http
                        .post(format!("{url}/wallets/{from}/transfer"))
                        .header("Idempotency-Key", key)
                        .json(&body);
                    if let Some(bearer) = &bearers[from] {
                        request = request.header("Authorization", bearer);
                    }
                    let sent = request.send().await;
                    match sent {
                        Ok(response) if response.status().is_success() => ok += 1,
                        Ok(response) => errors.push(format!("{} {}", response.status(), response.text().await.unwrap_or_default())),
                        Err(err) => errors.push(err.to_string()),
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut total = (0, Vec::new());
    for task in tasks {
        let (ok, errors) = task.await.unwrap();
        total.0 += ok;
        total.1.extend(errors);
    }
    total
}

/// Transfers from 4 concurrent clients for `duration` while `alongside`
/// runs (a fault, say); returns both results.
pub async fn transfers_during<T>(
    target: &TestSystem,
    wallets: &[String],
    duration: Duration,
    alongside: impl Future<Output = T>,
) -> ((u64, Vec<String>), T) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = async {
        tokio::time::sleep(duration).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (load, (), other) = tokio::join!(
        transfer_load(target, wallets, 4, stop.clone()),
        stopper,
        alongside
    );
    (load, other)
}

/// A parsed scrape.
pub struct Metrics(openmetrics_parser::MetricsExposition<PrometheusType, PrometheusValue>);

use openmetrics_parser::{PrometheusType, PrometheusValue};

impl Metrics {
    /// The value of the one sample of `metric` carrying every label of
    /// `labels`; a histogram's is its count of observations.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples(metric)
            .filter(|(set, _)| {
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|(_, value)| value)
            .collect();
        assert!(matching.len() <= 1, "{metric} {labels:?}: {matching:?}");
        matching.first().copied()
    }

    /// Every sample's value of `metric`.
    pub fn all(&self, metric: &str) -> Vec<f64> {
        self.samples(metric).map(|(_, value)| value).collect()
    }

    fn samples(
        &self,
        metric: &str,
    ) -> impl Iterator<Item = (openmetrics_parser::LabelSet<'_>, f64)> {
        self.0
            .families
            .get(metric)
            .into_iter()
            .flat_map(|family| family.iter_samples())
            .map(|sample| {
                (
                    sample.get_labelset().expect("labels"),
                    scalar(&sample.value),
                )
            })
    }
}

fn scalar(value: &PrometheusValue) -> f64 {
    match value {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(counter) => counter.value.as_f64(),
        PrometheusValue::Histogram(histogram) => histogram.count.expect("a count") as f64,
        PrometheusValue::Summary(summary) => panic!("not a scalar: {summary:?}"),
    }
}

/// What a finished command printed on stdout, once it exited with `code`
/// (else a failure showing both streams).
pub fn stdout_of(out: &std::process::Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
