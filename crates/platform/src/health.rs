//! `/healthz` says the process is alive; `/readyz` says whether its dependencies answer.
//!
//! A critical check that fails makes the service unready (503), so a load balancer stops sending
//! it traffic. An optional check (the cache: the store still answers without it) only marks the
//! service degraded, and the failure shows in the details.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use futures::future::{BoxFuture, join_all};
use serde::Serialize;

/// How long one dependency check may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
struct Check {
    name: &'static str,
    critical: bool,
    run: CheckFn,
}

/// The dependency checks of one service.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    Degraded,
    Unready,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: &'static str,
    pub critical: bool,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub status: ReadyStatus,
    pub checks: Vec<CheckReport>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A dependency without which the service cannot answer.
    pub fn critical<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name, true, check)
    }

    /// A dependency the service can do without, more slowly or with less.
    pub fn optional<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(name, false, check)
    }

    fn add<F, Fut>(mut self, name: &'static str, critical: bool, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let run: CheckFn = Arc::new(move || Box::pin(check()));
        self.checks.push(Check {
            name,
            critical,
            run,
        });
        self
    }

    /// Runs every check concurrently, each bounded by a timeout.
    pub async fn report(&self) -> ReadinessReport {
        let runs = self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.run)()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
            };
            CheckReport {
                name: check.name,
                critical: check.critical,
                up: outcome.is_ok(),
                error: outcome.err(),
            }
        });
        let checks = join_all(runs).await;
        let status = if checks.iter().any(|c| c.critical && !c.up) {
            ReadyStatus::Unready
        } else if checks.iter().any(|c| !c.up) {
            ReadyStatus::Degraded
        } else {
            ReadyStatus::Ready
        };
        ReadinessReport { status, checks }
    }
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

pub(crate) async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let report = readiness.report().await;
    let mut response = match report.status {
        ReadyStatus::Unready => HttpResponse::ServiceUnavailable(),
        ReadyStatus::Ready | ReadyStatus::Degraded => HttpResponse::Ok(),
    };
    let mut response = response.json(report);
    response.extensions_mut().insert(crate::server::KeepBody);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn optional_failures_degrade_and_critical_ones_make_unready() {
        let all_up = Readiness::new()
            .critical("storage", || async { Ok(()) })
            .optional("cache", || async { Ok(()) });
        assert_eq!(all_up.report().await.status, ReadyStatus::Ready);

        let cache_down = Readiness::new()
            .critical("storage", || async { Ok(()) })
            .optional("cache", || async { Err("connection refused".into()) });
        let report = cache_down.report().await;
        assert_eq!(report.status, ReadyStatus::Degraded);
        assert_eq!(
            report.checks[1].error.as_deref(),
            Some("connection refused")
        );

        let storage_down = Readiness::new()
            .critical("storage", || async { Err("disk gone".into()) })
            .optional("cache", || async { Ok(()) });
        assert_eq!(storage_down.report().await.status, ReadyStatus::Unready);
    }
}
