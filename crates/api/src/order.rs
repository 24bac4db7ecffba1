//! The order service's API.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::Money;
use crate::problem::ProblemCode;

/// Header carrying the customer's id; the storefront sets it from the session.
pub const CUSTOMER_HEADER: &str = "x-customer-id";
/// Header carrying the client's idempotency key for placing an order.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Header set (to `true`) on a repeat that may only get the first request's answer: the order
/// service answers from the key's record, and never starts a checkout (not even the new try a
/// failure that may pass would otherwise get). The storefront sends it when it repeats a
/// checkout for a cart that has been paid for since, whose contents are no longer what the key
/// was sent for.
pub const REPLAY_ONLY_HEADER: &str = "x-replay-only";

/// Longest idempotency key taken.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// An idempotency key: 1 to 128 visible ASCII characters. The order service takes exactly
/// these; the storefront's API, which passes the key on, documents the same rule.
pub fn is_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    #[schema(example = "US")]
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerDetails {
    pub name: String,
    pub email: String,
    pub address: Address,
}

/// A payment card. Never stored or logged: orders keep only its brand and last four digits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentCard {
    #[schema(example = "4242 4242 4242 4242")]
    pub number: String,
    #[schema(minimum = 1, maximum = 12)]
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvc: String,
}

impl std::fmt::Debug for PaymentCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits: String = self.number.chars().filter(char::is_ascii_digit).collect();
        let last4 = &digits[digits.len().saturating_sub(4)..];
        f.debug_struct("PaymentCard")
            .field("number", &format_args!("…{last4}"))
            .field("expiry_month", &self.expiry_month)
            .field("expiry_year", &self.expiry_year)
            .field("cvc", &"…")
            .finish()
    }
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub cart_id: String,
    pub customer: CustomerDetails,
    pub payment: PaymentCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Checkout is in progress.
    Pending,
    /// Paid for and its stock sold.
    Confirmed,
    /// Checkout failed (`failure` says why); nothing is held or charged.
    Failed,
    /// Cancelled after confirmation, or abandoned mid-checkout; stock returned, payment voided.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    /// The catalog's price when the order was placed.
    pub unit_price: Money,
    pub quantity: i64,
    pub line_total: Money,
}

/// Totals in integer minor units: `total = subtotal + shipping + tax`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub subtotal: Money,
    pub shipping: Money,
    pub tax: Money,
    pub total: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Not yet sent to the provider.
    NotAuthorized,
    Authorized,
    Declined,
    /// The authorisation was cancelled; nothing is charged.
    Voided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentSummary {
    #[schema(example = "visa")]
    pub brand: String,
    #[schema(example = "4242")]
    pub last4: String,
    pub status: PaymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_id: Option<String>,
}

/// Why an order failed or was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderFailure {
    /// Stable code: `out_of_stock`, `payment_declined`, `inventory_unavailable`,
    /// `checkout_interrupted`, `cancelled_by_customer`, ...
    #[schema(value_type = String)]
    pub code: ProblemCode,
    pub message: String,
    /// For `out_of_stock`: the SKUs that were short.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    /// For `payment_declined`: the provider's reason (`card_declined`, `insufficient_funds`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub decline_code: Option<DeclineCode>,
}

emporium_platform::wire_codes! {
    /// The payment provider's reason for declining a card (`decline_code`).
    pub enum DeclineCode {
        CardDeclined = "card_declined",
        InsufficientFunds = "insufficient_funds",
        ProcessingError = "processing_error",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub totals: Totals,
    pub customer: CustomerDetails,
    pub payment: PaymentSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<OrderFailure>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/orders`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Page size, 1 to 50 (default 10).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The pricing rules of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    pub shipping_fee: i64,
    pub free_shipping_from: i64,
    pub tax_rate_bps: i64,
}

/// An order's totals, all in minor units:
/// - subtotal: the sum of unit price × quantity over the lines;
/// - shipping: the flat fee, or nothing once the subtotal reaches the free-shipping threshold;
/// - tax: the tax rate applied to the subtotal once (not per line), rounded half up to the
///   minor unit: `(subtotal × bps + 5000) / 10000`;
/// - total: subtotal + shipping + tax.
pub fn totals(lines: &[(i64, i64)], currency: &str, pricing: &Pricing) -> Option<Totals> {
    let mut subtotal: i128 = 0;
    for (unit, quantity) in lines {
        subtotal += i128::from(*unit) * i128::from(*quantity);
    }
    let shipping: i128 = if subtotal >= i128::from(pricing.free_shipping_from) {
        0
    } else {
        i128::from(pricing.shipping_fee)
    };
    let tax = (subtotal * i128::from(pricing.tax_rate_bps) + 5_000) / 10_000;
    let total = subtotal + shipping + tax;
    let money = |amount: i128| Some(Money::new(i64::try_from(amount).ok()?, currency));
    Some(Totals {
        subtotal: money(subtotal)?,
        shipping: money(shipping)?,
        tax: money(tax)?,
        total: money(total)?,
    })
}
