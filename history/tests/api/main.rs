//! The history API against a real PostgreSQL: input a cursor, a path
//! segment or a user id could carry that the database cannot hold is
//! answered in the envelope with a code, never a 500; users read only
//! their own history.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt;
use serde_json::Value;
use service_kit::auth::{Auth, Keys, Subject};
use sqlx::PgPool;
use tower::ServiceExt;

const SECRET: &[u8] = b"history-api-tests-secret-32-bytes";
const NOW: u64 = 1_800_000_000;

fn keys() -> Keys {
    Keys::new(SECRET).expect("a long enough secret")
}

/// `Authorization` for `user`, or the admin.
fn bearer(user: Option<&str>) -> String {
    let subject = user.map_or(Subject::Admin, |user| Subject::user(user).unwrap());
    keys().bearer(&subject, NOW, Duration::from_secs(60))
}

async fn router_and_pool() -> (axum::Router, PgPool) {
    let url = harness::fresh_database("history_api")
        .await
        .expect("test PostgreSQL");
    let pool = service_kit::connect_and_migrate(&url, 2, &history::MIGRATOR)
        .await
        .expect("migrated");
    let router = history::router(history::AppState {
        pool: pool.clone(),
        consumer: Default::default(),
        auth: Auth::tokens(keys()).with_clock(|| NOW),
    });
    (router, pool)
}

async fn router() -> axum::Router {
    router_and_pool().await.0
}

/// GET `path` as the admin.
async fn get(router: &axum::Router, path: &str) -> (StatusCode, Value) {
    get_as(router, path, Some(&bearer(None))).await
}

async fn get_as(
    router: &axum::Router,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let request = request.body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("GET {path}: not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

#[tokio::test]
async fn ids_and_cursors_the_database_cannot_hold_are_refused_with_a_code() {
    let router = router().await;
    let wallet = "0193a000-0000-7000-8000-000000000001";
    let far = "9223372036854775807_0193a000-0000-7000-8000-000000000001";
    let before_pg = "-210000000000000000_0193a000-0000-7000-8000-000000000001";
    for (path, status, code) in [
        (
            "/users/a%00b/activity",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            "/users/%FF%FE/activity",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            "/wallets/%FF%FE/history",
            StatusCode::BAD_REQUEST,
            "invalid_wallet_id",
        ),
        (
            &format!("/users/alice/activity?cursor={far}"),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            &format!("/users/alice/activity?cursor={before_pg}"),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            &format!("/wallets/{wallet}/history?cursor=x"),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
    ] {
        let (got, body) = get(&router, path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "GET {path}: {body}"
        );
        assert_eq!(body["success"], false);
    }
    // A cursor inside the range is read, and finds nothing yet.
    let near = "1764547200000000_0193a000-0000-7000-8000-000000000001";
    let (status, body) = get(&router, &format!("/users/alice/activity?cursor={near}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["entries"], serde_json::json!([]));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_error_code() {
    let router = router().await;
    let (status, doc) = get(&router, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        [
            "/health",
            "/metrics",
            "/openapi.json",
            "/users/{id}/activity",
            "/wallets/{id}/history"
        ]
    );
    let codes = &doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["code"]["enum"];
    assert_eq!(*codes, serde_json::json!(history::api::ApiError::CODES));
    let activity = &doc["paths"]["/users/{id}/activity"]["get"];
    let names: Vec<&str> = activity["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "limit", "cursor"]);
    assert_eq!(activity["security"], serde_json::json!([{"bearer": []}]));
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert!(activity["responses"]["401"].is_object() && activity["responses"]["403"].is_object());
    assert_eq!(
        activity["parameters"][0]["schema"]["pattern"],
        wallet_events::USER_ID_PATTERN
    );
}

#[tokio::test]
async fn users_read_only_their_own_history_and_activity() {
    let (router, pool) = router_and_pool().await;
    let wallet = "0193a000-0000-7000-8000-0000000000a1";
    sqlx::query(
        "INSERT INTO history_entries (event_id, wallet_id, user_id, seq, kind, amount,
             balance_after, committed_at, source_partition, source_offset)
         VALUES ('0193a000-0000-7000-8000-0000000000e1', $1, 'alice', 1, 'created', 0, 0,
                 now(), 0, 0)",
    )
    .bind(uuid::Uuid::parse_str(wallet).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let history = format!("/wallets/{wallet}/history");
    let (alice, bob) = (bearer(Some("alice")), bearer(Some("bob")));

    let (status, body) = get_as(&router, &history, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["entries"].as_array().map(Vec::len), Some(1));
    let (status, body) = get(&router, &history).await;
    assert_eq!(status, StatusCode::OK, "the admin reads anyone's: {body}");

    for path in [history.as_str(), "/users/alice/activity"] {
        let (status, body) = get_as(&router, path, Some(&bob)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{path}: {body}"
        );
        assert!(body["data"].is_null(), "nothing of alice's shows: {body}");
        let (status, body) = get_as(&router, path, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("missing_token"))
        );
        let forged = format!("{}x", alice);
        let (status, body) = get_as(&router, path, Some(&forged)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token"))
        );
    }
    let (status, body) = get_as(&router, "/users/alice/activity", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
