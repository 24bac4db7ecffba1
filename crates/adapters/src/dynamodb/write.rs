//! Writes: every port operation, even of one item, as a `TransactWriteItems` call with a client
//! request token, so a call the SDK retries after a lost answer is not applied twice; conflicts
//! with other transactions retried a few times; an update that meets an expired item clears it
//! and writes again.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    ConditionCheck, Delete, Put, TransactWriteItem, Update as DynamoUpdate,
};
use emporium_ports::storage::{Key, PK, Result, StorageError, TxOp, now_epoch_seconds};

use super::DynamoStorage;
use super::attributes::{key_map, to_map};
use super::errors::{Cancelled, backend, classify, is_condition_failure};
use super::expression::{Clause, Expression, condition_clause, update_text};

/// Attempts at a transaction that keeps conflicting with others on the same items.
const CONFLICT_ATTEMPTS: usize = 5;

pub(super) enum WriteFailure {
    Conditions(Vec<usize>),
    Storage(StorageError),
}

impl From<StorageError> for WriteFailure {
    fn from(error: StorageError) -> Self {
        Self::Storage(error)
    }
}

impl DynamoStorage {
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
    pub(super) async fn write_clearing_expired(
        &self,
        ops: &[TxOp],
    ) -> std::result::Result<(), WriteFailure> {
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

    pub(super) async fn single(&self, op: TxOp) -> Result<()> {
        match self.write_clearing_expired(std::slice::from_ref(&op)).await {
            Ok(()) => Ok(()),
            Err(WriteFailure::Conditions(_)) => Err(StorageError::ConditionFailed),
            Err(WriteFailure::Storage(error)) => Err(error),
        }
    }
}
