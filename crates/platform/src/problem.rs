//! Errors on the wire: RFC 9457 problem details with a stable code and the request id.
//!
//! Every error a client sees is a [`Problem`]. Its `code` is stable and documented (clients match
//! on it); `title` is the short human summary for that code; `detail` explains this occurrence.
//! Server faults never carry detail: the cause chain goes to the log, and the body only says that
//! something failed and which request id to quote.

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use actix_web::http::StatusCode;

pub use crate::problem_code::ProblemCode;
use crate::request_id;

/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every problem `type`; the code follows it. A URN, so it names the problem without
/// pretending that a web page exists for it; `docs/API.md` lists the codes.
pub const TYPE_PREFIX: &str = "urn:emporium:problem:";

/// The member saying how many seconds to wait before trying again.
const RETRY_AFTER_SECS: &str = "retry_after_secs";

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
    #[schema(value_type = String)]
    pub code: ProblemCode,
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
    pub fn new(status: StatusCode, code: ProblemCode, title: &str) -> Self {
        Self {
            type_uri: format!("{TYPE_PREFIX}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            code,
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

    /// Whether this is a problem of that code.
    pub fn is(&self, code: &ProblemCode) -> bool {
        self.code == *code
    }

    // === Members the platform's problems add ===

    /// When to try again (`overloaded`, `rate_limited`, `cart_busy`, the storefront's 503s).
    pub fn with_retry_after_secs(self, seconds: u64) -> Self {
        self.with_extension(RETRY_AFTER_SECS, seconds)
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.extensions.get(RETRY_AFTER_SECS)?.as_u64()
    }

    /// The limit a too-large request went over.
    pub fn with_limit_bytes(self, limit: usize) -> Self {
        self.with_extension("limit_bytes", limit)
    }

    // === Problems shared by every service ===

    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidJson,
            "Request body is not valid JSON",
        )
        .with_detail(detail)
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidBody,
            "Request body does not match the expected shape",
        )
        .with_detail(detail)
    }

    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidQuery,
            "Query string is not valid",
        )
        .with_detail(detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidPath,
            "Path parameter is not valid",
        )
        .with_detail(detail)
    }

    pub fn invalid_cursor() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidCursor,
            "Pagination cursor is not valid",
        )
        .with_detail("use the cursor exactly as a previous page returned it, with the same filters")
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::ValidationFailed,
            "Some fields are not valid",
        )
        .with_errors(errors)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::PayloadTooLarge,
            "Request body is too large",
        )
        .with_detail(format!("the limit is {limit} bytes"))
        .with_limit_bytes(limit)
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemCode::UnsupportedMediaType,
            "Content-Type is not supported here",
        )
        .with_detail(format!("send {expected}"))
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ProblemCode::Unauthorized,
            "Valid credentials are required",
        )
        .with_detail(detail)
    }

    /// A route for the shop's services only, called without their gateway key.
    pub fn gateway_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ProblemCode::GatewayRequired,
            "This is served to the shop's services only",
        )
        .with_detail("call through the storefront; services send the gateway key")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::InternalError,
            "Something went wrong on our side",
        )
        .with_detail("quote the request id when you report this")
    }

    pub fn unavailable(detail: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemCode::ServiceUnavailable,
            "The service is temporarily unavailable",
        )
        .with_detail(detail)
    }

    /// The request's body did not arrive within `timeout_ms` of its headers.
    pub fn body_timeout(timeout_ms: u128) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ProblemCode::BodyTimeout,
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
            ProblemCode::Overloaded,
            "The service is busy",
        )
        .with_detail(format!("try again in {retry_after_secs} s"))
        .with_retry_after_secs(retry_after_secs.into())
    }

    /// A problem for a bare status that nothing more specific described (an unknown route,
    /// a method the route does not take).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(status, ProblemCode::NotFound, "No such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                ProblemCode::MethodNotAllowed,
                "Method not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                ProblemCode::PayloadTooLarge,
                "Request body is too large",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                ProblemCode::UnsupportedMediaType,
                "Content-Type is not supported here",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE | StatusCode::URI_TOO_LONG => Self::new(
                status,
                ProblemCode::RequestTooLarge,
                "Request head is too large",
            ),
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable("try again shortly"),
            status if status.is_server_error() => Self {
                status: status.as_u16(),
                ..Self::internal()
            },
            status => Self::new(
                status,
                ProblemCode::BadRequest,
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

/// A service's error type: the one mapping of each of its failures to the answer's status and
/// to the problem the client sees. The platform answers with it ([`respond`]) and logs there, so
/// building a problem has no side effect and a failure is logged once per answer.
pub trait ServiceError: std::error::Error + 'static {
    /// The answer's status, the one place each failure's status is stated. Cheap and without
    /// side effects: actix asks for it more than once (the request log line too).
    fn status(&self) -> StatusCode;

    /// What the client sees, at [`Self::status`]. Server-side failures describe no cause.
    fn problem(&self) -> Problem;
}

