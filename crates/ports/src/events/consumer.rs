//! Consuming a group's events with their effect applied once: at-least-once delivery made
//! exactly-once in effect by remembering, in the consumer's own table and in the same storage
//! transaction as the effect, the id of each event it has applied.
//!
//! A [`Handler`] looks at an event and the consumer's state and answers with the writes that
//! apply it ([`Outcome::Apply`]), with nothing to do ([`Outcome::Skip`]: not for it, or its
//! effect is there already), or with a wish to be asked again later ([`Outcome::Retry`]). The
//! consumer adds to the writes a record `processed#<group>` / `<event id>` on the condition that
//! none exists, and commits them together: a second delivery of the same event, to this replica
//! or another, finds the record (or fails on it) and only acknowledges. A failed transaction, a
//! handler error or a crash leaves the event unacknowledged, so it comes back after the group's
//! visibility timeout, until its attempts run out and it becomes a dead letter. A handler slower
//! than half the visibility timeout has its event's visibility extended while it runs.
//!
//! Processed records expire after [`PROCESSED_RETENTION`], longer than any event stays queued.
//!
//! Run any number of consumers of a group at once (replicas of the service): each delivery goes
//! to one of them, and the record makes the effect happen once whichever applies it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tracing::Instrument as _;

use super::stats::{ConsumerStats, GroupLabel, HandledLabel};
use super::{Delivery, Event, Events, GroupDef, RETENTION, epoch_ms};
use crate::storage::{
    Condition, Item, Key, Storage, StorageError, TableDef, TxOp, now_epoch_seconds,
};

/// How long a consumer remembers an event it applied: beyond the longest an event can wait in a
/// queue ([`RETENTION`]), so no redelivery outlives its record.
pub const PROCESSED_RETENTION: Duration = Duration::from_secs(RETENTION.as_secs() + 86_400);
/// How long one receive waits for events before it asks again.
const RECEIVE_WAIT: Duration = Duration::from_secs(10);
/// How often the consumer counts its group's dead letters.
const DEAD_LETTERS_EVERY: Duration = Duration::from_secs(30);
/// How many times a handler decides again when the state it decided on moved meanwhile.
const CONFLICT_ATTEMPTS: usize = 5;
/// How long a stopping consumer lets the batch in hand settle before it hands back the rest:
/// inside the 5 s the platform's server gives background work to wind down.
const HAND_BACK_AFTER: Duration = Duration::from_secs(3);
/// How long the consumer pauses after the bus failed, before it tries again.
const BACKOFF: Duration = Duration::from_secs(1);

/// What a handler makes of an event.
pub enum Outcome {
    /// Apply it with these writes (to the consumer's own tables), committed with its record.
    Apply(Vec<TxOp>),
    /// Apply it with these writes, and once they have committed run the closure (hand events
    /// the writes recorded to the outbox's fast path, retire a cached copy).
    ApplyThen(Vec<TxOp>, AfterCommit),
    /// Nothing to write: the event is not for this consumer, or its effect is there already.
    Skip,
    /// Not now (a dependency is down): deliver it again later, which counts an attempt.
    Retry(String),
}

/// A handler's decision, or why it could not decide (a dependency down, an event it cannot
/// read): asked again later.
impl From<Result<Outcome, String>> for Outcome {
    fn from(decided: Result<Outcome, String>) -> Self {
        decided.unwrap_or_else(Outcome::Retry)
    }
}

/// What runs once a handler's writes have committed.
pub type AfterCommit = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// A group's handling of its events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// What to do with `event` (its envelope in `event.body`).
    async fn handle(&self, event: &Event) -> Outcome;
}

/// Makes the span an event is handled in (a service continues the producer's trace).
pub type SpanOf = Arc<dyn Fn(&Event) -> tracing::Span + Send + Sync>;

/// One consumer of a group; [`Consumer::run`] receives and applies until dropped.
pub struct Consumer {
    span_of: Option<SpanOf>,
    stats: ConsumerStats,
    events: Arc<dyn Events>,
    storage: Arc<dyn Storage>,
    /// The consumer's table, where its effects and processed records go; the records expire
    /// through its TTL attribute (a table without one keeps them).
    table: TableDef,
    group: GroupDef,
    handler: Arc<dyn Handler>,
}

fn processed_key(group: &str, id: &str) -> Key {
    Key::new(format!("processed#{group}"), id)
}

impl Consumer {
    pub fn new(
        events: Arc<dyn Events>,
        storage: Arc<dyn Storage>,
        table: TableDef,
        group: GroupDef,
        handler: Arc<dyn Handler>,
    ) -> Self {
        Self {
            span_of: None,
            stats: ConsumerStats::for_group(group.name),
            events,
            storage,
            table,
            group,
            handler,
        }
    }

    /// What the consumer counts, for the service's metrics.
    pub fn stats(&self) -> &ConsumerStats {
        &self.stats
    }

    fn group_label(&self) -> GroupLabel {
        GroupLabel {
            group: self.group.name.to_owned(),
        }
    }

