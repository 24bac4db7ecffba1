//! The inventory table and every write to it.
//!
//! | item        | pk                   | sk            | notes                                     |
//! |-------------|----------------------|---------------|-------------------------------------------|
//! | stock       | `stock#<SKU>`        | `stock`       | `available`, `reserved`, `sold`           |
//! | reservation | `reservation#<id>`   | `reservation` | status, lines, expiry; `purge_at` (TTL)   |
//! | listed      | `listed#<SKU>`       | `listed`      | whether the SKU was last told in stock (`events`) |
//! | outbox      | `outbox`             | time#id       | stock notes (`events`), one per write     |
//! | processed   | `processed#<group>`  | event id      | events the consumers applied; `purge_at`  |
//!
//! Every write that moves a SKU's counters adds 1 to its `version` and records, in the same
//! transaction, a note in the outbox naming the SKUs it moved; the relay publishes each SKU's
//! counters as they are then (`events.rs`).
//!
//! Indexes: `all_stock` (`lst` = "stock", by SKU) lists stock; `held` (`held` = "held", by
//! `held_until` = expiry and id) holds exactly the reservations still holding stock, in expiry
//! order, so the sweeper reads only what has expired.
//!
//! The invariants live in conditions, so they hold for any adapter and any concurrency: a
//! reservation takes units only where `available ≥ quantity` for every line, in one transaction
//! with creating the reservation record (which must not exist); every later move (commit,
//! release, return) is one transaction that changes the record's status on the condition that
//! it still has the status the move starts from, and moves units on the condition that the
//! source counter holds them. So units are never lost or made, counters never go negative, and a
//! reservation changes state once.

use std::sync::Arc;

