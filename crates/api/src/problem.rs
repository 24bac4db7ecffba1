//! Problems as services send them and clients read them: every code, and the members some
//! codes add, typed, so both sides agree on names and shapes without writing either as text.
//!
//! [`ProblemCode`] is declared in the platform beside [`Problem`], because the platform answers
//! problems of its own before any service code runs and this crate depends on it; this is the
//! name the wire contract is published under.

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use emporium_platform::problem::{Problem, ProblemCode};

use crate::inventory::Shortage;
use crate::order::DeclineCode;

const SHORT: &str = "short";
const CURRENT_VERSION: &str = "current_version";
const ORDER_ID: &str = "order_id";
const SKUS: &str = "skus";
const DECLINE_CODE: &str = "decline_code";
const PRODUCT_IDS: &str = "product_ids";
const PRODUCT_COUNT: &str = "product_count";
const AVAILABLE: &str = "available";

/// The members that services' problems add (`docs/API.md` says which code carries which).
/// Readers give `None` or nothing when the member is missing or of another shape.
pub trait ProblemMembers: Sized {
    /// `out_of_stock` from the inventory and the cart: the lines that could not be had.
    fn with_short(self, short: &[Shortage]) -> Self;
    fn short(&self) -> Vec<Shortage>;
    /// `version_conflict`, `cart_changed`: the version to read again.
    fn with_current_version(self, version: u64) -> Self;
    fn current_version(&self) -> Option<u64>;
    /// The order a checkout problem is about (`cart_in_checkout`, failed checkouts).
    fn with_order_id(self, order_id: &str) -> Self;
    fn order_id(&self) -> Option<&str>;
    /// The order service's `out_of_stock`: the SKUs that were short.
    fn with_skus(self, skus: &[String]) -> Self;
    fn skus(&self) -> Vec<String>;
    /// `payment_declined`: the provider's reason.
    fn with_decline_code(self, code: &DeclineCode) -> Self;
    fn decline_code(&self) -> Option<DeclineCode>;
    /// `product_unavailable`: the products no longer sold.
    fn with_product_ids(self, ids: &[String]) -> Self;
    /// `category_not_empty`: how many products the category still has.
    fn with_product_count(self, count: u64) -> Self;
    /// `insufficient_stock`: how many units are available.
    fn with_available(self, available: i64) -> Self;
}

impl ProblemMembers for Problem {
    fn with_short(self, short: &[Shortage]) -> Self {
        let value = serde_json::to_value(short).unwrap_or(Value::Null);
        self.with_extension(SHORT, value)
    }

    fn short(&self) -> Vec<Shortage> {
        member(self, SHORT).unwrap_or_default()
    }

    fn with_current_version(self, version: u64) -> Self {
        self.with_extension(CURRENT_VERSION, version)
    }

    fn current_version(&self) -> Option<u64> {
        member(self, CURRENT_VERSION)
    }

    fn with_order_id(self, order_id: &str) -> Self {
        self.with_extension(ORDER_ID, order_id)
    }

    fn order_id(&self) -> Option<&str> {
        self.extensions.get(ORDER_ID)?.as_str()
    }

    fn with_skus(self, skus: &[String]) -> Self {
        self.with_extension(SKUS, skus)
    }

    fn skus(&self) -> Vec<String> {
        member(self, SKUS).unwrap_or_default()
    }

    fn with_decline_code(self, code: &DeclineCode) -> Self {
        self.with_extension(DECLINE_CODE, code.as_str())
    }

    fn decline_code(&self) -> Option<DeclineCode> {
        member(self, DECLINE_CODE)
    }

    fn with_product_ids(self, ids: &[String]) -> Self {
        self.with_extension(PRODUCT_IDS, ids)
    }

    fn with_product_count(self, count: u64) -> Self {
        self.with_extension(PRODUCT_COUNT, count)
    }

    fn with_available(self, available: i64) -> Self {
        self.with_extension(AVAILABLE, available)
    }
}

fn member<T: DeserializeOwned>(problem: &Problem, name: &str) -> Option<T> {
    T::deserialize(problem.extensions.get(name)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_platform::problem::StatusCode;

    #[test]
    fn members_read_back_what_was_written_under_the_documented_names() {
        let short = Shortage {
            sku: "MUG-001".into(),
            requested: 3,
            available: 1,
        };
        let problem = Problem::new(StatusCode::CONFLICT, ProblemCode::OutOfStock, "Short")
            .with_short(std::slice::from_ref(&short))
            .with_current_version(7)
            .with_order_id("o1")
            .with_skus(&["MUG-001".to_owned()])
            .with_decline_code(&DeclineCode::InsufficientFunds);
        let json = serde_json::to_value(&problem).expect("serialise");
        assert_eq!(json["short"][0]["sku"], "MUG-001");
        assert_eq!(json["current_version"], 7);
        assert_eq!(json["decline_code"], "insufficient_funds");
        let back: Problem = serde_json::from_value(json).expect("parse");
        assert_eq!(back.short(), vec![short]);
        assert_eq!(back.current_version(), Some(7));
        assert_eq!(back.order_id(), Some("o1"));
        assert_eq!(back.skus(), vec!["MUG-001".to_owned()]);
        assert_eq!(back.decline_code(), Some(DeclineCode::InsufficientFunds));
        assert!(back.is(&ProblemCode::OutOfStock));
    }
}
