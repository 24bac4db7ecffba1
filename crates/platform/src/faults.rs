//! Fault switches, for practising failure on a running shop (chaos on kind, or on one machine):
//! each service can be told to answer slowly, to fail a fraction of its requests, to find one
//! of its dependencies gone (its store, cache, blob store or bus, or another service it calls),
//! or to find one of its ports slow (every call waiting `slow_ms` first). All are
//! off until an operator turns them on through the service's admin endpoint, `PUT /admin/faults`
//! with the admin key; `DELETE` turns them off.
//!
//! Probes, metrics and the switch itself are never slowed or failed: an injected fault should
//! look like a sick service to its callers, not get the pod restarted or the switch locked out.
//! Outages of ports reach them through the decorators of `emporium_ports::faulty`; outages of
//! services through the service clients, which ask [`FaultSwitches::is_cut_off`] before each
//! attempt, so a lost service fails the way an unreachable one does, retries and circuit breaker
//! included, while every other caller of it still reaches it.

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

/// A dependency a service can be told it has lost: one of its ports, or a service it calls.
/// Services are named as the runner's table of services names them; the platform lists none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    Storage,
    Cache,
    Blobs,
    Events,
    /// Another service, by its name.
    Service(&'static str),
}

impl Dependency {
    const PORTS: [Self; 4] = [Self::Storage, Self::Cache, Self::Blobs, Self::Events];

    /// The service called `name`.
    pub const fn service(name: &'static str) -> Self {
        Self::Service(name)
    }

    /// The name it has in the switches, and the name of the service when it is one.
    pub fn name(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Cache => "cache",
            Self::Blobs => "blobs",
            Self::Events => "events",
            Self::Service(name) => name,
        }
    }

    pub fn of_port(port: Port) -> Self {
        match port {
            Port::Storage => Self::Storage,
            Port::Cache => Self::Cache,
            Port::Blobs => Self::Blobs,
            Port::Events => Self::Events,
        }
    }
}

impl Serialize for Dependency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What an operator asks the switches for, with dependencies by name: which names mean
/// something depends on the services the switches know of, so they are resolved there
/// ([`FaultSwitches::set_checked`]), not while parsing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub outage: Vec<String>,
    #[serde(default)]
    pub slow: Vec<String>,
    #[serde(default)]
    pub slow_ms: u64,
}

impl FaultRequest {
    pub fn is_active(&self) -> bool {
        self.latency_ms > 0
            || self.error_rate > 0.0
            || !self.outage.is_empty()
            || !self.slow.is_empty()
    }
}

/// What a service is told to get wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultSettings {
    /// Added before every request this service serves, in milliseconds.
    pub latency_ms: u64,
    /// Fraction of requests (0 to 1) answered 503 `fault_injected` instead of being served.
    pub error_rate: f64,
    /// Dependencies whose every call fails: ports fail as a lost backend does, services as
    /// an unreachable one does.
    pub outage: BTreeSet<Dependency>,
    /// Ports whose every call waits `slow_ms` first, as a backend that has slowed down.
    pub slow: BTreeSet<Dependency>,
    pub slow_ms: u64,
}

impl FaultSettings {
    pub fn is_active(&self) -> bool {
        self.latency_ms > 0
            || self.error_rate > 0.0
            || !self.outage.is_empty()
            || !self.slow.is_empty()
    }