use emporium_api::inventory::{Reservation, ReservationLine, ReservationStatus, StockLevel};
use emporium_ports::events::outbox::{Outbox, Pending};
use emporium_ports::storage::{
    Condition, Cursor, IndexDef, Key, Query, Storage, StorageError, TableDef, TxOp, Update,
    from_item, to_item,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub const TABLE: TableDef = TableDef {
    name: "inventory",
    indexes: &[
        IndexDef {
            name: "all_stock",
            pk: "lst",
            sk: "sku",
        },
        IndexDef {
            name: "held",
            pk: "held",
            sk: "held_until",
        },
    ],
    ttl_attribute: Some("purge_at"),
};

/// Every table the inventory owns.
pub const TABLES: &[TableDef] = &[TABLE];

const STOCK_SK: &str = "stock";
const RESERVATION_SK: &str = "reservation";
const ALL_STOCK: &str = "stock";
const HELD: &str = "held";
/// How long finished reservations are kept (for repeats and audits) before the TTL removes them.
const RELEASED_RETENTION_SECS: i64 = 30 * 86_400;
/// Committed reservations stay longer: cancelling an order returns its stock through them.
const COMMITTED_RETENTION_SECS: i64 = 400 * 86_400;

pub(crate) fn stock_key(sku: &str) -> Key {
    Key::new(format!("stock#{sku}"), STOCK_SK)
}

pub(crate) fn reservation_key(id: &str) -> Key {
    Key::new(format!("reservation#{id}"), RESERVATION_SK)
}

fn rfc3339(at: OffsetDateTime) -> Value {
    at.format(&time::format_description::well_known::Rfc3339)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReservation {
    pub id: String,
    pub status: ReservationStatus,
    pub lines: Vec<ReservationLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// `expires_at` in epoch seconds, for conditions.
    pub expires_epoch: i64,
    pub lines_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl StoredReservation {
    pub fn to_wire(&self) -> Reservation {
        Reservation {
            id: self.id.clone(),
            status: self.status,
            lines: self.lines.clone(),
            expires_at: self.expires_at,
            release_reason: self.release_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// A released reservation that never held anything, standing for an id released before
    /// it was reserved (see [`Repository::fence`]).
    pub fn fence(id: &str, now: OffsetDateTime) -> Self {
        Self {
            id: id.to_owned(),
            status: ReservationStatus::Released,
            lines: Vec::new(),
            expires_at: now,
            expires_epoch: now.unix_timestamp(),
            lines_key: String::new(),
            release_reason: Some("released".to_owned()),
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether this is a fence: released, and never held a line (a reservation has at least
    /// one).
    pub fn is_fence(&self) -> bool {
        self.status == ReservationStatus::Released && self.lines.is_empty()
    }

    /// Whether a held reservation has run out of time at `now` (epoch seconds).
    pub fn has_expired(&self, now: i64) -> bool {
        self.expires_epoch <= now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("a reservation with this id exists")]
    Exists,
    /// Positions (in the request's lines) that did not have enough available.
    #[error("not enough stock")]
    Short(Vec<usize>),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The reservation no longer has the status the move starts from (or its time ran out).
    #[error("the reservation changed")]
    Changed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("no stock record")]
    NotFound,
    #[error("not enough available")]
    Insufficient,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A move of a reservation from one status to another, and of its units between counters.
#[derive(Debug, Clone, Copy)]
pub struct Move {
    pub from: ReservationStatus,
    pub to: ReservationStatus,
    /// Counter the units leave (guarded by `≥ quantity`) and counter they join.
    pub units_from: &'static str,
    pub units_to: &'static str,
}

pub const COMMIT: Move = Move {
    from: ReservationStatus::Held,
    to: ReservationStatus::Committed,
    units_from: "reserved",
    units_to: "sold",
};
pub const RELEASE: Move = Move {
    from: ReservationStatus::Held,
    to: ReservationStatus::Released,
    units_from: "reserved",
    units_to: "available",
};
pub const RETURN: Move = Move {
    from: ReservationStatus::Committed,
    to: ReservationStatus::Returned,
    units_from: "sold",
    units_to: "available",
};
/// A confirmed order's reservation that expired before its `order.confirmed` was applied: the
/// order is paid, so its units are sold from what is available now, if it is there.
pub const RETAKE: Move = Move {
    from: ReservationStatus::Released,
    to: ReservationStatus::Committed,
    units_from: "available",
    units_to: "sold",
};

fn status_value(status: ReservationStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

#[derive(Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    outbox: Arc<Outbox>,
}

/// Whether a commit must find the hold unexpired: the HTTP commit does (an expired hold's units
/// may be promised to another checkout by now), `order.confirmed`'s consumer does not (the order
/// is paid; the sweeper and it race on the status, and one of them wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Checked,
    Ignored,
}

impl Repository {
    pub fn new(storage: Arc<dyn Storage>, outbox: Arc<Outbox>) -> Self {
        Self { storage, outbox }
    }

    /// The note of a write that moves `skus`' counters, for its transaction.
    fn note<'a>(&self, skus: impl IntoIterator<Item = &'a str>) -> Result<Pending, StorageError> {
        crate::events::note(&self.outbox, skus)
            .map_err(|error| StorageError::Invalid(error.to_string()))
    }

    /// Commits `ops` with `note`, then hands the note to the relay.
    async fn transact_noted(&self, mut ops: Vec<TxOp>, note: Pending) -> Result<(), StorageError> {
        ops.extend(note.ops());
        self.storage.transact(ops).await?;
        self.outbox.committed(note);
        Ok(())
    }

    // === Stock ===

    pub async fn stock(&self, sku: &str) -> Result<Option<StockLevel>, StorageError> {
        match self.storage.get(TABLE.name, &stock_key(sku)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// The stock of each SKU that has a record, in the order asked.
    pub async fn stocks(&self, skus: &[String]) -> Result<Vec<StockLevel>, StorageError> {
        let reads = skus.iter().map(|sku| self.stock(sku));
        let found = futures::future::try_join_all(reads).await?;
        Ok(found.into_iter().flatten().collect())
    }

    pub async fn list_stock(
        &self,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<StockLevel>, Option<Cursor>), StorageError> {
        let page = self
            .storage
            .query_index(
                TABLE.name,
                "all_stock",
                Query::partition(ALL_STOCK).limit(limit).after(cursor),
            )
            .await?;
        let levels = page
            .items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<StockLevel>, _>>()?;
        Ok((levels, page.next))
    }

    /// Sets the available units, creating the record if needed; reserved and sold stay.
    pub async fn set_stock(
        &self,
        sku: &str,
        available: i64,
        now: OffsetDateTime,
    ) -> Result<StockLevel, StorageError> {
        let update = Update::new()
            .set("sku", sku)
            .set("lst", ALL_STOCK)
            .set("available", available)
            .set("updated_at", rfc3339(now))
            // Adding zero creates the counters of a new record and leaves existing ones alone.
            .add("reserved", 0)
            .add("sold", 0)
            .add("version", 1);
        let ops = vec![TxOp::Update {
            table: TABLE.name,
            key: stock_key(sku),
            update,
            condition: None,
        }];
        self.transact_noted(ops, self.note([sku])?).await?;
        self.stock(sku)
            .await?
            .ok_or_else(|| StorageError::Invalid(format!("stock {sku} vanished after its write")))
    }

    /// Creates the record with `available` units unless one exists; true if it did.
    pub async fn create_stock(
        &self,
        sku: &str,
        available: i64,
        now: OffsetDateTime,
    ) -> Result<bool, StorageError> {
        let level = StockLevel {
            sku: sku.to_owned(),
            available,
            reserved: 0,
            sold: 0,
            updated_at: now,
        };
        let mut item = stock_key(sku).stamp(to_item(&level)?);
        item.insert("lst".into(), Value::String(ALL_STOCK.into()));
        item.insert("version".into(), Value::from(1));
        let ops = vec![TxOp::Put {
            table: TABLE.name,
            item,
            condition: Some(Condition::NotExists),
        }];
        match self.transact_noted(ops, self.note([sku])?).await {
            Ok(()) => Ok(true),
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Adds `delta` to the available units, never below zero.
    pub async fn adjust(
        &self,
        sku: &str,
        delta: i64,
        now: OffsetDateTime,
    ) -> Result<StockLevel, AdjustError> {
        let mut condition = Condition::Exists;
        if delta < 0 {
            condition = condition.and(Condition::at_least("available", -delta));
        }
        let update = Update::new()
            .add("available", delta)
            .add("version", 1)
            .set("updated_at", rfc3339(now));
        let ops = vec![TxOp::Update {
            table: TABLE.name,
            key: stock_key(sku),
            update,
            condition: Some(condition),
        }];
        match self.transact_noted(ops, self.note([sku])?).await {
            Ok(()) => self.stock(sku).await?.ok_or(AdjustError::NotFound),
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => {
                match self.stock(sku).await? {
                    None => Err(AdjustError::NotFound),
                    Some(_) => Err(AdjustError::Insufficient),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    // === Reservations ===

    pub async fn reservation(&self, id: &str) -> Result<Option<StoredReservation>, StorageError> {
        match self.storage.get(TABLE.name, &reservation_key(id)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// Records `reservation` (held) and takes its units from `available`, all or nothing.
    pub async fn reserve(&self, reservation: &StoredReservation) -> Result<(), ReserveError> {
        let mut item = reservation_key(&reservation.id).stamp(to_item(reservation)?);
        item.insert("held".into(), Value::String(HELD.into()));
        item.insert("held_until".into(), Value::String(held_until(reservation)));
        let mut ops = vec![TxOp::Put {
            table: TABLE.name,
            item,
            condition: Some(Condition::NotExists),
        }];
        let now = rfc3339(reservation.created_at);
        for line in &reservation.lines {
            ops.push(TxOp::Update {
                table: TABLE.name,
                key: stock_key(&line.sku),
                update: Update::new()
                    .add("available", -line.quantity)
                    .add("reserved", line.quantity)
                    .add("version", 1)
                    .set("updated_at", now.clone()),
                condition: Some(Condition::at_least("available", line.quantity)),
            });
        }
        let note = self.note(reservation.lines.iter().map(|line| line.sku.as_str()))?;
        match self.transact_noted(ops, note).await {
            Ok(()) => Ok(()),
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(ReserveError::Exists)
            }
            Err(StorageError::TransactionCanceled { failed }) => Err(ReserveError::Short(
                failed.iter().map(|op| op - 1).collect(),
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// Records `id` as released although it never held anything, so that a reservation with
    /// this id arriving later is refused instead of holding stock nobody will release: a caller
    /// that gave up on a slow reservation releases it at once, and on a slow network the
    /// release can arrive first. `false` if the reservation came in the meantime.
    pub async fn fence(&self, fenced: &StoredReservation) -> Result<bool, StorageError> {
        let mut item = reservation_key(&fenced.id).stamp(to_item(fenced)?);
        item.insert(
            "purge_at".into(),
            Value::from(fenced.updated_at.unix_timestamp() + RELEASED_RETENTION_SECS),
        );
        match self
            .storage
            .put(TABLE.name, item, Some(Condition::NotExists))
            .await
        {
            Ok(()) => Ok(true),
            Err(StorageError::ConditionFailed) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The writes that move `reservation` as `step` says, on the condition that it still has
    /// `step.from` (and, for a commit with [`Expiry::Checked`], has not expired at `now`), with
    /// the note of the SKUs they move; the index of the reservation's write is 0.
    pub fn move_ops(
        &self,
        reservation: &StoredReservation,
        step: Move,
        reason: Option<&str>,
        now: OffsetDateTime,
        expiry: Expiry,
    ) -> Result<(Vec<TxOp>, Pending), StorageError> {
        let mut condition = Condition::equals("status", status_value(step.from));
        if step.from == ReservationStatus::Held
            && step.to == ReservationStatus::Committed
            && expiry == Expiry::Checked
        {
            condition = condition.and(Condition::at_least(
                "expires_epoch",
                now.unix_timestamp() + 1,
            ));
        }
        let retention = if step.to == ReservationStatus::Committed {
            COMMITTED_RETENTION_SECS
        } else {
            RELEASED_RETENTION_SECS
        };
        let mut update = Update::new()
            .set("status", status_value(step.to))
            .set("updated_at", rfc3339(now))
            .set("purge_at", now.unix_timestamp() + retention);
        if step.from == ReservationStatus::Held {
            update = update.remove("held").remove("held_until");
        }
        if let Some(reason) = reason {
            update = update.set("release_reason", reason);
        }
        let mut ops = vec![TxOp::Update {
            table: TABLE.name,
            key: reservation_key(&reservation.id),
            update,
            condition: Some(condition),
        }];
        for line in &reservation.lines {
            ops.push(TxOp::Update {
                table: TABLE.name,
                key: stock_key(&line.sku),
                update: Update::new()
                    .add(step.units_from, -line.quantity)
                    .add(step.units_to, line.quantity)
                    .add("version", 1)
                    .set("updated_at", rfc3339(now)),
                condition: Some(Condition::at_least(step.units_from, line.quantity)),
            });
        }
        let note = self.note(reservation.lines.iter().map(|line| line.sku.as_str()))?;
        Ok((ops, note))
    }

    /// The write that marks an expired reservation's order cancelled (so it is never sold later),
    /// on the condition that it is still released by expiry.
    pub fn mark_cancelled(&self, reservation: &StoredReservation) -> TxOp {
        TxOp::Update {
            table: TABLE.name,
            key: reservation_key(&reservation.id),
            update: Update::new().set("release_reason", "cancelled"),
            condition: Some(
                Condition::equals("status", status_value(ReservationStatus::Released))
                    .and(Condition::equals("release_reason", "expired")),
            ),
        }
    }

    /// Moves `reservation` as `step` says, if it still has `step.from` (and, for a commit, has
    /// not expired at `now`); returns it as it is afterwards.
    pub async fn apply(
        &self,
        reservation: &StoredReservation,
        step: Move,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<StoredReservation, MoveError> {
        let (ops, note) = self.move_ops(reservation, step, reason, now, Expiry::Checked)?;
        match self.transact_noted(ops, note).await {
            Ok(()) => {}
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => {
                return Err(MoveError::Changed);
            }
            Err(StorageError::TransactionCanceled { failed }) => {
                // The record said the units were there and the counter disagrees: the
                // invariant is broken, which no caller can fix.
                return Err(MoveError::Storage(StorageError::Invalid(format!(
                    "reservation {} holds units its stock counters lack (operations {failed:?})",
                    reservation.id
                ))));
            }
            Err(error) => return Err(error.into()),
        }
        Ok(moved(reservation, step, reason, now))
    }

    /// Held reservations whose time ran out by `now` (epoch seconds), oldest first.
    pub async fn expired(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<StoredReservation>, StorageError> {
        let page = self
            .storage
            .query_index(TABLE.name, "held", Query::partition(HELD).limit(limit))
            .await?;
        let mut expired = Vec::new();
        for item in page.items {
            let reservation: StoredReservation = from_item(item)?;
            if !reservation.has_expired(now) {
                // In expiry order: nothing after this one has expired either.
                break;
            }
            expired.push(reservation);
        }
        Ok(expired)
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

/// `reservation` as it is after `step`.
fn moved(
    reservation: &StoredReservation,
    step: Move,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> StoredReservation {
    let mut moved = reservation.clone();
    moved.status = step.to;
    moved.updated_at = now;
    if let Some(reason) = reason {
        moved.release_reason = Some(reason.to_owned());
    }
    moved
}

fn held_until(reservation: &StoredReservation) -> String {
    format!(
        "{:020}#{}",
        reservation.expires_epoch.max(0),
        reservation.id
    )
}
