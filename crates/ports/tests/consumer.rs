//! Consumers over the embedded bus and store: each event's effect happens once, whatever the
//! bus does (events published twice, acknowledgements lost so events come back, three replicas
//! competing), a slow handler keeps its event by extending it, and an event that keeps failing
//! becomes a dead letter whose redrive applies it once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use emporium_ports::events::conformance::{Hooked, Hooks};
use emporium_ports::events::consumer::{Consumer, Handler, Outcome};
use emporium_ports::events::stored::StoredEvents;
use emporium_ports::events::{Delivery, Event, Events, GroupDef, Receipt};
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{Key, Storage, TableDef, TxOp, Update};
use serde_json::Value;

const STOCK: TableDef = TableDef {
    name: "stock",
    indexes: &[],
    ttl_attribute: Some("purge_at"),
};

const SOLD: &str = "emporium.order.confirmed.v1";

fn group(visibility: u64, max_attempts: u32) -> GroupDef {
    GroupDef {
        name: "stock-keeper",
        types: &[SOLD],
        visibility: Duration::from_secs(visibility),
        max_attempts,
    }
}

struct Stand {
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Events>,
    _dir: tempfile::TempDir,
}

fn stand(group: GroupDef) -> Stand {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::open(&dir.path().join("stock.redb"), &[STOCK]).expect("open"));
    let bus: Arc<dyn Events> =
        Arc::new(StoredEvents::embedded(&dir.path().join("events.redb"), &[group]).expect("bus"));
    Stand {
        storage,
        bus,
        _dir: dir,
    }
}

fn sold(units: i64) -> Event {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Event {
        body: format!(r#"{{"id":"{id}","units":{units}}}"#),
        id,
        kind: SOLD.into(),
    }
}

fn counter() -> Key {
    Key::new("sku#KIT-1", "stock")
}

async fn sold_so_far(storage: &dyn Storage) -> i64 {
    storage
        .get(STOCK.name, &counter())
        .await
        .expect("get")
        .and_then(|item| item.get("sold").and_then(Value::as_i64))
        .unwrap_or(0)
}

/// Adds the event's units to the counter, counting how often it was asked; it fails (asks to
/// be retried) while `failing` is above zero, counting down.
struct Seller {
    asked: AtomicUsize,
    failing: AtomicUsize,
    slow: Duration,
}

impl Seller {
    fn new(failing: usize, slow: Duration) -> Arc<Self> {
        Arc::new(Self {
            asked: AtomicUsize::new(0),
            failing: AtomicUsize::new(failing),
            slow,
        })
    }
}

#[async_trait]
impl Handler for Seller {
    async fn handle(&self, event: &Event) -> Outcome {
        self.asked.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.slow).await;
        if self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Outcome::Retry("the warehouse does not answer".into());
        }
        let body: Value = serde_json::from_str(&event.body).expect("body");
        let units = body["units"].as_i64().expect("units");
        Outcome::Apply(vec![TxOp::Update {
            table: STOCK.name,
            key: counter(),
            update: Update::new().add("sold", units),
            condition: None,
        }])
    }
}

/// Loses the first acknowledgement of every event (as a consumer that crashed between its
/// effect and its acknowledgement would).
#[derive(Default)]
struct LosesFirstAcks {
    /// The attempt each receipt was handed out with.
    attempts: std::sync::Mutex<BTreeMap<String, u32>>,
    lost: AtomicUsize,
}

impl Hooks for LosesFirstAcks {
    fn received(&self, deliveries: &[Delivery]) {
        let mut attempts = self.attempts.lock().expect("lock");
        for delivery in deliveries {
            attempts.insert(delivery.receipt.0.clone(), delivery.attempt);
        }
    }
    fn acknowledging(&self, receipts: &[Receipt]) -> Vec<Receipt> {
        let attempts = self.attempts.lock().expect("lock");
        let kept: Vec<Receipt> = receipts
            .iter()
            .filter(|receipt| attempts.get(&receipt.0).copied() != Some(1))
            .cloned()
            .collect();
        self.lost
            .fetch_add(receipts.len() - kept.len(), Ordering::SeqCst);
        kept
    }
}

