//! The transactional outbox: a producer records its events in its own table, in the same
//! storage transaction as the change that causes them, so a change that fails publishes nothing
//! and a change that commits is never lost; a relay publishes what is recorded and deletes it.
//!
//! Two paths publish, so that an event goes out at once and still goes out after a crash:
//!
//! - the **fast path**: once the transaction has committed, the producer hands the recorded
//!   events to [`Outbox::committed`], and a task of this process publishes and deletes them
//!   (milliseconds after the commit, off the request's path);
//! - the **sweeper**: one replica at a time (the holder of a lease item in the same table,
//!   taken by conditional write and renewed each round) publishes what has stayed recorded for
//!   longer than [`SWEEP_AFTER`]: events of a process that crashed between its commit and its
//!   publish, or whose publish failed.
//!
//! The duplicate window: an event is published twice when the fast path has not deleted it
//! [`SWEEP_AFTER`] after it was recorded (a publish that slow, or a process paused that long),
//! when deleting a published event fails, when a bus takes part of a batch and refuses the
//! rest, when a sweeper pauses for longer than its lease ([`LEASE_FOR`], renewed before each
//! batch of ten) while another takes over, or when replicas' clocks differ by more than
//! [`SWEEP_AFTER`]. Delivery is at least once anyway, and consumers deduplicate by event id. An
//! event the bus refuses for good (`Invalid`) is set aside in `outbox-refused` with the reason,
//! so it does not hold up the others.
//!
//! | item   | pk             | sk                      | notes                               |
//! |--------|----------------|-------------------------|-------------------------------------|
//! | event  | `outbox`       | `<epoch ms, 16>#<id>`   | `id`, `kind`, `body`                |
//! | lease  | `outbox-lease` | `lease`                 | `owner`, `until` (epoch ms)         |
//! | refused | `outbox-refused` | as the event's     | an event the bus refuses for good, and `why` |
//!
//! All of a service's recorded events share one partition, in commit order: a sweeper reads
//! the oldest first. DynamoDB takes about 1,000 writes a second on one partition, far above
//! what one service's changes produce here.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::stats::{OutboxStats, TypeLabel};
use super::{Event, Events, EventsError, epoch_ms, timed_key, timed_key_ms};
use crate::storage::{Condition, Item, Key, Query, Storage, StorageError, TxOp};

/// How long a recorded event is left to the fast path before the sweeper takes it.
pub const SWEEP_AFTER: Duration = Duration::from_secs(5);
/// How long a sweeper's lease lasts without renewal.
pub const LEASE_FOR: Duration = Duration::from_secs(10);
/// How often the sweeper looks (and renews its lease).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Events the fast path holds for publishing before it leaves the rest to the sweeper.
const FAST_PATH_QUEUE: usize = 10_000;
/// Events one publish call carries.
const PUBLISH_BATCH: usize = 10;
/// Recorded events the sweeper reads at a time, and pages in one round: a round ends in
/// bounded time and the next continues.
const SWEEP_PAGE: usize = 50;
const SWEEP_PAGES: usize = 20;

const PARTITION: &str = "outbox";

fn lease_key() -> Key {
    Key::new("outbox-lease", "lease")
}

/// Recorded events with the keys of their records.
type Entries = Vec<(Key, Event)>;

/// Events recorded in a transaction that has not committed yet.
#[derive(Debug, Clone)]
pub struct Pending {
    table: &'static str,
    entries: Entries,
}

