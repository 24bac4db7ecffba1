//! Request ids: taken from `X-Request-Id` when a caller (the gateway, another service) sent a
//! sane one, generated otherwise, echoed on the response, attached to the request span and to
//! every problem body, and forwarded by the outbound client.
//!
//! The request's deadline travels the same way: a service calling another says in
//! `X-Request-Timeout-Ms` how long it will wait for the answer, and the callee's own calls end
//! by then (see `emporium_api::client`), so a callee does not keep calling further down, or
//! retrying, for an answer nobody is waiting for. Only callers that show the gateway key are
//! believed: a browser cannot shorten the services' calls.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use std::time::Duration;
use tokio::time::Instant;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// How long the caller will wait for the answer, in milliseconds, when it said.
pub const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// The longest wait a caller may announce; longer is taken as this.
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Longest request id accepted from a caller; longer ones are replaced, not truncated.
const MAX_LEN: usize = 64;

tokio::task_local! {
    static CURRENT: Scope;
}

/// What the task serving a request knows about it.
struct Scope {
    id: String,
    /// The `traceparent` to send on for a request that is not traced (see
    /// [`crate::telemetry::propagation_headers`]), set once its span is built.
    untraced_parent: std::sync::OnceLock<String>,
    /// When the caller stops waiting for the answer, if it said.
    deadline: Option<Instant>,
}

/// The id of the request being served, stored in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The id of the request whose handler is running on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|scope| scope.id.clone()).ok()
}

/// Runs `future` as part of the request `id`, so problems built and calls made inside it carry
/// that id.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    scope_until(id, None, future).await
}

/// Runs `future` as part of the request `id`, whose caller waits for it until `deadline`.
pub async fn scope_until<F: Future>(id: String, deadline: Option<Instant>, future: F) -> F::Output {
    let scope = Scope {
        id,
        untraced_parent: std::sync::OnceLock::new(),
        deadline,
    };
    CURRENT.scope(scope, future).await
}

/// Runs `future` as part of the request being served, but without its caller's deadline: for
/// work owed whether or not anyone still waits for the answer (undoing what a checkout began,
/// which would otherwise wait for a reconciler). Each call inside still has its own deadline.
pub async fn past_deadline<F: Future>(future: F) -> F::Output {
    let Ok((id, untraced_parent)) = CURRENT.try_with(|scope| {
        (
            scope.id.clone(),
            scope
                .untraced_parent
                .get()
                .cloned()
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
        )
    }) else {
        return future.await;
    };
    let scope = Scope {
        id,
        untraced_parent,
        deadline: None,
    };
    CURRENT.scope(scope, future).await
}

/// When the caller of the request being served stops waiting for it, if it said.
pub fn deadline() -> Option<Instant> {
    CURRENT.try_with(|scope| scope.deadline).ok().flatten()
}

/// The deadline a request's caller announced: a plain number of milliseconds from a caller
/// that shows the gateway key; anything else is no deadline.
fn announced_deadline(req: &ServiceRequest) -> Option<Instant> {
    let millis: u64 = req
        .headers()
        .get(&TIMEOUT_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    if !crate::auth::from_gateway(req.request()) {
        return None;
    }
    Some(Instant::now() + Duration::from_millis(millis.min(MAX_TIMEOUT_MS)))
}

/// Records the trace context an untraced request passes on to the services it calls.
pub(crate) fn set_untraced_parent(traceparent: String) {
    let _ = CURRENT.try_with(|scope| scope.untraced_parent.set(traceparent));
}

/// The trace context to pass on when the request being served is not traced.
pub(crate) fn untraced_parent() -> Option<String> {
    CURRENT
        .try_with(|scope| scope.untraced_parent.get().cloned())
        .ok()
        .flatten()
}

fn is_acceptable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new random request id.
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Middleware: assigns the request id and scopes the rest of the pipeline to it. Register it as
/// the outermost middleware so the tracing span and every error see the id.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable(value))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    req.extensions_mut().insert(RequestId(id.clone()));
    let header = HeaderValue::from_str(&id).ok();
    let deadline = announced_deadline(&req);
    // The call itself runs in the scope too: the request's span is built there, synchronously.
    let mut response = scope_until(id, deadline, async move { next.call(req).await }).await?;
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_must_be_short_and_plain() {
        assert!(is_acceptable("abc-123_x.y:z"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable("<script>"));
        assert!(!is_acceptable(&"a".repeat(MAX_LEN + 1)));
    }

    #[tokio::test]
    async fn the_scope_exposes_the_id_to_code_inside_it() {
        assert_eq!(current(), None);
        let seen = scope("req-1".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("req-1"));
    }
}