/// `count` replicas of the consumer of `group` with `seller`, on `bus` and the stand's store.
fn replicas(
    count: usize,
    bus: Arc<dyn Events>,
    stand: &Stand,
    group: GroupDef,
    seller: &Arc<Seller>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let consumer = Consumer::new(
                bus.clone(),
                stand.storage.clone(),
                STOCK,
                group,
                seller.clone(),
            );
            tokio::spawn(Arc::new(consumer).run())
        })
        .collect()
}

/// Waits until the counter shows `units`, or `within` passed; what it shows.
async fn settles_at(storage: &dyn Storage, units: i64, within: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let now = sold_so_far(storage).await;
        if now == units || started.elapsed() > within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_effect_happens_once_with_duplicates_lost_acks_and_three_replicas() {
    let group = group(1, 5);
    let stand = stand(group);
    let bus = Arc::new(Hooked {
        inner: stand.bus.clone(),
        hooks: LosesFirstAcks::default(),
    });
    let seller = Seller::new(0, Duration::ZERO);
    let replicas = replicas(3, bus.clone(), &stand, group, &seller);
    let events: Vec<Event> = (1..=30).map(sold).collect();
    let total: i64 = (1..=30).sum();
    stand.bus.publish(&events).await.expect("publish");
    // Every event published a second time, as a relay that crashed after publishing would.
    stand.bus.publish(&events).await.expect("publish again");
    assert_eq!(
        settles_at(&*stand.storage, total, Duration::from_secs(20)).await,
        total
    );
    // Each first acknowledgement was lost, so each event came back at least once more; the
    // counter still moved once per event. Let the redeliveries settle, then look again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(bus.hooks.lost.load(Ordering::SeqCst) >= 30);
    assert_eq!(sold_so_far(&*stand.storage).await, total);
    let left = stand
        .bus
        .receive(group.name, 10, Duration::from_secs(2))
        .await
        .expect("receive");
    assert!(left.is_empty(), "left unacknowledged: {left:?}");
    for replica in replicas {
        replica.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handler_keeps_its_event_by_extending_it() {
    let group = group(2, 5);
    let stand = stand(group);
    // Five seconds of work against a two-second visibility, two replicas waiting.
    let seller = Seller::new(0, Duration::from_secs(5));
    let replicas = replicas(2, stand.bus.clone(), &stand, group, &seller);
    stand.bus.publish(&[sold(4)]).await.expect("publish");
    assert_eq!(
        settles_at(&*stand.storage, 4, Duration::from_secs(15)).await,
        4
    );
    assert_eq!(
        seller.asked.load(Ordering::SeqCst),
        1,
        "delivered to another replica while it worked"
    );
    for replica in replicas {
        replica.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_keeps_failing_is_a_dead_letter_until_redriven_then_applied_once() {
    let group = group(1, 2);
    let stand = stand(group);
    // Fails its first two tries: both attempts the group allows.
    let seller = Seller::new(2, Duration::ZERO);
    let replicas = replicas(1, stand.bus.clone(), &stand, group, &seller);
    let poison = sold(9);
    stand
        .bus
        .publish(std::slice::from_ref(&poison))
        .await
        .expect("publish");
    let started = Instant::now();
    let mut dead = Vec::new();
    while dead.is_empty() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dead = stand
            .bus
            .dead_letters(group.name, 10)
            .await
            .expect("dead letters");
    }
    assert_eq!(dead, vec![poison]);
    assert_eq!(sold_so_far(&*stand.storage).await, 0);
    assert_eq!(seller.asked.load(Ordering::SeqCst), 2);
    // The handler works again: redriven, the event is applied, once.
    assert_eq!(stand.bus.redrive(group.name).await.expect("redrive"), 1);
    assert_eq!(
        settles_at(&*stand.storage, 9, Duration::from_secs(15)).await,
        9
    );
    assert_eq!(seller.asked.load(Ordering::SeqCst), 3);
    for replica in replicas {
        replica.abort();
    }
}
