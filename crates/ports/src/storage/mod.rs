//! The storage port, modelled on DynamoDB's item API so that services think in DynamoDB terms
//! (partition and sort keys, conditional writes, transactions, secondary indexes, TTL) and the
//! embedded adapter and the DynamoDB adapter can pass one conformance suite.
//!
//! An item is a map of attributes. Every item has a string partition key `pk` and a string
//! sort key `sk`. Numbers that conditions compare or updates add to are 64-bit integers.
//! A table may declare secondary indexes (an item appears in an index when it has both of the
//! index's key attributes, as strings) and a TTL attribute (epoch seconds): an item whose TTL has
//! passed is absent for every operation, conditions included, even before anything deletes it.

pub mod embedded;

#[cfg(feature = "testsuite")]
pub mod conformance;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Attributes of one item.
pub type Item = serde_json::Map<String, Value>;

/// Name of the partition-key attribute.
pub const PK: &str = "pk";
/// Name of the sort-key attribute.
pub const SK: &str = "sk";

/// DynamoDB's limits, enforced by every adapter so nothing works locally that fails on AWS.
pub const MAX_PK_BYTES: usize = 2048;
pub const MAX_SK_BYTES: usize = 1024;
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const MAX_TRANSACTION_OPS: usize = 100;
pub const MAX_QUERY_LIMIT: usize = 1000;

/// A table: its name, secondary indexes and TTL attribute. Services declare theirs as constants;
/// `emporium init` creates them from the same declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub indexes: &'static [IndexDef],
    pub ttl_attribute: Option<&'static str>,
}

/// A secondary index keyed by two string attributes of the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDef {
    pub name: &'static str,
    pub pk: &'static str,
    pub sk: &'static str,
}

impl TableDef {
    pub fn index(&self, name: &str) -> Result<&IndexDef, StorageError> {
        self.indexes
            .iter()
            .find(|index| index.name == name)
            .ok_or_else(|| {
                StorageError::Invalid(format!("table {} has no index {name}", self.name))
            })
    }

    /// Whether `item` has passed its expiry time at `now` (epoch seconds).
    pub fn is_expired(&self, item: &Item, now: i64) -> bool {
        self.ttl_attribute
            .and_then(|attribute| item.get(attribute))
            .and_then(Value::as_i64)
            .is_some_and(|expires_at| expires_at <= now)
    }

    /// Checks the key, the index attributes and the size of an item about to be written.
    pub fn validate_item(&self, item: &Item) -> Result<Key, StorageError> {
        let key = Key::of(item)?;
        for index in self.indexes {
            for attribute in [index.pk, index.sk] {
                match item.get(attribute) {
                    None => {}
                    Some(Value::String(value)) if !value.is_empty() => {}
                    Some(Value::String(_)) => {
                        return Err(StorageError::Invalid(format!(
                            "attribute {attribute} keys index {} and must not be empty",
                            index.name
                        )));
                    }
                    Some(_) => {
                        return Err(StorageError::Invalid(format!(
                            "attribute {attribute} keys index {} and must be a string",
                            index.name
                        )));
                    }
                }
            }
        }
        let size = serde_json::to_vec(item)
            .map(|bytes| bytes.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ITEM_BYTES {
            return Err(StorageError::Invalid(format!(
                "item is {size} bytes; the limit is {MAX_ITEM_BYTES}"
            )));
        }
        Ok(key)
    }
}

/// Seconds since the epoch, the unit of TTL attributes.
pub fn now_epoch_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of `item`, which must hold both key attributes as strings within the limits.
    pub fn of(item: &Item) -> Result<Self, StorageError> {
        let attribute = |name: &str| match item.get(name) {
            Some(Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(StorageError::Invalid(format!(
                "key attribute {name} must be a string"
            ))),
            None => Err(StorageError::Invalid(format!(
                "item has no key attribute {name}"
            ))),
        };
        let key = Self::new(attribute(PK)?, attribute(SK)?);
        key.validate()?;
        Ok(key)
    }

    pub fn validate(&self) -> Result<(), StorageError> {
        if self.pk.is_empty() || self.sk.is_empty() {
            return Err(StorageError::Invalid(
                "key attributes must not be empty".into(),
            ));
        }
        if self.pk.len() > MAX_PK_BYTES || self.sk.len() > MAX_SK_BYTES {
            return Err(StorageError::Invalid(format!(
                "key too long: pk may have {MAX_PK_BYTES} bytes, sk {MAX_SK_BYTES}"
            )));
        }
        Ok(())
    }

    /// `item` with this key's attributes set.
    pub fn stamp(&self, mut item: Item) -> Item {
        item.insert(PK.into(), Value::String(self.pk.clone()));
        item.insert(SK.into(), Value::String(self.sk.clone()));
        item
    }
}

/// What must be true of the stored item for a write to happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The item exists (and has not expired).
    Exists,
    /// No live item has this key.
    NotExists,
    /// The item exists and the attribute equals the value.
    Equals(String, Value),
    /// The item exists and the attribute is an integer ≥ the bound.
    AtLeast(String, i64),
    /// Every condition holds.
    All(Vec<Condition>),
}

