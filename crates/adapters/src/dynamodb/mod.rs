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
//!
//! The module is split by concern: `attributes` converts items to and from DynamoDB's
//! attribute values, `expression` builds condition and update expressions, `write` turns port
//! operations into idempotent transactions, `read` gets items and queries pages, `errors`
//! classifies the SDK's failures, and `tables` creates tables for `emporium init`.

mod attributes;
mod errors;
mod expression;
mod read;
mod tables;
mod write;

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use emporium_ports::storage::{
    Condition, Item, Key, Page, Query, Result, Storage, StorageError, TableDef, TxOp, Update,
    now_epoch_seconds, validate_transaction,
};

use errors::{backend, service_error};
use expression::Expiry;
use write::WriteFailure;

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
