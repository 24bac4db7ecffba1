//! The transactional outbox over the embedded store and the embedded bus: what commits is
//! published at once, what fails is never published, what a crashed process recorded is
//! published by whichever replica's sweeper holds the lease (once, with three sweepers racing),
//! and what a failing bus could not take stays recorded until it can.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use emporium_ports::events::conformance::{Hooked, Hooks};
use emporium_ports::events::outbox::{Outbox, SWEEP_AFTER};
use emporium_ports::events::stored::StoredEvents;
use emporium_ports::events::{Event, Events, EventsError, GroupDef};
use emporium_ports::health;
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{Condition, Key, Storage, TableDef, TxOp};

const SHOP: TableDef = TableDef {
    name: "shop",
    indexes: &[],
    ttl_attribute: None,
};

const GROUP: GroupDef = GroupDef {
    name: "listener",
    types: &["emporium.order.placed.v1"],
    visibility: Duration::from_secs(60),
    max_attempts: 5,
};

struct Shop {
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Events>,
    _dir: tempfile::TempDir,
}

fn shop() -> Shop {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage =
        EmbeddedStorage::open(&dir.path().join("shop.redb"), &[SHOP]).expect("open the shop");
    let events = EmbeddedStorage::open(
        &dir.path().join("events.redb"),
        &[emporium_ports::events::stored::TABLE],
    )
    .expect("open the bus");
    let bus = StoredEvents::new(Arc::new(events), &[GROUP]).expect("bus");
    Shop {
        storage: Arc::new(storage),
        bus: Arc::new(bus),
        _dir: dir,
    }
}

fn placed(n: usize) -> Event {
    let id = format!("event-{n}-{}", uuid::Uuid::new_v4().simple());
    Event {
        body: format!(r#"{{"id":"{id}","n":{n}}}"#),
        id,
        kind: "emporium.order.placed.v1".into(),
    }
}

/// The change (an order item) and its event, in one transaction.
async fn place(
    storage: &dyn Storage,
    outbox: &Outbox,
    order: &str,
    event: Event,
) -> Result<emporium_ports::events::outbox::Pending, emporium_ports::storage::StorageError> {
    let pending = outbox.record(vec![event]).expect("a valid event");
    let mut item = emporium_ports::storage::Item::new();
    item.insert("status".into(), "placed".into());
    let mut ops = vec![TxOp::Put {
        table: SHOP.name,
        item: Key::new(format!("order#{order}"), "order").stamp(item),
        condition: Some(Condition::NotExists),
    }];
    ops.extend(pending.ops());
    storage.transact(ops).await?;
    Ok(pending)
}

/// Everything the group receives within `within`, acknowledged, counted by event id.
async fn received(bus: &dyn Events, within: Duration) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for delivery in
        emporium_ports::events::conformance::collect(bus, GROUP.name, usize::MAX, within, true)
            .await
    {
        *seen.entry(delivery.event.id).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_change_is_published_at_once_and_a_failed_one_never() {
    let shop = shop();
    let outbox = Arc::new(Outbox::new(
        shop.storage.clone(),
        shop.bus.clone(),
        SHOP.name,
    ));
    let relay = tokio::spawn(outbox.clone().run());
    let event = placed(1);
    let committed_at = Instant::now();
    let pending = place(&*shop.storage, &outbox, "a", event.clone())
        .await
        .expect("placed");
    outbox.committed(pending);
    let got = shop
        .bus
        .receive(GROUP.name, 10, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(
        got.iter().map(|d| &d.event).collect::<Vec<_>>(),
        vec![&event]
    );
    // The fast path, not the sweeper (which waits for SWEEP_AFTER).
    assert!(
        committed_at.elapsed() < SWEEP_AFTER,
        "{:?}",
        committed_at.elapsed()
    );
    // A second order "a" fails its condition: its event is never recorded, never published.
    let refused = place(&*shop.storage, &outbox, "a", placed(2)).await;
    assert!(refused.is_err(), "{refused:?}");
    let started = Instant::now();
    while outbox.backlog().await.expect("backlog").0 > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let more = received(&*shop.bus, SWEEP_AFTER + Duration::from_secs(2)).await;
    assert!(more.is_empty(), "{more:?}");
    relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_crashed_process_recorded_is_published_once_by_one_of_three_sweepers() {
    let shop = shop();
    // The process that dies: it commits 20 changes and their events, and never publishes.
    let doomed = Outbox::new(shop.storage.clone(), shop.bus.clone(), SHOP.name);
    let mut wanted = Vec::new();
    for n in 0..20 {
        let event = placed(n);
        wanted.push(event.id.clone());
        place(&*shop.storage, &doomed, &format!("o{n}"), event)
            .await
            .expect("placed");
    }
    drop(doomed);
    assert_eq!(
        Outbox::new(shop.storage.clone(), shop.bus.clone(), SHOP.name)
            .backlog()
            .await
            .expect("backlog")
            .0,
        20
    );
    // Three replicas start, each with its sweeper.
    let counted = flaky(shop.bus.clone(), false);
    let replicas: Vec<Arc<Outbox>> = (0..3)
        .map(|_| {
            Arc::new(Outbox::new(
                shop.storage.clone(),
                counted.clone(),
                SHOP.name,
            ))
        })
        .collect();
    let relays: Vec<_> = replicas
        .iter()
        .map(|outbox| tokio::spawn(outbox.clone().run()))
        .collect();
    let seen = received(&*shop.bus, SWEEP_AFTER + Duration::from_secs(6)).await;
    wanted.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), wanted);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let published = counted.hooks.published.lock().expect("lock").clone();
    let twice: Vec<_> = published.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(published.len(), 20);
    assert_eq!(replicas[0].backlog().await.expect("backlog").0, 0);
    for relay in relays {
        relay.abort();
    }
}

/// Refuses every publish while `down`, and counts what the bus took: the embedded bus itself
/// queues an event published twice once while it waits, which would hide a second publish
/// from the receivers.
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    published: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Hooks for Flaky {
    fn publishing(&self, _events: &[Event]) -> Result<(), EventsError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(EventsError::Backend(anyhow::anyhow!("the bus is down")));
        }
        Ok(())
    }
    fn published(&self, events: &[Event]) {
        let mut published = self.published.lock().expect("lock");
        for event in events {
            *published.entry(event.id.clone()).or_default() += 1;
        }
    }
}