impl Condition {
    pub fn equals(attribute: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Equals(attribute.into(), value.into())
    }

    pub fn at_least(attribute: impl Into<String>, bound: i64) -> Self {
        Self::AtLeast(attribute.into(), bound)
    }

    pub fn and(self, other: Condition) -> Self {
        match self {
            Self::All(mut conditions) => {
                conditions.push(other);
                Self::All(conditions)
            }
            first => Self::All(vec![first, other]),
        }
    }

    /// Evaluates the condition against the live item (`None` when absent or expired).
    pub fn holds(&self, item: Option<&Item>) -> bool {
        match self {
            Self::Exists => item.is_some(),
            Self::NotExists => item.is_none(),
            Self::Equals(attribute, value) => item.and_then(|i| i.get(attribute)) == Some(value),
            Self::AtLeast(attribute, bound) => item
                .and_then(|i| i.get(attribute))
                .and_then(Value::as_i64)
                .is_some_and(|n| n >= *bound),
            Self::All(conditions) => conditions.iter().all(|c| c.holds(item)),
        }
    }
}

/// Changes to some attributes of an item. Updating an absent item creates it from its key and
/// these changes, as DynamoDB's UpdateItem does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub set: Vec<(String, Value)>,
    pub add: Vec<(String, i64)>,
    pub remove: Vec<String>,
}

impl Update {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, attribute: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set.push((attribute.into(), value.into()));
        self
    }

    /// Adds `delta` to an integer attribute (a missing attribute counts as 0).
    pub fn add(mut self, attribute: impl Into<String>, delta: i64) -> Self {
        self.add.push((attribute.into(), delta));
        self
    }

    pub fn remove(mut self, attribute: impl Into<String>) -> Self {
        self.remove.push(attribute.into());
        self
    }

    /// Checks the update on its own: no key attributes, each attribute named once.
    pub fn validate(&self) -> Result<(), StorageError> {
        let mut seen = std::collections::HashSet::new();
        let names = self
            .set
            .iter()
            .map(|(name, _)| name)
            .chain(self.add.iter().map(|(name, _)| name))
            .chain(self.remove.iter());
        for name in names {
            if name == PK || name == SK {
                return Err(StorageError::Invalid(
                    "an update cannot change key attributes".into(),
                ));
            }
            if name.is_empty() {
                return Err(StorageError::Invalid(
                    "attribute names must not be empty".into(),
                ));
            }
            if !seen.insert(name) {
                return Err(StorageError::Invalid(format!(
                    "attribute {name} appears twice in one update"
                )));
            }
        }
        if seen.is_empty() {
            return Err(StorageError::Invalid(
                "an update must change something".into(),
            ));
        }
        Ok(())
    }

    /// Applies the update to `item` in place.
    pub fn apply(&self, item: &mut Item) -> Result<(), StorageError> {
        self.validate()?;
        for (attribute, value) in &self.set {
            item.insert(attribute.clone(), value.clone());
        }
        for (attribute, delta) in &self.add {
            let current = match item.get(attribute) {
                None => 0,
                Some(value) => value.as_i64().ok_or_else(|| {
                    StorageError::Invalid(format!("attribute {attribute} is not an integer"))
                })?,
            };
            let sum = current.checked_add(*delta).ok_or_else(|| {
                StorageError::Invalid(format!("adding {delta} to {attribute} overflows"))
            })?;
            item.insert(attribute.clone(), Value::from(sum));
        }
        for attribute in &self.remove {
            item.remove(attribute);
        }
        Ok(())
    }
}