    /// Checks the values, and that every dependency named is one the service has: an outage of
    /// something it never calls would do nothing, silently.
    fn validate(&self, uses: &BTreeSet<Dependency>) -> Result<(), Problem> {
        let mut errors = Vec::new();
        let unused: Vec<&str> = self
            .outage
            .difference(uses)
            .map(|dependency| dependency.name())
            .collect();
        if !unused.is_empty() {
            let has: Vec<&str> = uses.iter().map(|dependency| dependency.name()).collect();
            errors.push(FieldError::new(
                "outage",
                format!(
                    "this service does not use {}; it uses: {}",
                    unused.join(", "),
                    if has.is_empty() {
                        "nothing that can be switched off".to_owned()
                    } else {
                        has.join(", ")
                    }
                ),
            ));
        }
        let slowed_unused: Vec<&str> = self
            .slow
            .iter()
            .filter(|dependency| !uses.contains(dependency))
            .map(|dependency| dependency.name())
            .collect();
        if !slowed_unused.is_empty() {
            errors.push(FieldError::new(
                "slow",
                format!("this service does not use {}", slowed_unused.join(", ")),
            ));
        }
        if self
            .slow
            .iter()
            .any(|dependency| matches!(dependency, Dependency::Service(_)))
        {
            errors.push(FieldError::new(
                "slow",
                "only ports (storage, cache, blobs, events) can be slowed; slow a service with its own latency_ms",
            ));
        }
        if self.slow.is_empty() != (self.slow_ms == 0) {
            errors.push(FieldError::new(
                "slow_ms",
                "give both slow (the ports) and slow_ms (how long each call waits), or neither",
            ));
        }
        if self.slow_ms > MAX_LATENCY_MS {
            errors.push(FieldError::new(
                "slow_ms",
                format!("at most {MAX_LATENCY_MS}"),
            ));
        }
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
    /// The dependencies the service was wired with, the only ones it can lose.
    uses: Arc<RwLock<BTreeSet<Dependency>>>,
    /// Every service of the platform, so a name of one the service does not call is told
    /// apart from a name of nothing.
    services: Arc<RwLock<BTreeSet<&'static str>>>,
}

impl FaultSwitches {
    /// Records that the service depends on `dependency`, so an outage of it may be switched on.
    pub fn uses(&self, dependency: Dependency) {
        self.uses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dependency);
    }

    /// Records the names of the platform's services.
    pub fn knows(&self, services: impl IntoIterator<Item = &'static str>) {
        self.services
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(services);
    }

    /// The dependency `name` names: a port, or a service known or used.
    fn resolve(&self, name: &str) -> Option<Dependency> {
        let known = self
            .services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(|name| Dependency::Service(name));
        Dependency::PORTS
            .into_iter()
            .chain(self.used())
            .chain(known)
            .find(|dependency| dependency.name() == name)
    }

    /// The dependencies `names` (the request's field `field`) name; a name of nothing is a bad
    /// request saying it is `what`.
    fn resolve_all(
        &self,
        names: &[String],
        field: &str,
        what: &str,
    ) -> Result<BTreeSet<Dependency>, Problem> {
        names
            .iter()
            .map(|name| {
                self.resolve(name)
                    .ok_or_else(|| Problem::invalid_body(format!("{field}: {name:?} is {what}")))
            })
            .collect()
    }

