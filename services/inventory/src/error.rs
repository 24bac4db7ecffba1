//! Every way an inventory request can fail, and the one place that maps each to its status and
//! problem (the platform answers with them and logs server-side failures).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::inventory::Shortage;
use emporium_api::{ProblemCode, ProblemMembers};
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem, ServiceError};
use emporium_ports::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no stock record for {0}")]
    StockNotFound(String),
    #[error("no reservation {0}")]
    ReservationNotFound(String),
    #[error("request fields are invalid")]
    Validation(Vec<FieldError>),
    #[error("query is invalid: {0}")]
    InvalidQuery(String),
    #[error("cursor is invalid")]
    InvalidCursor,
    #[error("not enough stock")]
    OutOfStock(Vec<Shortage>),
    #[error("reservation {0} exists with other lines")]
    ReservationConflict(String),
    #[error("reservation {0} expired")]
    ReservationExpired(String),
    #[error("reservation {0} was released")]
    ReservationReleased(String),
    #[error("reservation {0} is committed")]
    ReservationCommitted(String),
    #[error("reservation {0} is not committed")]
    ReservationNotCommitted(String),
    #[error("not enough available stock to remove")]
    InsufficientStock { available: i64 },
    #[error("the store is unavailable")]
    Unavailable(#[source] StorageError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StorageError> for InventoryError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidCursor => Self::InvalidCursor,
            StorageError::Backend(_) => Self::Unavailable(error),
            other => Self::Unexpected(other.into()),
        }
    }
}

impl ServiceError for InventoryError {
    fn status(&self) -> StatusCode {
        match self {
            Self::StockNotFound(_) | Self::ReservationNotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidQuery(_) | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::OutOfStock(_)
            | Self::ReservationConflict(_)
            | Self::ReservationExpired(_)
            | Self::ReservationReleased(_)
            | Self::ReservationCommitted(_)
            | Self::ReservationNotCommitted(_)
            | Self::InsufficientStock { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        let problem = |code, title: &str, detail: String| {
            Problem::new(status, code, title).with_detail(detail)
        };
        match self {
            Self::StockNotFound(sku) => problem(
                ProblemCode::StockNotFound,
                "No stock record for this SKU",
                format!("there is no stock record for {sku}"),
            ),
            Self::ReservationNotFound(id) => problem(
                ProblemCode::ReservationNotFound,
                "No such reservation",
                format!("there is no reservation {id}"),
            ),
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::InvalidQuery(detail) => Problem::invalid_query(detail.clone()),
            Self::InvalidCursor => Problem::invalid_cursor(),
            Self::OutOfStock(short) => {
                let skus: Vec<&str> = short.iter().map(|s| s.sku.as_str()).collect();
                problem(
                    ProblemCode::OutOfStock,
                    "Not enough stock",
                    format!("not enough stock of {}", skus.join(", ")),
                )
                .with_short(short)
            }
            Self::ReservationConflict(id) => problem(
                ProblemCode::ReservationConflict,
                "A reservation with this id has other lines",
                format!("reservation {id} exists with different lines; use a new id"),
            ),
            Self::ReservationExpired(id) => problem(
                ProblemCode::ReservationExpired,
                "The reservation expired",
                format!("reservation {id} ran out of time and its stock was returned"),
            ),
            Self::ReservationReleased(id) => problem(
                ProblemCode::ReservationReleased,
                "The reservation was released",
                format!("reservation {id} no longer holds stock"),
            ),
            Self::ReservationCommitted(id) => problem(
                ProblemCode::ReservationCommitted,
                "The reservation is committed",
                format!("reservation {id} is sold; return it instead"),
            ),
            Self::ReservationNotCommitted(id) => problem(
                ProblemCode::ReservationNotCommitted,
                "The reservation is not committed",
                format!("only committed reservations can be returned; {id} is not"),
            ),
            Self::InsufficientStock { available } => problem(
                ProblemCode::InsufficientStock,
                "Not enough available stock",
                format!("only {available} units are available"),
            )
            .with_available(*available),
            Self::Unavailable(_) => {
                Problem::unavailable("the inventory store is not answering; try again shortly")
            }
            Self::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for InventoryError {
    fn status_code(&self) -> StatusCode {
        ServiceError::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        problem::respond(self)
    }
}
