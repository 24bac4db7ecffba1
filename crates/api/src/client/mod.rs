//! Typed HTTP clients for each service.
//!
//! Every call has the outbound client's timeouts and carries the request id and trace context.
//! A call is retried only if it is idempotent (reads, and writes that name what they write, such
//! as a reservation by id or an order by idempotency key) and only after a failure that may pass
//! (no answer, a timeout, 502/503/504), with exponential backoff and jitter, a bounded number of
//! times (`backon`), and only while the dependency's retry budget lasts (`tower`'s `TpsBudget`:
//! retries may add a fifth to the calls, plus a few a second), so retries cannot multiply the
//! load on a service that is already failing. The whole call, retries included, has a deadline,
//! and ends no later than the deadline of the request being served, when its caller announced
//! one (`emporium_platform::request_id`); each attempt tells its callee how long it will wait
//! (`X-Request-Timeout-Ms`), so the callee's own calls stop when nobody waits for them any more.
//! Each dependency has a circuit breaker (`failsafe`): after consecutive failures it opens and
//! calls fail at once, without a request, until a probe after the open time succeeds; a sick
//! service then costs its callers nothing but a fast, clear "unavailable".
//!
//! A client given its service's fault switches ([`CatalogClient::with_faults`] and the like)
//! treats an outage of its dependency switched on there as an unreachable service: each attempt
//! fails without a request, and retries, budget and breaker do what they would.

mod cart;
mod catalog;
mod inventory;
mod order;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use emporium_platform::client::ServiceClient;
use emporium_platform::faults::{Dependency, FaultSwitches};
use emporium_platform::request_id;
use emporium_platform::{Problem, ProblemCode};
use failsafe::failure_policy::{ConsecutiveFailures, consecutive_failures};
use failsafe::futures::CircuitBreaker as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tower::retry::budget::{Budget as _, TpsBudget};

pub use cart::CartClient;
pub use catalog::CatalogClient;
pub use inventory::InventoryClient;
pub use order::OrderClient;

/// A client's dependency and whether its circuit is open, for the caller's metrics.
pub trait Circuit {
    fn circuit(&self) -> (&'static str, bool);
}

/// The `circuit_open{dependency}` gauges of a service's clients (1 while a circuit is open or
/// probing).
pub fn observe_circuits(
    metrics: &emporium_platform::metrics::Metrics,
    clients: Vec<Box<dyn Circuit + Send + Sync>>,
) {
    metrics.observe_gauges(
        "circuit_open",
        "Whether calls to a dependency fail fast because its circuit is open (1) or go through (0)",
        "dependency",
        move || {
            clients
                .iter()
                .map(|client| {
                    let (dependency, open) = client.circuit();
                    (dependency.to_owned(), i64::from(open))
                })
                .collect()
        },
    );
}

/// How calls to a dependency are retried, bounded and cut off.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// How long one attempt may take, or less when the deadline is nearer; it replaces the
    /// outbound client's own timeout, which should be the same.
    pub attempt_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The whole call, every attempt and wait included.
    pub deadline: Duration,
    /// Retries allowed on top of the calls, as a fraction of them (over the last ten seconds)...
    pub retry_ratio: f32,
    /// ...plus this many a second, so a quiet caller may still retry.
    pub min_retries_per_sec: u32,
    /// Consecutive failed attempts that open the dependency's circuit.
    pub breaker_failures: u32,
    /// How long the circuit stays open the first time; doubled (with jitter) each time a probe
    /// fails, up to `breaker_max_open`.
    pub breaker_open: Duration,
    pub breaker_max_open: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            retries: 2,
            min_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(250),
            deadline: Duration::from_secs(10),
            retry_ratio: 0.2,
            min_retries_per_sec: 10,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(1),
            breaker_max_open: Duration::from_secs(30),
        }
    }
}

/// How long an open circuit stays open: doubling from `next` to `max`, each with up to a quarter
/// taken off at random, so callers of a recovering service do not all probe it at once.
/// (failsafe's own backoffs count in whole seconds.)
#[derive(Debug, Clone)]
struct OpenFor {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenFor {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 1.0 - rand::random::<f64>() * 0.25;
        Some(current.mul_f64(jitter))
    }
}