/// Items of one partition, in sort-key order, whose sort key starts with `prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub partition: String,
    pub prefix: String,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub descending: bool,
}

impl Query {
    pub fn partition(partition: impl Into<String>) -> Self {
        Self {
            partition: partition.into(),
            prefix: String::new(),
            limit: 100,
            cursor: None,
            descending: false,
        }
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    pub fn validate(&self) -> Result<(), StorageError> {
        if self.partition.is_empty() {
            return Err(StorageError::Invalid("query needs a partition".into()));
        }
        if self.limit == 0 || self.limit > MAX_QUERY_LIMIT {
            return Err(StorageError::Invalid(format!(
                "query limit must be 1..={MAX_QUERY_LIMIT}"
            )));
        }
        Ok(())
    }
}

/// One page of a query. `next` continues after the last item; it is `None` when the query is
/// known to be exhausted (an adapter may also return a last, empty page).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<Cursor>,
}

/// An opaque continuation token. Only [`Cursor::after`] and the adapters make them; what is
/// inside is a position that the adapter checks against the query it is given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

/// What a cursor points after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "t")]
    pub table: String,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexPosition>,
    #[serde(rename = "p")]
    pub pk: String,
    #[serde(rename = "s")]
    pub sk: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPosition {
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "p")]
    pub pk: String,
    #[serde(rename = "s")]
    pub sk: String,
}

impl Cursor {
    /// A cursor continuing right after `item` in `table` (or in one of its indexes), for callers
    /// that stop part-way through a page, such as a filtering search.
    pub fn after(table: &TableDef, index: Option<&str>, item: &Item) -> Result<Self, StorageError> {
        let key = Key::of(item)?;
        let index = match index {
            None => None,
            Some(name) => {
                let def = table.index(name)?;
                let attribute = |name: &str| {
                    item.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            StorageError::Invalid(format!("item is not in index {}", def.name))
                        })
                };
                Some(IndexPosition {
                    name: def.name.to_owned(),
                    pk: attribute(def.pk)?,
                    sk: attribute(def.sk)?,
                })
            }
        };
        Ok(Self::from_position(&Position {
            table: table.name.to_owned(),
            index,
            pk: key.pk,
            sk: key.sk,
        }))
    }

    pub fn from_position(position: &Position) -> Self {
        let json = serde_json::to_vec(position).unwrap_or_default();
        Self(URL_SAFE_NO_PAD.encode(json))
    }

    /// The position inside, checked to belong to a query of `table` (and `index`) over
    /// `partition` and `prefix`.
    pub fn position(
        &self,
        table: &str,
        index: Option<&str>,
        query: &Query,
    ) -> Result<Position, StorageError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(self.0.as_bytes())
            .map_err(|_| StorageError::InvalidCursor)?;
        let position: Position =
            serde_json::from_slice(&bytes).map_err(|_| StorageError::InvalidCursor)?;
        let (partition, sort) = match (&position.index, index) {
            (None, None) => (&position.pk, &position.sk),
            (Some(at), Some(name)) if at.name == name => (&at.pk, &at.sk),
            _ => return Err(StorageError::InvalidCursor),
        };
        if position.table != table
            || *partition != query.partition
            || !sort.starts_with(&query.prefix)
        {
            return Err(StorageError::InvalidCursor);
        }
        Ok(position)
    }

    /// The token as given to clients.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A token received from a client; checked when a query uses it.
    pub fn from_token(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

/// A record as an item: its fields as attributes (the caller stamps the key on).
pub fn to_item<T: Serialize>(value: &T) -> Result<Item> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StorageError::Invalid("records are JSON objects".into())),
        Err(error) => Err(StorageError::Backend(error.into())),
    }
}

