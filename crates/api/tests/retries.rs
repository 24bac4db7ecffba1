//! The typed clients against a server that fails on purpose: idempotent calls are retried a
//! bounded number of times, others never; a retry budget stops retries that would pile onto a
//! failing service; a call's deadline holds whatever its retries; a failing or slow dependency
//! opens its circuit, calls then fail fast without reaching it, and go through again once a probe
//! finds it healthy. A call made for a request whose caller announced a deadline ends by it, and
//! tells its own callee how long it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use emporium_api::cart::AddCartLine;
use emporium_api::client::{CartClient, CatalogClient, RetryPolicy};
use emporium_platform::Problem;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{HttpSettings, RunningServer, start};

/// Answers 503 to the first `failures` requests of each route, then succeeds.
fn flaky(failures: usize) -> (RunningServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let settings = HttpSettings {
        workers: Some(1),
        body_limit_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
        ..HttpSettings::loopback()
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
        ..RetryPolicy::default()
    }
}

/// How the switchable server answers: healthy, failing (503 `overloaded`, as a service
/// shedding load does) or slow (500 ms, then healthy).
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const SLOW: u8 = 2;

/// What callers announced they would wait (`X-Request-Timeout-Ms`), in milliseconds.
type Heard = Arc<std::sync::Mutex<Vec<u64>>>;

/// A catalog whose `GET /v1/categories` behaves as `mode` says, counting the requests it gets.
fn switchable() -> (RunningServer, Arc<AtomicU8>, Arc<AtomicUsize>) {
    let (server, mode, calls, _heard) = switchable_hearing();
    (server, mode, calls)
}

/// [`switchable`], also keeping the wait each caller announced.
fn switchable_hearing() -> (RunningServer, Arc<AtomicU8>, Arc<AtomicUsize>, Heard) {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let calls = Arc::new(AtomicUsize::new(0));
    let heard = Heard::default();
    let settings = HttpSettings {
        workers: Some(2),
        body_limit_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
        ..HttpSettings::loopback()
    };
    let (answer_mode, counter, keep) = (mode.clone(), calls.clone(), heard.clone());
    let server = start(
        "switchable",
        &settings,
        Readiness::new(),
        Metrics::new("switchable"),
        move |cfg| {
            let (mode, counter, keep) = (answer_mode.clone(), counter.clone(), keep.clone());
            cfg.route(
                "/v1/categories",
                web::get().to(move |request: actix_web::HttpRequest| {
                    let (mode, counter, keep) = (mode.clone(), counter.clone(), keep.clone());
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let announced = request
                            .headers()
                            .get("x-request-timeout-ms")
                            .and_then(|value| value.to_str().ok()?.parse().ok());
                        if let Some(announced) = announced {
                            keep.lock().expect("lock").push(announced);
                        }
                        match mode.load(Ordering::SeqCst) {
                            FAILING => Problem::overloaded(1).to_response(),
                            SLOW => {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                HttpResponse::Ok().json(serde_json::json!([]))
                            }
                            _ => HttpResponse::Ok().json(serde_json::json!([])),
                        }
                    }
                }),
            );
        },
    )
    .expect("server");
    (server, mode, calls, heard)
}

