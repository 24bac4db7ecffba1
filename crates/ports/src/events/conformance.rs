//! The events conformance suite, run against every events adapter. Each case gets a fixture of
//! its own, made for [`GROUPS`], so adapters sharing a server (SNS and SQS on moto) keep each
//! case's queues apart by a prefix of the fixture's.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Delivery, Event, Events, EventsError, GroupDef, MAX_EVENT_BYTES, Receipt};

pub struct Fixture {
    pub events: Arc<dyn Events>,
    pub guard: Box<dyn Any + Send>,
}

const CONFIRMED: &str = "emporium.order.confirmed.v1";
const CANCELLED: &str = "emporium.order.cancelled.v1";
const STOCK: &str = "emporium.stock.changed.v1";

/// Orders, patiently: a short visibility, three attempts.
const ORDERS: &str = "suite-orders";
/// Stock, with a visibility longer than any case, so nothing is redelivered by accident.
const STOCK_GROUP: &str = "suite-stock";
/// Both topics, impatient: dead letters after two attempts.
const EVERYTHING: &str = "suite-everything";

/// The groups every fixture is made for.
pub const GROUPS: &[GroupDef] = &[
    GroupDef {
        name: ORDERS,
        types: &[CONFIRMED, CANCELLED],
        visibility: Duration::from_secs(2),
        max_attempts: 3,
    },
    GroupDef {
        name: STOCK_GROUP,
        types: &[STOCK],
        visibility: Duration::from_secs(60),
        max_attempts: 3,
    },
    GroupDef {
        name: EVERYTHING,
        types: &[CONFIRMED, STOCK],
        visibility: Duration::from_secs(1),
        max_attempts: 2,
    },
];

#[macro_export]
macro_rules! events_conformance {
    ($factory:path) => {
        $crate::events_conformance!(@cases $factory;
            every_subscribed_group_gets_each_event,
            an_unacknowledged_event_comes_back_after_the_visibility_timeout,
            concurrent_receivers_get_each_event_once,
            an_extension_keeps_an_event_hidden,
            an_event_never_acknowledged_goes_to_the_dead_letters_and_redrive_returns_it,
            a_waiting_receive_wakes_for_a_publish,
            bodies_come_back_exactly,
            bad_requests_are_refused,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $factory($crate::events::conformance::GROUPS).await;
                $crate::events::conformance::$case(fixture.events.clone()).await;
                drop(fixture);
            }
        )*
    };
}

