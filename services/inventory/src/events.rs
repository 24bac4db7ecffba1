//! The inventory's events, both ways.
//!
//! **Out: stock.** A SKU's counters move by additions inside transactions (a reservation takes
//! units from `available` on the condition that they are there), so the transaction cannot
//! know the counters it leaves, and reading them first would turn every checkout of a popular
//! SKU into a retry loop. Each such write therefore records a *note* naming the SKUs it moved,
//! and the relay publishes, for each, `emporium.stock.changed.v1` with the counters as they are
//! when it publishes and their `version` (which every write adds 1 to). So the last event of a
//! SKU always carries its latest counters, and a consumer keeps the highest version it has seen.
//!
//! Whether a SKU is in stock (`available > 0`) is also kept per SKU, in `listed#<SKU>`, with the
//! counter version it was decided at: when newer counters the relay reads disagree with it, the
//! relay flips it by conditional write (so of several relays, one decides at a time, and one that
//! read older counters never overrides a newer decision) and publishes `sold_out` or
//! `back_in_stock` beside `changed`. The note that flipped it, and to what, are named on the
//! record, so a publish retried after a failure sends the same transition again under the same
//! id; a flip back by a later note before that retry supersedes it (the consumer then sees the
//! newer transition only).
//!
//! **In: orders.** The `inventory-orders` group applies `order.confirmed` (the reservation is
//! sold) and `order.cancelled` (what it held or sold is available again). It needs no
//! per-order ordering: a reservation's moves are one way (held → committed → returned, held →
//! released), each conditional on the status it starts from, so a `cancelled` applied before its
//! `confirmed` releases the hold, and the late `confirmed` then finds it released and does
//! nothing. A paid order whose hold expired before its `confirmed` was applied is sold from what
//! is available then (`RETAKE`), unless its `cancelled` came first, which marks the expired
//! reservation cancelled.

use std::sync::Arc;

