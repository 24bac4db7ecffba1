//! Every way a cart request can fail, and the one place that maps each to its status and
//! problem (the platform answers with them and logs server-side failures).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::inventory::Shortage;
use emporium_api::{ProblemCode, ProblemMembers};
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem, ServiceError};
use emporium_ports::storage::StorageError;

/// How long a caller told the cart is busy should wait.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("no such cart")]
    CartNotFound,
    #[error("the cart has no line for this product")]
    LineNotFound,
    #[error("request fields are invalid")]
    Validation(Vec<FieldError>),
    #[error("no such product")]
    UnknownProduct(String),
    #[error("not enough stock")]
    OutOfStock(Shortage),
    #[error("the cart holds its most products")]
    CartFull { max_lines: usize },
    /// Another order is checking the cart out.
    #[error("the cart is being checked out")]
    InCheckout(String),
    /// The cart changed since the order read it.
    #[error("the cart changed")]
    Changed { current_version: u64 },
    /// The cart kept changing under this change.
    #[error("the cart is busy")]
    Busy,
    #[error("the catalog is unavailable")]
    CatalogUnavailable(#[source] anyhow::Error),
    #[error("the store is unavailable")]
    Unavailable(#[source] StorageError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StorageError> for CartError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Backend(_) => Self::Unavailable(error),
            other => Self::Unexpected(other.into()),
        }
    }
}

impl CartError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl ServiceError for CartError {
    fn status(&self) -> StatusCode {
        match self {
            Self::CartNotFound | Self::LineNotFound => StatusCode::NOT_FOUND,
            Self::Validation(_) | Self::UnknownProduct(_) | Self::CartFull { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::OutOfStock(_) | Self::InCheckout(_) | Self::Changed { .. } | Self::Busy => {
                StatusCode::CONFLICT
            }
            Self::CatalogUnavailable(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            Self::CartNotFound => Problem::new(status, ProblemCode::CartNotFound, "No such cart")
                .with_detail("the cart does not exist or expired; start a new one"),
            Self::LineNotFound => Problem::new(
                status,
                ProblemCode::LineNotFound,
                "The cart has no line for this product",
            ),
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::UnknownProduct(id) => {
                Problem::new(status, ProblemCode::UnknownProduct, "No such product")
                    .with_detail(format!("there is no product {id}"))
            }
            Self::OutOfStock(short) => {
                Problem::new(status, ProblemCode::OutOfStock, "Not enough stock")
                    .with_detail(format!(
                        "only {} of {} available; you asked for {}",
                        short.available, short.sku, short.requested
                    ))
                    .with_short(std::slice::from_ref(short))
            }
            Self::CartFull { max_lines } => Problem::new(
                status,
                ProblemCode::CartFull,
                "The cart holds as many products as it can",
            )
            .with_detail(format!(
                "a cart holds at most {max_lines} different products"
            )),
            Self::InCheckout(order_id) => Problem::new(
                status,
                ProblemCode::CartInCheckout,
                "The cart is being checked out",
            )
            .with_detail(
                "an order is checking this cart out: no other checkout, and nothing it buys taken out, until it ends",
            )
            .with_order_id(order_id),
            Self::Changed { current_version } => {
                Problem::new(status, ProblemCode::CartChanged, "The cart changed")
                    .with_detail("the cart is no longer the one read; read it again")
                    .with_current_version(*current_version)
            }
            Self::Busy => Problem::new(
                status,
                ProblemCode::CartBusy,
                "The cart is changing too often to change now",
            )
            .with_detail(format!("try again in {BUSY_RETRY_AFTER_SECS} s"))
            .with_retry_after_secs(BUSY_RETRY_AFTER_SECS.into()),
            Self::CatalogUnavailable(_) => {
                Problem::unavailable("the catalog is not answering; try again shortly")
            }
            Self::Unavailable(_) => {
                Problem::unavailable("the cart store is not answering; try again shortly")
            }
            Self::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for CartError {
    fn status_code(&self) -> StatusCode {
        ServiceError::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = problem::respond(self);
        if matches!(self, Self::Busy) {
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(BUSY_RETRY_AFTER_SECS),
            );
        }
        response
    }
}
