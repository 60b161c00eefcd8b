//! The backends under contract: the models, and real PostgreSQL and the
//! real broker started for the test (a fresh database, its own topic).

use std::time::Duration;

use rdkafka::{
    ClientConfig, Message, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use sim::{
    kafka::{Kafka, MemberId, Poll},
    pg::{Postgres, history::SimHistoryDb, wallet::SimWalletDb},
};

use crate::log::{Delivered, LogUnderTest, MemberUnderTest};

pub fn model_wallet() -> (SimWalletDb, SimWalletDb) {
    let db = SimWalletDb {
        pg: Postgres::new(),
    };
    (db.clone(), db)
}

pub async fn postgres_wallet() -> (wallet::store::PgWalletDb, wallet::relay::PgOutbox) {
    let url = harness::fresh_database("contract_wallet")
        .await
        .expect("test PostgreSQL");
    let pool = service_kit::connect_and_migrate(&url, 8, &wallet::MIGRATOR)
        .await
        .expect("wallet database migrated");
    (
        wallet::store::PgWalletDb::new(pool.clone()),
        wallet::relay::PgOutbox::new(pool),
    )
}

pub fn model_history() -> SimHistoryDb {
    SimHistoryDb {
        pg: Postgres::new(),
    }
}

pub async fn postgres_history() -> history::apply::PgHistoryDb {
    let url = harness::fresh_database("contract_history")
        .await
        .expect("test PostgreSQL");
    let pool = service_kit::connect_and_migrate(&url, 8, &history::MIGRATOR)
        .await
        .expect("history database migrated");
    history::apply::PgHistoryDb::new(pool)
}

/// The Kafka model, one topic of `PARTITIONS` partitions.
pub struct ModelLog {
    kafka: Kafka,
}

pub const PARTITIONS: usize = 4;

impl ModelLog {
    pub fn new() -> Self {
        Self {
            kafka: Kafka::new("contract", PARTITIONS, Duration::from_secs(6)),
        }
    }
}

pub struct ModelMember {
    kafka: Kafka,
    member: MemberId,
}

impl LogUnderTest for ModelLog {
    type Member = ModelMember;

    async fn produce(&self, key: &str, payload: &str) -> (i32, i64) {
        self.kafka
            .produce(key.as_bytes(), payload.as_bytes())
            .expect("the model's broker is up")
    }

    async fn member(&self, group: &str) -> ModelMember {
        ModelMember {
            kafka: self.kafka.clone(),
            member: self.kafka.join_group(group),
        }
    }
}

impl MemberUnderTest for ModelMember {
    async fn poll(&mut self, wanted: usize) -> Vec<Delivered> {
        let mut got = Vec::new();
        for _ in 0..50 {
            if let Poll::Messages(batch) = self.kafka.poll(self.member, wanted - got.len()) {
                got.extend(batch.into_iter().map(|m| Delivered {
                    partition: m.partition,
                    offset: m.offset,
                    key: String::from_utf8(m.key.unwrap_or_default()).unwrap(),
                    payload: String::from_utf8(m.payload.unwrap_or_default()).unwrap(),
                }));
            }
            if got.len() >= wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        got
    }

    fn store(&mut self, partition: i32, offset: i64) {
        self.kafka
            .store_offset(self.member, partition, offset)
            .expect("the member owns the partition");
    }

    async fn commit(&mut self) {
        self.kafka.commit(self.member);
    }

    async fn close(self) {
        self.kafka.leave(self.member);
    }

    async fn crash(self) {
        // Gone without a word: no commit, no leave. The group notices at
        // the session timeout; the contract's next member joins meanwhile
        // and must wait for the partitions, as with a real broker.
        let kafka = self.kafka.clone();
        let member = self.member;
        drop(self);
        kafka.leave_without_commit(member);
    }
}

/// The bundled broker, started for the test.
pub struct RealLog {
    system: harness::system::System,
    topic: String,
    producer: FutureProducer,
    _dir: tempfile::TempDir,
}

impl RealLog {
    pub async fn start() -> RealLog {
        let dir = tempfile::tempdir().unwrap();
        let server = harness::test_server().await.expect("test PostgreSQL");
        let mut options = harness::system::SystemOptions::isolated(
            dir.path(),
            harness::system::Launcher::multi_call(loadgen_binary()),
        );
        options.database_url = Some(server.admin_url().to_owned());
        let system = harness::system::System::start(options)
            .await
            .expect("system starts");
        let topic = format!("contract-{}", uuid::Uuid::new_v4().simple());
        let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &system.kafka_brokers)
            .create()
            .unwrap();
        let new = rdkafka::admin::NewTopic::new(
            &topic,
            PARTITIONS as i32,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        admin
            .create_topics([&new], &rdkafka::admin::AdminOptions::new())
            .await
            .unwrap();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &system.kafka_brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap();
        RealLog {
            system,
            topic,
            producer,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.system.shutdown().await.unwrap();
    }
}

/// The services come from the loadgen binary; the broker is one of its
/// roles. Built by the workspace before tests run.
fn loadgen_binary() -> std::path::PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("loadgen")
}

pub struct RealMember {
    consumer: BaseConsumer,
}

impl LogUnderTest for RealLog {
    type Member = RealMember;

    async fn produce(&self, key: &str, payload: &str) -> (i32, i64) {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        let delivery = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("the broker acknowledges");
        (delivery.partition, delivery.offset)
    }

    async fn member(&self, group: &str) -> RealMember {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.system.kafka_brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap();
        consumer.subscribe(&[&self.topic]).unwrap();
        RealMember { consumer }
    }
}

impl MemberUnderTest for RealMember {
    async fn poll(&mut self, wanted: usize) -> Vec<Delivered> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < wanted && std::time::Instant::now() < deadline {
            let message =
                tokio::task::block_in_place(|| self.consumer.poll(Duration::from_millis(100)));
            if let Some(Ok(message)) = message {
                got.push(Delivered {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    payload: String::from_utf8_lossy(message.payload().unwrap_or_default())
                        .into_owned(),
                });
            }
        }
        got
    }

    fn store(&mut self, partition: i32, offset: i64) {
        let topic = self.consumer.subscription().unwrap().elements()[0]
            .topic()
            .to_owned();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(offset + 1))
            .unwrap();
        self.consumer
            .store_offsets(&list)
            .expect("the member owns the partition");
    }

    async fn commit(&mut self) {
        tokio::task::block_in_place(|| self.consumer.commit_consumer_state(CommitMode::Sync))
            .expect("committed");
    }

    async fn close(self) {
        tokio::task::block_in_place(|| {
            self.consumer.unsubscribe();
            drop(self.consumer);
        });
    }

    async fn crash(self) {
        // Closing without a commit: what was stored and not committed is
        // lost, as in a crash (librdkafka would commit on a clean close
        // only with auto-commit on).
        self.close().await;
    }
}