fn event(kind: &str, body: &str) -> Event {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Event {
        body: format!(r#"{{"id":"{id}","type":"{kind}","data":{body}}}"#),
        id,
        kind: kind.to_owned(),
    }
}

/// Receives from `group` until `count` deliveries came or `within` passed, acknowledging each
/// when `ack` is set (as a consumer that handled it would). Also for other tests that listen on
/// a bus.
pub async fn collect(
    events: &dyn Events,
    group: &str,
    count: usize,
    within: Duration,
    ack: bool,
) -> Vec<Delivery> {
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < count && started.elapsed() < within {
        let batch = events
            .receive(group, 10, Duration::from_secs(1))
            .await
            .expect("receive");
        if ack && !batch.is_empty() {
            let receipts: Vec<Receipt> = batch.iter().map(|d| d.receipt.clone()).collect();
            events.ack(group, &receipts).await.expect("ack");
        }
        got.extend(batch);
    }
    got
}

fn ids(deliveries: &[Delivery]) -> BTreeSet<String> {
    deliveries.iter().map(|d| d.event.id.clone()).collect()
}

/// Nothing more for `group` within a receive that waits `wait`.
async fn nothing_more(events: &dyn Events, group: &str, wait: Duration) {
    let more = events.receive(group, 10, wait).await.expect("receive");
    assert!(more.is_empty(), "{group} got more: {more:?}");
}

pub async fn every_subscribed_group_gets_each_event(events: Arc<dyn Events>) {
    let confirmed = event(CONFIRMED, r#"{"n":1}"#);
    let stock = event(STOCK, r#"{"n":2}"#);
    let cancelled = event(CANCELLED, r#"{"n":3}"#);
    events
        .publish(&[confirmed.clone(), stock.clone(), cancelled.clone()])
        .await
        .expect("publish");
    events.publish(&[]).await.expect("publishing nothing");
    let wanted: BTreeMap<&str, Vec<&Event>> = BTreeMap::from([
        (ORDERS, vec![&confirmed, &cancelled]),
        (STOCK_GROUP, vec![&stock]),
        (EVERYTHING, vec![&confirmed, &stock]),
    ]);
    for (group, expected) in wanted {
        let got = collect(
            &*events,
            group,
            expected.len(),
            Duration::from_secs(15),
            true,
        )
        .await;
        assert_eq!(got.len(), expected.len(), "{group}: {got:?}");
        for wanted in expected {
            let delivery = got
                .iter()
                .find(|d| d.event.id == wanted.id)
                .unwrap_or_else(|| panic!("{group} did not get {}", wanted.kind));
            assert_eq!(&delivery.event, wanted);
            assert_eq!(delivery.attempt, 1);
        }
    }
    for group in [ORDERS, EVERYTHING] {
        nothing_more(&*events, group, Duration::from_secs(3)).await;
    }
}

pub async fn an_unacknowledged_event_comes_back_after_the_visibility_timeout(
    events: Arc<dyn Events>,
) {
    let published = event(CONFIRMED, "{}");
    events
        .publish(std::slice::from_ref(&published))
        .await
        .expect("publish");
    let first = collect(&*events, ORDERS, 1, Duration::from_secs(15), false).await;
    assert_eq!(ids(&first), BTreeSet::from([published.id.clone()]));
    assert_eq!(first[0].attempt, 1);
    let hidden_at = Instant::now();
    // Hidden from the group's other receivers while its visibility lasts.
    let during = events
        .receive(ORDERS, 10, Duration::ZERO)
        .await
        .expect("receive");
    assert!(during.is_empty(), "{during:?}");
    let again = collect(&*events, ORDERS, 1, Duration::from_secs(15), false).await;
    assert_eq!(ids(&again), BTreeSet::from([published.id.clone()]));
    assert!(
        hidden_at.elapsed() >= Duration::from_millis(1500),
        "delivered again after {:?}, within its 2 s visibility",
        hidden_at.elapsed()
    );
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].event, published);
    events
        .ack(ORDERS, &[again[0].receipt.clone()])
        .await
        .expect("ack");
    nothing_more(&*events, ORDERS, Duration::from_secs(4)).await;
}

pub async fn concurrent_receivers_get_each_event_once(events: Arc<dyn Events>) {
    let published: Vec<Event> = (0..40)
        .map(|n| event(STOCK, &format!(r#"{{"n":{n}}}"#)))
        .collect();
    for batch in published.chunks(10) {
        events.publish(batch).await.expect("publish");
    }
    // Four replicas of the consumer, each taking what it can until all 40 are in.
    let total = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let (events, total) = (events.clone(), total.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut got = Vec::new();
                while total.load(Ordering::SeqCst) < 40
                    && started.elapsed() < Duration::from_secs(20)
                {
                    let batch = events
                        .receive(STOCK_GROUP, 10, Duration::from_secs(1))
                        .await
                        .expect("receive");
                    let receipts: Vec<Receipt> = batch.iter().map(|d| d.receipt.clone()).collect();
                    if !receipts.is_empty() {
                        events.ack(STOCK_GROUP, &receipts).await.expect("ack");
                    }
                    total.fetch_add(batch.len(), Ordering::SeqCst);
                    got.extend(batch);
                }
                got
            })
        })
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for receiver in receivers {
        for delivery in receiver.await.expect("receiver") {
            *seen.entry(delivery.event.id).or_default() += 1;
        }
    }
    let wanted: BTreeSet<String> = published.iter().map(|e| e.id.clone()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), wanted);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered twice within the visibility: {twice:?}"
    );
}

pub async fn an_extension_keeps_an_event_hidden(events: Arc<dyn Events>) {
    let published = event(CANCELLED, "{}");
    events
        .publish(std::slice::from_ref(&published))
        .await
        .expect("publish");
    let got = collect(&*events, ORDERS, 1, Duration::from_secs(15), false).await;
    assert_eq!(got.len(), 1);
    let receipt = got[0].receipt.clone();
    events
        .extend(ORDERS, &receipt, Duration::from_secs(8))
        .await
        .expect("extend");
    // Past the group's own 2 s visibility, still hidden.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = events
        .receive(ORDERS, 10, Duration::ZERO)
        .await
        .expect("receive");
    assert!(during.is_empty(), "{during:?}");
    events.ack(ORDERS, &[receipt]).await.expect("ack");
    nothing_more(&*events, ORDERS, Duration::from_secs(3)).await;
}