/// An item as a record; attributes the record does not name (keys, index attributes) are
/// ignored.
pub fn from_item<T: serde::de::DeserializeOwned>(item: Item) -> Result<T> {
    serde_json::from_value(Value::Object(item)).map_err(|error| StorageError::Backend(error.into()))
}

/// A page token for clients: a storage cursor bound to the listing it came from (`scope`: the
/// filters, sort, owner...), so a token used with another listing is refused rather than
/// silently positioned somewhere else.
pub fn page_token(cursor: &Cursor, scope: &str) -> String {
    #[derive(Serialize)]
    struct Token<'a> {
        f: String,
        s: &'a str,
    }
    let json = serde_json::to_vec(&Token {
        f: scope_fingerprint(scope),
        s: cursor.as_str(),
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The storage cursor inside a client's page token, if it belongs to `scope`.
pub fn cursor_from_token(token: &str, scope: &str) -> Result<Cursor> {
    #[derive(Deserialize)]
    struct Token {
        f: String,
        s: String,
    }
    if token.len() > 4096 {
        return Err(StorageError::InvalidCursor);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StorageError::InvalidCursor)?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| StorageError::InvalidCursor)?;
    if token.f != scope_fingerprint(scope) {
        return Err(StorageError::InvalidCursor);
    }
    Ok(Cursor::from_token(token.s))
}

fn scope_fingerprint(scope: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(scope.as_bytes())[..8])
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    Put {
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    },
    Update {
        table: &'static str,
        key: Key,
        update: Update,
        condition: Option<Condition>,
    },
    Delete {
        table: &'static str,
        key: Key,
        condition: Option<Condition>,
    },
    /// Writes nothing; the transaction happens only if the condition holds.
    Check {
        table: &'static str,
        key: Key,
        condition: Condition,
    },
}

impl TxOp {
    pub fn table(&self) -> &'static str {
        match self {
            Self::Put { table, .. }
            | Self::Update { table, .. }
            | Self::Delete { table, .. }
            | Self::Check { table, .. } => table,
        }
    }

    pub fn key(&self) -> Result<Key, StorageError> {
        match self {
            Self::Put { item, .. } => Key::of(item),
            Self::Update { key, .. } | Self::Delete { key, .. } | Self::Check { key, .. } => {
                Ok(key.clone())
            }
        }
    }

    pub fn condition(&self) -> Option<&Condition> {
        match self {
            Self::Put { condition, .. }
            | Self::Update { condition, .. }
            | Self::Delete { condition, .. } => condition.as_ref(),
            Self::Check { condition, .. } => Some(condition),
        }
    }
}