impl Pending {
    /// The writes that record the events: add them to the change's transaction.
    pub fn ops(&self) -> impl Iterator<Item = TxOp> + '_ {
        self.entries.iter().map(|(key, event)| {
            let mut item = Item::new();
            item.insert("id".into(), event.id.clone().into());
            item.insert("kind".into(), event.kind.clone().into());
            item.insert("body".into(), event.body.clone().into());
            TxOp::Put {
                table: self.table,
                item: key.stamp(item),
                condition: Some(Condition::NotExists),
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Turns what a producer recorded into the events published, at the moment they are published:
/// for a producer whose transaction cannot know the state it leaves (counters moved by
/// additions, as the inventory's are), the record names what changed and the finisher reads
/// the state then. Whatever it returns for a record must have ids of its own that are the same
/// each time it runs for that record, so a publish repeated after a failure repeats the ids.
#[async_trait::async_trait]
pub trait Finisher: Send + Sync + 'static {
    async fn finish(&self, recorded: &Event) -> Result<Vec<Event>, StorageError>;
}

/// One service's outbox, in its table.
pub struct Outbox {
    storage: Arc<dyn Storage>,
    events: Arc<dyn Events>,
    table: &'static str,
    /// This replica, as the sweeper lease names its holder.
    owner: String,
    fast_path: mpsc::Sender<Entries>,
    /// The fast path's end, until [`Outbox::start`] takes it.
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Entries>>>,
    finisher: Option<Arc<dyn Finisher>>,
    stats: OutboxStats,
}

fn event_of(item: &Item) -> Option<(Key, Event)> {
    let text = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
    Some((
        Key::of(item).ok()?,
        Event {
            id: text("id")?,
            kind: text("kind")?,
            body: text("body")?,
        },
    ))
}

impl Outbox {
    /// The outbox in `table` of `storage`, publishing to `events`.
    pub fn new(storage: Arc<dyn Storage>, events: Arc<dyn Events>, table: &'static str) -> Self {
        let (sender, receiver) = mpsc::channel(FAST_PATH_QUEUE);
        Self {
            storage,
            events,
            table,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            fast_path: sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            finisher: None,
            stats: OutboxStats::default(),
        }
    }

    /// What the outbox counts, for the service's metrics.
    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }

    /// This outbox, with its records turned into events by `finisher` as they are published.
    pub fn finishing(mut self, finisher: Arc<dyn Finisher>) -> Self {
        self.finisher = Some(finisher);
        self
    }

    /// The events `chunk`'s records stand for.
    async fn finished(&self, chunk: &[(Key, Event)]) -> Result<Vec<Event>, StorageError> {
        let Some(finisher) = &self.finisher else {
            return Ok(chunk.iter().map(|(_, event)| event.clone()).collect());
        };
        let mut events = Vec::with_capacity(chunk.len());
        for (_, recorded) in chunk {
            events.extend(finisher.finish(recorded).await?);
        }
        Ok(events)
    }

    /// Records `events` for a transaction: put [`Pending::ops`] in it, and once it has
    /// committed, hand the `Pending` to [`Outbox::committed`].
    pub fn record(&self, events: Vec<Event>) -> Result<Pending, EventsError> {
        for event in &events {
            event.validate()?;
        }
        let now = epoch_ms();
        Ok(Pending {
            table: self.table,
            entries: events
                .into_iter()
                .map(|event| {
                    let key = Key::new(PARTITION, timed_key(now, &event.id));
                    (key, event)
                })
                .collect(),
        })
    }

    /// The transaction that recorded `pending` committed: publish it now.
    pub fn committed(&self, pending: Pending) {
        if pending.is_empty() {
            return;
        }
        // A full queue (the bus far behind) leaves the events to the sweeper: they are
        // recorded, so nothing is lost, only later.
        if self.fast_path.try_send(pending.entries).is_err() {
            tracing::warn!(
                table = self.table,
                "outbox fast path full; the sweeper publishes these events"
            );
        }
    }

    /// Runs the fast path and the sweeper until the future is dropped (a service runs it
    /// beside its server, which aborts it on stop). Anything it had not published yet stays
    /// recorded, for the sweeper of this or another replica. Run it once per outbox.
    pub async fn run(self: Arc<Self>) {
        let receiver = self.receiver.lock().ok().and_then(|mut slot| slot.take());
        let fast_path = async {
            if let Some(receiver) = receiver {
                self.fast_path(receiver).await;
            }
        };
        tokio::join!(fast_path, self.sweeper());
    }

    /// Publishes `entries` and deletes them from the table; false when a publish failed (what
    /// it carried stays recorded for the sweeper).
    async fn publish(&self, entries: &[(Key, Event)]) -> bool {
        // The chunks at once: one after another, each waited for the bus's commit and then its
        // deletes' commit, and the order service's fast path published about 200 events a
        // second while its checkouts recorded 800, leaving the rest to the sweeper, seconds
        // late and published twice. The bus keeps no order between events anyway.
        let chunks = entries
            .chunks(PUBLISH_BATCH)
            .map(|chunk| self.publish_chunk(chunk));
        futures::future::join_all(chunks)
            .await
            .into_iter()
            .all(|published| published)
    }

    /// [`Outbox::publish`] of at most [`PUBLISH_BATCH`] entries.
    async fn publish_chunk(&self, chunk: &[(Key, Event)]) -> bool {
        let events = match self.finished(chunk).await {
            Ok(events) => events,
            // A record its finisher cannot read: one at a time, so only that one is set
            // aside and the rest go out.
            Err(StorageError::Invalid(_)) if chunk.len() > 1 => {
                return self.publish_each(chunk).await;
            }
            Err(StorageError::Invalid(why)) => {
                self.set_aside(&chunk[0], &why).await;
                return true;
            }
            Err(error) => {
                tracing::warn!(table = self.table, %error, "finishing recorded events failed; the sweeper retries");
                return false;
            }
        };
        match self.events.publish(&events).await {
            Ok(()) => {
                for event in &events {
                    self.stats
                        .published
                        .get_or_create(&TypeLabel {
                            r#type: event.kind.clone(),
                        })
                        .inc();
                }
            }
            // The bus refuses something in the batch: one at a time, so the rest goes out
            // and only what is refused is set aside.
            Err(EventsError::Invalid(_)) if chunk.len() > 1 => {
                return self.publish_each(chunk).await;
            }
            Err(EventsError::Invalid(why)) => {
                self.set_aside(&chunk[0], &why).await;
                return true;
            }
            Err(error) => {
                tracing::warn!(table = self.table, %error, "publishing recorded events failed; the sweeper retries");
                return false;
            }
        }
        // Together, so they share a commit.
        let deletes = chunk.iter().map(|(key, event)| async move {
            let deleted = self.storage.delete(self.table, key, None).await;
            if let Err(error) = &deleted {
                // Published but still recorded: the sweeper publishes it again, which the
                // consumers' deduplication absorbs. The round stops, so a store that
                // refuses deletes is not fed the same events again and again.
                tracing::warn!(table = self.table, event_id = %event.id, %error, "deleting a published event failed");
            }
            deleted.is_ok()
        });
        futures::future::join_all(deletes)
            .await
            .into_iter()
            .all(|deleted| deleted)
    }

    /// Publishes `chunk`'s entries one at a time, so only the one refused is set aside.
    async fn publish_each(&self, chunk: &[(Key, Event)]) -> bool {
        for entry in chunk {
            if !Box::pin(self.publish_chunk(std::slice::from_ref(entry))).await {
                return false;
            }
        }
        true
    }

    /// Moves an event the bus refuses for good out of the way of the others, where an operator
    /// finds it (`outbox-refused`), saying why.
    async fn set_aside(&self, (key, event): &(Key, Event), why: &str) {
        tracing::error!(table = self.table, event_id = %event.id, kind = %event.kind, why, "the bus refuses a recorded event; it is set aside in outbox-refused");
        let mut item = Item::new();
        item.insert("id".into(), event.id.clone().into());
        item.insert("kind".into(), event.kind.clone().into());
        item.insert("body".into(), event.body.clone().into());
        item.insert("why".into(), why.into());
        let moved = self
            .storage
            .transact(vec![
                TxOp::Delete {
                    table: self.table,
                    key: key.clone(),
                    condition: None,
                },
                TxOp::Put {
                    table: self.table,
                    item: Key::new("outbox-refused", key.sk.clone()).stamp(item),
                    condition: None,
                },
            ])
            .await;
        if let Err(error) = moved {
            tracing::warn!(table = self.table, event_id = %event.id, %error, "setting a refused event aside failed");
        }
    }

    async fn fast_path(&self, mut receiver: mpsc::Receiver<Entries>) {
        while let Some(mut batch) = receiver.recv().await {
            // Whatever else is queued goes in the same round.
            while batch.len() < 100 {
                match receiver.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.publish(&batch).await;
        }
    }

    /// Takes or renews the sweeper lease; whether this replica holds it.
    async fn hold_lease(&self) -> Result<bool, StorageError> {
        let now = epoch_ms();
        let until = now.saturating_add(u64::try_from(LEASE_FOR.as_millis()).unwrap_or(0));
        let current = self.storage.get(self.table, &lease_key()).await?;
        let condition = match &current {
            None => Condition::NotExists,
            Some(lease) => {
                let owner = lease.get("owner").and_then(Value::as_str).unwrap_or("");
                let held_until = lease.get("until").and_then(Value::as_u64).unwrap_or(0);
                if owner != self.owner && held_until > now {
                    return Ok(false);
                }
                // Taken over or renewed only if nobody else did so since it was read.
                Condition::equals("until", held_until)
            }
        };
        let mut lease = Item::new();
        lease.insert("owner".into(), self.owner.clone().into());
        lease.insert("until".into(), until.into());
        match self
            .storage
            .put(self.table, lease_key().stamp(lease), Some(condition))
            .await
        {
            Ok(()) => Ok(true),
            Err(StorageError::ConditionFailed) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// One round of the sweeper: if this replica holds the lease, publish what the fast path
    /// left behind. How many events it took off the outbox (published, or set aside as refused).
    pub async fn sweep(&self) -> Result<usize, StorageError> {
        let older_than =
            epoch_ms().saturating_sub(u64::try_from(SWEEP_AFTER.as_millis()).unwrap_or(0));
        let mut published = 0;
        for _ in 0..SWEEP_PAGES {
            if !self.hold_lease().await? {
                return Ok(published);
            }
            let page = self
                .storage
                .query(self.table, Query::partition(PARTITION).limit(SWEEP_PAGE))
                .await?;
            let due: Vec<(Key, Event)> = page
                .items
                .iter()
                .filter_map(event_of)
                .take_while(|(key, _)| timed_key_ms(&key.sk).is_some_and(|ms| ms < older_than))
                .collect();
            if due.is_empty() {
                return Ok(published);
            }
            for (at, batch) in due.chunks(PUBLISH_BATCH).enumerate() {
                // The lease is renewed before each batch: a round that outlasts it (a long
                // backlog, a slow bus) stops as soon as another replica could take over.
                if at > 0 && !self.hold_lease().await? {
                    return Ok(published);
                }
                if !self.publish(batch).await {
                    return Ok(published);
                }
                published += batch.len();
            }
            tracing::info!(
                table = self.table,
                published = due.len(),
                "sweeper published events the fast path left"
            );
            if due.len() < page.items.len() || page.next.is_none() {
                return Ok(published);
            }
        }
        Ok(published)
    }

    async fn sweeper(&self) {
        loop {
            if let Err(error) = self.sweep().await {
                tracing::warn!(table = self.table, %error, "outbox sweep failed");
            }
            // Every replica looks, so each one's metrics and readiness see a relay that is
            // stuck, whichever replica holds the lease.
            match self.backlog().await {
                Ok((count, oldest)) => {
                    self.stats
                        .backlog
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                    self.stats
                        .oldest_age
                        .set(oldest.map_or(0.0, |age| age.as_secs_f64()));
                }
                Err(error) => {
                    tracing::warn!(table = self.table, %error, "reading the outbox backlog failed")
                }
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }

    /// Events recorded and not yet published, and the age of the oldest (for metrics and the
    /// readiness check).
    pub async fn backlog(&self) -> Result<(usize, Option<Duration>), StorageError> {
        let page = self
            .storage
            .query(self.table, Query::partition(PARTITION).limit(1000))
            .await?;
        let oldest = page.items.first().and_then(|item| {
            let (key, _) = event_of(item)?;
            let ms = timed_key_ms(&key.sk)?;
            Some(Duration::from_millis(epoch_ms().saturating_sub(ms)))
        });
        Ok((page.items.len(), oldest))
    }
}
