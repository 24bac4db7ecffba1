//! Every way a catalog request can fail, and the one place that maps each to its status and
//! problem (the platform answers with them and logs server-side failures).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::{ProblemCode, ProblemMembers};
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem, ServiceError};
use emporium_ports::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("product not found")]
    ProductNotFound,
    #[error("category {0} not found")]
    CategoryNotFound(String),
    #[error("request fields are invalid")]
    Validation(Vec<FieldError>),
    #[error("query is invalid: {0}")]
    InvalidQuery(String),
    #[error("cursor is invalid")]
    InvalidCursor,
    #[error("version {given} is stale; the current version is {current}")]
    VersionConflict { given: u64, current: u64 },
    #[error("SKU {0} belongs to another product")]
    SkuTaken(String),
    #[error("category {0} exists")]
    CategoryExists(String),
    #[error("category has {0} products")]
    CategoryNotEmpty(u64),
    #[error("images must be PNG, JPEG, WebP, GIF or AVIF")]
    UnsupportedImage,
    #[error("the store is unavailable")]
    Unavailable(#[source] StorageError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A value that could not be serialised for the cache (never expected of our own types).
impl From<serde_json::Error> for CatalogError {
    fn from(error: serde_json::Error) -> Self {
        Self::Unexpected(error.into())
    }
}

impl From<StorageError> for CatalogError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidCursor => Self::InvalidCursor,
            StorageError::Backend(_) => Self::Unavailable(error),
            other => Self::Unexpected(other.into()),
        }
    }
}

/// The write failures that no caller expects; callers match the ones they do first.
impl From<crate::repository::WriteError> for CatalogError {
    fn from(error: crate::repository::WriteError) -> Self {
        match error {
            crate::repository::WriteError::Storage(error) => error.into(),
            other => Self::Unexpected(other.into()),
        }
    }
}

impl CatalogError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl ServiceError for CatalogError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ProductNotFound | Self::CategoryNotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidQuery(_) | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::VersionConflict { .. }
            | Self::SkuTaken(_)
            | Self::CategoryExists(_)
            | Self::CategoryNotEmpty(_) => StatusCode::CONFLICT,
            Self::UnsupportedImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            Self::ProductNotFound => {
                Problem::new(status, ProblemCode::ProductNotFound, "No such product")
            }
            Self::CategoryNotFound(slug) => {
                Problem::new(status, ProblemCode::CategoryNotFound, "No such category")
                    .with_detail(format!("there is no category {slug:?}"))
            }
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::InvalidQuery(detail) => Problem::invalid_query(detail.clone()),
            Self::InvalidCursor => Problem::invalid_cursor(),
            Self::VersionConflict { given, current } => Problem::new(
                status,
                ProblemCode::VersionConflict,
                "The resource changed since you read it",
            )
            .with_detail(format!(
                "you sent version {given}, the current version is {current}; read it again and reapply your change"
            ))
            .with_current_version(*current),
            Self::SkuTaken(sku) => Problem::new(
                status,
                ProblemCode::SkuTaken,
                "Another product has this SKU",
            )
            .with_detail(format!("SKU {sku} is in use")),
            Self::CategoryExists(slug) => Problem::new(
                status,
                ProblemCode::CategoryExists,
                "A category with this slug exists",
            )
            .with_detail(format!("category {slug:?} exists")),
            Self::CategoryNotEmpty(count) => Problem::new(
                status,
                ProblemCode::CategoryNotEmpty,
                "The category still has products",
            )
            .with_detail(format!("move or delete its {count} products first"))
            .with_product_count(*count),
            Self::UnsupportedImage => Problem::unsupported_media_type(
                "image/png, image/jpeg, image/webp, image/gif or image/avif",
            ),
            Self::Unavailable(_) => {
                Problem::unavailable("the catalog store is not answering; try again shortly")
            }
            Self::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for CatalogError {
    fn status_code(&self) -> StatusCode {
        ServiceError::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        problem::respond(self)
    }
}
