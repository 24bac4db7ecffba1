//! The platform every Emporium service is built on, so that each service holds only its own
//! domain: layered settings with documented `--help`, logging and OpenTelemetry set-up (with a
//! store of recent traces for the one-process mode's page),
//! Prometheus metrics (RED per route, and a registry for each service's own series), RFC 9457
//! problem errors with stable codes, request ids, the HTTP server stack (body limits, health and
//! readiness endpoints, graceful shutdown), admin authentication, unguessable ids, and the
//! outbound HTTP client with timeouts and trace propagation.

pub mod auth;
pub mod client;
pub mod faults;
pub mod health;
pub mod id;
pub mod metrics;
pub mod openapi;
pub mod problem;
mod problem_code;
pub mod recent_traces;
pub mod request_id;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testsuite")]
pub mod testing;
pub mod validation;

pub use problem::{FieldError, Problem, ProblemCode, ServiceError};
