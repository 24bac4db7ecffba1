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

use super::{Delivery, Event, Events, GroupDef, RETENTION};
use crate::storage::{
    Condition, Item, Key, Storage, StorageError, TableDef, TxOp, now_epoch_seconds,
};

/// How long a consumer remembers an event it applied: beyond the longest an event can wait in a
/// queue ([`RETENTION`]), so no redelivery outlives its record.
pub const PROCESSED_RETENTION: Duration = Duration::from_secs(RETENTION.as_secs() + 86_400);
/// How long one receive waits for events before it asks again.
const RECEIVE_WAIT: Duration = Duration::from_secs(10);
/// How long the consumer pauses after the bus failed, before it tries again.
const BACKOFF: Duration = Duration::from_secs(1);

/// What a handler makes of an event.
pub enum Outcome {
    /// Apply it with these writes (to the consumer's own tables), committed with its record.
    Apply(Vec<TxOp>),
    /// Nothing to write: the event is not for this consumer, or its effect is there already.
    Skip,
    /// Not now (a dependency is down): deliver it again later, which counts an attempt.
    Retry(String),
}

/// A group's handling of its events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// What to do with `event` (its envelope in `event.body`).
    async fn handle(&self, event: &Event) -> Outcome;
}

/// One consumer of a group; [`Consumer::run`] receives and applies until dropped.
pub struct Consumer {
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
            events,
            storage,
            table,
            group,
            handler,
        }
    }

    /// Receives and applies the group's events until the future is dropped (a service runs it
    /// beside its server). What it had received and not acknowledged comes back to a consumer
    /// of the group after the visibility timeout.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.events.receive(self.group.name, 10, RECEIVE_WAIT).await {
                Ok(deliveries) => {
                    for delivery in deliveries {
                        self.settle(&delivery).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(group = self.group.name, %error, "receiving events failed");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    }

    /// Applies one delivery (at most once in effect) and acknowledges it, or leaves it for a
    /// redelivery; whether it was acknowledged.
    pub async fn settle(&self, delivery: &Delivery) -> bool {
        let applied = {
            let work = self.apply(&delivery.event);
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
        match applied {
            Ok(()) => match self
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
                tracing::warn!(
                    group = self.group.name,
                    event_id = %delivery.event.id,
                    kind = %delivery.event.kind,
                    attempt = delivery.attempt,
                    max_attempts = self.group.max_attempts,
                    why,
                    "event not applied; it comes back after the visibility timeout"
                );
                false
            }
        }
    }

    /// The event's effect with its record, unless it was applied already.
    async fn apply(&self, event: &Event) -> Result<(), String> {
        let key = processed_key(self.group.name, &event.id);
        match self.storage.get(self.table.name, &key).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(error) => return Err(format!("reading its record: {error}")),
        }
        let mut ops = match self.handler.handle(event).await {
            Outcome::Apply(ops) => ops,
            Outcome::Skip => Vec::new(),
            Outcome::Retry(why) => return Err(why),
        };
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
            Ok(()) => Ok(()),
            // Another delivery of it was applied meanwhile, with its record: nothing is lost.
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&at) => Ok(()),
            Err(error) => Err(format!("applying it: {error}")),
        }
    }
}
