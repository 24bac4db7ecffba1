//! Every way a catalog request can fail, and the one place that maps each to HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use emporium_platform::FieldError;
use emporium_platform::problem::{self, Problem};
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

    /// The problem the client sees; logs the cause of server-side failures.
    pub fn problem(&self) -> Problem {
        match self {
            Self::ProductNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "product_not_found", "No such product")
            }
            Self::CategoryNotFound(slug) => {
                Problem::new(StatusCode::NOT_FOUND, "category_not_found", "No such category")
                    .with_detail(format!("there is no category {slug:?}"))
            }
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::InvalidQuery(detail) => Problem::invalid_query(detail.clone()),
            Self::InvalidCursor => Problem::invalid_cursor(),
            Self::VersionConflict { given, current } => Problem::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "The resource changed since you read it",
            )
            .with_detail(format!(
                "you sent version {given}, the current version is {current}; read it again and reapply your change"
            ))
            .with_extension("current_version", *current),
            Self::SkuTaken(sku) => Problem::new(
                StatusCode::CONFLICT,
                "sku_taken",
                "Another product has this SKU",
            )
            .with_detail(format!("SKU {sku} is in use")),
            Self::CategoryExists(slug) => Problem::new(
                StatusCode::CONFLICT,
                "category_exists",
                "A category with this slug exists",
            )
            .with_detail(format!("category {slug:?} exists")),
            Self::CategoryNotEmpty(count) => Problem::new(
                StatusCode::CONFLICT,
                "category_not_empty",
                "The category still has products",
            )
            .with_detail(format!("move or delete its {count} products first"))
            .with_extension("product_count", *count),
            Self::UnsupportedImage => Problem::unsupported_media_type(
                "image/png, image/jpeg, image/webp, image/gif or image/avif",
            ),
            Self::Unavailable(source) => {
                tracing::error!(error = %problem::error_chain(source), "storage unavailable");
                Problem::unavailable("the catalog store is not answering; try again shortly")
            }
            Self::Unexpected(error) => problem::log_internal(error.as_ref()),
        }
    }
}

impl ResponseError for CatalogError {
    fn status_code(&self) -> StatusCode {
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

    fn error_response(&self) -> HttpResponse {
        self.problem().to_response()
    }
}
