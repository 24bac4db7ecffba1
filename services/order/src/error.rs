//! Every way an order request can fail, and the one place that maps each to HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::order::Order;
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem};
use emporium_ports::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no customer identity")]
    CustomerRequired,
    /// A customer's orders asked for by a caller that is not one of the shop's services.
    #[error("the caller did not show the gateway key")]
    GatewayRequired,
    #[error("no idempotency key")]
    IdempotencyKeyMissing,
    #[error("the idempotency key is malformed")]
    InvalidIdempotencyKey,
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    #[error("request fields are invalid")]
    Validation(Vec<FieldError>),
    #[error("no such cart")]
    CartNotFound,
    #[error("the cart is empty")]
    CartEmpty,
    /// Another checkout of the cart is under way.
    #[error("the cart is being checked out")]
    CartInCheckout,
    #[error("products are no longer sold")]
    ProductUnavailable(Vec<String>),
    #[error("no such order")]
    OrderNotFound,
    #[error("the order cannot be cancelled")]
    NotCancellable(&'static str),
    #[error("query is invalid: {0}")]
    InvalidQuery(String),
    #[error("cursor is invalid")]
    InvalidCursor,
    /// The checkout ended without an order (out of stock, declined, ...): the order says why.
    #[error("checkout failed")]
    CheckoutFailed(Box<Order>),
    /// The checkout stopped part-way; the reconciler finishes or undoes it.
    #[error("checkout was interrupted")]
    Interrupted(String),
    #[error("the {0} service is unavailable")]
    DependencyUnavailable(&'static str, #[source] anyhow::Error),
    #[error("the store is unavailable")]
    Unavailable(#[source] StorageError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StorageError> for OrderError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidCursor => Self::InvalidCursor,
            StorageError::Backend(_) => Self::Unavailable(error),
            other => Self::Unexpected(other.into()),
        }
    }
}

/// The problem for an order whose checkout failed, by its failure code.
fn failed(order: &Order) -> Problem {
    let failure = order.failure.clone();
    let code = failure
        .as_ref()
        .map_or("checkout_failed", |f| f.code.as_str())
        .to_owned();
    let message = failure
        .as_ref()
        .map_or_else(|| "checkout failed".to_owned(), |f| f.message.clone());
    let (status, title) = match code.as_str() {
        "out_of_stock" => (StatusCode::CONFLICT, "Not enough stock"),
        "payment_declined" => (StatusCode::PAYMENT_REQUIRED, "The payment was declined"),
        // An injected fault stands for a dependency failing, so it answers as one would.
        "inventory_unavailable" | "injected_fault" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Checkout is temporarily unavailable",
        ),
        "checkout_interrupted" => (StatusCode::CONFLICT, "The checkout was interrupted"),
        "cart_in_checkout" => (
            StatusCode::CONFLICT,
            "The cart is already being checked out",
        ),
        "cart_changed" | "cart_busy" => (StatusCode::CONFLICT, "The cart changed during checkout"),
        "cart_not_found" => (StatusCode::UNPROCESSABLE_ENTITY, "No such cart"),
        "cart_unavailable" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Checkout is temporarily unavailable",
        ),
        _ => (StatusCode::CONFLICT, "The checkout failed"),
    };
    let mut problem = Problem::new(status, code, title)
        .with_detail(message)
        .with_extension("order_id", order.id.clone());
    if let Some(failure) = failure {
        if !failure.skus.is_empty() {
            problem = problem.with_extension("skus", failure.skus);
        }
        if let Some(decline) = failure.decline_code {
            problem = problem.with_extension("decline_code", decline);
        }
    }
    problem
}

impl OrderError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The problem the client sees; logs the cause of server-side failures.
    pub fn problem(&self) -> Problem {
        match self {
            Self::GatewayRequired => Problem::new(
                StatusCode::UNAUTHORIZED,
                "gateway_required",
                "Customers' orders are served to the shop's services only",
            )
            .with_detail("call through the storefront; services send the gateway key"),
            Self::CustomerRequired => Problem::new(
                StatusCode::UNAUTHORIZED,
                "customer_required",
                "A customer identity is required",
            )
            .with_detail("send the customer's id in the X-Customer-Id header"),
            Self::IdempotencyKeyMissing => Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_missing",
                "An Idempotency-Key header is required",
            )
            .with_detail("send a unique key per checkout attempt; repeat it to retry safely"),
            Self::InvalidIdempotencyKey => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "The Idempotency-Key header is not valid",
            )
            .with_detail("use 1 to 128 visible ASCII characters"),
            Self::IdempotencyKeyReused => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "The Idempotency-Key was used for a different request",
            )
            .with_detail("a repeat must send the same body; use a new key for a new checkout"),
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::CartNotFound => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cart_not_found",
                "No such cart",
            )
            .with_detail("the cart does not exist or expired"),
            Self::CartEmpty => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cart_empty",
                "The cart is empty",
            ),
            Self::CartInCheckout => Problem::new(
                StatusCode::CONFLICT,
                "cart_in_checkout",
                "The cart is already being checked out",
            )
            .with_detail(
                "another checkout of this cart is under way; nothing was charged, see your orders",
            ),
            Self::ProductUnavailable(ids) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "product_unavailable",
                "Some products are no longer sold",
            )
            .with_detail("remove them from the cart and try again")
            .with_extension("product_ids", ids.clone()),
            Self::OrderNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "order_not_found", "No such order")
            }
            Self::NotCancellable(why) => Problem::new(
                StatusCode::CONFLICT,
                "order_not_cancellable",
                "The order cannot be cancelled",
            )
            .with_detail(*why),
            Self::InvalidQuery(detail) => Problem::invalid_query(detail.clone()),
            Self::InvalidCursor => Problem::invalid_cursor(),
            Self::CheckoutFailed(order) => failed(order),
            Self::Interrupted(order_id) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "checkout_interrupted",
                "Checkout is temporarily unavailable",
            )
            .with_detail(
                "the order will be completed or cancelled shortly; nothing is charged twice",
            )
            .with_extension("order_id", order_id.clone()),
            Self::DependencyUnavailable(service, source) => {
                tracing::error!(service, error = %format!("{source:#}"), "dependency unavailable");
                Problem::unavailable(&format!(
                    "the {service} service is not answering; try again shortly"
                ))
            }
            Self::Unavailable(source) => {
                tracing::error!(error = %problem::error_chain(source), "storage unavailable");
                Problem::unavailable("the order store is not answering; try again shortly")
            }
            Self::Unexpected(error) => problem::log_internal(error.as_ref()),
        }
    }
}

impl ResponseError for OrderError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::CustomerRequired | Self::GatewayRequired => StatusCode::UNAUTHORIZED,
            Self::IdempotencyKeyMissing
            | Self::InvalidIdempotencyKey
            | Self::InvalidQuery(_)
            | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::Validation(_)
            | Self::CartNotFound
            | Self::CartEmpty
            | Self::ProductUnavailable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::OrderNotFound => StatusCode::NOT_FOUND,
            Self::IdempotencyKeyReused | Self::NotCancellable(_) | Self::CartInCheckout => {
                StatusCode::CONFLICT
            }
            Self::CheckoutFailed(order) => failed(order).status(),
            Self::Interrupted(_) | Self::DependencyUnavailable(..) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.problem().to_response()
    }
}