#[tokio::test]
async fn a_failing_dependency_opens_its_circuit_and_calls_fail_fast_until_a_probe_succeeds() {
    let (server, mode, calls) = switchable();
    let catalog = CatalogClient::new(
        &server.url(),
        reqwest::Client::new(),
        RetryPolicy {
            retries: 0,
            breaker_failures: 3,
            breaker_open: Duration::from_millis(300),
            ..policy()
        },
    );
    assert!(catalog.categories().await.is_ok());
    mode.store(FAILING, Ordering::SeqCst);
    for _ in 0..3 {
        let error = catalog.categories().await.expect_err("failing");
        assert!(error.is_transient() && !error.is_circuit_open(), "{error}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Open: the next calls fail at once, and the service sees none of them.
    let started = Instant::now();
    for _ in 0..20 {
        let error = catalog.categories().await.expect_err("open");
        assert!(error.is_circuit_open(), "{error}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Healed, but the circuit is still open until its time is up; then a probe closes it.
    mode.store(HEALTHY, Ordering::SeqCst);
    assert!(
        catalog
            .categories()
            .await
            .expect_err("still open")
            .is_circuit_open()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(catalog.categories().await.is_ok(), "the probe goes through");
    assert!(
        catalog.categories().await.is_ok(),
        "and the circuit is closed"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // A probe that fails opens it again at once.
    mode.store(FAILING, Ordering::SeqCst);
    for _ in 0..3 {
        let _ = catalog.categories().await;
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let error = catalog.categories().await.expect_err("probe fails");
    assert!(!error.is_circuit_open(), "the probe reached the service");
    assert!(
        catalog
            .categories()
            .await
            .expect_err("open again")
            .is_circuit_open()
    );
}

/// A catalog client that gives each attempt `timeout`.
fn impatient_catalog(
    server: &RunningServer,
    timeout: Duration,
    policy: RetryPolicy,
) -> CatalogClient {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client");
    CatalogClient::new(
        &server.url(),
        http,
        RetryPolicy {
            attempt_timeout: timeout,
            ..policy
        },
    )
}

#[tokio::test]
async fn a_slow_dependency_times_out_trips_the_circuit_and_recovers_when_it_heals() {
    let (server, mode, calls) = switchable();
    mode.store(SLOW, Ordering::SeqCst);
    let catalog = impatient_catalog(
        &server,
        Duration::from_millis(100),
        RetryPolicy {
            retries: 1,
            breaker_failures: 2,
            breaker_open: Duration::from_millis(300),
            ..policy()
        },
    );
    let started = Instant::now();
    let error = catalog.categories().await.expect_err("times out");
    assert!(error.is_transient() && !error.is_circuit_open(), "{error}");
    // Two attempts of 100 ms and a backoff, not the 500 ms the service takes.
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let started = Instant::now();
    assert!(
        catalog
            .categories()
            .await
            .expect_err("open")
            .is_circuit_open()
    );
    assert!(started.elapsed() < Duration::from_millis(20));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    mode.store(HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(catalog.categories().await.is_ok());
}

#[tokio::test]
async fn a_call_keeps_its_deadline_whatever_its_retries() {
    let (server, mode, _calls) = switchable();
    mode.store(SLOW, Ordering::SeqCst);
    let catalog = impatient_catalog(
        &server,
        Duration::from_millis(200),
        RetryPolicy {
            retries: 5,
            breaker_failures: 100,
            deadline: Duration::from_millis(300),
            ..policy()
        },
    );
    let started = Instant::now();
    let error = catalog.categories().await.expect_err("deadline");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(450),
        "{took:?}"
    );
    assert!(format!("{:#}", anyhow::Error::new(error)).contains("deadline"));
}

#[tokio::test]
async fn a_spent_retry_budget_stops_retries_that_would_pile_onto_a_failing_service() {
    let (server, mode, calls) = switchable();
    mode.store(FAILING, Ordering::SeqCst);
    let catalog = CatalogClient::new(
        &server.url(),
        reqwest::Client::new(),
        RetryPolicy {
            retries: 3,
            retry_ratio: 0.0,
            min_retries_per_sec: 0,
            breaker_failures: 100,
            ..policy()
        },
    );
    for _ in 0..5 {
        assert!(catalog.categories().await.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5, "no budget, no retries");

    // With a budget of half the calls, retries stop once it is spent.
    let (server, mode, calls) = switchable();
    mode.store(FAILING, Ordering::SeqCst);
    let catalog = CatalogClient::new(
        &server.url(),
        reqwest::Client::new(),
        RetryPolicy {
            retries: 3,
            retry_ratio: 0.5,
            min_retries_per_sec: 0,
            breaker_failures: 100,
            ..policy()
        },
    );
    for _ in 0..20 {
        assert!(catalog.categories().await.is_err());
    }
    let made = calls.load(Ordering::SeqCst);
    assert!(
        (20..=31).contains(&made),
        "20 calls and about 10 retries, not 80: {made}"
    );
    drop(server);
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
        workers: Some(1),
        body_limit_bytes: 4096,
        shutdown_timeout: Duration::from_secs(1),
        ..HttpSettings::loopback()
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
    assert_eq!(error.code().map(|code| code.as_str()), Some("not_found"));
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_call_ends_by_its_callers_deadline_and_tells_its_callee_how_long_it_waits() {
    let (server, mode, _calls, heard) = switchable_hearing();
    mode.store(SLOW, Ordering::SeqCst);
    let catalog = impatient_catalog(
        &server,
        Duration::from_secs(2),
        RetryPolicy {
            retries: 3,
            breaker_failures: 100,
            ..policy()
        },
    );
    // Alone, the call waits for the slow answer, and says it would wait an attempt's timeout.
    assert!(catalog.categories().await.is_ok());
    assert_eq!(heard.lock().expect("lock").as_slice(), [2000]);

    // Serving a request whose caller waits 200 ms, it gives up by then, retries or not.
    let caller_deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    let started = Instant::now();
    let error = emporium_platform::request_id::scope_until(
        "req-1".into(),
        Some(caller_deadline),
        catalog.categories(),
    )
    .await
    .expect_err("out of time");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(350),
        "{took:?}"
    );
    assert!(error.is_transient(), "{error}");
    let heard = heard.lock().expect("lock").clone();
    let told = heard.last().copied().expect("announced");
    assert!((150..=200).contains(&told), "told the callee {told} ms");
    drop(server);
}

#[tokio::test]
async fn a_call_whose_caller_stopped_waiting_is_not_made_and_counts_against_nothing() {
    let (server, _mode, calls) = switchable();
    let catalog = CatalogClient::new(
        &server.url(),
        reqwest::Client::new(),
        RetryPolicy {
            breaker_failures: 1,
            ..policy()
        },
    );
    let gone = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let error = emporium_platform::request_id::scope_until(
        "req-2".into(),
        Some(gone),
        catalog.categories(),
    )
    .await
    .expect_err("no time left");
    assert!(error.is_deadline_exceeded(), "{error}");
    assert!(!error.is_own_failure());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no request was made");
    // The dependency was never at fault: its circuit is closed, and the next call goes through.
    assert!(catalog.categories().await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
