use std::time::Duration;

use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

use crate::helpers::start;

/// topic, partition, offset, key, payload, error
type DeadLetter = (String, i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_consumption_continues() {
    let t = start().await;
    // The wallet creates the topic; wait until it has published something.
    let first = t.create_wallet("before").await;
    t.converge(Duration::from_secs(30)).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &t.system.kafka_brokers)
        .create()
        .unwrap();
    let topic = t.system.options.topic.clone();
    let newer_version =
        br#"{"schema_version":99,"event_id":"00000000-0000-0000-0000-000000000001"}"#;
    for payload in [b"this is not json".as_slice(), newer_version.as_slice()] {
        let record = FutureRecord::to(&topic)
            .key(first.as_str())
            .payload(payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("poison published");
    }

    // Events after the poison still arrive.
    let later = t.create_wallet("after").await;
    t.fund(&later, "12.34").await;
    t.converge(Duration::from_secs(30)).await;

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&t.system.history_db)
        .await
        .unwrap();
    let letters: Vec<DeadLetter> = sqlx::query_as(
        "SELECT topic, partition, \"offset\", key, payload, error FROM dead_letters ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].0, topic);
    assert_eq!(letters[0].3.as_deref(), Some(first.as_bytes()));
    assert_eq!(
        letters[0].4.as_deref(),
        Some(b"this is not json".as_slice())
    );
    assert!(
        letters[1].5.contains("schema version 99"),
        "{}",
        letters[1].5
    );
    assert_eq!(letters[0].1, letters[1].1, "same key, same partition");
    assert!(letters[1].2 > letters[0].2);

    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM history_entries WHERE wallet_id = $1::uuid")
            .bind(&later)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(applied, 2);
    let health = t.history_health().await;
    assert!(health.contains("dead_letters: 2"), "{health}");
    t.system.shutdown().await.unwrap();
}
