//! The events port kept in a table of the storage port: the embedded adapter (over the embedded
//! store, so events survive a restart as the rest of the shop's state does), woken in-process.
//!
//! Each group's queue is a partition, an event per item; the `visible` index orders a queue by
//! when each event may next be delivered, so a receive reads only the front of it. Every move of
//! an event is a conditional write on what the mover read, so any number of receivers, in this
//! process or sharing the table, deliver each event to one of them at a time:
//!
//! | item        | pk             | sk                    | notes                                    |
//! |-------------|----------------|-----------------------|------------------------------------------|
//! | queued      | `q#<group>`    | `<event id>`          | `queue`, `visible_at` (index), `claim`, `attempts` |
//! | dead letter | `dl#<group>`   | `<moved at>#<id>`     | the event and its attempts               |
//!
//! `visible_at` is `<epoch ms, 16 digits>#<event id>`: a sort key that is unique and in time
//! order. A delivery sets it to the end of the visibility timeout and sets a new `claim` token;
//! the receipt is the event id and that token, so a receipt from an earlier delivery no longer
//! acknowledges or extends the event. Publishing writes one item per receiving group, on the
//! condition that none is queued with that id, so a relay that publishes an event twice while
//! it is queued queues it once. Items expire after [`RETENTION`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;

use super::{
    Delivery, Event, Events, EventsError, GroupDef, RETENTION, Receipt, Result, epoch_ms,
    timed_key, timed_key_ms, validate_extension, validate_groups, validate_receive,
};
use crate::storage::{
    Condition, IndexDef, Item, Key, MAX_TRANSACTION_OPS, Query, Storage, StorageError, TableDef,
    TxOp, Update,
};

/// The table that holds every group's queue and dead letters.
pub const TABLE: TableDef = TableDef {
    name: "events",
    indexes: &[IndexDef {
        name: "visible",
        pk: "queue",
        sk: "visible_at",
    }],
    ttl_attribute: Some("expires_at"),
};

/// Events in a [`Storage`] table, for a fixed set of groups.
pub struct StoredEvents {
    storage: Arc<dyn Storage>,
    groups: HashMap<&'static str, Group>,
}

struct Group {
    def: GroupDef,
    /// Woken when something is queued for the group in this process.
    queued: Notify,
}

/// The epoch milliseconds at the front of a `visible_at` (or a dead letter's key).
fn visible_ms(value: &str) -> u64 {
    timed_key_ms(value).unwrap_or(0)
}

fn expires_at() -> Value {
    let now = crate::storage::now_epoch_seconds();
    Value::from(now.saturating_add(i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX)))
}

