use std::time::Duration;

use axum::http::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn transfer_moves_money_and_returns_both_legs() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "100.00").await;

    let reply = app.transfer(&alice, &bob, "30.00").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let data = &reply.body["data"];
    let (debit, credit) = (&data["debit"], &data["credit"]);
    assert_eq!(debit["kind"], "transfer_out");
    assert_eq!(credit["kind"], "transfer_in");
    assert_eq!(debit["amount"], "30.0000");
    assert_eq!(credit["amount"], "30.0000");
    assert_eq!(debit["balance_after"], "70.0000");
    assert_eq!(credit["balance_after"], "30.0000");
    assert_eq!(debit["transfer_id"], data["transfer_id"]);
    assert_eq!(credit["transfer_id"], data["transfer_id"]);
    assert_eq!(debit["wallet_id"], alice.as_str());
    assert_eq!(credit["counterparty_wallet_id"], alice.as_str());

    assert_eq!(app.balance(&alice).await, "70.0000");
    assert_eq!(app.balance(&bob).await, "30.0000");
    // created x2, funded, transfer_out, transfer_in: five entries, five events.
    assert_eq!(app.row_counts().await, (2, 5, 5));
    app.assert_ledger_matches_balances().await;
}

#[tokio::test]
async fn refused_transfers_change_nothing() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "10").await;
    let before = app.row_counts().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let reply = app.transfer(&alice, &bob, "10.0001").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds")
    );
    let reply = app.transfer(&alice, &alice, "1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "self_transfer")
    );
    let reply = app.transfer(&alice, &unknown, "1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "wallet_not_found")
    );
    assert!(reply.body["message"].as_str().unwrap().contains(&unknown));
    let reply = app.transfer(&unknown, &bob, "1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "wallet_not_found")
    );
    let reply = app.transfer(&alice, "bob", "1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_wallet_id")
    );
    let reply = app.transfer(&alice, &bob, "-1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "amount_not_positive")
    );
    let reply = app
        .request(
            Method::POST,
            &format!("/wallets/{alice}/transfer"),
            Some(r#"{"amount":"1"}"#),
            &[],
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.balance(&alice).await, "10.0000");
    assert_eq!(app.balance(&bob).await, "0.0000");
}

#[tokio::test]
async fn a_transfer_of_the_whole_balance_leaves_zero() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "0.0001").await;
    assert_eq!(
        app.transfer(&alice, &bob, "0.0001").await.status,
        StatusCode::OK
    );
    assert_eq!(app.balance(&alice).await, "0.0000");
    assert_eq!(app.balance(&bob).await, "0.0001");
}

/// The relay sleeps until a commit of its process wrote outbox rows (or
/// its idle poll): each committed change raises the wake, a refused one
/// does not.
#[tokio::test]
async fn committed_changes_wake_the_relay_and_refusals_do_not() {
    let app = spawn_app().await;
    let raised = || async {
        tokio::time::timeout(Duration::from_millis(50), app.outbox_wake.raised())
            .await
            .is_ok()
    };
    assert!(!raised().await, "nothing committed yet");

    let alice = app.create_wallet("alice").await;
    assert!(
        raised().await,
        "a created wallet's event waits to be published"
    );
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "10").await;
    // However many commits came meanwhile, the relay wakes once for them.
    assert!(raised().await);
    assert!(!raised().await, "one wake covers the commits before it");

    let reply = app.transfer(&alice, &bob, "11").await;
    assert_eq!(reply.code(), "insufficient_funds");
    assert!(!raised().await, "a refused transfer wrote nothing");

    let reply = app.transfer(&alice, &bob, "4").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(raised().await, "a transfer's events wait to be published");
}
