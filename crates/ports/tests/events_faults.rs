//! The events port's embedded adapter and the outbox when their store fails in part: a receive
//! that fails after claiming hands over what it claimed; a sweep whose deletes fail ends its
//! round; an event the bus refuses for good is set aside and the rest go out; a sweep slower
//! than its lease does not overlap another replica's; a redrive while consumers keep failing
//! moves each dead letter once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use emporium_ports::events::conformance::{Hooked, Hooks};
use emporium_ports::events::outbox::Outbox;
use emporium_ports::events::stored::{StoredEvents, TABLE as EVENTS};
use emporium_ports::events::{Event, Events, GroupDef};
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{
    Condition, Item, Key, Page, Query, Storage, StorageError, TableDef, TxOp, Update,
};

const KIND: &str = "emporium.order.placed.v1";
const SHOP: TableDef = TableDef {
    name: "shop",
    indexes: &[],
    ttl_attribute: None,
};

/// A storage that passes everything through, with switchable faults.
struct Faulty {
    inner: EmbeddedStorage,
    fail_next_transact: AtomicBool,
    fail_deletes: AtomicBool,
    transact_delay_ms: AtomicUsize,
}

impl Faulty {
    fn open(path: &std::path::Path, tables: &[TableDef]) -> Arc<Self> {
        Arc::new(Self {
            inner: EmbeddedStorage::open(path, tables).expect("open"),
            fail_next_transact: AtomicBool::new(false),
            fail_deletes: AtomicBool::new(false),
            transact_delay_ms: AtomicUsize::new(0),
        })
    }
}

fn down() -> StorageError {
    StorageError::Backend(anyhow::anyhow!("injected"))
}

