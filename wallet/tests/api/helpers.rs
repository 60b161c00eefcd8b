use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

/// The wallet router over a fresh database, and that database.
#[derive(Clone)]
pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
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

pub async fn spawn_app() -> TestApp {
    let url = harness::postgres::fresh_database("wallet_api")
        .await
        .expect("test database");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    wallet::MIGRATOR.run(&pool).await.expect("migrate");
    let router = wallet::router(wallet::AppState {
        store: wallet::store::Store::postgres(pool.clone()),
    });
    TestApp { router, pool }
}

impl TestApp {
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

    pub async fn transfer(&self, from: &str, to: &str, amount: &str) -> Reply {
        let body = format!(r#"{{"to_wallet_id":"{to}","amount":"{amount}"}}"#);
        self.request(
            Method::POST,
            &format!("/wallets/{from}/transfer"),
            Some(&body),
            &[],
        )
        .await
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
