//! The inventory service's API: stock levels and reservations.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Stock of one SKU. `available + reserved + sold` changes only through admin set or adjust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockLevel {
    pub sku: String,
    /// Units that can be reserved now.
    pub available: i64,
    /// Units held by reservations that are neither committed nor released yet.
    pub reserved: i64,
    /// Units of committed reservations.
    pub sold: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Body of `PUT /v1/stock/{sku}` (admin): the number of units available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    pub available: i64,
}

/// Body of `POST /v1/stock/{sku}/adjustments` (admin): units to add (or, negative, remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    pub delta: i64,
}

/// Query of `GET /v1/stock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StockQuery {
    /// Comma-separated SKUs to read (up to 100); without it, every SKU a page at a time.
    pub skus: Option<String>,
    /// Page size when listing, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockPage {
    pub items: Vec<StockLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationLine {
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Body of `POST /v1/reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReservation {
    /// Chosen by the caller (an order id); sending the same id and lines again returns the
    /// same reservation, so the call can be retried safely.
    pub id: String,
    pub lines: Vec<ReservationLine>,
    /// Seconds until the stock returns by itself unless committed (default from settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Stock is held until `expires_at`.
    Held,
    /// The held stock is sold.
    Committed,
    /// The held stock went back to available (released, or expired).
    Released,
    /// Sold stock went back to available (an order was cancelled).
    Returned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub id: String,
    pub status: ReservationStatus,
    pub lines: Vec<ReservationLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Why a released reservation was released: `released` (asked to) or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One SKU a reservation could not get, in the `short` member of an `out_of_stock` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}
