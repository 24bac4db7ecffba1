//! Fault switches, for practising failure on a running shop (chaos on kind, or on one machine):
//! each service can be told to answer slowly, to fail a fraction of its requests, or to find its
//! store, cache or blob store gone. All are off until an operator turns them on through the
//! service's admin endpoint, `PUT /admin/faults` with the admin key; `DELETE` turns them off.
//!
//! Probes, metrics and the switch itself are never slowed or failed: an injected fault should
//! look like a sick service to its callers, not get the pod restarted or the switch locked out.
//! Outages reach the ports through the decorators of `emporium_ports::faulty`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use emporium_ports::faulty::{Outages, Port};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::problem::{FieldError, Problem};

/// Longest latency that may be injected: enough to trip any timeout, short enough that a
/// mistyped value does not hang a service for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// A dependency a service can be told it has lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Storage,
    Cache,
    Blobs,
}

impl Dependency {
    fn port(self) -> Port {
        match self {
            Self::Storage => Port::Storage,
            Self::Cache => Port::Cache,
            Self::Blobs => Port::Blobs,
        }
    }
}

/// What a service is told to get wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Added before every request this service serves, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Fraction of requests (0 to 1) answered 503 `fault_injected` instead of being served.
    #[serde(default)]
    pub error_rate: f64,
    /// Dependencies whose every call fails.
    #[serde(default)]
    pub outage: BTreeSet<Dependency>,
}

impl FaultSettings {
    fn is_active(&self) -> bool {
        self.latency_ms > 0 || self.error_rate > 0.0 || !self.outage.is_empty()
    }

    fn validate(&self) -> Result<(), Problem> {
        let mut errors = Vec::new();
        if self.latency_ms > MAX_LATENCY_MS {
            errors.push(FieldError::new(
                "latency_ms",
                format!("at most {MAX_LATENCY_MS}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            errors.push(FieldError::new("error_rate", "a fraction from 0 to 1"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(errors))
        }
    }
}

/// One service's switches; clones share them.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitches {
    /// Whether any switch is on: the one thing a request checks when none is.
    active: Arc<AtomicBool>,
    settings: Arc<RwLock<FaultSettings>>,
}

impl FaultSwitches {
    pub fn get(&self) -> FaultSettings {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, settings: FaultSettings) {
        let active = settings.is_active();
        *self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
        self.active.store(active, Ordering::Release);
        if active {
            tracing::warn!(faults = ?self.get(), "fault injection switched on");
        } else {
            tracing::info!("fault injection switched off");
        }
    }

    fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }
}

impl Outages for FaultSwitches {
    fn is_down(&self, port: Port) -> bool {
        // Asked on every port call while a switch is on: read in place, no copy.
        self.is_active()
            && self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .outage
                .iter()
                .any(|d| d.port() == port)
    }
}

/// The admin routes of the switches.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/faults")
            .route(web::get().to(show))
            .route(web::put().to(replace))
            .route(web::delete().to(clear)),
    );
}

async fn show(_admin: Admin, faults: web::Data<FaultSwitches>) -> HttpResponse {
    HttpResponse::Ok().json(faults.get())
}

async fn replace(
    _admin: Admin,
    faults: web::Data<FaultSwitches>,
    settings: web::Json<FaultSettings>,
) -> Result<HttpResponse, Problem> {
    let settings = settings.into_inner();
    settings.validate()?;
    faults.set(settings);
    Ok(HttpResponse::Ok().json(faults.get()))
}

async fn clear(_admin: Admin, faults: web::Data<FaultSwitches>) -> HttpResponse {
    faults.set(FaultSettings::default());
    HttpResponse::NoContent().finish()
}

/// Middleware: the latency and the error rate, for every request but probes, metrics and the
/// switches themselves.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let faults = req
        .app_data::<web::Data<FaultSwitches>>()
        .filter(|faults| faults.is_active())
        .map(|faults| faults.get());
    let exempt = matches!(
        req.path(),
        "/healthz" | "/readyz" | "/metrics" | "/admin/faults"
    );
    if let Some(faults) = faults.filter(|_| !exempt) {
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
            let problem = Problem::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "fault_injected",
                "The service failed on purpose",
            )
            .with_detail("an error injected by the service's fault switches (/admin/faults)");
            return Ok(req.into_response(problem.to_response()));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_off_until_set_and_checked_when_set() {
        let faults = FaultSwitches::default();
        assert!(!faults.is_active());
        assert!(!faults.is_down(Port::Storage));
        faults.set(FaultSettings {
            outage: [Dependency::Cache].into(),
            ..FaultSettings::default()
        });
        assert!(faults.is_down(Port::Cache));
        assert!(!faults.is_down(Port::Storage));
        faults.set(FaultSettings::default());
        assert!(!faults.is_down(Port::Cache));

        let wrong = FaultSettings {
            latency_ms: MAX_LATENCY_MS + 1,
            error_rate: 1.5,
            ..FaultSettings::default()
        };
        let problem = wrong.validate().expect_err("refused");
        assert_eq!(problem.code, "validation_failed");
    }
}
