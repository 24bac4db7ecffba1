//! The order service's own series: checkouts by how they ended.

use emporium_api::order::{Order, OrderStatus};
use prometheus_client::encoding::EncodeLabelSet;

/// Labels of a finished checkout or reconciliation: the order's status and, when it failed or
/// was cancelled, the failure code (a fixed set, so the series stay few).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `checkout` (the customer's request) or `reconciler`.
    pub by: &'static str,
    pub status: &'static str,
    pub reason: String,
}

impl Outcome {
    pub fn of(by: &'static str, order: &Order) -> Self {
        let status = match order.status {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        };
        let reason = order
            .failure
            .as_ref()
            .map_or_else(|| "none".to_owned(), |failure| failure.code.to_string());
        Self { by, status, reason }
    }
}
