//! The DynamoDB adapter of the storage port.
//!
//! - Tables are named `<prefix>-<table>`; `ensure_tables` creates them (string `pk`/`sk` keys,
//!   a GSI per index with all attributes projected, on-demand billing) and enables TTL on the
//!   table's TTL attribute. That is what `emporium init` runs; the services only use tables.
//! - Conditions become condition expressions. On a table with a TTL attribute every condition
//!   treats an item whose TTL has passed as absent, because DynamoDB deletes expired items late
//!   (up to days), and reads drop such items too.
//! - Every write, even of one item, is a `TransactWriteItems` call with a client request token.
//!   The token makes the call idempotent for DynamoDB, so when the SDK retries after a lost
//!   answer (its retry config handles throttling and transient errors) a write that already
//!   happened is not applied twice and does not come back as a failed condition. An update then
//!   reads the item back (consistently) to return it; a delete reads it first.
//! - An update that meets an expired item (it would merge into it) fails a guard instead; the
//!   adapter deletes the expired item and tries once more, so the update starts from nothing, as
//!   the port says.
//! - A cancelled transaction reports the positions whose conditions failed; conflicts with other
//!   transactions are retried a few times; a failed condition never is.
//! - Cursors are the port's positions, made from and turned into `LastEvaluatedKey`. DynamoDB
//!   counts expired items against `Limit` before filtering them out, so a query asks again until
//!   the page is full or the partition ends.
//! - Item reads and base-table queries are strongly consistent; index queries cannot be (GSIs are
//!   eventually consistent on AWS).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem, Update as DynamoUpdate,
};
use emporium_ports::storage::{
    Condition, Cursor, IndexDef, IndexPosition, Item, Key, PK, Page, Position, Query, Result, SK,
    Storage, StorageError, TableDef, TxOp, Update, now_epoch_seconds, validate_transaction,
};
use serde_json::Value;

/// Attempts at a transaction that keeps conflicting with others on the same items.
const CONFLICT_ATTEMPTS: usize = 5;
/// Queries a page may take to fill up past expired items before it returns what it has.
const FILL_ROUNDS: usize = 10;

fn backend(error: impl Into<anyhow::Error>) -> StorageError {
    StorageError::Backend(error.into())
}

/// Storage in DynamoDB tables.
#[derive(Clone)]
pub struct DynamoStorage {
    client: Client,
    prefix: String,
    tables: HashMap<&'static str, TableDef>,
}

impl std::fmt::Debug for DynamoStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStorage")
            .field("prefix", &self.prefix)
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

// === impl values ===

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(flag) => AttributeValue::Bool(*flag),
        Value::Number(number) => AttributeValue::N(number.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(values) => AttributeValue::L(values.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(
            map.iter()
                .map(|(name, value)| (name.clone(), to_attribute(value)))
                .collect(),
        ),
    }
}

fn from_attribute(value: &AttributeValue) -> Result<Value> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(flag) => Value::Bool(*flag),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::N(number) => match number.parse::<i64>() {
            Ok(integer) => Value::from(integer),
            Err(_) => number
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| backend(anyhow::anyhow!("number {number} out of range")))?,
        },
        AttributeValue::L(values) => Value::Array(
            values
                .iter()
                .map(from_attribute)
                .collect::<Result<Vec<_>>>()?,
        ),
        AttributeValue::M(map) => Value::Object(from_map(map)?),
        other => {
            return Err(backend(anyhow::anyhow!(
                "attribute type {other:?} is not used by Emporium"
            )));
        }
    })
}

fn from_map(map: &HashMap<String, AttributeValue>) -> Result<Item> {
    map.iter()
        .map(|(name, value)| Ok((name.clone(), from_attribute(value)?)))
        .collect()
}

fn to_map(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(name, value)| (name.clone(), to_attribute(value)))
        .collect()
}

fn key_map(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

// === impl expressions ===

/// Placeholders for the names and values an expression uses.
#[derive(Default)]
struct Expression {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(&mut self, name: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, n)| n.as_str() == name) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), name.to_owned());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// A condition expression as a tree, rendered with only the parentheses precedence needs:
/// DynamoDB rejects redundant ones such as `((a))`.
#[derive(Debug, Clone)]
enum Clause {
    Atom(String),
    And(Vec<Clause>),
    Or(Vec<Clause>),
}

