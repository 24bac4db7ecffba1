//! The orders table.
//!
//! | item        | pk                          | sk      | notes                                  |
//! |-------------|-----------------------------|---------|----------------------------------------|
//! | order       | `order#<id>`                | `order` | the order, its saga step, its cart and the cart's version |
//! | idempotency | `idem#<customer>#<key>`     | `idem`  | order id and request hash; TTL a day   |
//!
//! Indexes, both sparse: `by_customer` (`cust`, `placed`) holds orders once confirmed, newest
//! last, so a customer's history shows orders they placed, not attempts that failed;
//! `open` (`open`, `open_at`) holds orders whose saga still has a step to do, oldest first,
//! for the reconciler.
//!
//! Every saga step writes the whole order on the condition that its step is still the one the
//! writer read, so two writers (a checkout and the reconciler, or a cancel) never both apply a
//! step.

use std::sync::Arc;

use emporium_api::order::{Order, OrderStatus};
use emporium_ports::events::outbox::Pending;
use emporium_ports::storage::{
    Condition, Cursor, IndexDef, Key, Query, Storage, StorageError, TableDef, TxOp, from_item,
    to_item,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub const TABLE: TableDef = TableDef {
    name: "orders",
    indexes: &[
        IndexDef {
            name: "by_customer",
            pk: "cust",
            sk: "placed",
        },
        IndexDef {
            name: "open",
            pk: "open",
            sk: "open_at",
        },
    ],
    ttl_attribute: Some("purge_at"),
};

pub const TABLES: &[TableDef] = &[TABLE];

const OPEN: &str = "open";
/// How long an idempotency key is remembered.
const IDEMPOTENCY_RETENTION_SECS: i64 = 86_400;

fn order_key(id: &str) -> Key {
    Key::new(format!("order#{id}"), "order")
}

fn idempotency_key(customer_id: &str, key: &str) -> Key {
    Key::new(format!("idem#{customer_id}#{key}"), "idem")
}

/// What the saga does next for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Pending: claim the cart, so no other checkout of it runs at the same time. Written with
    /// the new order; a stored order here may hold its claim, and stock (the moves to Reserve
    /// and Authorize are carried in memory).
    ClaimCart,
    /// Pending, cart claimed: reserve the stock. Never stored (carried in memory).
    Reserve,
    /// Pending, stock held: authorise the payment. Never stored (carried in memory).
    Authorize,
    /// Confirmed, by a version before the events (which sold the stock itself): hand over to
    /// `order.confirmed`'s consumers. No longer written.
    Commit,
    /// Confirmed, stock sold, by a version before the events; never stored.
    ClearCart,
    /// Failed or cancelled while stock was held: give it back.
    Release,
    /// Cancelled after stock was sold: give it back.
    Return,
    /// Failed or cancelled: end the order's claim on its cart, whose lines stay.
    ReleaseCart,
    /// Nothing left for the saga: a confirmed or cancelled order's stock and cart are its
    /// events' consumers' to settle.
    Done,
}

impl Step {
    fn as_value(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An order as stored: the order plus what the saga needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrder {
    pub order: Order,
    pub step: Step,
    pub cart_id: String,
    /// The version of the cart the order priced: its claim holds only on that version, so the
    /// order buys exactly what it charged for.
    #[serde(default)]
    pub cart_version: u64,
}

impl StoredOrder {
    pub fn id(&self) -> &str {
        &self.order.id
    }
}

/// The remembered first request for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub order_id: String,
    pub request_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The idempotency key was taken by a concurrent request; use its order.
    #[error("the idempotency key is taken")]
    KeyTaken,
    /// The order's step changed since it was read.
    #[error("the order changed")]
    Changed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
}

impl Repository {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    fn item(&self, stored: &StoredOrder) -> Result<emporium_ports::storage::Item, StorageError> {
        let order = &stored.order;
        let mut item = order_key(&order.id).stamp(to_item(stored)?);
        // Top-level copies for conditions and indexes.
        item.insert("step".into(), stored.step.as_value());
        item.insert(
            "status".into(),
            serde_json::to_value(order.status).unwrap_or(Value::Null),
        );
        if matches!(
            order.status,
            OrderStatus::Confirmed | OrderStatus::Cancelled
        ) && stored.order.payment.authorization_id.is_some()
        {
            item.insert("cust".into(), Value::String(order.customer_id.clone()));
            item.insert(
                "placed".into(),
                Value::String(format!(
                    "{:024}#{}",
                    order.created_at.unix_timestamp_nanos().max(0),
                    order.id
                )),
            );
        }
        if stored.step != Step::Done {
            item.insert("open".into(), Value::String(OPEN.into()));
            item.insert(
                "open_at".into(),
                Value::String(format!(
                    "{:024}#{}",
                    order.updated_at.unix_timestamp_nanos().max(0),
                    order.id
                )),
            );
        }
        Ok(item)
    }