    /// Counts what came of handling `delivery`.
    fn count(&self, delivery: &Delivery, outcome: &'static str) {
        self.stats
            .handled
            .get_or_create(&HandledLabel {
                group: self.group.name.to_owned(),
                outcome,
            })
            .inc();
        if delivery.attempt > 1 {
            self.stats
                .redeliveries
                .get_or_create(&self.group_label())
                .inc();
        }
        if let Some(lag) = lag_of(&delivery.event) {
            self.stats
                .lag
                .get_or_create(&self.group_label())
                .observe(lag);
        }
    }

    /// Counts the group's dead letters (up to 100) for the metrics.
    async fn count_dead_letters(&self) {
        match self.events.dead_letters(self.group.name, 100).await {
            Ok(dead) => {
                self.stats
                    .dead_letters
                    .get_or_create(&self.group_label())
                    .set(i64::try_from(dead.len()).unwrap_or(i64::MAX));
            }
            Err(error) => {
                tracing::warn!(group = self.group.name, %error, "counting dead letters failed");
            }
        }
    }

    /// This consumer, handling each event in the span `span_of` makes for it.
    pub fn traced(mut self, span_of: SpanOf) -> Self {
        self.span_of = Some(span_of);
        self
    }

    /// Receives and applies the group's events until the future is dropped (a service runs it
    /// beside its server). What it had received and not acknowledged comes back to a consumer
    /// of the group after the visibility timeout.
    pub async fn run(self: Arc<Self>) {
        self.run_until(std::future::pending()).await;
    }

