//! The history API's refusals against a real PostgreSQL: input a cursor,
//! a path segment or a user id could carry that the database cannot hold
//! is answered in the envelope with a code, never a 500.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn router() -> axum::Router {
    let url = harness::fresh_database("history_api")
        .await
        .expect("test PostgreSQL");
    let pool = service_kit::connect_and_migrate(&url, 2, &history::MIGRATOR)
        .await
        .expect("migrated");
    history::router(history::AppState {
        pool,
        consumer: Default::default(),
    })
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path).body(Body::empty()).unwrap();
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
    assert_eq!(
        activity["parameters"][0]["schema"]["pattern"],
        wallet_events::USER_ID_PATTERN
    );
}
