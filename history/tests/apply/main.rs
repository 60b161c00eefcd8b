//! The history apply path against a real PostgreSQL: exactly once and in
//! order whatever the arrival order, duplicates dropped, conflicting
//! events dead-lettered, and a decodable event the database refuses
//! dead-lettered without holding up the rest of its batch; replaying a
//! dead letter once its cause is fixed heals the wallet.

use chrono::Utc;
use history::apply::{Incoming, PgHistoryDb, apply_batch, replay_dead_letters};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;
use wallet_events::{EventKind, SCHEMA_VERSION, WalletEvent};

async fn database() -> (PgPool, PgHistoryDb) {
    let url = harness::fresh_database("history_apply")
        .await
        .expect("test PostgreSQL");
    let pool = service_kit::connect_and_migrate(&url, 4, &history::MIGRATOR)
        .await
        .expect("migrated");
    (pool.clone(), PgHistoryDb::new(pool))
}

/// A wallet's events 1..=n: created, then funds of 10 each.
fn events(wallet: Uuid, n: i64) -> Vec<WalletEvent> {
    (1..=n)
        .map(|seq| WalletEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            wallet_id: wallet,
            user_id: "hana".into(),
            seq,
            kind: if seq == 1 {
                EventKind::Created
            } else {
                EventKind::Funded
            },
            amount: if seq == 1 {
                Decimal::ZERO
            } else {
                Decimal::new(10, 0)
            },
            balance_after: Decimal::new(10 * (seq - 1), 0),
            transfer_id: None,
            counterparty_wallet_id: None,
            committed_at: Utc::now(),
        })
        .collect()
}

fn message(event: &WalletEvent, offset: i64) -> Incoming {
    Incoming {
        topic: "wallet-events".into(),
        partition: 0,
        offset,
        key: Some(event.wallet_id.to_string().into_bytes()),
        payload: Some(event.to_json()),
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn seqs(pool: &PgPool, wallet: Uuid) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM history_entries WHERE wallet_id = $1 ORDER BY seq")
        .bind(wallet)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn any_arrival_order_applies_each_event_once_in_order() {
    let (pool, db) = database().await;
    let wallet = Uuid::now_v7();
    let e = events(wallet, 5);
    // 4 and 3 arrive before 1: parked; 2 arrives twice; 1 releases 2..4.
    let arrival = [&e[3], &e[2], &e[1], &e[1], &e[0], &e[4], &e[2]];
    for (offset, event) in arrival.iter().enumerate() {
        apply_batch(&db, &[message(event, offset as i64)])
            .await
            .unwrap();
    }
    assert_eq!(seqs(&pool, wallet).await, [1, 2, 3, 4, 5]);
    assert_eq!(count(&pool, "SELECT count(*) FROM parked_events").await, 0);
    let (last, balance): (i64, Decimal) =
        sqlx::query_as("SELECT last_seq, balance FROM wallet_heads WHERE wallet_id = $1")
            .bind(wallet)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((last, balance), (5, Decimal::new(40, 0)));
}

#[tokio::test]
async fn a_batch_in_reverse_order_unparks_within_itself() {
    let (pool, db) = database().await;
    let wallet = Uuid::now_v7();
    let e = events(wallet, 4);
    let batch: Vec<Incoming> = e
        .iter()
        .rev()
        .enumerate()
        .map(|(i, ev)| message(ev, i as i64))
        .collect();
    let stats = apply_batch(&db, &batch).await.unwrap();
    assert_eq!((stats.applied, stats.parked), (4, 3));
    assert_eq!(seqs(&pool, wallet).await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_conflicting_event_is_dead_lettered_and_the_applied_one_kept() {
    let (pool, db) = database().await;
    let wallet = Uuid::now_v7();
    let e = events(wallet, 2);
    apply_batch(&db, &[message(&e[0], 0), message(&e[1], 1)])
        .await
        .unwrap();
    let mut impostor = e[1].clone();
    impostor.event_id = Uuid::now_v7();
    let stats = apply_batch(&db, &[message(&impostor, 2)]).await.unwrap();
    assert_eq!(stats.dead_lettered, 1);
    let kept: Uuid =
        sqlx::query_scalar("SELECT event_id FROM history_entries WHERE wallet_id = $1 AND seq = 2")
            .bind(wallet)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kept, e[1].event_id);
    let reason: String = sqlx::query_scalar("SELECT error FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(reason.contains("already taken"), "{reason}");
}

#[tokio::test]
async fn an_event_the_database_refuses_is_dead_lettered_and_the_batch_goes_on() {
    let (pool, db) = database().await;
    let (good, huge_wallet, long_wallet) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let fine = events(good, 3);
    let mut huge = events(huge_wallet, 1).remove(0);
    huge.amount = Decimal::from(1_000_000_000_000_000_i64); // beyond NUMERIC(19,4)
    let mut long = events(long_wallet, 1).remove(0);
    long.user_id = "u".repeat(101); // beyond VARCHAR(100)
    let batch = vec![
        message(&fine[0], 0),
        message(&huge, 1),
        message(&fine[1], 2),
        message(&long, 3),
        message(&fine[2], 4),
    ];
    let stats = apply_batch(&db, &batch)
        .await
        .expect("the batch is not blocked");
    assert_eq!((stats.applied, stats.dead_lettered), (3, 2));
    assert_eq!(seqs(&pool, good).await, [1, 2, 3]);
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT error FROM dead_letters ORDER BY \"offset\"")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("refused by the database")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn replaying_a_fixed_dead_letter_heals_its_wallet() {
    let (pool, db) = database().await;
    let wallet = Uuid::now_v7();
    let e = events(wallet, 4);
    // Event 2 carries a user id the column cannot hold: dead-lettered; 3
    // and 4 then wait, parked, behind it.
    let mut bad = e[1].clone();
    bad.user_id = "u".repeat(101);
    let batch = vec![
        message(&e[0], 0),
        message(&bad, 1),
        message(&e[2], 2),
        message(&e[3], 3),
    ];
    apply_batch(&db, &batch).await.unwrap();
    assert_eq!(seqs(&pool, wallet).await, [1]);
    assert_eq!(count(&pool, "SELECT count(*) FROM parked_events").await, 2);
    assert_eq!(
        replay_dead_letters(&pool).await.unwrap().still_refused,
        1,
        "not fixed yet"
    );

    // The cause is fixed: the column now holds longer ids.
    sqlx::query("ALTER TABLE history_entries ALTER COLUMN user_id TYPE VARCHAR(200)")
        .execute(&pool)
        .await
        .unwrap();
    let replayed = replay_dead_letters(&pool).await.unwrap();
    assert_eq!((replayed.released, replayed.still_refused), (1, 0));
    assert_eq!(
        seqs(&pool, wallet).await,
        [1, 2, 3, 4],
        "its parked successors followed"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM parked_events").await, 0);
}