fn text<'a>(item: &'a Item, attribute: &str) -> &'a str {
    item.get(attribute)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn count(item: &Item, attribute: &str) -> u32 {
    item.get(attribute)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

fn event_of(item: &Item) -> Event {
    Event {
        id: text(item, "id").to_owned(),
        kind: text(item, "kind").to_owned(),
        body: text(item, "body").to_owned(),
    }
}

fn backend(error: StorageError) -> EventsError {
    match error {
        // The store refused what it was given (an item over its size): no retry helps.
        StorageError::Invalid(why) => EventsError::Invalid(why),
        other => EventsError::Backend(other.into()),
    }
}

/// Most bytes one publish transaction writes: DynamoDB takes 4 MB per transaction.
const TRANSACTION_BYTES: usize = 3 * 1024 * 1024;

/// `writes` in transactions within the store's limits of operations and bytes.
fn chunks<T>(writes: &[(T, Item)]) -> Vec<&[(T, Item)]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, (_, item)) in writes.iter().enumerate() {
        let size = text(item, "body").len() + 512;
        if at > start && (at - start == MAX_TRANSACTION_OPS || bytes + size > TRANSACTION_BYTES) {
            chunks.push(&writes[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes += size;
    }
    if start < writes.len() {
        chunks.push(&writes[start..]);
    }
    chunks
}

impl StoredEvents {
    /// Events in `storage`, which must hold [`TABLE`], for `groups`.
    pub fn new(storage: Arc<dyn Storage>, groups: &[GroupDef]) -> Result<Self> {
        validate_groups(groups)?;
        Ok(Self {
            storage,
            groups: groups
                .iter()
                .map(|def| {
                    (
                        def.name,
                        Group {
                            def: *def,
                            queued: Notify::new(),
                        },
                    )
                })
                .collect(),
        })
    }

    /// Events in an embedded store of their own at `path` (a redb file one process opens).
    pub fn embedded(path: &std::path::Path, groups: &[GroupDef]) -> Result<Self> {
        let storage =
            crate::storage::embedded::EmbeddedStorage::open(path, &[TABLE]).map_err(|error| {
                EventsError::Backend(anyhow::anyhow!("opening {}: {error}", path.display()))
            })?;
        Self::new(Arc::new(storage), groups)
    }

    fn group(&self, name: &str) -> Result<&Group> {
        self.groups
            .get(name)
            .ok_or_else(|| EventsError::UnknownGroup(name.to_owned()))
    }

    fn queue_key(group: &str, id: &str) -> Key {
        Key::new(format!("q#{group}"), id)
    }

    fn queued_item(group: &str, event: &Event, visible: u64, attempts: u32) -> Item {
        let mut item = Item::new();
        let key = Self::queue_key(group, &event.id);
        item.insert("queue".into(), group.into());
        item.insert("visible_at".into(), timed_key(visible, &event.id).into());
        item.insert("claim".into(), "".into());
        item.insert("attempts".into(), attempts.into());
        item.insert("id".into(), event.id.clone().into());
        item.insert("kind".into(), event.kind.clone().into());
        item.insert("body".into(), event.body.clone().into());
        item.insert("expires_at".into(), expires_at());
        key.stamp(item)
    }

    /// Takes the queued `item` for this receiver, or moves it to the dead letters when it has
    /// had its attempts; `None` when another receiver moved it first.
    async fn claim(&self, group: &Group, item: &Item, now: u64) -> Result<Option<Delivery>> {
        let name = group.def.name;
        let event = event_of(item);
        let key = Self::queue_key(name, &event.id);
        let seen = Condition::equals("visible_at", text(item, "visible_at"));
        let attempts = count(item, "attempts");
        if attempts >= group.def.max_attempts {
            let mut dead = Item::new();
            dead.insert("id".into(), event.id.clone().into());
            dead.insert("kind".into(), event.kind.clone().into());
            dead.insert("body".into(), event.body.clone().into());
            dead.insert("attempts".into(), attempts.into());
            dead.insert("expires_at".into(), expires_at());
            let dead = Key::new(format!("dl#{name}"), timed_key(now, &event.id)).stamp(dead);
            let moved = self
                .storage
                .transact(vec![
                    TxOp::Delete {
                        table: TABLE.name,
                        key,
                        condition: Some(seen),
                    },
                    TxOp::Put {
                        table: TABLE.name,
                        item: dead,
                        condition: Some(Condition::NotExists),
                    },
                ])
                .await;
            return match moved {
                Ok(()) => {
                    tracing::warn!(group = name, event_id = %event.id, kind = %event.kind, attempts, "event moved to the dead letters");
                    Ok(None)
                }
                Err(StorageError::TransactionCanceled { .. }) => Ok(None),
                Err(error) => Err(backend(error)),
            };
        }
        let claim = uuid::Uuid::new_v4().simple().to_string();
        let hidden_until =
            now.saturating_add(u64::try_from(group.def.visibility.as_millis()).unwrap_or(u64::MAX));
        let update = Update::new()
            .set("visible_at", timed_key(hidden_until, &event.id))
            .set("claim", claim.as_str())
            .add("attempts", 1);
        match self
            .storage
            .update(TABLE.name, &key, update, Some(seen))
            .await
        {
            Ok(_) => Ok(Some(Delivery {
                receipt: Receipt(format!("{} {claim}", event.id)),
                attempt: attempts + 1,
                event,
            })),
            Err(StorageError::ConditionFailed) => Ok(None),
            Err(error) => Err(backend(error)),
        }
    }

    /// One look at the front of the group's queue: what could be claimed, and when the next
    /// hidden event becomes visible.
    async fn take(&self, group: &Group, max: usize) -> Result<(Vec<Delivery>, Option<u64>)> {
        let now = epoch_ms();
        // Read a little past `max`: some of the front may be claimed by others meanwhile.
        let page = self
            .storage
            .query_index(
                TABLE.name,
                "visible",
                Query::partition(group.def.name).limit(max * 2),
            )
            .await
            .map_err(backend)?;
        let mut due = Vec::new();
        let mut next = None;
        for item in &page.items {
            let at = visible_ms(text(item, "visible_at"));
            if at > now {
                next = Some(at);
                break;
            }
            if due.len() == max {
                break;
            }
            due.push(item);
        }
        // Claimed together, so the store commits them at once (the embedded writer's group
        // commit; parallel requests on DynamoDB): claimed one after another, each waited for
        // the commit before it, and a consumer's receive cost ten commits.
        let claims =
            futures::future::join_all(due.into_iter().map(|item| self.claim(group, item, now)))
                .await;
        let mut taken = Vec::new();
        let mut failure = None;
        for claim in claims {
            match claim {
                Ok(Some(delivery)) => taken.push(delivery),
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            // What is claimed already goes to the receiver: dropped here, it would sit out
            // its visibility with an attempt spent and nobody working on it.
            Some(error) if !taken.is_empty() => {
                tracing::warn!(group = group.def.name, %error, "a claim failed; returning what was claimed");
                Ok((taken, None))
            }
            Some(error) => Err(error),
            None => Ok((taken, next)),
        }
    }

    fn parse_receipt(receipt: &Receipt) -> Result<(&str, &str)> {
        receipt
            .0
            .rsplit_once(' ')
            .filter(|(id, claim)| !id.is_empty() && !claim.is_empty())
            .ok_or_else(|| EventsError::Invalid("not a receipt of this adapter".into()))
    }
}

#[async_trait]
impl Events for StoredEvents {
    async fn publish(&self, events: &[Event]) -> Result<()> {
        for event in events {
            event.validate()?;
        }
        let now = epoch_ms();
        let mut writes = Vec::new();
        for event in events {
            for group in self.groups.values().filter(|g| g.def.wants(&event.kind)) {
                writes.push((group, Self::queued_item(group.def.name, event, now, 0)));
            }
        }
        for chunk in chunks(&writes) {
            let mut ops: Vec<TxOp> = chunk
                .iter()
                .map(|(_, item)| TxOp::Put {
                    table: TABLE.name,
                    item: item.clone(),
                    condition: Some(Condition::NotExists),
                })
                .collect();
            // An event queued already (published before, not yet delivered) stays as it is;
            // the rest of the chunk is written without it.
            loop {
                match self.storage.transact(ops.clone()).await {
                    Ok(()) => break,
                    Err(StorageError::TransactionCanceled { failed }) if !failed.is_empty() => {
                        let mut index = 0;
                        ops.retain(|_| {
                            let keep = !failed.contains(&index);
                            index += 1;
                            keep
                        });
                        if ops.is_empty() {
                            break;
                        }
                    }
                    Err(error) => return Err(backend(error)),
                }
            }
            for (group, _) in chunk {
                group.queued.notify_waiters();
            }
        }
        Ok(())
    }

    async fn receive(&self, group: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        validate_receive(max, wait)?;
        let group = self.group(group)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Listening before looking, so an event queued between the look and the wait
            // still wakes this receiver.
            let queued = group.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let (taken, next) = self.take(group, max).await?;
            let now = tokio::time::Instant::now();
            if !taken.is_empty() || now >= deadline {
                return Ok(taken);
            }
            // Wake for a publish here, for the next hidden event's time, or at the deadline;
            // at least once a second for events queued by another process sharing the table.
            let mut until = deadline.min(now + Duration::from_secs(1));
            if let Some(next) = next {
                let in_ms = next.saturating_sub(epoch_ms());
                until = until.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = &mut queued => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, group: &str, receipts: &[Receipt]) -> Result<()> {
        let name = self.group(group)?.def.name;
        let parsed = receipts
            .iter()
            .map(Self::parse_receipt)
            .collect::<Result<Vec<_>>>()?;
        // Together, so they share a commit (see `take`).
        let deletes = parsed.into_iter().map(|(id, claim)| async move {
            match self
                .storage
                .delete(
                    TABLE.name,
                    &Self::queue_key(name, id),
                    Some(Condition::equals("claim", claim)),
                )
                .await
            {
                Ok(_) | Err(StorageError::ConditionFailed) => Ok(()),
                Err(error) => Err(backend(error)),
            }
        });
        futures::future::join_all(deletes)
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    }

    async fn extend(&self, group: &str, receipt: &Receipt, hidden_for: Duration) -> Result<()> {
        validate_extension(hidden_for)?;
        let name = self.group(group)?.def.name;
        let (id, claim) = Self::parse_receipt(receipt)?;
        let until =
            epoch_ms().saturating_add(u64::try_from(hidden_for.as_millis()).unwrap_or(u64::MAX));
        match self
            .storage
            .update(
                TABLE.name,
                &Self::queue_key(name, id),
                Update::new().set("visible_at", timed_key(until, id)),
                Some(Condition::equals("claim", claim)),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StorageError::ConditionFailed) => Err(EventsError::StaleReceipt),
            Err(error) => Err(backend(error)),
        }
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        let name = self.group(group)?.def.name;
        let page = self
            .storage
            .query(
                TABLE.name,
                Query::partition(format!("dl#{name}")).limit(max.clamp(1, 1000)),
            )
            .await
            .map_err(backend)?;
        Ok(page.items.iter().map(event_of).collect())
    }

    async fn redrive(&self, group: &str) -> Result<usize> {
        let group = self.group(group)?;
        let name = group.def.name;
        // Only what was dead when the redrive began: an event redriven and dead again while it
        // runs (its consumer still failing) waits for the next redrive.
        let began = epoch_ms();
        let mut moved = 0;
        loop {
            let page = self
                .storage
                .query(TABLE.name, Query::partition(format!("dl#{name}")).limit(50))
                .await
                .map_err(backend)?;
            let due: Vec<&Item> = page
                .items
                .iter()
                .take_while(|item| visible_ms(text(item, "sk")) < began)
                .collect();
            if due.is_empty() {
                break;
            }
            let now = epoch_ms();
            for item in due {
                let event = event_of(item);
                let dead = Key::of(item).map_err(backend)?;
                // Into the queue as new, unless the same event is queued again already (then
                // the dead letter only goes).
                let queued = Self::queued_item(name, &event, now, 0);
                let back = self
                    .storage
                    .transact(vec![
                        TxOp::Delete {
                            table: TABLE.name,
                            key: dead.clone(),
                            condition: Some(Condition::Exists),
                        },
                        TxOp::Put {
                            table: TABLE.name,
                            item: queued,
                            condition: Some(Condition::NotExists),
                        },
                    ])
                    .await;
                match back {
                    Ok(()) => moved += 1,
                    Err(StorageError::TransactionCanceled { failed }) if failed == [1] => {
                        self.storage
                            .delete(TABLE.name, &dead, None)
                            .await
                            .map_err(backend)?;
                    }
                    // Another operator's redrive took it first.
                    Err(StorageError::TransactionCanceled { .. }) => {}
                    Err(error) => return Err(backend(error)),
                }
            }
            group.queued.notify_waiters();
        }
        Ok(moved)
    }

    async fn ping(&self) -> Result<()> {
        self.storage.ping().await.map_err(backend)
    }
}