    fn used(&self) -> BTreeSet<Dependency> {
        self.uses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether calls to `dependency` are to fail now.
    pub fn is_cut_off(&self, dependency: Dependency) -> bool {
        // Asked on every call to a dependency: one atomic load while no switch is on, and
        // read in place, not copied, while one is.
        self.is_active()
            && self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .outage
                .contains(&dependency)
    }

    pub fn get(&self) -> FaultSettings {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets what `request` asks for if it makes sense for this service: a name of nothing is a
    /// bad request; a dependency the service does not have, or values out of range, are
    /// refused as invalid (see [`FaultSettings::validate`]).
    pub fn set_checked(&self, request: FaultRequest) -> Result<(), Problem> {
        let outage = self.resolve_all(
            &request.outage,
            "outage",
            "neither a port (storage, cache, blobs, events) nor a service",
        )?;
        let slow = self.resolve_all(
            &request.slow,
            "slow",
            "not a port (storage, cache, blobs, events)",
        )?;
        let settings = FaultSettings {
            latency_ms: request.latency_ms,
            error_rate: request.error_rate,
            outage,
            slow,
            slow_ms: request.slow_ms,
        };
        settings.validate(&self.used())?;
        self.set(settings);
        Ok(())
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
        self.is_cut_off(Dependency::of_port(port))
    }

    fn delay(&self, port: Port) -> Option<Duration> {
        if !self.is_active() {
            return None;
        }
        let settings = self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        settings
            .slow
            .contains(&Dependency::of_port(port))
            .then(|| Duration::from_millis(settings.slow_ms))
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
    settings: web::Json<FaultRequest>,
) -> Result<HttpResponse, Problem> {
    faults.set_checked(settings.into_inner())?;
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
                crate::ProblemCode::FaultInjected,
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
        let problem = wrong.validate(&faults.used()).expect_err("refused");
        assert_eq!(problem.code, crate::ProblemCode::ValidationFailed);
    }

    #[test]
    fn a_slowed_port_waits_and_only_ports_the_service_uses_can_be_slowed() {
        let faults = FaultSwitches::default();
        faults.uses(Dependency::Storage);
        faults.uses(Dependency::service("inventory"));
        faults.knows(["inventory"]);
        let slow = |names: &[&str], slow_ms| FaultRequest {
            slow: names.iter().map(|n| (*n).to_owned()).collect(),
            slow_ms,
            ..FaultRequest::default()
        };
        assert_eq!(faults.delay(Port::Storage), None);
        faults.set_checked(slow(&["storage"], 250)).expect("slowed");
        assert_eq!(
            faults.delay(Port::Storage),
            Some(Duration::from_millis(250))
        );
        assert_eq!(faults.delay(Port::Cache), None);
        assert!(!faults.is_down(Port::Storage), "slow, not down");
        for (wrong, field) in [
            (slow(&["cache"], 250), "does not use cache"),
            (slow(&["inventory"], 250), "only ports"),
            (slow(&["storage"], 0), "or neither"),
            (slow(&[], 250), "or neither"),
            (slow(&["storage"], MAX_LATENCY_MS + 1), "at most"),
        ] {
            let problem = faults.set_checked(wrong).expect_err(field);
            let said = serde_json::to_string(&problem).expect("json");
            assert!(said.contains(field), "{said}");
        }
        // A refused request leaves the switches as they were.
        assert_eq!(
            faults.delay(Port::Storage),
            Some(Duration::from_millis(250))
        );
        faults.set(FaultSettings::default());
        assert_eq!(faults.delay(Port::Storage), None);
    }

    #[test]
    fn only_a_dependency_the_service_uses_can_be_switched_off() {
        let faults = FaultSwitches::default();
        faults.uses(Dependency::Storage);
        faults.uses(Dependency::service("inventory"));
        let lose = |outage: &[Dependency]| FaultSettings {
            outage: outage.iter().copied().collect(),
            ..FaultSettings::default()
        };
        assert!(
            lose(&[Dependency::service("inventory"), Dependency::Storage])
                .validate(&faults.used())
                .is_ok()
        );
        let problem = lose(&[Dependency::Cache, Dependency::service("catalog")])
            .validate(&faults.used())
            .expect_err("refused");
        assert_eq!(problem.code, crate::ProblemCode::ValidationFailed);
        let said = serde_json::to_string(&problem).expect("json");
        assert!(
            said.contains("does not use cache, catalog; it uses: storage, inventory"),
            "{said}"
        );

        faults.set(lose(&[Dependency::service("inventory")]));
        assert!(faults.is_cut_off(Dependency::service("inventory")));
        assert!(!faults.is_cut_off(Dependency::service("catalog")));
        assert!(!faults.is_down(Port::Storage));
    }

    #[test]
    fn names_are_resolved_against_the_ports_and_the_services_known() {
        let faults = FaultSwitches::default();
        faults.uses(Dependency::Storage);
        faults.uses(Dependency::service("inventory"));
        faults.knows(["catalog", "inventory"]);
        let ask = |names: &[&str]| FaultRequest {
            outage: names.iter().map(|n| (*n).to_owned()).collect(),
            ..FaultRequest::default()
        };
        assert!(faults.set_checked(ask(&["inventory", "storage"])).is_ok());
        assert!(faults.is_cut_off(Dependency::service("inventory")));
        // A service it does not call is invalid; a name of nothing is a bad request.
        let unused = faults.set_checked(ask(&["catalog"])).expect_err("unused");
        assert_eq!(unused.status, 422);
        let unknown = faults.set_checked(ask(&["database"])).expect_err("unknown");
        assert_eq!(unknown.status, 400);
        assert!(
            faults.is_cut_off(Dependency::service("inventory")),
            "unchanged"
        );
    }
}
