//! The shared HTTP stack, exercised over real sockets.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use emporium_platform::auth::{Admin, AdminKey};
use emporium_platform::client::{ClientSettings, ServiceClient, build_client};
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::problem::Problem;
use emporium_platform::server::{HttpSettings, RunningServer, start};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Thing {
    name: String,
    count: u32,
}

fn settings() -> HttpSettings {
    HttpSettings {
        workers: Some(2),
        body_limit_bytes: 1024,
        shutdown_timeout: Duration::from_secs(10),
        ..HttpSettings::loopback()
    }
}

fn spawn(readiness: Readiness) -> RunningServer {
    start(
        "test",
        &settings(),
        readiness,
        Metrics::new("test"),
        |cfg| {
            cfg.app_data(web::Data::new(AdminKey::new("letmein")))
                // `web::resource(..).route(..)` (not `cfg.route`) so other methods get 405.
                .service(
                    web::resource("/things").route(
                        web::post()
                            .to(|_: web::Json<Thing>| async { HttpResponse::Created().finish() }),
                    ),
                )
                .route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(Duration::from_millis(800)).await;
                        HttpResponse::Ok().body("done")
                    }),
                )
                .route(
                    "/admin",
                    web::get().to(|_: Admin| async { HttpResponse::Ok().finish() }),
                )
                .route(
                    "/echo-headers",
                    web::get().to(|req: actix_web::HttpRequest| async move {
                        let get = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        HttpResponse::Ok().json(serde_json::json!({
                            "request_id": get("x-request-id"),
                        }))
                    }),
                )
                .route(
                    "/boom",
                    web::get().to(|| async {
                        HttpResponse::InternalServerError().body("db password is hunter2")
                    }),
                );
        },
    )
    .expect("server starts")
}