/// Checks the shape of a transaction: 1..=100 operations, each on a different item.
pub fn validate_transaction(ops: &[TxOp]) -> Result<(), StorageError> {
    if ops.is_empty() || ops.len() > MAX_TRANSACTION_OPS {
        return Err(StorageError::Invalid(format!(
            "a transaction has 1..={MAX_TRANSACTION_OPS} operations"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert((op.table(), op.key()?)) {
            return Err(StorageError::Invalid(
                "a transaction may touch each item only once".into(),
            ));
        }
        if let TxOp::Update { update, .. } = op {
            update.validate()?;
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The write's condition did not hold; nothing was written.
    #[error("the condition of the write did not hold")]
    ConditionFailed,
    /// Conditions of these operations (indexes into the transaction) did not hold; nothing was
    /// written.
    #[error("transaction canceled: conditions failed for operations {failed:?}")]
    TransactionCanceled { failed: Vec<usize> },
    /// A cursor that this query did not produce.
    #[error("cursor is not valid for this query")]
    InvalidCursor,
    /// A request the storage cannot carry out as given (a programming error, not bad luck).
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The backend failed; the write may or may not have happened only where the backend says so.
    #[error("storage backend failed")]
    Backend(#[source] anyhow::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A table store. Every method is atomic on its own; `transact` is atomic across items.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The live item with this key.
    async fn get(&self, table: &'static str, key: &Key) -> Result<Option<Item>>;

    /// Writes the whole item, replacing any item with its key.
    async fn put(
        &self,
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> Result<()>;

    /// Changes some attributes and returns the item as it is afterwards.
    async fn update(
        &self,
        table: &'static str,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item>;

    /// Deletes the item and returns what was there, if anything.
    async fn delete(
        &self,
        table: &'static str,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>>;

    /// A page of one partition of the table.
    async fn query(&self, table: &'static str, query: Query) -> Result<Page>;

    /// A page of one partition of a secondary index, in index sort-key order.
    async fn query_index(
        &self,
        table: &'static str,
        index: &'static str,
        query: Query,
    ) -> Result<Page>;

    /// All operations or none.
    async fn transact(&self, ops: Vec<TxOp>) -> Result<()>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(value: Value) -> Item {
        match value {
            Value::Object(map) => map,
            _ => Item::new(),
        }
    }

    #[test]
    fn conditions_treat_missing_attributes_as_failing() {
        let stock = item(json!({"pk": "a", "sk": "b", "available": 3}));
        assert!(Condition::at_least("available", 3).holds(Some(&stock)));
        assert!(!Condition::at_least("available", 4).holds(Some(&stock)));
        assert!(!Condition::at_least("reserved", 0).holds(Some(&stock)));
        assert!(!Condition::at_least("available", 0).holds(None));
        assert!(Condition::equals("available", 3).holds(Some(&stock)));
        assert!(!Condition::equals("available", 3).holds(None));
        assert!(
            Condition::Exists
                .and(Condition::equals("sk", "b"))
                .holds(Some(&stock))
        );
    }

    #[test]
    fn updates_add_to_missing_numbers_and_refuse_overflow() {
        let mut target = item(json!({"pk": "a", "sk": "b", "n": i64::MAX}));
        Update::new()
            .add("m", 5)
            .apply(&mut target)
            .expect("add to missing");
        assert_eq!(target["m"], 5);
        let error = Update::new()
            .add("n", 1)
            .apply(&mut target)
            .expect_err("overflow");
        assert!(matches!(error, StorageError::Invalid(_)));
        let error = Update::new()
            .set("pk", "x")
            .apply(&mut target)
            .expect_err("key");
        assert!(matches!(error, StorageError::Invalid(_)));
    }

    #[test]
    fn page_tokens_belong_to_their_scope() {
        let cursor = Cursor::from_token("abc");
        let token = page_token(&cursor, "kitchen|name");
        assert_eq!(
            cursor_from_token(&token, "kitchen|name").expect("same scope"),
            cursor
        );
        assert!(cursor_from_token(&token, "garden|name").is_err());
        assert!(cursor_from_token("%%%", "kitchen|name").is_err());
        assert!(cursor_from_token(&"a".repeat(5000), "kitchen|name").is_err());
    }

    #[test]
    fn cursors_only_fit_the_query_they_came_from() {
        let table = TableDef {
            name: "t",
            indexes: &[],
            ttl_attribute: None,
        };
        let it = item(json!({"pk": "p1", "sk": "x#1"}));
        let cursor = Cursor::after(&table, None, &it).expect("cursor");
        let query = Query::partition("p1").prefix("x#");
        assert!(cursor.position("t", None, &query).is_ok());
        assert!(cursor.position("t", None, &Query::partition("p2")).is_err());
        assert!(cursor.position("other", None, &query).is_err());
        assert!(cursor.position("t", Some("idx"), &query).is_err());
        assert!(
            Cursor::from_token("garbage!")
                .position("t", None, &query)
                .is_err()
        );
    }
}
