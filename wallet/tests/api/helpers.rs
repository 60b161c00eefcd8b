use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::Value;
use service_kit::auth::{Auth, Keys, Subject};
use sqlx::PgPool;
use tower::ServiceExt;

/// The tests' token secret.
const SECRET: &[u8] = b"wallet-api-tests-secret-32-bytes!";
/// The tests' clock (Unix seconds): tokens are issued and checked on it.
pub const NOW: u64 = 1_800_000_000;

/// The wallet router over a fresh database, and that database. Requests
/// carry the admin's token unless they name their own `authorization`;
/// a transfer carries its source wallet's owner's.
#[derive(Clone)]
pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
    pub keys: Keys,
    /// What the store raises after a commit that wrote outbox rows.
    pub outbox_wake: wallet::store::OutboxWake,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<none>")
    }
}

/// The app with tokens checked (on [`NOW`]).
pub async fn spawn_app() -> TestApp {
    let keys = Keys::new(SECRET).expect("a long enough secret");
    spawn(keys.clone(), Auth::tokens(keys).with_clock(|| NOW)).await
}

/// The app in open mode: nothing checked.
pub async fn spawn_open_app() -> TestApp {
    spawn(
        Keys::new(SECRET).expect("a long enough secret"),
        Auth::open(),
    )
    .await
}

async fn spawn(keys: Keys, auth: Auth) -> TestApp {
    let url = harness::postgres::fresh_database("wallet_api")
        .await
        .expect("test database");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    wallet::MIGRATOR.run(&pool).await.expect("migrate");
    let store = wallet::store::Store::postgres(pool.clone());
    let outbox_wake = store.db().outbox_wake().clone();
    let router = wallet::router(wallet::AppState { store, auth });
    TestApp {
        router,
        pool,
        keys,
        outbox_wake,
    }
}

impl TestApp {
    /// An `Authorization` value for `user` (or the admin), valid for an
    /// hour from [`NOW`] (`issued_ago` seconds before it).
    pub fn bearer(&self, user: Option<&str>, issued_ago: u64) -> String {
        let subject = user.map_or(Subject::Admin, |user| Subject::user(user).unwrap());
        let ttl = std::time::Duration::from_secs(3600);
        self.keys.bearer(&subject, NOW - issued_ago, ttl)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            builder = builder.header("authorization", self.default_bearer(path).await);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(body.map(|b| Body::from(b.to_owned())).unwrap_or_default())
            .unwrap();
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn create_wallet(&self, user_id: &str) -> String {
        let reply = self
            .request(
                Method::POST,
                "/wallets",
                Some(&format!(r#"{{"user_id":"{user_id}"}}"#)),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["data"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn fund(&self, wallet_id: &str, amount: &str) -> Reply {
        self.request(
            Method::POST,
            &format!("/wallets/{wallet_id}/fund"),
            Some(&format!(r#"{{"amount":"{amount}"}}"#)),
            &[],
        )
        .await
    }

    /// What a request to `path` carries unless it names its own: a
    /// transfer its source wallet owner's token (the admin's when there is
    /// no such wallet), anything else the admin's.
    async fn default_bearer(&self, path: &str) -> String {
        let source = path
            .strip_prefix("/wallets/")
            .and_then(|rest| rest.strip_suffix("/transfer"));
        match source {
            Some(from) => self.bearer(self.owner(from).await.as_deref(), 0),
            None => self.bearer(None, 0),
        }
    }

    pub async fn transfer(&self, from: &str, to: &str, amount: &str) -> Reply {
        let body = format!(r#"{{"to_wallet_id":"{to}","amount":"{amount}"}}"#);
        let path = format!("/wallets/{from}/transfer");
        self.request(Method::POST, &path, Some(&body), &[]).await
    }

    /// A transfer with `bearer` as its `Authorization` and `headers`.
    pub async fn transfer_as(
        &self,
        bearer: &str,
        from: &str,
        to: &str,
        amount: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = format!(r#"{{"to_wallet_id":"{to}","amount":"{amount}"}}"#);
        let mut headers = headers.to_vec();
        headers.push(("authorization", bearer));
        self.request(
            Method::POST,
            &format!("/wallets/{from}/transfer"),
            Some(&body),
            &headers,
        )
        .await
    }

    /// The user who owns `wallet_id`, if it is a wallet.
    pub async fn owner(&self, wallet_id: &str) -> Option<String> {
        let id = uuid::Uuid::parse_str(wallet_id).ok()?;
        sqlx::query_scalar("SELECT user_id FROM wallets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    pub async fn balance(&self, wallet_id: &str) -> String {
        let reply = self
            .request(Method::GET, &format!("/wallets/{wallet_id}"), None, &[])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["data"]["balance"].as_str().unwrap().to_owned()
    }

    /// Counts of (wallets, ledger entries, outbox rows): what a refused
    /// request must leave unchanged.
    pub async fn row_counts(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM wallets), (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Every wallet's balance equals the signed sum of its ledger entries.
    pub async fn assert_ledger_matches_balances(&self) {
        let mismatches: Vec<(uuid::Uuid, Decimal, Decimal)> = sqlx::query_as(
            "SELECT w.id, w.balance, COALESCE(SUM(CASE e.kind WHEN 'transfer_out' THEN -e.amount ELSE e.amount END), 0)
             FROM wallets w LEFT JOIN ledger_entries e ON e.wallet_id = w.id
             GROUP BY w.id, w.balance
             HAVING w.balance <> COALESCE(SUM(CASE e.kind WHEN 'transfer_out' THEN -e.amount ELSE e.amount END), 0)",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        assert!(
            mismatches.is_empty(),
            "balance differs from ledger: {mismatches:?}"
        );
    }
}
