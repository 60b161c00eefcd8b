//! The history database's contract: what `history::apply::apply_batch`
//! relies on, step by step.

use chrono::Utc;
use history::apply::{ApplyError, Entry, Head, HistoryDb, HistoryTx, Incoming};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::{EventKind, SCHEMA_VERSION, WalletEvent};

use crate::STILL_WAITING;

fn event(wallet: Uuid, seq: i64) -> WalletEvent {
    WalletEvent {
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
            Decimal::new(5, 0)
        },
        balance_after: Decimal::new(5 * (seq - 1), 0),
        transfer_id: None,
        counterparty_wallet_id: None,
        committed_at: Utc::now(),
    }
}

fn message(event: &WalletEvent, offset: i64) -> Incoming {
    Incoming {
        topic: "contract".into(),
        partition: 0,
        offset,
        key: Some(event.wallet_id.to_string().into_bytes()),
        payload: Some(event.to_json()),
    }
}

fn is_constraint<T: std::fmt::Debug>(result: Result<T, ApplyError>) -> bool {
    matches!(result, Err(ApplyError::Constraint(_)))
}

pub async fn contract<D: HistoryDb>(db: D) {
    let wallet = Uuid::now_v7();
    heads_lock_and_wait(&db, wallet).await;
    entries_are_unique(&db, wallet).await;
    parking(&db, wallet).await;
    values_the_columns_cannot_hold(&db).await;
    dead_letters_once_per_coordinates(&db).await;
}

fn entry(event: WalletEvent, offset: i64) -> Entry {
    Entry {
        event,
        partition: 0,
        offset,
    }
}

async fn heads_lock_and_wait<D: HistoryDb>(db: &D, wallet: Uuid) {
    let other_wallet = Uuid::now_v7();
    let mut a = db.begin().await.unwrap();
    let heads = a.lock_heads(&[wallet, other_wallet]).await.unwrap();
    assert_eq!(heads.len(), 2, "one head per wallet");
    for head in &heads {
        assert_eq!(
            (head.last_seq, head.balance, head.parked),
            (0, Decimal::ZERO, 0),
            "created on first sight"
        );
    }
    let other = db.clone();
    let waiting = tokio::spawn(async move {
        let mut b = other.begin().await.unwrap();
        b.lock_heads(&[other_wallet, Uuid::now_v7()]).await.unwrap()
    });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(
        !waiting.is_finished(),
        "a locked head makes the next locker wait"
    );
    a.insert_entries(&[
        entry(event(wallet, 1), 0),
        entry(event(other_wallet, 1), 1),
        entry(event(other_wallet, 2), 2),
    ])
    .await
    .unwrap();
    let head = |last_seq, balance| Head {
        last_seq,
        balance,
        parked: 0,
    };
    a.update_heads(&[
        (wallet, head(1, Decimal::ZERO)),
        (other_wallet, head(2, Decimal::new(5, 0))),
    ])
    .await
    .unwrap();
    a.commit().await.unwrap();
    let heads = waiting.await.unwrap();
    assert_eq!(
        heads[0],
        head(2, Decimal::new(5, 0)),
        "the waiter sees the committed head, in the order it asked"
    );
    assert_eq!(heads[1], head(0, Decimal::ZERO), "and a new one");
    let mut tx = db.begin().await.unwrap();
    assert!(tx.event_at(other_wallet, 2).await.unwrap().is_some());
}

async fn entries_are_unique<D: HistoryDb>(db: &D, wallet: Uuid) {
    let mut tx = db.begin().await.unwrap();
    let applied = tx.event_at(wallet, 1).await.unwrap();
    assert!(applied.is_some(), "seq 1 was applied");
    let mut again = event(wallet, 1);
    again.event_id = applied.unwrap();
    assert!(
        is_constraint(tx.insert_entries(&[entry(again, 1)]).await),
        "the same event twice"
    );
    drop(tx);
    let mut tx = db.begin().await.unwrap();
    assert!(
        is_constraint(tx.insert_entries(&[entry(event(wallet, 1), 2)]).await),
        "a taken (wallet, seq)"
    );
}

async fn parking<D: HistoryDb>(db: &D, wallet: Uuid) {
    let early = event(wallet, 3);
    let mut tx = db.begin().await.unwrap();
    let first = tx.park(&early, &early.to_json(), &message(&early, 7)).await;
    assert!(first.unwrap(), "parked");
    let again = tx.park(&early, &early.to_json(), &message(&early, 7)).await;
    assert!(
        !again.unwrap(),
        "parked once: the second park changes nothing"
    );
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let taken = tx
        .take_parked(wallet, 3)
        .await
        .unwrap()
        .expect("parked once");
    assert_eq!(
        WalletEvent::decode(taken.payload.as_bytes()).unwrap(),
        early
    );
    assert_eq!((taken.partition, taken.offset), (0, 7));
    assert!(
        tx.take_parked(wallet, 3).await.unwrap().is_none(),
        "taken out, and only one row"
    );
    drop(tx);
    let mut tx = db.begin().await.unwrap();
    assert!(
        tx.take_parked(wallet, 3).await.unwrap().is_some(),
        "a rolled-back delete leaves it parked"
    );
}

async fn values_the_columns_cannot_hold<D: HistoryDb>(db: &D) {
    let wallet = Uuid::now_v7();
    let mut huge = event(wallet, 2);
    huge.amount = Decimal::from(1_000_000_000_000_000_i64);
    let mut long = event(wallet, 2);
    long.user_id = "u".repeat(101);
    let mut nul = event(wallet, 2);
    nul.user_id = "nul\0".into();
    for bad in [huge, long, nul] {
        let mut tx = db.begin().await.unwrap();
        let described = format!("{:?} / {:?}", bad.amount, bad.user_id);
        assert!(
            is_constraint(tx.insert_entries(&[entry(bad, 9)]).await),
            "{described} must be refused"
        );
    }
}

async fn dead_letters_once_per_coordinates<D: HistoryDb>(db: &D) {
    let poison = Incoming {
        topic: "contract".into(),
        partition: 1,
        offset: 42,
        key: None,
        payload: Some(b"not json".to_vec()),
    };
    let mut tx = db.begin().await.unwrap();
    tx.dead_letter(&poison, "undecodable").await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    tx.dead_letter(&poison, "undecodable").await.unwrap();
    tx.commit().await.unwrap();
}
