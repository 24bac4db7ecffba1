//! Items and keys as DynamoDB attribute values, and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use emporium_ports::storage::{Item, Key, PK, Result, SK};
use serde_json::Value;

use super::errors::backend;

pub(super) fn to_attribute(value: &Value) -> AttributeValue {
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

pub(super) fn from_attribute(value: &AttributeValue) -> Result<Value> {
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

pub(super) fn from_map(map: &HashMap<String, AttributeValue>) -> Result<Item> {
    map.iter()
        .map(|(name, value)| Ok((name.clone(), from_attribute(value)?)))
        .collect()
}

pub(super) fn to_map(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(name, value)| (name.clone(), to_attribute(value)))
        .collect()
}

pub(super) fn key_map(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
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
}