    /// [`Consumer::run`] until `stop` resolves (the service is stopping): it receives no more,
    /// gives the batch in hand [`HAND_BACK_AFTER`] to settle, and hands back what is still
    /// being handled (visible again at once), so another replica takes it now rather than
    /// after the visibility timeout; a rolling update then delays no event by 30 s.
    pub async fn run_until(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut counted: Option<tokio::time::Instant> = None;
        loop {
            if counted.is_none_or(|at| at.elapsed() >= DEAD_LETTERS_EVERY) {
                self.count_dead_letters().await;
                counted = Some(tokio::time::Instant::now());
            }
            let received = tokio::select! {
                received = self.events.receive(self.group.name, 10, RECEIVE_WAIT) => received,
                () = &mut stop => return,
            };
            match received {
                Ok(deliveries) => {
                    // A batch's events are handled at once: each is one event's effect, and
                    // two on one record meet in its conditional write, where the later decides
                    // again.
                    let settling =
                        futures::future::join_all(deliveries.iter().map(|d| self.settle(d)));
                    tokio::pin!(settling);
                    tokio::select! {
                        _ = &mut settling => {}
                        () = &mut stop => {
                            let settled =
                                tokio::time::timeout(HAND_BACK_AFTER, &mut settling).await;
                            if settled.is_err() {
                                // Those settled already are acknowledged: handing them back
                                // is refused as stale, and changes nothing.
                                self.hand_back(&deliveries).await;
                            }
                            return;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(group = self.group.name, %error, "receiving events failed");
                    tokio::select! {
                        () = tokio::time::sleep(BACKOFF) => {}
                        () = &mut stop => return,
                    }
                }
            }
        }
    }

    /// Makes `deliveries` visible to the group's receivers again at once.
    async fn hand_back(&self, deliveries: &[Delivery]) {
        let handing = deliveries.iter().map(|delivery| async move {
            match self
                .events
                .extend(self.group.name, &delivery.receipt, Duration::ZERO)
                .await
            {
                Ok(()) => {
                    tracing::info!(group = self.group.name, event_id = %delivery.event.id, "stopping: an event in hand handed back");
                }
                Err(super::EventsError::StaleReceipt) => {}
                Err(error) => {
                    tracing::warn!(group = self.group.name, event_id = %delivery.event.id, %error, "handing back an event failed; it comes back after the visibility timeout");
                }
            }
        });
        futures::future::join_all(handing).await;
    }

    /// Applies one delivery (at most once in effect) and acknowledges it, or leaves it for a
    /// redelivery; whether it was acknowledged.
    pub async fn settle(&self, delivery: &Delivery) -> bool {
        let _in_hand = InHand::count(&self.stats.in_hand.get_or_create(&self.group_label()));
        let span = self
            .span_of
            .as_ref()
            .map_or_else(tracing::Span::none, |span_of| span_of(&delivery.event));
        let applied = {
            let work = self.apply(&delivery.event).instrument(span);
            tokio::pin!(work);
            // Half the visibility timeout: extended before it runs out, with time to spare.
            let every = self.group.visibility / 2;
            loop {
                tokio::select! {
                    applied = &mut work => break applied,
                    () = tokio::time::sleep(every) => {
                        if let Err(error) = self
                            .events
                            .extend(self.group.name, &delivery.receipt, self.group.visibility)
                            .await
                        {
                            tracing::warn!(group = self.group.name, event_id = %delivery.event.id, %error, "extending a slow event's visibility failed");
                        }
                    }
                }
            }
        };
        self.count(
            delivery,
            match &applied {
                Ok(outcome) => outcome,
                Err(_) => "failed",
            },
        );
        match applied {
            Ok(_) => match self
                .events
                .ack(self.group.name, std::slice::from_ref(&delivery.receipt))
                .await
            {
                Ok(()) => true,
                Err(error) => {
                    // Applied and recorded: the redelivery only acknowledges.
                    tracing::warn!(group = self.group.name, event_id = %delivery.event.id, %error, "acknowledging an applied event failed");
                    false
                }
            },
            Err(why) => {
                let again_in = retry_delay(delivery.attempt, self.group.visibility);
                tracing::warn!(
                    group = self.group.name,
                    event_id = %delivery.event.id,
                    kind = %delivery.event.kind,
                    attempt = delivery.attempt,
                    max_attempts = self.group.max_attempts,
                    again_in_secs = again_in.as_secs(),
                    why,
                    "event not applied; it comes back for another attempt"
                );
                // Sooner than the visibility timeout, later with each attempt: a dependency
                // back in a moment gets the event back in a moment, a poison event reaches the
                // dead letters in seconds rather than minutes.
                if let Err(error) = self
                    .events
                    .extend(self.group.name, &delivery.receipt, again_in)
                    .await
                {
                    tracing::warn!(group = self.group.name, event_id = %delivery.event.id, %error, "shortening a failed event's visibility failed; it comes back after the visibility timeout");
                }
                false
            }
        }
    }

    /// The event's effect with its record, unless it was applied already. A handler's write
    /// whose condition failed (the state it decided on moved meanwhile: a shopper's change, a
    /// sweeper) is decided again at once on the new state, a few times, rather than after a
    /// visibility timeout.
    async fn apply(&self, event: &Event) -> Result<&'static str, String> {
        let key = processed_key(self.group.name, &event.id);
        for _ in 0..CONFLICT_ATTEMPTS {
            match self.storage.get(self.table.name, &key).await {
                Ok(Some(_)) => return Ok("duplicate"),
                Ok(None) => {}
                Err(error) => return Err(format!("reading its record: {error}")),
            }
            let (mut ops, after) = match self.handler.handle(event).await {
                Outcome::Apply(ops) => (ops, None),
                Outcome::ApplyThen(ops, after) => (ops, Some(after)),
                Outcome::Skip => (Vec::new(), None),
                Outcome::Retry(why) => return Err(why),
            };
            let outcome = if ops.is_empty() { "skipped" } else { "applied" };
            let mut record = Item::new();
            record.insert("kind".into(), event.kind.clone().into());
            if let Some(ttl) = self.table.ttl_attribute {
                record.insert(
                    ttl.into(),
                    Value::from(now_epoch_seconds().saturating_add(
                        i64::try_from(PROCESSED_RETENTION.as_secs()).unwrap_or(i64::MAX),
                    )),
                );
            }
            let at = ops.len();
            ops.push(TxOp::Put {
                table: self.table.name,
                item: key.stamp(record),
                condition: Some(Condition::NotExists),
            });
            match self.storage.transact(ops).await {
                Ok(()) => {
                    if let Some(after) = after {
                        after().await;
                    }
                    return Ok(outcome);
                }
                // Another delivery of it was applied meanwhile, with its record: nothing is lost.
                Err(StorageError::TransactionCanceled { failed }) if failed.contains(&at) => {
                    return Ok("duplicate");
                }
                Err(StorageError::TransactionCanceled { .. }) => {
                    // A little random pause, so two writers of one item stop colliding.
                    let pause = rand::random_range(1..=10);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(error) => return Err(format!("applying it: {error}")),
            }
        }
        Err("the state it applies to kept changing under it".into())
    }
}

/// A delivery counted in hand while this lives: counted out however the settling ends, a
/// panic or a dropped future included.
struct InHand(prometheus_client::metrics::gauge::Gauge);

impl InHand {
    fn count(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long a failed event stays hidden before its next attempt: a second per attempt so far,
/// never longer than the group's visibility timeout.
fn retry_delay(attempt: u32, visibility: Duration) -> Duration {
    Duration::from_secs(u64::from(attempt.max(1))).min(visibility)
}

/// Seconds since the event's envelope says its change was committed (`time`), when it says.
fn lag_of(event: &Event) -> Option<f64> {
    let envelope: Value = serde_json::from_str(&event.body).ok()?;
    let time = envelope.get("time")?.as_str()?;
    let committed_ms = rfc3339_epoch_ms(time)?;
    let now = epoch_ms();
    Some(now.saturating_sub(committed_ms) as f64 / 1000.0)
}

/// Epoch milliseconds of an RFC 3339 UTC time such as `2026-12-04T01:38:22.714151Z`.
fn rfc3339_epoch_ms(time: &str) -> Option<u64> {
    let parsed =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}