use async_trait::async_trait;
use emporium_api::events::{Envelope, EventType, ORDER_SETTLED, OrderChanged, StockChanged};
use emporium_api::inventory::ReservationStatus;
use emporium_ports::events::consumer::{Handler, Outcome};
use emporium_ports::events::outbox::{Finisher, Outbox, Pending};
use emporium_ports::events::{Event, EventsError, GroupDef};
use emporium_ports::storage::{Condition, Item, Key, Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::repository::{COMMIT, Expiry, RELEASE, RETAKE, RETURN, Repository, TABLE, stock_key};

/// The service named as the events' source.
pub const PRODUCER: &str = "inventory";

/// The consumer group that sells and returns the stock of orders.
pub const ORDERS: GroupDef = GroupDef::standard("inventory-orders", ORDER_SETTLED);

/// Every group the inventory runs.
pub const GROUPS: &[GroupDef] = &[ORDERS];

/// What a write records: the SKUs it moved, and the trace it was made in.
#[derive(Debug, Serialize, Deserialize)]
struct StockNote {
    skus: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

/// The note of a write that moves `skus`, for its transaction.
pub fn note<'a>(
    outbox: &Outbox,
    skus: impl IntoIterator<Item = &'a str>,
) -> Result<Pending, EventsError> {
    let mut skus: Vec<String> = skus.into_iter().map(str::to_owned).collect();
    skus.sort_unstable();
    skus.dedup();
    let note = StockNote {
        skus,
        at: OffsetDateTime::now_utc(),
        traceparent: emporium_platform::telemetry::propagation_headers()
            .into_iter()
            .find_map(|(name, value)| (name == "traceparent").then_some(value)),
    };
    let body =
        serde_json::to_string(&note).map_err(|error| EventsError::Invalid(error.to_string()))?;
    outbox.record(vec![Event {
        id: emporium_platform::id::new_id(),
        kind: EventType::StockChanged.as_str().to_owned(),
        body,
    }])
}

fn listed_key(sku: &str) -> Key {
    Key::new(format!("listed#{sku}"), "listed")
}

/// Turns the inventory's notes into stock events (see the module's documentation).
pub struct StockEvents {
    storage: Arc<dyn Storage>,
}

impl StockEvents {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    /// The SKU's counters now, as an event's data.
    async fn counters(&self, sku: &str) -> Result<Option<StockChanged>, StorageError> {
        let Some(item) = self.storage.get(TABLE.name, &stock_key(sku)).await? else {
            return Ok(None);
        };
        let number = |name: &str| item.get(name).and_then(Value::as_i64).unwrap_or(0);
        Ok(Some(StockChanged {
            sku: sku.to_owned(),
            available: number("available"),
            reserved: number("reserved"),
            sold: number("sold"),
            version: u64::try_from(number("version")).unwrap_or(0),
        }))
    }

    /// The transition `note_id` tells of `sku` at `counters`, if it tells one, with its event id.
    ///
    /// The listing (`listed#<SKU>`) holds whether the SKU was last told in stock, at which
    /// counter version, and which note last flipped it, to what. It only moves to a newer
    /// version, by a write conditional on the one read: so of relays racing on one SKU one
    /// decides at a time, and one that read older counters than the listing's (a relay that
    /// paused) never overrides a newer decision. A retried publish of the note that flipped it
    /// sends the same transition again, under the same id.
    async fn transition(
        &self,
        sku: &str,
        counters: &StockChanged,
        note_id: &str,
    ) -> Result<Option<(EventType, String)>, StorageError> {
        let in_stock = counters.available > 0;
        let id = |kind: EventType| {
            let what = if kind == EventType::StockSoldOut {
                "sold-out"
            } else {
                "back-in-stock"
            };
            format!("{note_id}-{sku}-{what}")
        };
        for _ in 0..5 {
            let listed = self.storage.get(TABLE.name, &listed_key(sku)).await?;
            let field = |name: &str| listed.as_ref().and_then(|item| item.get(name).cloned());
            let writes = field("writes")
                .and_then(|value| value.as_i64())
                .unwrap_or(0);
            let version = field("version").and_then(|value| value.as_u64());
            let flipped_by = field("flipped_by");
            let flip_kind = field("flip_kind").and_then(|value| {
                value
                    .as_str()
                    .and_then(|kind| kind.parse::<EventType>().ok())
            });
            if version.is_some_and(|version| version >= counters.version) {
                // Decided on counters as new or newer.
                let mine = flipped_by.as_ref().and_then(Value::as_str) == Some(note_id);
                return Ok(flip_kind.filter(|_| mine).map(|kind| (kind, id(kind))));
            }
            let was = field("in_stock").and_then(|value| value.as_bool());
            // A SKU's first listing is no transition: it was never told otherwise.
            let flipped = was.is_some_and(|was| was != in_stock);
            let kind = if in_stock {
                EventType::StockBackInStock
            } else {
                EventType::StockSoldOut
            };
            let mut item = Item::new();
            item.insert("in_stock".into(), Value::Bool(in_stock));
            item.insert("version".into(), Value::from(counters.version));
            item.insert("writes".into(), Value::from(writes + 1));
            if flipped {
                item.insert("flipped_by".into(), Value::from(note_id));
                item.insert("flip_kind".into(), Value::from(kind.as_str()));
            } else {
                for name in ["flipped_by", "flip_kind"] {
                    if let Some(value) = field(name) {
                        item.insert(name.into(), value);
                    }
                }
            }
            let condition = match &listed {
                None => Condition::NotExists,
                Some(_) => Condition::equals("writes", writes),
            };
            match self
                .storage
                .put(TABLE.name, listed_key(sku).stamp(item), Some(condition))
                .await
            {
                Ok(()) => return Ok(flipped.then(|| (kind, id(kind)))),
                Err(StorageError::ConditionFailed) => continue,
                Err(error) => return Err(error),
            }
        }
        // Still contended: the relays that keep winning decide.
        Ok(None)
    }
}

#[async_trait]
impl Finisher for StockEvents {
    async fn finish(&self, recorded: &Event) -> Result<Vec<Event>, StorageError> {
        let note: StockNote = serde_json::from_str(&recorded.body)
            .map_err(|error| StorageError::Invalid(format!("a stock note: {error}")))?;
        let mut events = Vec::new();
        for sku in &note.skus {
            let Some(counters) = self.counters(sku).await? else {
                continue;
            };
            let mut kinds = vec![(EventType::StockChanged, format!("{}-{sku}", recorded.id))];
            kinds.extend(self.transition(sku, &counters, &recorded.id).await?);
            for (kind, id) in kinds {
                let mut envelope =
                    Envelope::new(PRODUCER, kind, &counters, note.traceparent.clone())
                        .map_err(|error| StorageError::Invalid(error.to_string()))?;
                envelope.id = id;
                envelope.time = note.at;
                events.push(envelope.to_event());
            }
        }
        Ok(events)
    }
}

/// The `inventory-orders` group's handling.
pub struct OrderEvents {
    repository: Repository,
}

impl OrderEvents {
    pub fn new(repository: Repository) -> Self {
        Self { repository }
    }

    async fn outcome(&self, event: &Event) -> Result<Outcome, String> {
        let envelope = Envelope::from_json(event.body.as_bytes()).map_err(|e| e.to_string())?;
        let order: OrderChanged = envelope
            .decode(&[EventType::OrderConfirmed, EventType::OrderCancelled])
            .map_err(|e| e.to_string())?;
        let Some(reservation) = self
            .repository
            .reservation(&order.order_id)
            .await
            .map_err(|e| format!("reading the reservation: {e}"))?
        else {
            tracing::warn!(order_id = %order.order_id, kind = %envelope.kind, "no reservation for this order; nothing to do");
            return Ok(Outcome::Skip);
        };
        let now = OffsetDateTime::now_utc();
        let status = reservation.status;
        let expired = reservation.release_reason.as_deref() == Some("expired");
        let step = match (envelope.kind, status) {
            (EventType::OrderConfirmed, ReservationStatus::Held) => (COMMIT, None),
            (EventType::OrderConfirmed, ReservationStatus::Released)
                if expired && !reservation.lines.is_empty() =>
            {
                // Paid, but the hold ran out before this event was applied: sell the units
                // from what is available now. If they are gone, retrying cannot make them, and
                // the event ends in the dead letters, where an operator sees the order.
                let skus: Vec<String> = reservation.lines.iter().map(|l| l.sku.clone()).collect();
                let levels = self
                    .repository
                    .stocks(&skus)
                    .await
                    .map_err(|e| format!("reading the stock: {e}"))?;
                let short = reservation.lines.iter().any(|line| {
                    !levels
                        .iter()
                        .any(|level| level.sku == line.sku && level.available >= line.quantity)
                });
                if short {
                    tracing::error!(order_id = %order.order_id, "a confirmed order's stock hold expired and its units are sold out; it needs an operator");
                    return Ok(Outcome::Retry(
                        "the order's hold expired and its units are gone".into(),
                    ));
                }
                (RETAKE, None)
            }
            // Cancelled while its hold had run out and its confirmation was not applied yet:
            // marked cancelled, on the condition that it is still so, so a confirmation applied
            // later (a redelivery, a redrive) never sells it from what is available.
            (EventType::OrderCancelled, ReservationStatus::Released) if expired => {
                return Ok(Outcome::Apply(vec![
                    self.repository.mark_cancelled(&reservation),
                ]));
            }
            (EventType::OrderCancelled, ReservationStatus::Held) => (RELEASE, Some("cancelled")),
            (EventType::OrderCancelled, ReservationStatus::Committed) => (RETURN, None),
            // Sold, returned or released already: its effect is there, or a later move won.
            _ => return Ok(Outcome::Skip),
        };
        let (mut ops, note) = self
            .repository
            .move_ops(&reservation, step.0, step.1, now, Expiry::Ignored)
            .map_err(|e| e.to_string())?;
        // The note of the stock it moves is recorded with the move, as every stock write's is.
        ops.extend(note.ops());
        let outbox = self.repository.outbox().clone();
        Ok(Outcome::ApplyThen(
            ops,
            Box::new(move || {
                Box::pin(async move {
                    outbox.committed(note);
                })
            }),
        ))
    }
}

#[async_trait]
impl Handler for OrderEvents {
    async fn handle(&self, event: &Event) -> Outcome {
        self.outcome(event).await.into()
    }
}