impl Clause {
    fn and(clauses: impl IntoIterator<Item = Clause>) -> Self {
        let mut parts = Vec::new();
        for clause in clauses {
            match clause {
                Clause::And(inner) => parts.extend(inner),
                other => parts.push(other),
            }
        }
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Clause::And(parts)
        }
    }

    fn or(clauses: impl IntoIterator<Item = Clause>) -> Self {
        let mut parts = Vec::new();
        for clause in clauses {
            match clause {
                Clause::Or(inner) => parts.extend(inner),
                other => parts.push(other),
            }
        }
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Clause::Or(parts)
        }
    }

    fn render(&self) -> String {
        match self {
            Clause::Atom(text) => text.clone(),
            // AND binds tighter than OR: only an OR inside an AND needs parentheses.
            Clause::And(parts) => parts
                .iter()
                .map(|part| match part {
                    Clause::Or(_) => format!("({})", part.render()),
                    _ => part.render(),
                })
                .collect::<Vec<_>>()
                .join(" AND "),
            Clause::Or(parts) => parts
                .iter()
                .map(Clause::render)
                .collect::<Vec<_>>()
                .join(" OR "),
        }
    }
}

/// How a condition treats expiry: the table's TTL attribute and the time now.
#[derive(Clone, Copy)]
struct Expiry<'a> {
    attribute: Option<&'a str>,
    now: i64,
}

impl Expiry<'_> {
    /// True for an item that exists only if it has not expired (None without TTL: always).
    fn live(&self, expression: &mut Expression) -> Option<Clause> {
        let attribute = self.attribute?;
        let name = expression.name(attribute);
        let now = expression.value(AttributeValue::N(self.now.to_string()));
        Some(Clause::or([
            Clause::Atom(format!("attribute_not_exists({name})")),
            Clause::Atom(format!("{name} > {now}")),
        ]))
    }

    fn expired(&self, expression: &mut Expression) -> Option<Clause> {
        let attribute = self.attribute?;
        let name = expression.name(attribute);
        let now = expression.value(AttributeValue::N(self.now.to_string()));
        Some(Clause::Atom(format!("{name} <= {now}")))
    }
}

fn condition_clause(
    condition: &Condition,
    expiry: Expiry<'_>,
    expression: &mut Expression,
) -> Clause {
    let with_live = |clause: Clause, expression: &mut Expression| match expiry.live(expression) {
        Some(live) => Clause::and([clause, live]),
        None => clause,
    };
    match condition {
        Condition::Exists => {
            let pk = expression.name(PK);
            with_live(Clause::Atom(format!("attribute_exists({pk})")), expression)
        }
        Condition::NotExists => {
            let pk = expression.name(PK);
            let absent = Clause::Atom(format!("attribute_not_exists({pk})"));
            match expiry.expired(expression) {
                Some(expired) => Clause::or([absent, expired]),
                None => absent,
            }
        }
        Condition::Equals(attribute, value) => {
            let name = expression.name(attribute);
            let value = expression.value(to_attribute(value));
            with_live(Clause::Atom(format!("{name} = {value}")), expression)
        }
        Condition::AtLeast(attribute, bound) => {
            let name = expression.name(attribute);
            let bound = expression.value(AttributeValue::N(bound.to_string()));
            with_live(Clause::Atom(format!("{name} >= {bound}")), expression)
        }
        Condition::All(conditions) if conditions.is_empty() => {
            let pk = expression.name(PK);
            Clause::or([
                Clause::Atom(format!("attribute_exists({pk})")),
                Clause::Atom(format!("attribute_not_exists({pk})")),
            ])
        }
        Condition::All(conditions) => Clause::and(
            conditions
                .iter()
                .map(|c| condition_clause(c, expiry, expression)),
        ),
    }
}

