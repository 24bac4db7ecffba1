//! Errors on the wire: RFC 9457 problem details with a stable code and the request id.
//!
//! Every error a client sees is a [`Problem`]. Its `code` is stable and documented (clients match
//! on it); `title` is the short human summary for that code; `detail` explains this occurrence.
//! Server faults never carry detail: the cause chain goes to the log, and the body only says that
//! something failed and which request id to quote.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use actix_web::http::StatusCode;

use crate::request_id;

/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every problem `type`; the code follows it. A URN, so it names the problem without
/// pretending that a web page exists for it; `docs/API.md` lists the codes.
pub const TYPE_PREFIX: &str = "urn:emporium:problem:";

/// One invalid field of a request, reported with `validation_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path of the field in the request (`price.amount`, `images[2]`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Stable machine-readable code, the last part of `type`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
    /// Further members specific to the code (for example `current_version`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, title: &str) -> Self {
        let code = code.into();
        Self {
            type_uri: format!("{TYPE_PREFIX}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            code: code.into_owned(),
            request_id: None,
            errors: Vec::new(),
            extensions: Map::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_extension(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    // === Problems shared by every service ===

    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "Request body is not valid JSON",
        )
        .with_detail(detail)
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "Request body does not match the expected shape",
        )
        .with_detail(detail)
    }

    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "Query string is not valid",
        )
        .with_detail(detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "Path parameter is not valid",
        )
        .with_detail(detail)
    }

    pub fn invalid_cursor() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "Pagination cursor is not valid",
        )
        .with_detail("use the cursor exactly as a previous page returned it, with the same filters")
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Some fields are not valid",
        )
        .with_errors(errors)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body is too large",
        )
        .with_detail(format!("the limit is {limit} bytes"))
        .with_extension("limit_bytes", limit)
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type is not supported here",
        )
        .with_detail(format!("send {expected}"))
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Valid credentials are required",
        )
        .with_detail(detail)
    }

    /// A route for the shop's services only, called without their gateway key.
    pub fn gateway_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "gateway_required",
            "This is served to the shop's services only",
        )
        .with_detail("call through the storefront; services send the gateway key")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side",
        )
        .with_detail("quote the request id when you report this")
    }

    pub fn unavailable(detail: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The service is temporarily unavailable",
        )
        .with_detail(detail)
    }

    /// The request's body did not arrive within `timeout_ms` of its headers.
    pub fn body_timeout(timeout_ms: u128) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "The request body took too long to arrive",
        )
        .with_detail(format!("send the whole body within {timeout_ms} ms"))
        .with_extension("timeout_ms", u64::try_from(timeout_ms).unwrap_or(u64::MAX))
    }

    /// The service is serving as many requests as it may; the caller should try again after
    /// `retry_after_secs`.
    pub fn overloaded(retry_after_secs: u32) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The service is busy",
        )
        .with_detail(format!("try again in {retry_after_secs} s"))
        .with_extension("retry_after_secs", retry_after_secs)
    }

    /// A problem for a bare status that nothing more specific described (an unknown route,
    /// a method the route does not take).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(status, "not_found", "No such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method_not_allowed",
                "Method not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large", "Request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "Content-Type is not supported here",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE | StatusCode::URI_TOO_LONG => {
                Self::new(status, "request_too_large", "Request head is too large")
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable("try again shortly"),
            status if status.is_server_error() => Self {
                status: status.as_u16(),
                ..Self::internal()
            },
            status => Self::new(
                status,
                "bad_request",
                status.canonical_reason().unwrap_or("Bad request"),
            ),
        }
    }

    /// Serialises the problem, filling in the id of the request being served.
    pub fn to_response(&self) -> HttpResponse {
        let mut body = self.clone();
        if body.request_id.is_none() {
            body.request_id = request_id::current();
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"type":"urn:emporium:problem:internal_error","title":"Something went wrong on our side","status":500,"code":"internal_error"}"#.to_vec()
        });
        let mut response = HttpResponse::build(self.status()).body(bytes);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}

/// True when a response's content type says it is already a problem.
pub fn is_problem(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_problem_type)
}

/// True when a content type (as text) is problem+json.
pub fn is_problem_type(content_type: &str) -> bool {
    content_type.starts_with(PROBLEM_JSON)
}

/// Logs a server-side failure with its whole cause chain and returns the bodiless problem that
/// the client sees instead.
pub fn log_internal(error: &(dyn std::error::Error + 'static)) -> Problem {
    tracing::error!(error = %error_chain(error), "request failed");
    Problem::internal()
}

/// `error: cause: cause of the cause ...`, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_is_derived_from_the_code() {
        let problem = Problem::new(StatusCode::CONFLICT, "version_conflict", "Stale");
        assert_eq!(problem.type_uri, "urn:emporium:problem:version_conflict");
        assert_eq!(problem.status, 409);
    }

    #[test]
    fn extensions_are_flattened_into_the_body() {
        let problem = Problem::new(StatusCode::CONFLICT, "version_conflict", "Stale")
            .with_extension("current_version", 3);
        let json = serde_json::to_value(&problem).expect("serialise");
        assert_eq!(json["current_version"], 3);
        assert!(json.get("errors").is_none(), "empty errors are omitted");
    }

    #[test]
    fn server_errors_carry_no_detail_of_the_cause() {
        let problem = Problem::from_status(StatusCode::BAD_GATEWAY);
        assert_eq!(problem.code, "internal_error");
        assert_eq!(problem.status, 502);
        assert!(!problem.detail.unwrap_or_default().contains("gateway"));
    }
}
