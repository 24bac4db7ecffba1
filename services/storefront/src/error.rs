//! How failures reach shoppers: every service problem becomes a page that says what happened
//! and what to do, or (under `/api/v1`) a problem+json with a stable code. A service that does
//! not answer gives "... is temporarily unavailable" with `Retry-After`, never a hang (every
//! call has the client's timeouts) and never internal detail.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use emporium_api::client::ClientError;
use emporium_platform::problem::{self, Problem, ServiceError};

use crate::pages::{self, ErrorPage};

/// Seconds a shopper is asked to wait after a dependency failed.
pub const RETRY_AFTER_SECS: u32 = 5;

/// What the shopper calls the part of the shop a service provides.
pub fn feature_of(service: &str) -> &'static str {
    match service {
        "catalog" => "The catalog",
        "inventory" => "Stock information",
        "cart" => "The cart",
        "order" => "Checkout",
        _ => "This part of the shop",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    /// A form from another site, or without this session's token.
    #[error("forbidden form")]
    Forbidden,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Service(#[from] ClientError),
}

impl PageError {
    /// The answer's status; cheap, as actix asks for it more than once (the request log too).
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Service(ClientError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Service(ClientError::Problem { problem, .. }) => {
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The page that says what happened. Logs nothing: the answer logs a server-side failure.
    fn page(&self, status: StatusCode) -> ErrorPage {
        let unavailable = |service: &str| {
            ErrorPage::new(
                &format!("{} is temporarily unavailable", feature_of(service)),
                "Nothing was lost. Please try again in a few seconds.",
            )
        };
        match self {
            Self::NotFound => ErrorPage::not_found(),
            Self::Forbidden => ErrorPage::new(
                "This form has expired",
                "The form was sent from another site, or your session changed since the page was loaded. Go back, reload the page and try again.",
            ),
            Self::BadRequest(why) => ErrorPage::new("That request did not make sense", why),
            Self::Service(ClientError::Unavailable { service, .. }) => unavailable(service),
            Self::Service(ClientError::Problem { service, problem }) => {
                if status == StatusCode::NOT_FOUND {
                    ErrorPage::not_found()
                } else if status.is_server_error() {
                    unavailable(service)
                } else {
                    let detail = problem.detail.as_deref().unwrap_or(problem.title.as_str());
                    ErrorPage::new(&problem.title, detail)
                }
            }
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        problem::log_failure(status, self);
        let mut response = pages::render(status, &self.page(status));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A failed `/api/v1` request: a problem of the storefront's own, or a service call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error(transparent)]
    Service(#[from] ClientError),
}

impl ServiceError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Problem(problem) => problem.status(),
            Self::Service(ClientError::Problem { problem, .. }) if problem.status < 500 => {
                problem.status()
            }
            Self::Service(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The storefront's own problem, the service's own problem when it is the client's fault
    /// (its codes are part of the public API), or 503 naming what is unavailable.
    fn problem(&self) -> Problem {
        match self {
            Self::Problem(problem) => problem.clone(),
            Self::Service(ClientError::Problem { problem, .. }) if problem.status < 500 => {
                (**problem).clone()
            }
            Self::Service(
                ClientError::Problem { service, .. } | ClientError::Unavailable { service, .. },
            ) => Problem::unavailable(&format!(
                "{} is temporarily unavailable; try again in a few seconds",
                feature_of(service)
            ))
            .with_retry_after_secs(RETRY_AFTER_SECS.into()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        ServiceError::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        problem::respond(self)
    }
}