pub async fn an_event_never_acknowledged_goes_to_the_dead_letters_and_redrive_returns_it(
    events: Arc<dyn Events>,
) {
    let poison = event(CONFIRMED, r#"{"poison":true}"#);
    events
        .publish(std::slice::from_ref(&poison))
        .await
        .expect("publish");
    // Two deliveries, neither acknowledged (the handler fails each time).
    let mut attempts = Vec::new();
    let started = Instant::now();
    while attempts.len() < 2 && started.elapsed() < Duration::from_secs(20) {
        for delivery in events
            .receive(EVERYTHING, 10, Duration::from_secs(1))
            .await
            .expect("receive")
        {
            assert_eq!(delivery.event.id, poison.id);
            attempts.push(delivery.attempt);
        }
    }
    assert_eq!(attempts, vec![1, 2]);
    // Then it is a dead letter (moved when it would be delivered a third time).
    let started = Instant::now();
    let mut dead = Vec::new();
    while dead.is_empty() && started.elapsed() < Duration::from_secs(20) {
        let more = events
            .receive(EVERYTHING, 10, Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(more.is_empty(), "delivered a third time: {more:?}");
        dead = events
            .dead_letters(EVERYTHING, 10)
            .await
            .expect("dead letters");
    }
    assert_eq!(dead, vec![poison.clone()]);
    // Other groups are not affected.
    let orders = collect(&*events, ORDERS, 1, Duration::from_secs(15), true).await;
    assert_eq!(ids(&orders), BTreeSet::from([poison.id.clone()]));
    // Redriven, it is delivered as new, once acknowledged it is gone.
    assert_eq!(events.redrive(EVERYTHING).await.expect("redrive"), 1);
    let back = collect(&*events, EVERYTHING, 1, Duration::from_secs(15), true).await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].event, poison);
    assert_eq!(back[0].attempt, 1);
    assert!(
        events
            .dead_letters(EVERYTHING, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(events.redrive(EVERYTHING).await.expect("redrive"), 0);
    nothing_more(&*events, EVERYTHING, Duration::from_secs(3)).await;
}

pub async fn a_waiting_receive_wakes_for_a_publish(events: Arc<dyn Events>) {
    let waiting = {
        let events = events.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = events
                .receive(STOCK_GROUP, 10, Duration::from_secs(15))
                .await
                .expect("receive");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = event(STOCK, "{}");
    events
        .publish(std::slice::from_ref(&published))
        .await
        .expect("publish");
    let (got, waited) = waiting.await.expect("receiver");
    assert_eq!(ids(&got), BTreeSet::from([published.id]));
    assert!(
        waited < Duration::from_secs(8),
        "the receive waited {waited:?} for an event published after 0.5 s"
    );
}

pub async fn bodies_come_back_exactly(events: Arc<dyn Events>) {
    let mut large = event(STOCK, "{}");
    // Near the limit as stored: the quotes, backslash and newline take two bytes each there.
    let filler = "é✓ \"quoted\" \\ \n".repeat(MAX_EVENT_BYTES / 30);
    large.body = format!(r#"{{"id":"{}","text":"{filler}"}}"#, large.id);
    let stored = serde_json::to_string(&large.body).expect("json").len();
    assert!(
        stored > MAX_EVENT_BYTES / 2 && stored <= MAX_EVENT_BYTES,
        "{stored}"
    );
    let small = event(STOCK, r#"{"emoji":"🛒","nul":"\u0000"}"#);
    events
        .publish(&[large.clone(), small.clone()])
        .await
        .expect("publish");
    let got = collect(&*events, STOCK_GROUP, 2, Duration::from_secs(15), true).await;
    for wanted in [&large, &small] {
        let delivery = got
            .iter()
            .find(|d| d.event.id == wanted.id)
            .expect("delivered");
        assert_eq!(&delivery.event, wanted);
    }
}

pub async fn bad_requests_are_refused(events: Arc<dyn Events>) {
    let invalid = |result: Result<(), EventsError>, what: &str| match result {
        Err(EventsError::Invalid(_)) => {}
        other => panic!("{what}: {other:?}"),
    };
    let mut unnamed = event(STOCK, "{}");
    unnamed.id.clear();
    invalid(events.publish(&[unnamed]).await, "an event without an id");
    let mut untyped = event(STOCK, "{}");
    untyped.kind = "stock changed".into();
    invalid(
        events.publish(&[untyped]).await,
        "an event type of another shape",
    );
    let mut spaced = event(STOCK, "{}");
    spaced.id = "order 42".into();
    invalid(events.publish(&[spaced]).await, "an event id with a space");
    // Within the limit as it is, over it as stored (every quote escaped).
    let mut quoted = event(STOCK, "{}");
    quoted.body = "\"".repeat(MAX_EVENT_BYTES / 2 + 16);
    invalid(
        events.publish(&[quoted]).await,
        "a body over the limit as stored",
    );
    let mut huge = event(STOCK, "{}");
    huge.body = "x".repeat(MAX_EVENT_BYTES + 1);
    // A batch with one bad event publishes none of it.
    let fine = event(STOCK, "{}");
    invalid(events.publish(&[fine, huge]).await, "a body over the limit");
    nothing_more(&*events, STOCK_GROUP, Duration::from_secs(2)).await;
    invalid(
        events
            .receive(STOCK_GROUP, 0, Duration::ZERO)
            .await
            .map(|_| ()),
        "receiving none",
    );
    invalid(
        events
            .receive(STOCK_GROUP, 11, Duration::ZERO)
            .await
            .map(|_| ()),
        "receiving more than ten",
    );
    invalid(
        events
            .receive(STOCK_GROUP, 1, Duration::from_secs(21))
            .await
            .map(|_| ()),
        "waiting longer than 20 s",
    );
    match events.receive("suite-undeclared", 1, Duration::ZERO).await {
        Err(EventsError::UnknownGroup(name)) => assert_eq!(name, "suite-undeclared"),
        other => panic!("an undeclared group: {other:?}"),
    }
    invalid(
        events
            .extend(
                STOCK_GROUP,
                &Receipt("x".into()),
                Duration::from_millis(1500),
            )
            .await,
        "an extension of a fraction of a second",
    );
}

/// What a [`Hooked`] bus changes of the bus it wraps; each hook's default changes nothing.
pub trait Hooks: Send + Sync + 'static {
    /// Before a publish reaches the bus: an error refuses it (the bus is down).
    fn publishing(&self, _events: &[Event]) -> Result<(), EventsError> {
        Ok(())
    }
    /// How long a publish takes before it reaches the bus (a slow bus).
    fn publish_delay(&self) -> Duration {
        Duration::ZERO
    }
    /// After the bus took a publish.
    fn published(&self, _events: &[Event]) {}
    /// What a receive handed out.
    fn received(&self, _deliveries: &[Delivery]) {}
    /// The acknowledgements that reach the bus (the others are lost on the way).
    fn acknowledging(&self, receipts: &[Receipt]) -> Vec<Receipt> {
        receipts.to_vec()
    }
}

/// A bus that passes every call to `inner`, through `hooks`: for tests of what producers and
/// consumers do when the bus fails or loses what they send.
pub struct Hooked<H> {
    pub inner: Arc<dyn Events>,
    pub hooks: H,
}

#[async_trait::async_trait]
impl<H: Hooks> Events for Hooked<H> {
    async fn publish(&self, events: &[Event]) -> Result<(), EventsError> {
        let delay = self.hooks.publish_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.hooks.publishing(events)?;
        self.inner.publish(events).await?;
        self.hooks.published(events);
        Ok(())
    }
    async fn receive(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        let got = self.inner.receive(group, max, wait).await?;
        self.hooks.received(&got);
        Ok(got)
    }
    async fn ack(&self, group: &str, receipts: &[Receipt]) -> Result<(), EventsError> {
        self.inner
            .ack(group, &self.hooks.acknowledging(receipts))
            .await
    }
    async fn extend(
        &self,
        group: &str,
        receipt: &Receipt,
        hidden_for: Duration,
    ) -> Result<(), EventsError> {
        self.inner.extend(group, receipt, hidden_for).await
    }
    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<Event>, EventsError> {
        self.inner.dead_letters(group, max).await
    }
    async fn redrive(&self, group: &str) -> Result<usize, EventsError> {
        self.inner.redrive(group).await
    }
    async fn ping(&self) -> Result<(), EventsError> {
        self.inner.ping().await
    }
}