fn update_text(update: &Update, expression: &mut Expression) -> String {
    let mut clauses = Vec::new();
    if !update.set.is_empty() {
        let sets: Vec<String> = update
            .set
            .iter()
            .map(|(attribute, value)| {
                let name = expression.name(attribute);
                let value = expression.value(to_attribute(value));
                format!("{name} = {value}")
            })
            .collect();
        clauses.push(format!("SET {}", sets.join(", ")));
    }
    if !update.add.is_empty() {
        let adds: Vec<String> = update
            .add
            .iter()
            .map(|(attribute, delta)| {
                let name = expression.name(attribute);
                let delta = expression.value(AttributeValue::N(delta.to_string()));
                format!("{name} {delta}")
            })
            .collect();
        clauses.push(format!("ADD {}", adds.join(", ")));
    }
    if !update.remove.is_empty() {
        let removes: Vec<String> = update.remove.iter().map(|a| expression.name(a)).collect();
        clauses.push(format!("REMOVE {}", removes.join(", ")));
    }
    clauses.join(" ")
}

// === impl DynamoStorage ===

/// What a cancelled transaction says.
enum Cancelled {
    /// These positions' conditions failed.
    Conditions(Vec<usize>),
    /// Another transaction held some of the items; worth trying again.
    Conflict,
}

