//! Typed HTTP clients for each service.
//!
//! Every call has the outbound client's timeouts and carries the request id and trace context.
//! A call is retried only if it is idempotent (reads, and writes that name what they write, such
//! as a reservation by id or an order by idempotency key) and only after a failure that may pass
//! (no answer, a timeout, 502/503/504), with exponential backoff and jitter, a bounded number of
//! times. Retries use the `backon` crate.

mod cart;
mod catalog;
mod inventory;
mod order;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use emporium_platform::Problem;
use emporium_platform::client::ServiceClient;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

pub use cart::CartClient;
pub use catalog::CatalogClient;
pub use inventory::InventoryClient;
pub use order::OrderClient;

/// How hard to retry idempotent calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 2,
            min_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a problem.
    #[error("{service} answered: {problem}")]
    Problem {
        service: &'static str,
        problem: Box<Problem>,
    },
    /// No usable answer: no connection, a timeout, a bare 5xx, or a body that does not parse.
    #[error("{service} is unavailable")]
    Unavailable {
        service: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

impl ClientError {
    /// The problem code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Problem { problem, .. } => Some(problem.code.as_str()),
            Self::Unavailable { .. } => None,
        }
    }

    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem { problem, .. } => Some(problem),
            Self::Unavailable { .. } => None,
        }
    }

    /// Whether the same call may succeed if made again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Problem { problem, .. } => matches!(problem.status, 502..=504),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Problem { problem, .. } if problem.status == 404)
    }
}

/// One service's base URL, client and retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    service: &'static str,
    client: ServiceClient,
    retry: RetryPolicy,
}

/// Whether a call may be repeated without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotent {
    Yes,
    No,
}

impl Endpoint {
    pub(crate) fn new(
        service: &'static str,
        base_url: &str,
        http: reqwest::Client,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            service,
            client: ServiceClient::new(base_url, http),
            retry,
        }
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, path)
    }

    /// Sends the request `build` makes (once per attempt) and decodes a JSON answer.
    pub(crate) async fn call<T, F>(
        &self,
        idempotent: Idempotent,
        build: F,
    ) -> Result<(StatusCode, T), ClientError>
    where
        T: DeserializeOwned,
        F: Fn() -> RequestBuilder,
    {
        let attempt = || async { self.once::<T>(build()).await };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(match idempotent {
                Idempotent::Yes => self.retry.retries,
                Idempotent::No => 0,
            })
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|error: &ClientError| error.is_transient())
            .notify(|error: &ClientError, delay: Duration| {
                tracing::warn!(service = self.service, %error, delay_ms = delay.as_millis() as u64, "retrying");
            })
            .await
    }

    async fn once<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, T), ClientError> {
        let unavailable = |source: anyhow::Error| ClientError::Unavailable {
            service: self.service,
            source,
        };
        let response = request.send().await.map_err(|e| unavailable(e.into()))?;
        let status = response.status();
        let is_problem = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(emporium_platform::problem::is_problem_type);
        let body = response.bytes().await.map_err(|e| unavailable(e.into()))?;
        if status.is_success() {
            let text: &[u8] = if body.is_empty() { b"null" } else { &body };
            let value = serde_json::from_slice(text).map_err(|e| {
                unavailable(
                    anyhow::Error::from(e).context(format!("undecodable answer ({status})")),
                )
            })?;
            return Ok((status, value));
        }
        if is_problem && let Ok(problem) = serde_json::from_slice::<Problem>(&body) {
            return Err(ClientError::Problem {
                service: self.service,
                problem: Box::new(problem),
            });
        }
        if status.is_server_error() {
            return Err(unavailable(anyhow::anyhow!("answered {status}")));
        }
        Err(ClientError::Problem {
            service: self.service,
            problem: Box::new(Problem::from_status(actix_status(status))),
        })
    }
}

fn actix_status(status: StatusCode) -> emporium_platform::problem::StatusCode {
    emporium_platform::problem::StatusCode::from_u16(status.as_u16())
        .unwrap_or(emporium_platform::problem::StatusCode::BAD_GATEWAY)
}

/// Percent-encodes one path segment.
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        // Dots are encoded too: a bare `..` segment would otherwise be resolved away by URL
        // parsing and address another resource.
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape_their_place_in_the_path() {
        assert_eq!(segment("KIT-001"), "KIT-001");
        assert_eq!(segment("../admin"), "%2E%2E%2Fadmin");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }
}