/// Logs the circuit's changes, which are what an operator wants to know about a dependency,
/// and keeps whether it is open (or probing) for the service's metrics.
#[derive(Debug, Clone)]
struct LogTransitions {
    dependency: &'static str,
    open: Arc<AtomicBool>,
}

impl failsafe::Instrument for LogTransitions {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.open.store(true, Ordering::Relaxed);
        tracing::warn!(
            dependency = self.dependency,
            "circuit opened: calls fail fast for a while"
        );
    }

    fn on_half_open(&self) {
        tracing::info!(dependency = self.dependency, "circuit half open: probing");
    }

    fn on_closed(&self) {
        // failsafe also reports a new breaker as closed; only a circuit that was open closes.
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!(
                dependency = self.dependency,
                "circuit closed: calls go through again"
            );
        }
    }
}

type Breaker = failsafe::StateMachine<ConsecutiveFailures<OpenFor>, LogTransitions>;

/// The error a call gets without a request while its dependency's circuit is open.
#[derive(Debug, thiserror::Error)]
#[error("the circuit to it is open after repeated failures")]
pub struct CircuitOpen;

/// The error an attempt gets while the caller's fault switches cut it off from the dependency.
#[derive(Debug, thiserror::Error)]
#[error("cut off from it by the caller's fault switches (/admin/faults)")]
pub struct CutOff;

/// The error a call gets when its deadline passes, retries included: its own, or that of the
/// request being served (its caller stopped waiting).
#[derive(Debug, thiserror::Error)]
#[error("no answer within the call's deadline of {0:?}")]
pub struct DeadlineExceeded(pub Duration);

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
    pub fn code(&self) -> Option<&ProblemCode> {
        match self {
            Self::Problem { problem, .. } => Some(&problem.code),
            Self::Unavailable { .. } => None,
        }
    }

    /// Whether the service answered with a problem of this code.
    pub fn is(&self, code: &ProblemCode) -> bool {
        self.code() == Some(code)
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

    /// Whether the service itself failed: no usable answer (no connection, a timeout, a bare
    /// 5xx, an answer that does not parse), an internal error, or it refused the call because it
    /// is overloaded or its fault switches say so.
    pub fn is_own_failure(&self) -> bool {
        match self {
            // An attempt not made because no time was left says nothing about the callee.
            Self::Unavailable { source, .. } => !source.is::<DeadlineExceeded>(),
            Self::Problem { problem, .. } => {
                problem.status == 500 || problem.code.is_service_failure()
            }
        }
    }

    /// Whether the call was refused without a request because the dependency's circuit is open.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::Unavailable { source, .. } if source.is::<CircuitOpen>())
    }

    /// Whether the call ran out of time: its deadline, or its caller's, passed.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Self::Unavailable { source, .. } if source.is::<DeadlineExceeded>())
    }
}