impl DynamoStorage {
    /// Storage over the tables `<prefix>-<name>` of `tables`.
    pub fn new(client: Client, prefix: &str, tables: &[TableDef]) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            tables: tables.iter().map(|def| (def.name, *def)).collect(),
        }
    }

    fn def(&self, table: &str) -> Result<&TableDef> {
        self.tables
            .get(table)
            .ok_or_else(|| StorageError::Invalid(format!("unknown table {table}")))
    }

    /// The DynamoDB table name of a table.
    pub fn physical(&self, table: &str) -> String {
        if self.prefix.is_empty() {
            table.to_owned()
        } else {
            format!("{}-{table}", self.prefix)
        }
    }

    fn expiry(&self, def: &TableDef) -> Expiry<'static> {
        Expiry {
            attribute: def.ttl_attribute,
            now: now_epoch_seconds(),
        }
    }

    /// One transaction item for `op`. Updates carry a guard that fails on an expired item, so
    /// it is cleared first instead of merged into.
    fn transact_item(&self, op: &TxOp) -> Result<TransactWriteItem> {
        let def = self.def(op.table())?;
        let table = self.physical(def.name);
        let expiry = self.expiry(def);
        let mut expression = Expression::default();
        let condition = op
            .condition()
            .map(|c| condition_clause(c, expiry, &mut expression));
        Ok(match op {
            TxOp::Put { item, .. } => {
                def.validate_item(item)?;
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(table)
                            .set_item(Some(to_map(item)))
                            .set_condition_expression(condition.as_ref().map(Clause::render))
                            .set_expression_attribute_names(expression.names())
                            .set_expression_attribute_values(expression.values())
                            .build()
                            .map_err(backend)?,
                    )
                    .build()
            }
            TxOp::Update { key, update, .. } => {
                key.validate()?;
                update.validate()?;
                let guard = expiry.live(&mut expression).map(|live| {
                    let pk = expression.name(PK);
                    Clause::or([Clause::Atom(format!("attribute_not_exists({pk})")), live])
                });
                let condition = match (condition, guard) {
                    (Some(c), Some(g)) => Some(Clause::and([c, g])),
                    (c, g) => c.or(g),
                };
                let text = update_text(update, &mut expression);
                TransactWriteItem::builder()
                    .update(
                        DynamoUpdate::builder()
                            .table_name(table)
                            .set_key(Some(key_map(key)))
                            .update_expression(text)
                            .set_condition_expression(condition.as_ref().map(Clause::render))
                            .set_expression_attribute_names(expression.names())
                            .set_expression_attribute_values(expression.values())
                            .build()
                            .map_err(backend)?,
                    )
                    .build()
            }
            TxOp::Delete { key, .. } => {
                key.validate()?;
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(table)
                            .set_key(Some(key_map(key)))
                            .set_condition_expression(condition.as_ref().map(Clause::render))
                            .set_expression_attribute_names(expression.names())
                            .set_expression_attribute_values(expression.values())
                            .build()
                            .map_err(backend)?,
                    )
                    .build()
            }
            TxOp::Check { key, .. } => {
                key.validate()?;
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(table)
                            .set_key(Some(key_map(key)))
                            .set_condition_expression(condition.as_ref().map(Clause::render))
                            .set_expression_attribute_names(expression.names())
                            .set_expression_attribute_values(expression.values())
                            .build()
                            .map_err(backend)?,
                    )
                    .build()
            }
        })
    }

    /// Runs the operations as one transaction, idempotent under the SDK's retries.
    async fn write(&self, ops: &[TxOp]) -> std::result::Result<(), WriteFailure> {
        let items = ops
            .iter()
            .map(|op| self.transact_item(op))
            .collect::<Result<Vec<_>>>()
            .map_err(WriteFailure::Storage)?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(token.clone())
                .send()
                .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(error) => match classify(error) {
                    Ok(Cancelled::Conflict) if attempt < CONFLICT_ATTEMPTS => {
                        let pause = rand::random_range(5..=20 * attempt as u64);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        // A new token: the last attempt did not happen.
                        continue;
                    }
                    Ok(Cancelled::Conflict) => {
                        return Err(WriteFailure::Storage(backend(anyhow::anyhow!(
                            "transaction kept conflicting with others"
                        ))));
                    }
                    Ok(Cancelled::Conditions(failed)) => {
                        return Err(WriteFailure::Conditions(failed));
                    }
                    Err(error) => return Err(WriteFailure::Storage(error)),
                },
            }
        }
    }

    /// Writes `ops`; when conditions fail because an update met an expired item (which the
    /// port treats as absent), deletes those items and writes once more.
    async fn write_clearing_expired(&self, ops: &[TxOp]) -> std::result::Result<(), WriteFailure> {
        match self.write(ops).await {
            Err(WriteFailure::Conditions(failed)) => {
                let mut cleared = false;
                for position in &failed {
                    if let Some(TxOp::Update { table, key, .. }) = ops.get(*position) {
                        cleared |= self.clear_if_expired(table, key).await?;
                    }
                }
                if cleared {
                    self.write(ops).await
                } else {
                    Err(WriteFailure::Conditions(failed))
                }
            }
            other => other,
        }
    }

    /// Deletes the item if it has expired; true if it did.
    async fn clear_if_expired(
        &self,
        table: &'static str,
        key: &Key,
    ) -> std::result::Result<bool, WriteFailure> {
        let def = *self.def(table).map_err(WriteFailure::Storage)?;
        let Some(item) = self
            .raw_get(table, key)
            .await
            .map_err(WriteFailure::Storage)?
        else {
            return Ok(false);
        };
        if !def.is_expired(&item, now_epoch_seconds()) {
            return Ok(false);
        }
        let mut expression = Expression::default();
        let Some(expired) = self.expiry(&def).expired(&mut expression) else {
            return Ok(false);
        };
        let outcome = self
            .client
            .delete_item()
            .table_name(self.physical(table))
            .set_key(Some(key_map(key)))
            .condition_expression(expired.render())
            .set_expression_attribute_names(expression.names())
            .set_expression_attribute_values(expression.values())
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(true),
            // Someone wrote a live item meanwhile: nothing to clear, but worth another try.
            Err(error) if is_condition_failure(&error) => Ok(true),
            Err(error) => Err(WriteFailure::Storage(backend(error))),
        }
    }

    /// The stored item, expired or not.
    async fn raw_get(&self, table: &str, key: &Key) -> Result<Option<Item>> {
        let response = self
            .client
            .get_item()
            .table_name(self.physical(table))
            .set_key(Some(key_map(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(service_error)?;
        response.item().map(from_map).transpose()
    }

    async fn single(&self, op: TxOp) -> Result<()> {
        match self.write_clearing_expired(std::slice::from_ref(&op)).await {
            Ok(()) => Ok(()),
            Err(WriteFailure::Conditions(_)) => Err(StorageError::ConditionFailed),
            Err(WriteFailure::Storage(error)) => Err(error),
        }
    }

    async fn query_pages(
        &self,
        table: &'static str,
        index: Option<&IndexDef>,
        query: Query,
    ) -> Result<Page> {
        query.validate()?;
        let def = *self.def(table)?;
        let mut start = match &query.cursor {
            Some(cursor) => Some(start_key(
                &cursor.position(table, index.map(|i| i.name), &query)?,
                index,
            )),
            None => None,
        };
        let (pk_attribute, sk_attribute) = match index {
            Some(index) => (index.pk, index.sk),
            None => (PK, SK),
        };
        let mut items = Vec::new();
        for _ in 0..FILL_ROUNDS {
            let mut expression = Expression::default();
            let pk = expression.name(pk_attribute);
            let partition = expression.value(AttributeValue::S(query.partition.clone()));
            let mut key_condition = format!("{pk} = {partition}");
            if !query.prefix.is_empty() {
                let sk = expression.name(sk_attribute);
                let prefix = expression.value(AttributeValue::S(query.prefix.clone()));
                key_condition.push_str(&format!(" AND begins_with({sk}, {prefix})"));
            }
            let filter = self.expiry(&def).live(&mut expression).map(|c| c.render());
            let remaining = query.limit - items.len();
            let response = self
                .client
                .query()
                .table_name(self.physical(table))
                .set_index_name(index.map(|i| i.name.to_owned()))
                .key_condition_expression(key_condition)
                .set_filter_expression(filter)
                .set_expression_attribute_names(expression.names())
                .set_expression_attribute_values(expression.values())
                .scan_index_forward(!query.descending)
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .consistent_read(index.is_none())
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(service_error)?;
            let now = now_epoch_seconds();
            for raw in response.items() {
                let item = from_map(raw)?;
                if !def.is_expired(&item, now) {
                    items.push(item);
                }
            }
            start = response.last_evaluated_key().cloned();
            if items.len() >= query.limit || start.is_none() {
                break;
            }
        }
        let next = match start {
            Some(last) => Some(Cursor::from_position(&position(&last, &def, index)?)),
            None => None,
        };
        Ok(Page { items, next })
    }

    /// Creates the tables that are missing (with their indexes and TTL) and adds what existing
    /// ones lack; safe to run again.
    pub async fn ensure_tables(&self) -> anyhow::Result<()> {
        for def in self.tables.values() {
            self.ensure_table(def).await?;
        }
        Ok(())
    }

    async fn ensure_table(&self, def: &TableDef) -> anyhow::Result<()> {
        let name = self.physical(def.name);
        let string = |attribute: &str| {
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |attribute: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(attribute)
                .key_type(kind)
                .build()
        };
        let gsi = |index: &IndexDef| -> anyhow::Result<GlobalSecondaryIndex> {
            Ok(GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.pk, KeyType::Hash)?)
                .key_schema(key(index.sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?)
        };
        let mut attributes = vec![PK, SK];
        for index in def.indexes {
            for attribute in [index.pk, index.sk] {
                if !attributes.contains(&attribute) {
                    attributes.push(attribute);
                }
            }
        }
        let existing = self.client.describe_table().table_name(&name).send().await;
        match existing {
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                let mut create = self
                    .client
                    .create_table()
                    .table_name(&name)
                    .billing_mode(BillingMode::PayPerRequest)
                    .key_schema(key(PK, KeyType::Hash)?)
                    .key_schema(key(SK, KeyType::Range)?);
                for attribute in &attributes {
                    create = create.attribute_definitions(string(attribute)?);
                }
                for index in def.indexes {
                    create = create.global_secondary_indexes(gsi(index)?);
                }
                match create.send().await {
                    Ok(_) => tracing::info!(table = %name, "created table"),
                    // Another `init` got there first.
                    Err(error)
                        if error
                            .as_service_error()
                            .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                    Err(error) => {
                        return Err(
                            anyhow::Error::from(error).context(format!("creating table {name}"))
                        );
                    }
                }
            }
            Err(error) => {
                return Err(anyhow::Error::from(error).context(format!("describing table {name}")));
            }
            Ok(described) => {
                let present: Vec<String> = described
                    .table()
                    .map(|t| {
                        t.global_secondary_indexes()
                            .iter()
                            .filter_map(|g| g.index_name().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                for index in def
                    .indexes
                    .iter()
                    .filter(|i| !present.iter().any(|p| p == i.name))
                {
                    self.wait_active(&name).await?;
                    let mut update = self.client.update_table().table_name(&name);
                    for attribute in [index.pk, index.sk] {
                        update = update.attribute_definitions(string(attribute)?);
                    }
                    update
                        .global_secondary_index_updates(
                            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                                .create(
                                    aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                                        .index_name(index.name)
                                        .key_schema(key(index.pk, KeyType::Hash)?)
                                        .key_schema(key(index.sk, KeyType::Range)?)
                                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                                        .build()?,
                                )
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| anyhow::Error::from(e).context(format!("adding index {} to {name}", index.name)))?;
                    tracing::info!(table = %name, index = index.name, "added index");
                }
            }
        }
        self.wait_active(&name).await?;
        if let Some(attribute) = def.ttl_attribute {
            let ttl = self
                .client
                .describe_time_to_live()
                .table_name(&name)
                .send()
                .await
                .map_err(|e| {
                    anyhow::Error::from(e).context(format!("reading the TTL of {name}"))
                })?;
            let enabled = ttl.time_to_live_description().is_some_and(|d| {
                d.attribute_name() == Some(attribute)
                    && matches!(
                        d.time_to_live_status(),
                        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                    )
            });
            if !enabled {
                self.client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name(attribute)
                            .build()?,
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::Error::from(e).context(format!("enabling TTL on {name}"))
                    })?;
                tracing::info!(table = %name, attribute, "enabled TTL");
            }
        }
        Ok(())
    }

    async fn wait_active(&self, name: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            let described = self.client.describe_table().table_name(name).send().await?;
            let table = described.table();
            let table_active = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let indexes_active = table.is_some_and(|t| {
                t.global_secondary_indexes().iter().all(|g| {
                    g.index_status()
                        .is_none_or(|s| *s == aws_sdk_dynamodb::types::IndexStatus::Active)
                })
            });
            if table_active && indexes_active {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("table {name} did not become active")
    }
}

enum WriteFailure {
    Conditions(Vec<usize>),
    Storage(StorageError),
}

impl From<StorageError> for WriteFailure {
    fn from(error: StorageError) -> Self {
        Self::Storage(error)
    }
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &SdkError<E, R>,
) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Maps a failed call to a port error: validation problems are the caller's fault, the rest is
/// the backend's.
fn service_error<E, R>(error: SdkError<E, R>) -> StorageError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(service) = error.as_service_error() {
        if service.code() == Some("ValidationException") {
            return StorageError::Invalid(
                service
                    .message()
                    .unwrap_or("rejected by DynamoDB")
                    .to_owned(),
            );
        }
        if service.code() == Some("ResourceNotFoundException") {
            return backend(anyhow::anyhow!(
                "{}; run `emporium init` to create the tables",
                service.message().unwrap_or("table not found")
            ));
        }
    }
    backend(error)
}

fn classify(
    error: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> std::result::Result<Cancelled, StorageError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    {
        let reasons = cancelled.cancellation_reasons();
        let failed: Vec<usize> = reasons
            .iter()
            .enumerate()
            .filter(|(_, reason)| reason.code() == Some("ConditionalCheckFailed"))
            .map(|(position, _)| position)
            .collect();
        if !failed.is_empty() {
            return Ok(Cancelled::Conditions(failed));
        }
        if reasons
            .iter()
            .any(|r| r.code() == Some("TransactionConflict"))
        {
            return Ok(Cancelled::Conflict);
        }
        if let Some(reason) = reasons.iter().find(|r| r.code() == Some("ValidationError")) {
            return Err(StorageError::Invalid(
                reason
                    .message()
                    .unwrap_or("rejected by DynamoDB")
                    .to_owned(),
            ));
        }
    }
    Err(service_error(error))
}

fn start_key(position: &Position, index: Option<&IndexDef>) -> HashMap<String, AttributeValue> {
    let mut key = key_map(&Key::new(position.pk.clone(), position.sk.clone()));
    if let (Some(index), Some(at)) = (index, &position.index) {
        key.insert(index.pk.to_owned(), AttributeValue::S(at.pk.clone()));
        key.insert(index.sk.to_owned(), AttributeValue::S(at.sk.clone()));
    }
    key
}

fn position(
    last: &HashMap<String, AttributeValue>,
    def: &TableDef,
    index: Option<&IndexDef>,
) -> Result<Position> {
    let text = |name: &str| -> Result<String> {
        match last.get(name) {
            Some(AttributeValue::S(value)) => Ok(value.clone()),
            _ => Err(backend(anyhow::anyhow!("LastEvaluatedKey lacks {name}"))),
        }
    };
    Ok(Position {
        table: def.name.to_owned(),
        index: match index {
            Some(index) => Some(IndexPosition {
                name: index.name.to_owned(),
                pk: text(index.pk)?,
                sk: text(index.sk)?,
            }),
            None => None,
        },
        pk: text(PK)?,
        sk: text(SK)?,
    })
}

#[async_trait]
impl Storage for DynamoStorage {
    async fn get(&self, table: &'static str, key: &Key) -> Result<Option<Item>> {
        key.validate()?;
        let def = *self.def(table)?;
        let item = self.raw_get(table, key).await?;
        Ok(item.filter(|item| !def.is_expired(item, now_epoch_seconds())))
    }

    async fn put(
        &self,
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> Result<()> {
        self.single(TxOp::Put {
            table,
            item,
            condition,
        })
        .await
    }

    async fn update(
        &self,
        table: &'static str,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item> {
        update.validate()?;
        self.single(TxOp::Update {
            table,
            key: key.clone(),
            update,
            condition,
        })
        .await?;
        self.get(table, key)
            .await?
            .ok_or_else(|| backend(anyhow::anyhow!("the item vanished right after its update")))
    }

    async fn delete(
        &self,
        table: &'static str,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>> {
        let previous = self.get(table, key).await?;
        self.single(TxOp::Delete {
            table,
            key: key.clone(),
            condition,
        })
        .await?;
        Ok(previous)
    }

    async fn query(&self, table: &'static str, query: Query) -> Result<Page> {
        self.query_pages(table, None, query).await
    }

    async fn query_index(
        &self,
        table: &'static str,
        index: &'static str,
        query: Query,
    ) -> Result<Page> {
        let def = *self.def(table)?;
        let index = def.index(index)?;
        self.query_pages(table, Some(index), query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<()> {
        validate_transaction(&ops)?;
        match self.write_clearing_expired(&ops).await {
            Ok(()) => Ok(()),
            Err(WriteFailure::Conditions(failed)) => {
                Err(StorageError::TransactionCanceled { failed })
            }
            Err(WriteFailure::Storage(error)) => Err(error),
        }
    }

    async fn ping(&self) -> Result<()> {
        let Some(def) = self.tables.values().next() else {
            return Ok(());
        };
        self.client
            .describe_table()
            .table_name(self.physical(def.name))
            .send()
            .await
            .map_err(service_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_survive_the_round_trip() {
        let value = json!({"s": "x", "n": 42, "neg": -7, "f": 1.5, "b": true, "z": null,
                           "l": [1, "two", {"three": 3}], "m": {"nested": {"deep": [true]}}, "e": ""});
        let back = from_attribute(&to_attribute(&value)).expect("round trip");
        assert_eq!(back, value);
    }

    #[test]
    fn conditions_treat_expired_items_as_absent() {
        let mut expression = Expression::default();
        let expiry = Expiry {
            attribute: Some("expires_at"),
            now: 100,
        };
        let exists = condition_clause(&Condition::Exists, expiry, &mut expression).render();
        assert_eq!(
            exists,
            "attribute_exists(#n0) AND (attribute_not_exists(#n1) OR #n1 > :v0)"
        );
        let absent = condition_clause(&Condition::NotExists, expiry, &mut expression).render();
        assert_eq!(absent, "attribute_not_exists(#n0) OR #n1 <= :v1");
        let nested = condition_clause(
            &Condition::All(vec![Condition::Exists, Condition::at_least("n", 1)]),
            expiry,
            &mut Expression::default(),
        )
        .render();
        assert!(!nested.contains("(("), "no redundant parentheses: {nested}");
        let without_ttl = condition_clause(
            &Condition::at_least("stock", 2),
            Expiry {
                attribute: None,
                now: 0,
            },
            &mut Expression::default(),
        )
        .render();
        assert_eq!(without_ttl, "#n0 >= :v0");
    }

    #[test]
    fn reserved_words_are_always_placeholders() {
        let mut expression = Expression::default();
        let text = update_text(
            &Update::new()
                .set("status", "held")
                .add("count", 1)
                .remove("name"),
            &mut expression,
        );
        assert_eq!(text, "SET #n0 = :v0 ADD #n1 :v1 REMOVE #n2");
        assert_eq!(
            expression.names.get("#n0").map(String::as_str),
            Some("status")
        );
    }
}
