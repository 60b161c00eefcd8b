use axum::http::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_repeated_fund_replays_the_first_result_and_applies_once() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    let path = format!("/wallets/{id}/fund");
    let key = [("idempotency-key", "fund-1")];
    let first = app
        .request(Method::POST, &path, Some(r#"{"amount":"25.50"}"#), &key)
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let counts = app.row_counts().await;
    // Same amount written differently is the same request.
    let again = app
        .request(Method::POST, &path, Some(r#"{"amount":"25.5000"}"#), &key)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.row_counts().await, counts);
    assert_eq!(app.balance(&id).await, "25.5000");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    let key = [("idempotency-key", "k-42")];
    let fund_path = format!("/wallets/{alice}/fund");
    assert_eq!(
        app.request(Method::POST, &fund_path, Some(r#"{"amount":"10"}"#), &key)
            .await
            .status,
        StatusCode::OK
    );
    let counts = app.row_counts().await;

    let reply = app
        .request(Method::POST, &fund_path, Some(r#"{"amount":"11"}"#), &key)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    let body = format!(r#"{{"to_wallet_id":"{bob}","amount":"10"}}"#);
    let reply = app
        .request(
            Method::POST,
            &format!("/wallets/{alice}/transfer"),
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    assert_eq!(app.row_counts().await, counts);
    assert_eq!(app.balance(&alice).await, "10.0000");
}

#[tokio::test]
async fn a_repeated_transfer_moves_money_once() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "100").await;
    let body = format!(r#"{{"to_wallet_id":"{bob}","amount":"30"}}"#);
    let path = format!("/wallets/{alice}/transfer");
    let key = [("idempotency-key", "t-1")];
    let first = app.request(Method::POST, &path, Some(&body), &key).await;
    let second = app.request(Method::POST, &path, Some(&body), &key).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(
        first.body["data"]["transfer_id"],
        second.body["data"]["transfer_id"]
    );
    assert_eq!(app.balance(&alice).await, "70.0000");
    assert_eq!(app.balance(&bob).await, "30.0000");
}

#[tokio::test]
async fn a_refused_request_does_not_burn_its_key() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    let body = format!(r#"{{"to_wallet_id":"{bob}","amount":"5"}}"#);
    let path = format!("/wallets/{alice}/transfer");
    let key = [("idempotency-key", "retry-me")];
    let refused = app.request(Method::POST, &path, Some(&body), &key).await;
    assert_eq!(refused.code(), "insufficient_funds");
    app.fund(&alice, "5").await;
    let retried = app.request(Method::POST, &path, Some(&body), &key).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(app.balance(&bob).await, "5.0000");
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    let path = format!("/wallets/{id}/fund");
    let long = "k".repeat(201);
    for key in ["", "has space", long.as_str()] {
        let reply = app
            .request(
                Method::POST,
                &path,
                Some(r#"{"amount":"1"}"#),
                &[("idempotency-key", key)],
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            "{key:?}"
        );
    }
    assert_eq!(app.balance(&id).await, "0.0000");
}
