//! The wallet database's contract: what `wallet::store::Store` and the
//! relay round rely on, step by step.

use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet::{
    domain::{self, WalletState},
    relay::round::{Outbox, OutboxRound},
    store::{
        Change, Claim, DbError, Idempotency, Ids, KeyToClaim, Locked, Outcome, Store, StoreError,
        WalletDb, WalletTx,
    },
};
use wallet_events::{Amount, IdempotencyKey, UserId};

use crate::STILL_WAITING;

pub async fn contract<D: WalletDb, O: Outbox + 'static>(db: D, outbox: O) {
    let store = Store::new(db.clone(), Ids::system());
    let x = fresh(store.create_wallet(&user("xavier"), None).await.unwrap());
    let y = fresh(store.create_wallet(&user("yolanda"), None).await.unwrap());
    a_keyed_create_opens_one_wallet(&store).await;
    drain(&outbox).await;

    visibility_and_rollback(&db).await;
    locks_wait_and_come_in_id_order(&db, x.id, y.id).await;
    a_claimed_key_waits_for_its_owner(&db, x.id).await;
    constraints_refuse(&db, x.id).await;
    outbox_ids_commit_out_of_order_and_skip_locked(&db, &outbox, x.id, y.id).await;
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn fresh<T: std::fmt::Debug>(outcome: Outcome<T>) -> T {
    match outcome {
        Outcome::Fresh { data, .. } => data,
        replayed => panic!("expected a fresh change, got {replayed:?}"),
    }
}

/// The same create sent twice with one key opens one wallet and answers
/// it twice; the key with another user is refused and opens nothing.
async fn a_keyed_create_opens_one_wallet<D: WalletDb>(store: &Store<D>) {
    let key = |fingerprint: &str| Idempotency {
        key: IdempotencyKey::parse("create-once").unwrap(),
        fingerprint: fingerprint.into(),
    };
    let first = store
        .create_wallet(&user("zoe"), Some(&key("create zoe")))
        .await
        .unwrap();
    let Outcome::Fresh {
        data: opened,
        recorded: Some(recorded),
    } = first
    else {
        panic!("the first create is fresh and records its answer: {first:?}")
    };
    let again = store
        .create_wallet(&user("zoe"), Some(&key("create zoe")))
        .await
        .unwrap();
    let Outcome::Replayed(replayed) = again else {
        panic!("the retry replays: {again:?}")
    };
    assert_eq!(
        replayed,
        serde_json::from_str::<serde_json::Value>(recorded.get()).unwrap()
    );
    assert_eq!(replayed["id"], opened.id.to_string());
    let reused = store
        .create_wallet(&user("zack"), Some(&key("create zack")))
        .await;
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused(_))),
        "{reused:?}"
    );
    let zoes = store.user_wallets(&user("zoe")).await.unwrap();
    assert_eq!(zoes.iter().map(|w| w.id).collect::<Vec<_>>(), [opened.id]);
    assert!(store.user_wallets(&user("zack")).await.unwrap().is_empty());
}

/// Locks `ids` with no key to claim.
async fn lock<T: WalletTx>(tx: &mut T, ids: &[Uuid]) -> Locked {
    match tx.claim_and_lock(None, ids).await.unwrap() {
        Claim::Locked(locked) => locked,
        taken => panic!("no key was claimed, yet {taken:?}"),
    }
}

/// The writes of a change without a key.
fn change<'a>(
    wallets: &'a [&'a WalletState],
    entries: &'a [domain::NewEntry],
    at: chrono::DateTime<chrono::Utc>,
) -> Change<'a> {
    Change {
        wallets,
        entries,
        at,
        key: None,
        response: None,
    }
}

fn state(id: Uuid, name: &str) -> WalletState {
    WalletState {
        id,
        user_id: name.into(),
        balance: Decimal::ZERO,
        last_seq: 1,
    }
}