/// One service's base URL, client, retry policy, retry budget and circuit breaker; clones share
/// the budget and the breaker.
#[derive(Clone)]
pub(crate) struct Endpoint {
    dependency: Dependency,
    /// The calling service's switches (none switched on unless given).
    faults: FaultSwitches,
    client: ServiceClient,
    retry: RetryPolicy,
    budget: Arc<TpsBudget>,
    breaker: Breaker,
    circuit_open: Arc<AtomicBool>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("dependency", &self.dependency)
            .field("client", &self.client)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be repeated without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotent {
    Yes,
    No,
}

impl Endpoint {
    pub(crate) fn new(
        dependency: Dependency,
        base_url: &str,
        http: reqwest::Client,
        retry: RetryPolicy,
    ) -> Self {
        let open_for = OpenFor {
            next: retry.breaker_open,
            max: retry.breaker_max_open.max(retry.breaker_open),
        };
        let circuit_open = Arc::new(AtomicBool::new(false));
        Self {
            dependency,
            faults: FaultSwitches::default(),
            client: ServiceClient::new(base_url, http),
            retry,
            circuit_open: circuit_open.clone(),
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                retry.min_retries_per_sec,
                retry.retry_ratio,
            )),
            breaker: failsafe::Config::new()
                .failure_policy(consecutive_failures(
                    retry.breaker_failures.max(1),
                    open_for,
                ))
                .instrument(LogTransitions {
                    dependency: dependency.name(),
                    open: circuit_open,
                })
                .build(),
        }
    }

    /// Makes calls fail while the caller's `faults` say this dependency is lost, and tells the
    /// switches the caller has it.
    pub(crate) fn with_faults(mut self, faults: &FaultSwitches) -> Self {
        faults.uses(self.dependency);
        self.faults = faults.clone();
        self
    }

    /// The name of the service this endpoint calls.
    fn service(&self) -> &'static str {
        self.dependency.name()
    }

    /// The dependency this endpoint calls, and whether its circuit is open (or probing).
    pub(crate) fn circuit(&self) -> (&'static str, bool) {
        (self.service(), self.circuit_open.load(Ordering::Relaxed))
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
        let started = tokio::time::Instant::now();
        let own = started + self.retry.deadline;
        let deadline = request_id::deadline().map_or(own, |caller| caller.min(own));
        let budget = deadline.saturating_duration_since(started);
        let out_of_time = || ClientError::Unavailable {
            service: self.service(),
            source: DeadlineExceeded(budget).into(),
        };
        if budget.is_zero() {
            // The caller has stopped waiting: nothing this call could do would be used.
            return Err(out_of_time());
        }
        let attempt = || async {
            // What counts against the circuit is the service itself failing: no usable answer,
            // an internal error, or a refusal because it is overloaded (or made to fail). Its
            // 502/503 problems about a service further down do not: counting them would open
            // this caller's circuit whenever anything below is sick, and then keep it open
            // after that heals, each breaker in the chain backing off in turn.
            match self
                .breaker
                .call_with(
                    ClientError::is_own_failure,
                    self.once::<T>(build(), deadline, budget),
                )
                .await
            {
                Ok(answer) => Ok(answer),
                Err(failsafe::Error::Inner(error)) => Err(error),
                Err(failsafe::Error::Rejected) => Err(ClientError::Unavailable {
                    service: self.service(),
                    source: CircuitOpen.into(),
                }),
            }
        };
        self.budget.deposit();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(match idempotent {
                Idempotent::Yes => self.retry.retries,
                Idempotent::No => 0,
            })
            .with_jitter();
        let retried = attempt
            .retry(backoff)
            // An open circuit will not close within a backoff; a spent budget says the
            // dependency is getting more retries than it can take.
            .when(|error: &ClientError| {
                error.is_transient()
                    && !error.is_circuit_open()
                    && !error.is_deadline_exceeded()
                    && self.budget.withdraw()
            })
            .notify(|error: &ClientError, delay: Duration| {
                tracing::warn!(service = self.service(), %error, delay_ms = delay.as_millis() as u64, "retrying");
            });
        match tokio::time::timeout_at(deadline, retried).await {
            Ok(outcome) => outcome,
            Err(_) => Err(out_of_time()),
        }
    }

    /// One attempt, given until the call's `deadline` at most (`budget` being the call's).
    async fn once<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        deadline: tokio::time::Instant,
        budget: Duration,
    ) -> Result<(StatusCode, T), ClientError> {
        let unavailable = |source: anyhow::Error| ClientError::Unavailable {
            service: self.service(),
            source,
        };
        if self.faults.is_cut_off(self.dependency) {
            return Err(unavailable(CutOff.into()));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = left.min(self.retry.attempt_timeout);
        if wait.is_zero() {
            return Err(unavailable(DeadlineExceeded(budget).into()));
        }
        // A request that times out counts against the callee even when the deadline, not the
        // attempt's own timeout, cut it short: a callee that is merely slow must still trip
        // its circuit when every caller's deadline is as short as one attempt.
        let response = request
            .timeout(wait)
            .header(
                request_id::TIMEOUT_HEADER.as_str(),
                wait.as_millis().to_string(),
            )
            .send()
            .await
            // Without the URL: its path may hold an id that is a bearer token (a cart's), and
            // the error ends up in log lines.
            .map_err(|e| unavailable(e.without_url().into()))?;
        let status = response.status();
        let is_problem = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(emporium_platform::problem::is_problem_type);
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.without_url().into()))?;
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
                service: self.service(),
                problem: Box::new(problem),
            });
        }
        if status.is_server_error() {
            return Err(unavailable(anyhow::anyhow!("answered {status}")));
        }
        Err(ClientError::Problem {
            service: self.service(),
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