/// The answer for a service error: its problem, after logging a server-side failure (see
/// [`log_failure`]). For `ResponseError::error_response`, which actix calls once per answer.
pub fn respond(error: &impl ServiceError) -> HttpResponse {
    let status = error.status();
    log_failure(status, error);
    let problem = error.problem();
    debug_assert_eq!(
        problem.status(),
        status,
        "{error}: status and problem disagree"
    );
    problem.to_response()
}

/// Logs a failure answered with a 5xx as an error, with its whole cause chain, inside the
/// request's span (which carries the request id). The cause goes to the log and never to the
/// client. A client error is not logged here: the request's own log line has its status.
pub fn log_failure(status: StatusCode, error: &(dyn std::error::Error + 'static)) {
    if !status.is_server_error() {
        return;
    }
    let chain = error_chain(error);
    // A 503 says a backend or another service did not answer, which operators look for apart
    // from faults in the service's own code.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(status = status.as_u16(), error = %chain, "service unavailable");
    } else {
        tracing::error!(status = status.as_u16(), error = %chain, "request failed");
    }
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
        let problem = Problem::new(StatusCode::CONFLICT, ProblemCode::VersionConflict, "Stale");
        assert_eq!(problem.type_uri, "urn:emporium:problem:version_conflict");
        assert_eq!(problem.status, 409);
    }

    #[test]
    fn extensions_are_flattened_into_the_body() {
        let problem = Problem::new(StatusCode::CONFLICT, ProblemCode::VersionConflict, "Stale")
            .with_extension("current_version", 3);
        let json = serde_json::to_value(&problem).expect("serialise");
        assert_eq!(json["current_version"], 3);
        assert!(json.get("errors").is_none(), "empty errors are omitted");
    }

    #[test]
    fn server_errors_carry_no_detail_of_the_cause() {
        let problem = Problem::from_status(StatusCode::BAD_GATEWAY);
        assert_eq!(problem.code, ProblemCode::InternalError);
        assert_eq!(problem.status, 502);
        assert!(!problem.detail.unwrap_or_default().contains("gateway"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the store is unavailable")]
    struct StoreDown(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("no such thing")]
        Missing,
        #[error(transparent)]
        Down(#[from] StoreDown),
    }

    impl ServiceError for TestError {
        fn status(&self) -> StatusCode {
            match self {
                Self::Missing => StatusCode::NOT_FOUND,
                Self::Down(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }

        fn problem(&self) -> Problem {
            match self {
                Self::Missing => {
                    Problem::new(self.status(), ProblemCode::NotFound, "No such thing")
                }
                Self::Down(_) => Problem::unavailable("try again"),
            }
        }
    }

    /// What `respond` logs while answering `error`.
    fn logged_by_respond(error: &TestError) -> (StatusCode, String) {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.reopen().expect("log writer"))
            .with_ansi(false)
            .finish();
        let status = tracing::subscriber::with_default(subscriber, || respond(error).status());
        (status, std::fs::read_to_string(log.path()).expect("log"))
    }

    #[test]
    fn a_server_failure_is_logged_once_with_its_causes_and_a_client_error_not_at_all() {
        let down = TestError::from(StoreDown(std::io::Error::other("connection refused")));
        let (status, log) = logged_by_respond(&down);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        assert!(log.contains("ERROR"), "{log}");
        assert!(
            log.contains("the store is unavailable: connection refused"),
            "the cause chain: {log}"
        );
        let (status, log) = logged_by_respond(&TestError::Missing);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(log.is_empty(), "a 404 is not an error: {log}");
    }
}
