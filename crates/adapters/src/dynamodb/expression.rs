//! Condition and update expressions: every name and value a placeholder, clauses rendered with
//! only the parentheses precedence needs (DynamoDB rejects redundant ones), and conditions that
//! treat an item past its TTL as absent.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use emporium_ports::storage::{Condition, PK, Update};

use super::attributes::to_attribute;

/// Placeholders for the names and values an expression uses.
#[derive(Default)]
pub(super) struct Expression {
    pub(super) names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    pub(super) fn name(&mut self, name: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, n)| n.as_str() == name) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), name.to_owned());
        placeholder
    }

    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// A condition expression as a tree, rendered with only the parentheses precedence needs:
/// DynamoDB rejects redundant ones such as `((a))`.
#[derive(Debug, Clone)]
pub(super) enum Clause {
    Atom(String),
    And(Vec<Clause>),
    Or(Vec<Clause>),
}

impl Clause {
    pub(super) fn and(clauses: impl IntoIterator<Item = Clause>) -> Self {
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

    pub(super) fn or(clauses: impl IntoIterator<Item = Clause>) -> Self {
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

    pub(super) fn render(&self) -> String {
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
pub(super) struct Expiry<'a> {
    pub(super) attribute: Option<&'a str>,
    pub(super) now: i64,
}

impl Expiry<'_> {
    /// True for an item that exists only if it has not expired (None without TTL: always).
    pub(super) fn live(&self, expression: &mut Expression) -> Option<Clause> {
        let attribute = self.attribute?;
        let name = expression.name(attribute);
        let now = expression.value(AttributeValue::N(self.now.to_string()));
        Some(Clause::or([
            Clause::Atom(format!("attribute_not_exists({name})")),
            Clause::Atom(format!("{name} > {now}")),
        ]))
    }

    pub(super) fn expired(&self, expression: &mut Expression) -> Option<Clause> {
        let attribute = self.attribute?;
        let name = expression.name(attribute);
        let now = expression.value(AttributeValue::N(self.now.to_string()));
        Some(Clause::Atom(format!("{name} <= {now}")))
    }
}

pub(super) fn condition_clause(
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

pub(super) fn update_text(update: &Update, expression: &mut Expression) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
