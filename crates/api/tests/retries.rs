//! The typed clients against a server that fails on purpose: idempotent calls are retried a
//! bounded number of times, others never.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use emporium_api::cart::AddCartLine;
use emporium_api::client::{CartClient, CatalogClient, RetryPolicy};
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{HttpSettings, RunningServer, start};

/// Answers 503 to the first `failures` requests of each route, then succeeds.
fn flaky(failures: usize) -> (RunningServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let settings = HttpSettings {
        host: "127.0.0.1".into(),
        port: 0,
        workers: Some(1),
        body_limit_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
    };
    let server = start(
        "flaky",
        &settings,
        Readiness::new(),
        Metrics::new("flaky"),
        move |cfg| {
            let counter = counter.clone();
            let answer = move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < failures {
                        HttpResponse::ServiceUnavailable().finish()
                    } else {
                        HttpResponse::Ok().json(serde_json::json!({"unexpected": "shape"}))
                    }
                }
            };
            cfg.route("/v1/products/{id}", web::get().to(answer.clone()))
                .route("/v1/carts/{id}/lines", web::post().to(answer));
        },
    )
    .expect("server");
    (server, calls)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(40),
    }
}

#[tokio::test]
async fn idempotent_calls_are_retried_with_backoff_up_to_the_bound() {
    let (server, calls) = flaky(2);
    let catalog = CatalogClient::new(&server.url(), reqwest::Client::new(), policy());
    let started = Instant::now();
    let outcome = catalog.product("abc").await;
    // The third attempt gets an answer (of the wrong shape, which is reported, not retried).
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(outcome.is_err());
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "two backoffs happened"
    );

    let (server, calls) = flaky(usize::MAX);
    let catalog = CatalogClient::new(&server.url(), reqwest::Client::new(), policy());
    let error = catalog.product("abc").await.expect_err("always failing");
    assert!(error.is_transient());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one attempt and two retries, no more"
    );
}

#[tokio::test]
async fn calls_that_are_not_idempotent_are_never_retried() {
    let (server, calls) = flaky(usize::MAX);
    let carts = CartClient::new(&server.url(), reqwest::Client::new(), policy());
    let line = AddCartLine {
        product_id: "p".into(),
        quantity: 1,
    };
    let error = carts.add_line("c", &line).await.expect_err("fails");
    assert!(error.is_transient());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "adding to a cart twice would add twice"
    );
}

#[tokio::test]
async fn client_errors_are_problems_and_are_not_retried() {
    let settings = HttpSettings {
        host: "127.0.0.1".into(),
        port: 0,
        workers: Some(1),
        body_limit_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
    };
    let server = start(
        "empty",
        &settings,
        Readiness::new(),
        Metrics::new("empty"),
        |_| {},
    )
    .expect("server");
    let catalog = CatalogClient::new(&server.url(), reqwest::Client::new(), policy());
    let error = catalog.product("missing").await.expect_err("404");
    assert!(error.is_not_found());
    assert_eq!(error.code(), Some("not_found"));
    assert!(!error.is_transient());
}