/// The value of the sample `series` (name and labels, exactly as exposed), 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status_and_are_not_served_through_a_proxy() {
    let server = spawn(Readiness::new());
    let http = reqwest::Client::new();
    let url = server.url();
    let scrape = || async {
        let response = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("application/openmetrics-text")
        );
        response.text().await.expect("text")
    };
    let created =
        r#"emporium_test_http_requests_total{method="POST",route="/things",status="201"}"#;
    let refused =
        r#"emporium_test_http_requests_total{method="POST",route="/things",status="400"}"#;
    let unmatched =
        r#"emporium_test_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    let before = scrape().await;
    for _ in 0..3 {
        http.post(format!("{url}/things"))
            .json(&serde_json::json!({"name": "a", "count": 1}))
            .send()
            .await
            .expect("post");
    }
    http.post(format!("{url}/things"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    http.get(format!("{url}/no/such/{}", "thing"))
        .send()
        .await
        .expect("get");
    let after = scrape().await;
    assert_eq!(
        sample(&after, created) - sample(&before, created),
        3.0,
        "{after}"
    );
    assert_eq!(sample(&after, refused) - sample(&before, refused), 1.0);
    assert_eq!(sample(&after, unmatched) - sample(&before, unmatched), 1.0);
    let timed = r#"emporium_test_http_request_duration_seconds_count{method="POST",route="/things",status="201"}"#;
    assert_eq!(sample(&after, timed), 3.0);
    // Paths never become labels: the unknown path is nowhere in the text.
    assert!(!after.contains("/no/such"));
    assert!(after.contains("emporium_test_http_requests_in_flight"));

    let proxied = http
        .get(format!("{url}/metrics"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("scrape");
    assert_eq!(proxied.status(), 404);
}

async fn problem(response: reqwest::Response) -> Problem {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.expect("problem body")
}

#[tokio::test]
async fn errors_are_problems_with_stable_codes_and_the_request_id() {
    let server = spawn(Readiness::new());
    let http = reqwest::Client::new();
    let url = server.url();

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http.get(format!("{url}/nope")), 404, "not_found"),
        (http.put(format!("{url}/things")), 405, "method_not_allowed"),
        (
            http.post(format!("{url}/things"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            http.post(format!("{url}/things"))
                .json(&serde_json::json!({"name": "a", "count": -1})),
            400,
            "invalid_body",
        ),
        (
            http.post(format!("{url}/things"))
                .json(&serde_json::json!({"name": "a", "count": 1, "extra": true})),
            400,
            "invalid_body",
        ),
        (
            http.post(format!("{url}/things"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            http.post(format!("{url}/things"))
                .header("content-type", "application/json")
                .body(format!("{{\"name\":\"{}\",\"count\":1}}", "x".repeat(4096))),
            413,
            "payload_too_large",
        ),
        (http.get(format!("{url}/boom")), 500, "internal_error"),
        // Refused before any handler, and still with the request's id.
        (
            http.get(format!("{url}/things"))
                .header("x-big", "a".repeat(20 * 1024)),
            431,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "{code}");
        let header_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = problem(response).await;
        assert_eq!(body.code.as_str(), code);
        assert_eq!(body.status, status);
        assert_eq!(body.type_uri, format!("urn:emporium:problem:{code}"));
        assert!(body.request_id.is_some(), "{code} has a request id");
        assert_eq!(body.request_id, header_id, "{code}: body and header agree");
        if status >= 500 {
            assert!(
                !serde_json::to_string(&body)
                    .expect("json")
                    .contains("hunter2"),
                "internal detail must not leak"
            );
        }
    }
    server.stop(true).await.expect("stop");
}

#[tokio::test]
async fn request_ids_from_callers_are_kept_and_forwarded() {
    let server = spawn(Readiness::new());
    let response = reqwest::Client::new()
        .get(format!("{}/nope", server.url()))
        .header("x-request-id", "caller-123")
        .send()
        .await
        .expect("send");
    assert_eq!(
        problem(response).await.request_id.as_deref(),
        Some("caller-123")
    );

    // Inside a request scope, the service client forwards the id.
    let client = ServiceClient::new(
        server.url(),
        build_client(&ClientSettings::default()).expect("client"),
    );
    let echoed: serde_json::Value =
        emporium_platform::request_id::scope("outer-req".into(), async {
            client
                .request(reqwest::Method::GET, "/echo-headers")
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json")
        })
        .await;
    assert_eq!(echoed["request_id"], "outer-req");
    server.stop(true).await.expect("stop");
}

#[tokio::test]
async fn admin_routes_need_the_exact_bearer_key() {
    let server = spawn(Readiness::new());
    let http = reqwest::Client::new();
    let url = format!("{}/admin", server.url());
    let missing = http.get(&url).send().await.expect("send");
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(problem(missing).await.code.as_str(), "unauthorized");
    let wrong = http
        .get(&url)
        .bearer_auth("letmeout")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth("letmein")
        .send()
        .await
        .expect("send");
    assert_eq!(right.status(), 200);
    server.stop(true).await.expect("stop");
}

#[tokio::test]
async fn readiness_reports_each_dependency() {
    let server = spawn(
        Readiness::new()
            .critical("storage", || async { Ok(()) })
            .optional("cache", || async { Err("connection refused".into()) }),
    );
    let http = reqwest::Client::new();
    let alive = http
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(alive.status(), 200);
    let ready = http
        .get(format!("{}/readyz", server.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"][1]["name"], "cache");
    assert_eq!(body["checks"][1]["up"], false);
    server.stop(true).await.expect("stop");

    let unready = spawn(Readiness::new().critical("storage", || async { Err("gone".into()) }));
    let response = http
        .get(format!("{}/readyz", unready.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    unready.stop(true).await.expect("stop");
}

#[tokio::test]
async fn graceful_stop_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let server = spawn(Readiness::new());
    let url = server.url();
    let handle = server.handle();
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{url}/slow"))
                .send()
                .await
                .expect("in-flight request is answered")
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    let stop = tokio::spawn(async move { handle.stop(true).await });
    let response = in_flight.await.expect("join");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "done");
    stop.await.expect("join stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop waited only for the request"
    );
    server.wait().await.expect("server ended cleanly");

    let refused = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "a stopped server accepts nothing");
}

#[tokio::test]
async fn the_client_gives_up_at_its_timeout() {
    let server = spawn(Readiness::new());
    let client = ServiceClient::new(
        server.url(),
        build_client(&ClientSettings {
            timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            gateway_key: None,
        })
        .expect("client"),
    );
    let started = Instant::now();
    let error = client
        .request(reqwest::Method::GET, "/slow")
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() < Duration::from_millis(700));
    server.stop(false).await.expect("stop");
}

#[tokio::test]
async fn beyond_its_in_flight_limit_a_service_sheds_requests_at_once_with_retry_after() {
    let server = start(
        "busy",
        &HttpSettings {
            max_in_flight: 2,
            ..settings()
        },
        Readiness::new(),
        Metrics::new("busy"),
        |cfg| {
            cfg.route(
                "/slow",
                web::get().to(|| async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    HttpResponse::Ok().finish()
                }),
            );
        },
    )
    .expect("server");
    let http = reqwest::Client::new();
    let url = server.url();
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let response = http.get(format!("{url}/slow")).send().await.expect("send");
                let took = started.elapsed();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: serde_json::Value = if status == 503 {
                    response.json().await.expect("problem")
                } else {
                    serde_json::Value::Null
                };
                (status, took, retry_after, body)
            })
        })
        .collect();
    // While two are being served, the probes still answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("probe");
    assert_eq!(health.status(), 200);
    let mut served = 0;
    let mut shed = 0;
    for call in calls {
        let (status, took, retry_after, body) = call.await.expect("task");
        match status {
            200 => served += 1,
            503 => {
                shed += 1;
                assert!(
                    took < Duration::from_millis(300),
                    "shed at once, took {took:?}"
                );
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(body["code"], "overloaded");
                assert_eq!(body["retry_after_secs"], 1);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((served, shed), (2, 4));
    // Once they are done, the service takes requests again.
    let again = http.get(format!("{url}/slow")).send().await.expect("send");
    assert_eq!(again.status(), 200);
}

/// A caller's announced wait becomes the deadline of the request being served, only when the
/// caller shows the gateway key and says a plain number.
#[tokio::test]
async fn a_gateway_callers_announced_timeout_becomes_the_requests_deadline() {
    let server = start(
        "deadlines",
        &HttpSettings {
            gateway_key: Some(emporium_platform::auth::GatewayKey::new("gw-key")),
            ..settings()
        },
        Readiness::new(),
        Metrics::new("deadlines"),
        |cfg| {
            cfg.route(
                "/left",
                web::get().to(|| async {
                    let left = emporium_platform::request_id::deadline().map(|deadline| {
                        deadline
                            .saturating_duration_since(tokio::time::Instant::now())
                            .as_millis() as u64
                    });
                    HttpResponse::Ok().json(left)
                }),
            );
        },
    )
    .expect("server");
    let http = reqwest::Client::new();
    let left = |timeout: &'static str, key: Option<&'static str>| {
        let mut request = http
            .get(format!("{}/left", server.url()))
            .header("x-request-timeout-ms", timeout);
        if let Some(key) = key {
            request = request.header(emporium_platform::auth::GATEWAY_HEADER, key);
        }
        async move {
            let response = request.send().await.expect("send");
            assert_eq!(response.status(), 200);
            response.json::<Option<u64>>().await.expect("json")
        }
    };
    let announced = left("1500", Some("gw-key")).await.expect("a deadline");
    assert!((1000..=1500).contains(&announced), "{announced}");
    assert_eq!(left("1500", None).await, None, "not from a stranger");
    assert_eq!(
        left("1500", Some("wrong")).await,
        None,
        "not with a wrong key"
    );
    assert_eq!(left("soon", Some("gw-key")).await, None, "not a number");
    assert_eq!(left("-5", Some("gw-key")).await, None);
    let capped = left("99999999999999", Some("gw-key"))
        .await
        .expect("a deadline");
    assert!(capped <= 600_000, "at most ten minutes: {capped}");
    server.stop(false).await.expect("stop");
}

/// Opens a connection that sends a request's headers declaring `declared` body bytes, then one
/// byte every `every`, and returns what the server answered (the status line) once it answers or
/// closes, with how long that took.
async fn trickle(
    addr: std::net::SocketAddr,
    declared: usize,
    every: Duration,
) -> (String, Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /things HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("head");
    let sender = tokio::spawn(async move {
        for _ in 0..declared {
            tokio::time::sleep(every).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    // The answer, up to the server closing the connection (or a minute, which fails below).
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    sender.abort();
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default().to_owned();
    assert!(
        !status.contains("408") || text.contains("\"request_id\""),
        "a 408 carries the request id: {text}"
    );
    (status, started.elapsed())
}

#[tokio::test]
async fn bodies_trickling_in_on_more_connections_than_slots_do_not_starve_other_requests() {
    let server = start(
        "trickled",
        &HttpSettings {
            max_in_flight: 4,
            body_timeout: Duration::from_millis(1500),
            ..settings()
        },
        Readiness::new(),
        Metrics::new("trickled"),
        |cfg| {
            cfg.route(
                "/things",
                web::post().to(|thing: web::Json<Thing>| async move {
                    HttpResponse::Ok().json(serde_json::json!({ "name": thing.name }))
                }),
            )
            .route(
                "/things",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            );
        },
    )
    .expect("server");
    let addr = server.addr();
    // Five times as many slow bodies as the service has slots, each declaring 1,000 bytes and
    // sending one every 100 ms: none would finish within the timeout.
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(trickle(addr, 1000, Duration::from_millis(100))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let url = server.url();
    // Meanwhile other clients are served at once, reads and bodies alike.
    for _ in 0..10 {
        let started = Instant::now();
        let read = http.get(format!("{url}/things")).send().await.expect("get");
        assert_eq!(read.status(), 200);
        let written = http
            .post(format!("{url}/things"))
            .json(&serde_json::json!({ "name": "kettle", "count": 1 }))
            .send()
            .await
            .expect("post");
        assert_eq!(written.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "served in {:?}",
            started.elapsed()
        );
    }
    // Each slow client is told 408 and cut off after the body timeout, not left to trickle.
    for call in slow {
        let (status, took) = call.await.expect("task");
        assert_eq!(status, "HTTP/1.1 408 Request Timeout", "after {took:?}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
    }
    server.stop(false).await.expect("stop");
}

/// Sends `request` as it is on a new connection and returns the whole answer.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// `body` as HTTP/1.1 chunks of `size` bytes, with no length declared.
fn chunked(body: &str, size: usize) -> String {
    let mut out = String::new();
    for part in body.as_bytes().chunks(size) {
        out.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            String::from_utf8_lossy(part)
        ));
    }
    out.push_str("0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_body_read_whole_reaches_the_handler_intact_and_an_oversized_one_is_refused() {
    let server = start(
        "bodies",
        &settings(),
        Readiness::new(),
        Metrics::new("bodies"),
        |cfg| {
            cfg.route(
                "/things",
                web::post().to(|thing: web::Json<Thing>| async move {
                    HttpResponse::Ok().json(serde_json::json!({ "name": thing.name }))
                }),
            );
        },
    )
    .expect("server");
    let addr = server.addr();
    let post = |body: String, length: Option<usize>| {
        let framing = match length {
            Some(length) => format!("Content-Length: {length}"),
            None => "Transfer-Encoding: chunked".to_owned(),
        };
        format!(
            "POST /things HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n{body}"
        )
    };
    // Sent in chunks without a length: read whole and parsed as usual.
    let small = r#"{"name":"tea","count":2}"#;
    let answer = raw(addr, &post(chunked(small, 5), None)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"name":"tea"}"#), "{answer}");
    let answer = raw(addr, &post(small.to_owned(), Some(small.len()))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Over the 1,024-byte limit, declared or not: 413 as before.
    let big = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(2000));
    let answer = raw(addr, &post(big.clone(), Some(big.len()))).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = raw(addr, &post(chunked(&big, 300), None)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // A body that ends before its declared length: a client error, not a hang.
    let cut = format!(
        "POST /things HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{small}"
    );
    let answer = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(cut.as_bytes()).await.expect("send");
        stream.shutdown().await.expect("half close");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    server.stop(false).await.expect("stop");
}
