use std::time::Duration;

use harness::system::Role;
use nix::sys::signal::Signal;

use crate::helpers::{start, transfers_during};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_while_transfers_flow_loses_nothing() {
    let mut t = start().await;
    let wallets = t.wallets(8, "100000").await;
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let broker = t.system.broker.as_ref().unwrap();
        let pid = broker.pid().unwrap();
        broker.signal(Signal::SIGKILL).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        pid
    };
    let ((ok, errors), killed_pid) =
        transfers_during(&t, &wallets, Duration::from_secs(12), chaos).await;
    assert!(
        errors.is_empty(),
        "{} API calls failed while the broker was down: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 50, "only {ok} transfers went through");

    // Reap the killed broker and start it again on the same storage.
    let broker = t.system.broker.as_mut().unwrap();
    assert!(!broker.is_running());
    broker.restart().await.unwrap();
    assert_ne!(broker.pid(), Some(killed_pid));
    t.system.wait_ready(Role::Broker).await.unwrap();

    let ledger = t.converge_exactly(Duration::from_secs(90)).await;
    assert_eq!(
        ledger,
        16 + 2 * ok as i64,
        "every acknowledged transfer wrote two entries"
    );
    t.system.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_killed_mid_stream_neither_loses_nor_duplicates() {
    let mut t = start().await;
    let wallets = t.wallets(8, "100000").await;
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        t.system.histories[0]
            .process
            .as_ref()
            .expect("started here")
            .signal(Signal::SIGKILL)
            .unwrap();
    };
    let ((ok, errors), ()) = transfers_during(&t, &wallets, Duration::from_secs(8), chaos).await;
    assert!(
        errors.is_empty(),
        "wallet calls failed: {:?}",
        &errors[..errors.len().min(5)]
    );
    let applied_before: i64 = t
        .count(&t.system.history_db, "SELECT count(*) FROM history_entries")
        .await;
    assert!(
        applied_before > 0,
        "the consumer was killed before it applied anything"
    );

    let history = t.system.histories[0]
        .process
        .as_mut()
        .expect("started here");
    assert!(!history.is_running());
    history.restart().await.unwrap();
    t.system.wait_ready(Role::History).await.unwrap();

    let ledger = t.converge_exactly(Duration::from_secs(90)).await;
    assert_eq!(ledger, 16 + 2 * ok as i64);
    t.system.shutdown().await.unwrap();
}
