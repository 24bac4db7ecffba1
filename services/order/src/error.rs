//! Every way an order request can fail, and the one place that maps each to its status and
//! problem (the platform answers with them and logs server-side failures).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::order::Order;
use emporium_api::{ProblemCode, ProblemMembers};
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem, ServiceError};
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
    #[error("checkout of order {} failed: {}", .0.id, failure_code(.0))]
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

/// The code of a failed checkout: its order's failure code.
fn failure_code(order: &Order) -> &ProblemCode {
    order
        .failure
        .as_ref()
        .map_or(&ProblemCode::CheckoutFailed, |failure| &failure.code)
}

/// The status and title of a failed checkout, by its failure code.
fn failure_head(code: &ProblemCode) -> (StatusCode, &'static str) {
    match code {
        ProblemCode::OutOfStock => (StatusCode::CONFLICT, "Not enough stock"),
        ProblemCode::PaymentDeclined => (StatusCode::PAYMENT_REQUIRED, "The payment was declined"),
        // An injected fault stands for a dependency failing, so it answers as one would.
        ProblemCode::InventoryUnavailable | ProblemCode::InjectedFault => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Checkout is temporarily unavailable",
        ),
        ProblemCode::CheckoutInterrupted => (StatusCode::CONFLICT, "The checkout was interrupted"),
        ProblemCode::CartInCheckout => (
            StatusCode::CONFLICT,
            "The cart is already being checked out",
        ),
        ProblemCode::CartChanged | ProblemCode::CartBusy => {
            (StatusCode::CONFLICT, "The cart changed during checkout")
        }
        ProblemCode::CartNotFound => (StatusCode::UNPROCESSABLE_ENTITY, "No such cart"),
        ProblemCode::CartUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Checkout is temporarily unavailable",
        ),
        _ => (StatusCode::CONFLICT, "The checkout failed"),
    }
}

/// The problem for an order whose checkout failed, by its failure code.
fn failed(order: &Order, status: StatusCode) -> Problem {
    let code = failure_code(order);
    let (_, title) = failure_head(code);
    let message = order
        .failure
        .as_ref()
        .map_or("checkout failed", |failure| failure.message.as_str());
    let mut problem = Problem::new(status, code.clone(), title)
        .with_detail(message)
        .with_order_id(&order.id);
    if let Some(failure) = &order.failure {
        if !failure.skus.is_empty() {
            problem = problem.with_skus(&failure.skus);
        }
        if let Some(decline) = &failure.decline_code {
            problem = problem.with_decline_code(decline);
        }
    }
    problem
}

impl OrderError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl ServiceError for OrderError {
    fn status(&self) -> StatusCode {
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
            Self::CheckoutFailed(order) => failure_head(failure_code(order)).0,
            Self::Interrupted(_) | Self::DependencyUnavailable(..) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            Self::GatewayRequired => Problem::new(
                status,
                ProblemCode::GatewayRequired,
                "Customers' orders are served to the shop's services only",
            )
            .with_detail("call through the storefront; services send the gateway key"),
            Self::CustomerRequired => Problem::new(
                status,
                ProblemCode::CustomerRequired,
                "A customer identity is required",
            )
            .with_detail("send the customer's id in the X-Customer-Id header"),
            Self::IdempotencyKeyMissing => Problem::new(
                status,
                ProblemCode::IdempotencyKeyMissing,
                "An Idempotency-Key header is required",
            )
            .with_detail("send a unique key per checkout attempt; repeat it to retry safely"),
            Self::InvalidIdempotencyKey => Problem::new(
                status,
                ProblemCode::InvalidIdempotencyKey,
                "The Idempotency-Key header is not valid",
            )
            .with_detail("use 1 to 128 visible ASCII characters"),
            Self::IdempotencyKeyReused => Problem::new(
                status,
                ProblemCode::IdempotencyKeyReused,
                "The Idempotency-Key was used for a different request",
            )
            .with_detail("a repeat must send the same body; use a new key for a new checkout"),
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::CartNotFound => Problem::new(status, ProblemCode::CartNotFound, "No such cart")
                .with_detail("the cart does not exist or expired"),
            Self::CartEmpty => Problem::new(status, ProblemCode::CartEmpty, "The cart is empty"),
            Self::CartInCheckout => Problem::new(
                status,
                ProblemCode::CartInCheckout,
                "The cart is already being checked out",
            )
            .with_detail(
                "another checkout of this cart is under way; nothing was charged, see your orders",
            ),
            Self::ProductUnavailable(ids) => Problem::new(
                status,
                ProblemCode::ProductUnavailable,
                "Some products are no longer sold",
            )
            .with_detail("remove them from the cart and try again")
            .with_product_ids(ids),
            Self::OrderNotFound => {
                Problem::new(status, ProblemCode::OrderNotFound, "No such order")
            }
            Self::NotCancellable(why) => Problem::new(
                status,
                ProblemCode::OrderNotCancellable,
                "The order cannot be cancelled",
            )
            .with_detail(*why),
            Self::InvalidQuery(detail) => Problem::invalid_query(detail.clone()),
            Self::InvalidCursor => Problem::invalid_cursor(),
            Self::CheckoutFailed(order) => failed(order, status),
            Self::Interrupted(order_id) => Problem::new(
                status,
                ProblemCode::CheckoutInterrupted,
                "Checkout is temporarily unavailable",
            )
            .with_detail(
                "the order will be completed or cancelled shortly; nothing is charged twice",
            )
            .with_order_id(order_id),
            Self::DependencyUnavailable(service, _) => Problem::unavailable(&format!(
                "the {service} service is not answering; try again shortly"
            )),
            Self::Unavailable(_) => {
                Problem::unavailable("the order store is not answering; try again shortly")
            }
            Self::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for OrderError {
    fn status_code(&self) -> StatusCode {
        ServiceError::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        problem::respond(self)
    }
}
