//! The cart service's API.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::Money;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cart {
    /// Unguessable (128 random bits): whoever knows it owns the cart.
    pub id: String,
    pub lines: Vec<CartLine>,
    /// Sum of the line quantities.
    pub item_count: i64,
    /// Sum of the line totals at the prices when each line was added; the order takes current
    /// prices from the catalog.
    pub subtotal: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The cart disappears at this time unless it changes before.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub version: u64,
    /// The order checking this cart out, while one does: a second checkout of the cart is
    /// refused until that one ends (`cart_in_checkout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_order_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CartLine {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    /// Blob key of the product's main image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub unit_price: Money,
    pub quantity: i64,
    pub line_total: Money,
}

/// Body of `POST /v1/carts/{id}/lines`: adds to the line of that product if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCartLine {
    /// A product's id: 26 characters of `0-9 a-z` without `i l o u`.
    #[schema(pattern = "^[0-9a-hjkmnp-tv-z]{26}$")]
    pub product_id: String,
    /// At least 1; at most the shop's limit per product, counting what the line has.
    #[schema(minimum = 1)]
    pub quantity: i64,
}

/// Body of `PUT /v1/carts/{id}/lines/{product_id}`: the line's new quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// At least 1 (the storefront's API also takes 0, which removes the line).
    #[schema(minimum = 0)]
    pub quantity: i64,
}

/// Body of `PUT /v1/carts/{id}/checkout`: the order that checks the cart out, and the version
/// of the cart it priced. The claim holds only if the cart is still at that version and no
/// other order holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCart {
    #[schema(pattern = "^[0-9a-hjkmnp-tv-z]{26}$")]
    pub order_id: String,
    pub version: u64,
}
