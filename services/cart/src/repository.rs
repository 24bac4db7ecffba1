//! The cart table: one item per cart, changed only on the condition that its version is the
//! one read, so concurrent changes to one cart never overwrite each other.
//!
//! | item | pk           | sk     | notes                                           |
//! |------|--------------|--------|-------------------------------------------------|
//! | cart | `cart#<id>`  | `cart` | lines, version, the checkout claim; `expires_epoch` is the TTL |

use std::sync::Arc;

use emporium_api::cart::CartLine;
use emporium_ports::storage::{
    Condition, Key, Storage, StorageError, TableDef, TxOp, from_item, to_item,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const TABLE: TableDef = TableDef {
    name: "carts",
    indexes: &[],
    ttl_attribute: Some("expires_epoch"),
};

pub const TABLES: &[TableDef] = &[TABLE];

fn cart_key(id: &str) -> Key {
    Key::new(format!("cart#{id}"), "cart")
}

/// A cart as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCart {
    pub id: String,
    pub lines: Vec<CartLine>,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub expires_epoch: i64,
    pub version: u64,
    /// The order checking the cart out, while one does (carts stored before claims have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Checkout>,
}

/// A checkout's claim on its cart: which order, and what it is buying, so that finishing takes
/// exactly those units out and leaves whatever was added meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub order_id: String,
    pub lines: Vec<ClaimedLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedLine {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Someone else changed (or the TTL removed) the cart since it was read.
    #[error("the cart changed since it was read")]
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

    pub async fn cart(&self, id: &str) -> Result<Option<StoredCart>, StorageError> {
        match self.storage.get(TABLE.name, &cart_key(id)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    pub async fn insert(&self, cart: &StoredCart) -> Result<(), SaveError> {
        let item = cart_key(&cart.id).stamp(to_item(cart)?);
        match self
            .storage
            .put(TABLE.name, item, Some(Condition::NotExists))
            .await
        {
            Ok(()) => Ok(()),
            Err(StorageError::ConditionFailed) => Err(SaveError::Changed),
            Err(error) => Err(error.into()),
        }
    }

    /// The write of [`Self::replace`], for a transaction.
    pub fn replace_op(
        &self,
        next: &StoredCart,
        expected_version: u64,
    ) -> Result<TxOp, StorageError> {
        let version = i64::try_from(expected_version).unwrap_or(i64::MAX);
        Ok(TxOp::Put {
            table: TABLE.name,
            item: cart_key(&next.id).stamp(to_item(next)?),
            condition: Some(Condition::equals("version", version)),
        })
    }

    /// Stores `next` if the stored cart still has `expected_version`.
    pub async fn replace(&self, next: &StoredCart, expected_version: u64) -> Result<(), SaveError> {
        let item = cart_key(&next.id).stamp(to_item(next)?);
        let version = i64::try_from(expected_version).unwrap_or(i64::MAX);
        match self
            .storage
            .put(
                TABLE.name,
                item,
                Some(Condition::equals("version", version)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(StorageError::ConditionFailed) => Err(SaveError::Changed),
            Err(error) => Err(error.into()),
        }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
}
