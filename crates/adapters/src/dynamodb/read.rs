//! Reads: items read consistently, expired ones dropped; queries that ask again until a page is
//! full past expired items; cursors made from and turned into `LastEvaluatedKey`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use emporium_ports::storage::{
    Cursor, IndexDef, IndexPosition, Item, Key, PK, Page, Position, Query, Result, SK, TableDef,
    now_epoch_seconds,
};

use super::DynamoStorage;
use super::attributes::{from_map, key_map};
use super::errors::{backend, service_error};
use super::expression::Expression;

/// Queries a page may take to fill up past expired items before it returns what it has.
const FILL_ROUNDS: usize = 10;

impl DynamoStorage {
    /// The stored item, expired or not.
    pub(super) async fn raw_get(&self, table: &str, key: &Key) -> Result<Option<Item>> {
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

    pub(super) async fn query_pages(
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