/// Marks every unpublished row sent.
async fn drain<O: Outbox>(outbox: &O) {
    loop {
        let (mut round, rows) = outbox.lock_unpublished(1_000).await.unwrap();
        if rows.is_empty() {
            return;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        round.mark_sent(&ids).await.unwrap();
        round.commit().await.unwrap();
    }
}

async fn visibility_and_rollback<D: WalletDb>(db: &D) {
    let id = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    tx.insert_wallet(&state(id, "vera")).await.unwrap();
    assert!(
        db.wallet(id).await.unwrap().is_none(),
        "uncommitted rows are invisible"
    );
    tx.commit().await.unwrap();
    assert!(db.wallet(id).await.unwrap().is_some(), "visible at commit");

    let dropped = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    tx.insert_wallet(&state(dropped, "dora")).await.unwrap();
    drop(tx);
    assert!(
        db.wallet(dropped).await.unwrap().is_none(),
        "dropped means rolled back"
    );
}

async fn locks_wait_and_come_in_id_order<D: WalletDb>(db: &D, x: Uuid, y: Uuid) {
    let mut a = db.begin().await.unwrap();
    let locked = lock(&mut a, &[x.max(y), x.min(y), Uuid::now_v7()]).await;
    let ids: Vec<Uuid> = locked.wallets.iter().map(|(w, _)| w.id).collect();
    assert_eq!(
        ids,
        [x.min(y), x.max(y)],
        "locks and rows in id order, a missing wallet left out"
    );

    let other = db.clone();
    let waiting = tokio::spawn(async move {
        let mut b = other.begin().await.unwrap();
        let seen = lock(&mut b, &[x]).await;
        drop(b);
        seen
    });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(
        !waiting.is_finished(),
        "a locked wallet makes the next locker wait"
    );
    let (funded, _) = locked.wallets.iter().find(|(w, _)| w.id == x).unwrap();
    let (after, entry) = domain::fund(
        funded,
        Amount::new(Decimal::new(25, 0)).unwrap(),
        &mut Ids::system(),
    )
    .unwrap();
    a.write(change(&[&after], &[entry], locked.now))
        .await
        .unwrap();
    a.commit().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter proceeds once the lock is released")
        .unwrap();
    let funded = &seen.wallets[0].0;
    assert_eq!(
        funded.balance,
        Decimal::new(25, 0),
        "the waiter sees the committed change"
    );
    assert_eq!(funded.last_seq, 2);
    assert!(
        seen.now >= locked.now + STILL_WAITING,
        "the time is read once the locks are held: {} then {}",
        locked.now,
        seen.now
    );
    let wallet = db.wallet(x).await.unwrap().unwrap();
    assert_eq!(wallet.updated_at, locked.now, "the change carries its time");
}

async fn a_claimed_key_waits_for_its_owner<D: WalletDb>(db: &D, x: Uuid) {
    for owner_commits in [true, false] {
        let key = IdempotencyKey::parse(&format!("contract-{}", Uuid::now_v7())).unwrap();
        let claim = KeyToClaim {
            key: &key,
            fingerprint: "fund x 1",
        };
        let mut a = db.begin().await.unwrap();
        let Claim::Locked(locked) = a.claim_and_lock(Some(claim), &[x]).await.unwrap() else {
            panic!("a new key is claimed");
        };
        let (other, waiting_key) = (db.clone(), key.clone());
        let waiting = tokio::spawn(async move {
            let mut b = other.begin().await.unwrap();
            let claim = KeyToClaim {
                key: &waiting_key,
                fingerprint: "fund x 1",
            };
            b.claim_and_lock(Some(claim), &[x]).await.unwrap()
        });
        tokio::time::sleep(STILL_WAITING).await;
        assert!(
            !waiting.is_finished(),
            "a key another transaction holds makes the claimer wait"
        );
        if owner_commits {
            let response = serde_json::value::to_raw_value(&serde_json::json!({"ok": 1})).unwrap();
            let (before, _) = &locked.wallets[0];
            let (after, entry) = domain::fund(
                before,
                Amount::new(Decimal::ONE).unwrap(),
                &mut Ids::system(),
            )
            .unwrap();
            a.write(Change {
                key: Some(&key),
                response: Some(&response),
                ..change(&[&after], std::slice::from_ref(&entry), locked.now)
            })
            .await
            .unwrap();
            a.commit().await.unwrap();
        } else {
            drop(a);
        }
        let claim = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the claimer proceeds")
            .unwrap();
        match claim {
            Claim::Taken {
                fingerprint,
                response,
            } => {
                assert!(owner_commits, "the owner rolled back, yet the key is taken");
                assert_eq!(fingerprint, "fund x 1");
                assert_eq!(response, Some(serde_json::json!({"ok": 1})));
            }
            Claim::Locked(locked) => {
                assert!(
                    !owner_commits,
                    "the owner committed, yet the key was claimed again"
                );
                assert_eq!(locked.wallets.len(), 1, "claimed, then locked");
            }
        }
    }
}

fn is_constraint<T: std::fmt::Debug>(result: Result<T, DbError>) -> bool {
    matches!(result, Err(DbError::Constraint(_)))
}

async fn constraints_refuse<D: WalletDb>(db: &D, x: Uuid) {
    // VARCHAR(100), and no NUL in text.
    for bad in ["u".repeat(101), "nul\0byte".to_owned()] {
        let mut tx = db.begin().await.unwrap();
        let result = tx.insert_wallet(&state(Uuid::now_v7(), &bad)).await;
        assert!(is_constraint(result), "user id {bad:?} must be refused");
    }
    // CHECK (balance >= 0).
    let mut tx = db.begin().await.unwrap();
    let locked = lock(&mut tx, &[x]).await;
    let mut wallet = locked.wallets[0].0.clone();
    wallet.balance = Decimal::new(-1, 0);
    assert!(
        is_constraint(tx.write(change(&[&wallet], &[], locked.now)).await),
        "a negative balance"
    );
    drop(tx);
    // UNIQUE (wallet_id, seq): seq 1 is the wallet's created entry.
    let mut tx = db.begin().await.unwrap();
    let locked = lock(&mut tx, &[x]).await;
    let wallet = &locked.wallets[0].0;
    let (_, mut entry) = domain::fund(
        wallet,
        Amount::new(Decimal::ONE).unwrap(),
        &mut Ids::system(),
    )
    .unwrap();
    entry.seq = 1;
    assert!(
        is_constraint(tx.write(change(&[wallet], &[entry], locked.now)).await),
        "a taken seq"
    );
}

/// Writes one funded entry for `wallet` in a transaction left open.
async fn open_fund<D: WalletDb>(db: &D, wallet: Uuid) -> D::Tx {
    let mut tx = db.begin().await.unwrap();
    let locked = lock(&mut tx, &[wallet]).await;
    let (after, entry) = domain::fund(
        &locked.wallets[0].0,
        Amount::new(Decimal::ONE).unwrap(),
        &mut Ids::system(),
    )
    .unwrap();
    tx.write(change(&[&after], &[entry], locked.now))
        .await
        .unwrap();
    tx
}

async fn outbox_ids_commit_out_of_order_and_skip_locked<D: WalletDb, O: Outbox>(
    db: &D,
    outbox: &O,
    x: Uuid,
    y: Uuid,
) {
    drain(outbox).await;
    let early = open_fund(db, x).await; // takes the smaller outbox id
    let late = open_fund(db, y).await;
    late.commit().await.unwrap();
    let (round, rows) = outbox.lock_unpublished(10).await.unwrap();
    assert_eq!(rows.len(), 1, "only committed rows: {rows:?}");
    let late_id = rows[0].id;
    assert_eq!(rows[0].wallet_id, y);
    drop(round);
    early.commit().await.unwrap();
    let (mut first, rows) = outbox.lock_unpublished(1).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].id < late_id,
        "the early row's id is smaller: it committed later"
    );
    assert_eq!(rows[0].wallet_id, x);
    // SKIP LOCKED: a second round gets the other row, not the locked one.
    let other_ids = ids_once_released(outbox).await;
    assert_eq!(other_ids, [late_id], "the locked row is skipped");
    first.mark_sent(&[rows[0].id]).await.unwrap();
    first.commit().await.unwrap();
    let left = ids_once_released(outbox).await;
    assert_eq!(left, [late_id], "a row marked sent is not read again");
}

/// The ids a fresh round locks, once the rounds dropped before it have let
/// go. A dropped sqlx transaction rolls back when its pooled connection is
/// next used, so for a moment its locks outlive it: wait (bounded) until
/// the round sees rows, then say which.
async fn ids_once_released<O: Outbox>(outbox: &O) -> Vec<i64> {
    let mut ids = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (round, rows) = outbox.lock_unpublished(10).await.unwrap();
            drop(round);
            ids = rows.iter().map(|r| r.id).collect();
            if !ids.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    ids
}
