use axum::http::{Method, StatusCode};
use wallet_events::WalletEvent;

use crate::helpers::spawn_app;

#[tokio::test]
async fn fund_returns_the_updated_wallet_and_writes_ledger_and_outbox() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    let reply = app.fund(&id, "100.00").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["data"]["balance"], "100.0000");
    assert_eq!(reply.body["data"]["id"], id.as_str());
    assert_eq!(app.row_counts().await, (1, 2, 2));

    // The outbox row carries exactly the ledger entry, as a versioned event.
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let events: Vec<WalletEvent> = payloads
        .iter()
        .map(|p| WalletEvent::decode(p.as_bytes()).unwrap())
        .collect();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].kind, wallet_events::EventKind::Funded);
    assert_eq!(wallet_events::format_money(events[1].amount), "100.0000");
    assert_eq!(events[1].wallet_id.to_string(), id);
    let ledger_ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM ledger_entries ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        ledger_ids,
        events.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    app.assert_ledger_matches_balances().await;
}

#[tokio::test]
async fn bad_amounts_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    app.fund(&id, "5").await;
    let before = app.row_counts().await;
    let cases = [
        (r#""abc""#, StatusCode::BAD_REQUEST, "invalid_amount"),
        (r#""1e3""#, StatusCode::BAD_REQUEST, "invalid_amount"),
        ("10", StatusCode::BAD_REQUEST, "invalid_amount"),
        ("10.5", StatusCode::BAD_REQUEST, "invalid_amount"),
        ("null", StatusCode::BAD_REQUEST, "invalid_amount"),
        (r#""0""#, StatusCode::BAD_REQUEST, "amount_not_positive"),
        (r#""-5.00""#, StatusCode::BAD_REQUEST, "amount_not_positive"),
        (
            r#""1.00001""#,
            StatusCode::BAD_REQUEST,
            "amount_too_precise",
        ),
        (
            r#""1000000000000000""#,
            StatusCode::BAD_REQUEST,
            "amount_too_large",
        ),
    ];
    for (amount, status, code) in cases {
        let body = format!(r#"{{"amount":{amount}}}"#);
        let reply = app
            .request(
                Method::POST,
                &format!("/wallets/{id}/fund"),
                Some(&body),
                &[],
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "amount {amount}"
        );
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.balance(&id).await, "5.0000");
}

#[tokio::test]
async fn fund_unknown_wallet_and_balance_limit() {
    let app = spawn_app().await;
    let reply = app.fund(&uuid::Uuid::new_v4().to_string(), "1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "wallet_not_found")
    );

    let id = app.create_wallet("whale").await;
    assert_eq!(
        app.fund(&id, "999999999999999.9999").await.status,
        StatusCode::OK
    );
    let before = app.row_counts().await;
    let reply = app.fund(&id, "0.0001").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "balance_limit_exceeded")
    );
    assert_eq!(app.row_counts().await, before);
}
