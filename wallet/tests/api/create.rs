use axum::http::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_returns_the_wallet_in_the_seed_envelope() {
    let app = spawn_app().await;
    let reply = app
        .request(
            Method::POST,
            "/wallets",
            Some(r#"{"user_id":"alice"}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["success"], true);
    assert!(reply.body["message"].is_null());
    assert!(
        reply.body.get("code").is_none(),
        "no code on success: {}",
        reply.body
    );
    let data = &reply.body["data"];
    assert_eq!(data["user_id"], "alice");
    assert_eq!(data["balance"], "0.0000");
    assert!(uuid::Uuid::parse_str(data["id"].as_str().unwrap()).is_ok());
    assert!(data["created_at"].is_string());
    // The created entry is in the ledger and waiting in the outbox.
    assert_eq!(app.row_counts().await, (1, 1, 1));
}

#[tokio::test]
async fn get_and_list_wallets() {
    let app = spawn_app().await;
    let first = app.create_wallet("bob").await;
    let second = app.create_wallet("bob").await;
    app.create_wallet("carol").await;

    let reply = app
        .request(Method::GET, &format!("/wallets/{first}"), None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["id"], first.as_str());

    let reply = app
        .request(Method::GET, "/users/bob/wallets", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let ids: Vec<&str> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);

    let reply = app
        .request(Method::GET, "/users/nobody/wallets", None, &[])
        .await;
    assert_eq!(reply.body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn unknown_and_malformed_wallet_ids() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    let reply = app
        .request(Method::GET, &format!("/wallets/{unknown}"), None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "wallet_not_found")
    );
    assert_eq!(reply.body["success"], false);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );

    let reply = app
        .request(Method::GET, "/wallets/not-a-uuid", None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_wallet_id")
    );
}

#[tokio::test]
async fn bad_user_ids_and_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let long = "x".repeat(101);
    let cases = [
        (
            r#"{"user_id":""}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            r#"{"user_id":"   "}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            format!(r#"{{"user_id":"{long}"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            r#"{"user_id":"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"name":"alice"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            r#"{"user_id":42}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!(r#"{{"user_id":"{}"}}"#, "y".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let reply = app
            .request(Method::POST, "/wallets", Some(&body), &[])
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "body {:.60}",
            body
        );
        assert_eq!(reply.body["success"], false);
    }
    let request = axum::http::Request::post("/wallets")
        .body(axum::body::Body::from(r#"{"user_id":"a"}"#))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    assert_eq!(app.row_counts().await, (0, 0, 0));
}

#[tokio::test]
async fn unknown_routes_methods_and_health() {
    let app = spawn_app().await;
    let reply = app.request(Method::GET, "/nope", None, &[]).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let reply = app.request(Method::DELETE, "/wallets", None, &[]).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let reply = app.request(Method::GET, "/health", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "OK");
}
