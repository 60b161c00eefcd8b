use axum::http::{Method, StatusCode};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_funds_all_succeed_and_add_up() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (app, id) = (app.clone(), id.clone());
            tokio::spawn(async move { app.fund(&id, "1.0001").await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.balance(&id).await, "100.0100");
    app.assert_ledger_matches_balances().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_transfers_conserve_money() {
    let app = spawn_app().await;
    let mut wallets = Vec::new();
    for i in 0..5 {
        let id = app.create_wallet(&format!("user{i}")).await;
        app.fund(&id, "100").await;
        wallets.push(id);
    }
    // Every ordered pair, in both directions, so lock order is contested.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let from = wallets[i % 5].clone();
            let to = wallets[(i * 3 + 1 + i / 5) % 5].clone();
            let to = if to == from {
                wallets[(i + 1) % 5].clone()
            } else {
                to
            };
            let app = app.clone();
            tokio::spawn(async move {
                let reply = app
                    .transfer(&from, &to, &format!("{}.{:02}", 1 + i % 17, i % 100))
                    .await;
                (reply.status, reply.code().to_owned())
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let (status, code) = task.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            // The only acceptable refusal: a wallet ran dry.
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(code, "insufficient_funds"),
            other => panic!("transfer answered {other} {code}"),
        }
    }
    assert!(ok > 100, "only {ok} of 200 transfers succeeded");

    let balances: Vec<Decimal> = sqlx::query_scalar("SELECT balance FROM wallets")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(balances.iter().sum::<Decimal>(), dec!(500));
    assert!(balances.iter().all(|b| *b >= Decimal::ZERO));
    app.assert_ledger_matches_balances().await;
    let unpaired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT transfer_id FROM ledger_entries WHERE transfer_id IS NOT NULL
         GROUP BY transfer_id HAVING count(*) <> 2 OR sum(CASE kind WHEN 'transfer_out' THEN -amount ELSE amount END) <> 0) t",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unpaired, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_apply_once() {
    let app = spawn_app().await;
    let id = app.create_wallet("alice").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, id) = (app.clone(), id.clone());
            tokio::spawn(async move {
                app.request(
                    Method::POST,
                    &format!("/wallets/{id}/fund"),
                    Some(r#"{"amount":"7"}"#),
                    &[("idempotency-key", "same")],
                )
                .await
                .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.balance(&id).await, "7.0000");
}