#[async_trait]
impl Storage for Faulty {
    async fn get(&self, t: &'static str, k: &Key) -> Result<Option<Item>, StorageError> {
        self.inner.get(t, k).await
    }
    async fn put(
        &self,
        t: &'static str,
        i: Item,
        c: Option<Condition>,
    ) -> Result<(), StorageError> {
        self.inner.put(t, i, c).await
    }
    async fn update(
        &self,
        t: &'static str,
        k: &Key,
        u: Update,
        c: Option<Condition>,
    ) -> Result<Item, StorageError> {
        self.inner.update(t, k, u, c).await
    }
    async fn delete(
        &self,
        t: &'static str,
        k: &Key,
        c: Option<Condition>,
    ) -> Result<Option<Item>, StorageError> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.delete(t, k, c).await
    }
    async fn query(&self, t: &'static str, q: Query) -> Result<Page, StorageError> {
        self.inner.query(t, q).await
    }
    async fn query_index(
        &self,
        t: &'static str,
        i: &'static str,
        q: Query,
    ) -> Result<Page, StorageError> {
        self.inner.query_index(t, i, q).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StorageError> {
        let delay = self.transact_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if self.fail_next_transact.swap(false, Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.transact(ops).await
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        kind: KIND.into(),
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

fn fresh() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

const G: GroupDef = GroupDef {
    name: "g",
    types: &[KIND],
    visibility: Duration::from_secs(1),
    max_attempts: 1,
};

/// Counts what the bus takes, optionally slowly.
#[derive(Default)]
struct Counting {
    delay: Duration,
    published: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Hooks for Counting {
    fn publish_delay(&self) -> Duration {
        self.delay
    }
    fn published(&self, events: &[Event]) {
        let mut published = self.published.lock().expect("lock");
        for event in events {
            *published.entry(event.id.clone()).or_default() += 1;
        }
    }
}

fn counting(dir: &std::path::Path, delay: Duration) -> (Arc<dyn Events>, Arc<Hooked<Counting>>) {
    let bus = StoredEvents::embedded(&dir.join("events.redb"), &[G]).expect("bus");
    let counted = Arc::new(Hooked {
        inner: Arc::new(bus) as Arc<dyn Events>,
        hooks: Counting {
            delay,
            ..Counting::default()
        },
    });
    (counted.clone(), counted)
}

/// Records `n` outbox entries a minute old, as a crashed process leaves them (the layout the
/// outbox documents), the first of type `first_kind`.
async fn recorded(storage: &dyn Storage, n: usize, first_kind: &str) -> Vec<String> {
    let old = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_millis(),
    )
    .expect("ms")
        - 60_000;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{i:04}-{}", fresh());
        let mut item = Item::new();
        item.insert("id".into(), id.clone().into());
        item.insert("kind".into(), if i == 0 { first_kind } else { KIND }.into());
        item.insert("body".into(), "{}".into());
        let key = Key::new("outbox", format!("{:016}#{id}", old + i as u64));
        storage
            .put(SHOP.name, key.stamp(item), None)
            .await
            .expect("put");
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_that_fails_after_claiming_hands_over_what_it_claimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Faulty::open(&dir.path().join("e.redb"), &[EVENTS]);
    let bus = StoredEvents::new(storage.clone(), &[G]).expect("bus");
    let b = event(&fresh());
    bus.publish(std::slice::from_ref(&b))
        .await
        .expect("publish");
    // B delivered once (its one attempt), never acknowledged.
    assert_eq!(
        bus.receive("g", 10, Duration::ZERO)
            .await
            .expect("receive")
            .len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A, published now, comes before B's return in the queue.
    let a = event(&fresh());
    bus.publish(std::slice::from_ref(&a))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Moving B to the dead letters fails: the receive still hands over A, claimed before it.
    storage.fail_next_transact.store(true, Ordering::SeqCst);
    let got = bus.receive("g", 10, Duration::ZERO).await.expect("receive");
    assert_eq!(
        got.iter().map(|d| d.event.id.clone()).collect::<Vec<_>>(),
        vec![a.id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_whose_deletes_fail_ends_its_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Faulty::open(&dir.path().join("shop.redb"), &[SHOP]);
    recorded(&*storage, 60, KIND).await;
    storage.fail_deletes.store(true, Ordering::SeqCst);
    let (bus, counted) = counting(dir.path(), Duration::ZERO);
    let outbox = Outbox::new(storage.clone(), bus, SHOP.name);
    let swept = tokio::time::timeout(Duration::from_secs(5), outbox.sweep())
        .await
        .expect("the round ends")
        .expect("sweep");
    assert_eq!(swept, 0);
    let calls: usize = counted.hooks.published.lock().expect("lock").values().sum();
    assert!(calls <= 10, "published {calls} events for 60 recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_bus_refuses_is_set_aside_and_the_rest_go_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Faulty::open(&dir.path().join("shop.redb"), &[SHOP]);
    let ids = recorded(&*storage, 5, "not-a-type").await;
    let (bus, counted) = counting(dir.path(), Duration::ZERO);
    let outbox = Outbox::new(storage.clone(), bus, SHOP.name);
    // Five taken off the outbox: four published, one set aside.
    assert_eq!(outbox.sweep().await.expect("sweep"), 5);
    let published = counted.hooks.published.lock().expect("lock").clone();
    assert_eq!(
        published.keys().cloned().collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
    assert_eq!(outbox.backlog().await.expect("backlog").0, 0);
    let refused = storage
        .query(SHOP.name, Query::partition("outbox-refused"))
        .await
        .expect("query");
    assert_eq!(refused.items.len(), 1);
    assert_eq!(refused.items[0]["id"], ids[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_slower_than_its_lease_does_not_overlap_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Faulty::open(&dir.path().join("shop.redb"), &[SHOP]);
    recorded(&*storage, 100, KIND).await;
    // Ten batches of 1.5 s: 15 s of publishing against a 10 s lease.
    let (bus, counted) = counting(dir.path(), Duration::from_millis(1500));
    let a = Arc::new(Outbox::new(storage.clone(), bus.clone(), SHOP.name));
    let b = Arc::new(Outbox::new(storage.clone(), bus, SHOP.name));
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.sweep().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(async move {
        let mut total = 0;
        for _ in 0..20 {
            total += b.sweep().await.expect("sweep");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        total
    });
    let by_a = first.await.expect("a").expect("sweep");
    let by_b = second.await.expect("b");
    let published = counted.hooks.published.lock().expect("lock").clone();
    let twice: Vec<_> = published.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "A {by_a}, B {by_b}, twice: {twice:?}");
    assert_eq!(published.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_while_consumers_keep_failing_moves_each_dead_letter_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Faulty::open(&dir.path().join("e.redb"), &[EVENTS]);
    let bus = Arc::new(StoredEvents::new(storage.clone(), &[G]).expect("bus"));
    let events: Vec<Event> = (0..60).map(|_| event(&fresh())).collect();
    bus.publish(&events).await.expect("publish");
    // A consumer that never acknowledges.
    let churn = tokio::spawn({
        let bus = bus.clone();
        async move {
            loop {
                let _ = bus.receive("g", 10, Duration::from_secs(1)).await;
            }
        }
    });
    while bus.dead_letters("g", 1000).await.expect("dead").len() < 60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A slower store, so the churn dead-letters again while the redrive runs.
    storage.transact_delay_ms.store(40, Ordering::SeqCst);
    let redriven = tokio::time::timeout(Duration::from_secs(20), bus.redrive("g"))
        .await
        .expect("the redrive ends")
        .expect("redrive");
    churn.abort();
    assert!(redriven <= 60, "redrove {redriven} of 60 dead letters");
}