/// `inner` behind a [`Flaky`].
fn flaky(inner: Arc<dyn Events>, down: bool) -> Arc<Hooked<Flaky>> {
    let hooks = Flaky::default();
    hooks.down.store(down, Ordering::SeqCst);
    Arc::new(Hooked { inner, hooks })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_the_bus_refused_stay_recorded_until_it_takes_them() {
    let shop = shop();
    let flaky = flaky(shop.bus.clone(), true);
    let outbox = Arc::new(Outbox::new(shop.storage.clone(), flaky.clone(), SHOP.name));
    let relay = tokio::spawn(outbox.clone().run());
    let event = placed(7);
    let pending = place(&*shop.storage, &outbox, "b", event.clone())
        .await
        .expect("placed");
    outbox.committed(pending);
    // The relay's readiness check, with a 2 s bound here (a minute in the services).
    let stuck = health::relay(&outbox, Duration::from_secs(2));
    assert_eq!(stuck().await, Ok(()), "not stuck yet");
    let none = received(&*shop.bus, Duration::from_secs(4)).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(outbox.backlog().await.expect("backlog").0, 1);
    // The relay's last rounds saw it waiting, and for longer than the bound.
    assert_eq!(outbox.stats().backlog.get(), 1);
    assert!(outbox.stats().oldest_age.get() > 2.0);
    let why = stuck().await.expect_err("stuck");
    assert!(why.contains("relay is stuck"), "{why}");
    flaky.hooks.down.store(false, Ordering::SeqCst);
    let seen = received(&*shop.bus, SWEEP_AFTER + Duration::from_secs(3)).await;
    assert_eq!(seen, BTreeMap::from([(event.id.clone(), 1)]));
    assert_eq!(outbox.backlog().await.expect("backlog").0, 0);
    // Published: counted by type, and the check passes again after the next round.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stuck().await, Ok(()));
    assert_eq!(outbox.stats().backlog.get(), 0);
    let published = outbox
        .stats()
        .published
        .get_or_create(&emporium_ports::events::stats::TypeLabel {
            r#type: event.kind.clone(),
        })
        .get();
    assert_eq!(published, 1);
    relay.abort();
}
