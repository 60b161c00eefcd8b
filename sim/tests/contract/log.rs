//! The event source's contract, as the relay and the consumer rely on it:
//! one key's messages land on one partition in order, with offsets that
//! grow; a group member reads from the earliest message; a member of the
//! same group resumes after the group's committed offset; what a member
//! stored but did not commit is delivered again.

use std::future::Future;

/// A message as a consumer received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: String,
}

pub trait LogUnderTest {
    type Member: MemberUnderTest;

    /// Sends and waits for the acknowledgement: (partition, offset).
    fn produce(&self, key: &str, payload: &str) -> impl Future<Output = (i32, i64)>;

    /// A new member of `group`.
    fn member(&self, group: &str) -> impl Future<Output = Self::Member>;
}

pub trait MemberUnderTest {
    /// Up to `wanted` messages (waiting a while for them).
    fn poll(&mut self, wanted: usize) -> impl Future<Output = Vec<Delivered>>;
    /// Marks `offset` of `partition` processed.
    fn store(&mut self, partition: i32, offset: i64);
    fn commit(&mut self) -> impl Future<Output = ()>;
    /// A clean leave.
    fn close(self) -> impl Future<Output = ()>;
    /// Gone without committing.
    fn crash(self) -> impl Future<Output = ()>;
}

pub async fn contract(log: &impl LogUnderTest) {
    // One key, one partition, in order, offsets growing.
    let mut placed = Vec::new();
    for n in 0..6 {
        placed.push(log.produce("wallet-a", &format!("a{n}")).await);
    }
    let partition = placed[0].0;
    assert!(placed.iter().all(|(p, _)| *p == partition), "{placed:?}");
    assert!(placed.windows(2).all(|w| w[1].1 > w[0].1), "{placed:?}");
    for n in 0..3 {
        log.produce("wallet-b", &format!("b{n}")).await;
    }

    // A member reads everything from the earliest message, each key in order.
    let mut first = log.member("g1").await;
    let got = first.poll(9).await;
    assert_eq!(got.len(), 9, "{got:?}");
    let a: Vec<&str> = got
        .iter()
        .filter(|d| d.key == "wallet-a")
        .map(|d| d.payload.as_str())
        .collect();
    assert_eq!(a, ["a0", "a1", "a2", "a3", "a4", "a5"]);

    // Committed up to a3; stored a4 but never committed; then gone.
    let offset_of = |payload: &str| got.iter().find(|d| d.payload == payload).unwrap().offset;
    first.store(partition, offset_of("a3"));
    first.commit().await;
    first.store(partition, offset_of("a4"));
    first.crash().await;

    // The next member resumes after the committed offset: a4 again.
    let mut second = log.member("g1").await;
    let again = second.poll(2).await;
    let resumed: Vec<&str> = again
        .iter()
        .filter(|d| d.key == "wallet-a")
        .map(|d| d.payload.as_str())
        .collect();
    assert_eq!(
        resumed.first(),
        Some(&"a4"),
        "redelivered from the committed offset: {again:?}"
    );
    second.close().await;

    // Another group is independent: it starts from the earliest.
    let mut other = log.member("g2").await;
    let all = other.poll(9).await;
    assert_eq!(all.len(), 9);
    other.close().await;
}