    pub async fn order(&self, id: &str) -> Result<Option<StoredOrder>, StorageError> {
        match self.storage.get(TABLE.name, &order_key(id)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    pub async fn idempotency(
        &self,
        customer_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StorageError> {
        match self
            .storage
            .get(TABLE.name, &idempotency_key(customer_id, key))
            .await?
        {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// Records a new pending order and claims its idempotency key, together.
    pub async fn create(
        &self,
        stored: &StoredOrder,
        key: &str,
        request_hash: &str,
        now: OffsetDateTime,
        events: &Pending,
    ) -> Result<(), WriteError> {
        self.claim_key(stored, key, request_hash, Condition::NotExists, now, events)
            .await
    }

    /// Records a new pending order for a key whose order `previous` ended without charging,
    /// moving the key to it, if the key still names `previous`: a repeat of a checkout that
    /// failed for a reason that may pass. A concurrent repeat that moved it first wins.
    pub async fn retake(
        &self,
        stored: &StoredOrder,
        key: &str,
        request_hash: &str,
        previous: &str,
        now: OffsetDateTime,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let condition = Condition::equals("order_id", previous);
        self.claim_key(stored, key, request_hash, condition, now, events)
            .await
    }

    async fn claim_key(
        &self,
        stored: &StoredOrder,
        key: &str,
        request_hash: &str,
        condition: Condition,
        now: OffsetDateTime,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let record = IdempotencyRecord {
            order_id: stored.order.id.clone(),
            request_hash: request_hash.to_owned(),
        };
        let mut claim = idempotency_key(&stored.order.customer_id, key).stamp(to_item(&record)?);
        claim.insert(
            "purge_at".into(),
            Value::from(now.unix_timestamp() + IDEMPOTENCY_RETENTION_SECS),
        );
        let mut ops = vec![
            TxOp::Put {
                table: TABLE.name,
                item: claim,
                condition: Some(condition),
            },
            TxOp::Put {
                table: TABLE.name,
                item: self.item(stored)?,
                condition: Some(Condition::NotExists),
            },
        ];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(WriteError::KeyTaken)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Writes `next` if the stored order is still at step `from` with status `from_status`, with
    /// `events` (a change of status) in the same transaction; a step that changes no status
    /// stays a single put.
    pub async fn advance(
        &self,
        next: &StoredOrder,
        from: Step,
        from_status: OrderStatus,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let item = self.item(next)?;
        // The status too: a cancel moves a confirmed order from Done to Done, and only one of
        // two at once may.
        let condition = Some(
            Condition::equals("step", from.as_value()).and(Condition::equals(
                "status",
                serde_json::to_value(from_status).unwrap_or(Value::Null),
            )),
        );
        if events.is_empty() {
            return match self.storage.put(TABLE.name, item, condition).await {
                Ok(()) => Ok(()),
                Err(StorageError::ConditionFailed) => Err(WriteError::Changed),
                Err(error) => Err(error.into()),
            };
        }
        let mut ops = vec![TxOp::Put {
            table: TABLE.name,
            item,
            condition,
        }];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StorageError::TransactionCanceled { failed }) if failed.contains(&0) => {
                Err(WriteError::Changed)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A page of a customer's placed orders, newest first.
    pub async fn customer_orders(
        &self,
        customer_id: &str,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<StoredOrder>, Option<Cursor>), StorageError> {
        let page = self
            .storage
            .query_index(
                TABLE.name,
                "by_customer",
                Query::partition(customer_id)
                    .limit(limit)
                    .after(cursor)
                    .descending(),
            )
            .await?;
        let orders = page
            .items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<StoredOrder>, _>>()?;
        Ok((orders, page.next))
    }

    /// Orders whose saga has a step left, least recently touched first.
    pub async fn open_orders(&self, limit: usize) -> Result<Vec<StoredOrder>, StorageError> {
        let page = self
            .storage
            .query_index(TABLE.name, "open", Query::partition(OPEN).limit(limit))
            .await?;
        page.items.into_iter().map(from_item).collect()
    }
}
