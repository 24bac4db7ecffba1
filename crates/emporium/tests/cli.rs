//! The real `emporium` binary, as a user runs it.

mod common;

use common::free_port;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Running {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

/// Starts `emporium` with `args`, waits for its banner's last line, and returns what it printed
/// and where the catalog listens. Every service takes a port the OS picks (port 0), so parallel
/// tests never race for one.
fn start(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    start_logging(data_dir, extra, "warn", Stdio::inherit())
}

/// [`start`] with the log filter `log`, the log (stderr) going to `logs`.
fn start_logging(
    data_dir: &std::path::Path,
    extra: &[&str],
    log: &str,
    logs: impl Into<Stdio>,
) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args(["--catalog-port", "0", "--log", log])
        .args([
            "--inventory-port",
            "0",
            "--cart-port",
            "0",
            "--order-port",
            "0",
            "--storefront-port",
            "0",
            "--traces-port",
            "0",
        ])
        .args(extra)
        .env_remove("EMPORIUM_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(logs)
        .spawn()
        .expect("spawn emporium");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                let done = line.starts_with("Stop with Ctrl-C");
                seen.push(line);
                if done {
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("Stop with Ctrl-C")),
        "emporium did not come up: {seen:?}"
    );
    let url = seen
        .iter()
        .filter(|line| line.trim_start().starts_with("catalog"))
        .find_map(|line| line.split_whitespace().find(|w| w.starts_with("http://")))
        .expect("the banner names the catalog's URL")
        .to_owned();
    Running {
        child,
        url,
        stdout: seen,
    }
}

fn terminate(mut running: Running) {
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "emporium exits cleanly on SIGTERM: {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "emporium did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every product, following cursors, from a blocking test.
fn all_products(base: &str) -> Vec<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::new();
    runtime.block_on(common::every_item(|| {
        http.get(format!("{base}/v1/products"))
    }))
}

#[test]
fn up_seeds_the_demo_shop_once_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");

    let first = start(dir.path(), &[]);
    assert!(
        first
            .stdout
            .iter()
            .any(|l| l.starts_with("Loaded the demo shop")),
        "{:?}",
        first.stdout
    );
    assert!(first.stdout.iter().any(|l| l.contains("admin key")));
    for service in ["catalog", "inventory", "cart", "order", "storefront"] {
        assert!(
            first
                .stdout
                .iter()
                .any(|l| l.trim_start().starts_with(service) && l.contains("http://127.0.0.1:")),
            "{service} is listed: {:?}",
            first.stdout
        );
    }
    assert!(
        first.stdout.iter().any(|l| l.contains("stock for 54 SKUs")),
        "{:?}",
        first.stdout
    );
    // The banner says where to open the shop, and the shop is there.
    let shop = first
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("Open the shop:"))
        .map(str::trim)
        .expect("the banner names the shop's URL")
        .to_owned();
    let home = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let response = reqwest::get(&shop).await.expect("the shop answers");
            assert_eq!(response.status(), 200);
            response.text().await.expect("page")
        });
    assert!(home.contains("Shop by category"), "{home}");
    let products = all_products(&first.url);
    assert!(products.len() >= 48, "{} products", products.len());
    let categories: std::collections::BTreeSet<&str> = products
        .iter()
        .filter_map(|p| p["category"].as_str())
        .collect();
    assert!(categories.len() >= 6, "{categories:?}");
    for product in &products {
        let image = product["images"][0]
            .as_str()
            .expect("every product has an image");
        let file = dir.path().join("blobs/objects").join(image);
        assert!(file.exists(), "image {image} is in the blob store");
    }
    terminate(first);

    let second = start(dir.path(), &[]);
    assert!(
        !second
            .stdout
            .iter()
            .any(|l| l.starts_with("Loaded the demo shop")),
        "a second start does not seed again"
    );
    let again = all_products(&second.url);
    assert_eq!(again, products, "the same products, kept");
    terminate(second);
}

#[test]
fn no_seed_starts_an_empty_shop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), &["--no-seed"]);
    assert!(all_products(&running.url).is_empty());
    terminate(running);
}

#[test]
fn help_lists_the_settings_and_bad_settings_fail_clearly() {
    let help = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--help"])
        .output()
        .expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("EMPORIUM_DATA_DIR") && text.contains("--catalog-port"));

    let bad = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--catalog-port", "eighty"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("eighty"));

    let dir = tempfile::tempdir().expect("tempdir");
    let currency = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args([
            "up",
            "--currency",
            "usd",
            "--data-dir",
            &dir.path().display().to_string(),
        ])
        .output()
        .expect("run");
    assert!(!currency.status.success());
    assert!(String::from_utf8_lossy(&currency.stderr).contains("ISO 4217"));

    let config = dir.path().join("emporium.toml");
    std::fs::write(&config, "[catalog]\nprot = 1\n").expect("write");
    let typo = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--config", &config.display().to_string()])
        .output()
        .expect("run");
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("catalog-prot"));
}

#[test]
fn seed_fails_loudly_when_it_cannot_tell_the_cache() {
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args([
            "seed",
            "--data-dir",
            &dir.path().display().to_string(),
            "--cache",
            &format!("redis://127.0.0.1:{closed}"),
            "--log",
            "error",
        ])
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&seed.stderr);
    assert!(!seed.status.success(), "seed succeeded: {said}");
    assert!(said.contains("the cache could not be told"), "{said}");
}

/// A minimal OTLP/HTTP collector: accepts every POST, remembers path, content type and size.
fn collector() -> (String, std::sync::mpsc::Receiver<(String, String, usize)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read the head, then as much body as Content-Length says.
            let (head, mut body) = loop {
                let Ok(read) = stream.read(&mut chunk) else {
                    break (String::new(), Vec::new());
                };
                if read == 0 {
                    break (String::new(), Vec::new());
                }
                buffer.extend_from_slice(&chunk[..read]);
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (
                        String::from_utf8_lossy(&buffer[..end]).into_owned(),
                        buffer[end + 4..].to_vec(),
                    );
                }
            };
            let header = |name: &str| {
                head.lines()
                    .find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.eq_ignore_ascii_case(name)
                            .then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap_or(0);
            while body.len() < length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => body.extend_from_slice(&chunk[..read]),
                }
            }
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let _ = sender.send((path, header("content-type"), body.len()));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, receiver)
}

#[test]
fn serve_exports_traces_over_otlp_and_logs_json_with_request_and_trace_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (collector_url, exported) = collector();
    let child = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args([
            "serve",
            "catalog",
            "--data-dir",
            &dir.path().display().to_string(),
        ])
        .args([
            "--catalog-port",
            &port.to_string(),
            "--log-format",
            "json",
            "--log",
            "info",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn emporium");
    let url = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime.block_on(async {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{url}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        http.get(format!("{url}/v1/products"))
            .header("x-request-id", "otlp-test-1")
            .send()
            .await
            .expect("send")
            .status()
    });
    assert_eq!(
        status, 200,
        "serve answers; no demo data is loaded by serve"
    );

    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "clean exit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["span"]["request_id"] == "otlp-test-1")
        .unwrap_or_else(|| panic!("a JSON log line of the request: {stderr}"));
    assert_eq!(line["message"], "request completed");
    assert_eq!(line["status"], 200);
    let trace_id = line["span"]["trace_id"].as_str().expect("trace id");
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));

    let (path, content_type, size) = exported
        .recv_timeout(Duration::from_secs(10))
        .expect("spans were exported");
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    assert!(size > 0);
}

/// The URL the banner gives for `label` (a service, or "Recent traces:").
fn banner_url(running: &Running, label: &str) -> String {
    running
        .stdout
        .iter()
        .filter(|line| line.trim_start().starts_with(label))
        .find_map(|line| line.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap_or_else(|| panic!("the banner names {label}: {:?}", running.stdout))
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn up_shows_a_checkout_across_the_services_on_its_traces_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path(), &["--gateway-key", "traces-test-gateway-key"]);
    let page = banner_url(&running, "Recent traces:");
    let (cart, order) = (banner_url(&running, "cart"), banner_url(&running, "order"));
    let product = all_products(&running.url)
        .into_iter()
        .next()
        .expect("a demo product");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (order_id, trace) = runtime.block_on(async {
        let http = reqwest::Client::new();
        let created: Value = http
            .post(format!("{cart}/v1/carts"))
            .header("x-emporium-gateway", "traces-test-gateway-key")
            .send()
            .await
            .expect("cart")
            .json()
            .await
            .expect("json");
        let cart_id = created["id"].as_str().expect("cart id").to_owned();
        let added = http
            .post(format!("{cart}/v1/carts/{cart_id}/lines"))
            .header("x-emporium-gateway", "traces-test-gateway-key")
            .json(&serde_json::json!({"product_id": product["id"], "quantity": 1}))
            .send()
            .await
            .expect("add");
        assert_eq!(added.status(), 200);
        let placed = http
            .post(format!("{order}/v1/orders"))
            .header("x-emporium-gateway", "traces-test-gateway-key")
            .header("x-customer-id", "0000000000000000000000cafe")
            .header("idempotency-key", "traces-page-checkout")
            .json(&serde_json::json!({
                "cart_id": cart_id,
                "customer": {"name": "Grace Hopper", "email": "grace@example.com",
                    "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
                "payment": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
            }))
            .send()
            .await
            .expect("checkout");
        assert_eq!(placed.status(), 201);
        let order_id = placed.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("order id")
            .to_owned();
        // Spans reach the page in batches, half a second apart.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let traces: Value = http
                .get(format!("{page}/api/traces"))
                .send()
                .await
                .expect("traces")
                .json()
                .await
                .expect("json");
            let found = traces.as_array().into_iter().flatten().find(|t| {
                t["name"] == "POST /v1/orders"
                    && ["order", "cart", "catalog", "inventory"].iter().all(|s| {
                        t["services"]
                            .as_array()
                            .is_some_and(|services| services.iter().any(|x| x == s))
                    })
            });
            if let Some(found) = found {
                return (order_id, found.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no checkout trace across the services: {traces}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(trace["failed"], false);
    let trace_id = trace["trace_id"].as_str().expect("trace id");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        // The inventory's and the cart's handling of the order's confirmation join the trace a
        // moment after the checkout's answer.
        let consumed = |detail: &Value| {
            detail["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["name"] == "consume emporium.order.confirmed.v1")
                .count()
        };
        let mut detail = Value::Null;
        for _ in 0..100 {
            detail = http
                .get(format!("{page}/api/traces/{trace_id}"))
                .send()
                .await
                .expect("trace")
                .json()
                .await
                .expect("json");
            if consumed(&detail) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(consumed(&detail), 2, "the consumers' spans: {detail}");
        let spans = detail["spans"].as_array().expect("spans");
        let mut consumers: Vec<&str> = spans
            .iter()
            .filter(|s| s["kind"] == "consumer")
            .filter_map(|s| s["service"].as_str())
            .collect();
        consumers.sort_unstable();
        assert_eq!(consumers, ["cart", "inventory"]);
        let reserve = spans
            .iter()
            .find(|s| s["name"] == "saga Reserve")
            .unwrap_or_else(|| panic!("the saga's steps: {detail}"));
        assert_eq!(reserve["service"], "order");
        assert_eq!(reserve["attributes"]["order.id"], order_id.as_str());
        let reservation = spans
            .iter()
            .find(|s| s["name"] == "POST /v1/reservations")
            .expect("the reservation");
        assert_eq!(reservation["service"], "inventory");
        assert_eq!(reservation["parent_id"], reserve["span_id"]);
        // The pages: the list links the trace, the trace shows its spans by service.
        let list = http
            .get(format!("{page}/"))
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("html");
        assert!(
            list.contains(&format!("href=\"/traces/{trace_id}\"")),
            "{list}"
        );
        let one = http
            .get(format!("{page}/traces/{trace_id}"))
            .send()
            .await
            .expect("page");
        assert_eq!(one.status(), 200);
        let html = one.text().await.expect("html");
        for text in [
            "saga Reserve",
            "POST /v1/reservations",
            "inventory",
            &order_id,
            "consume emporium.order.confirmed.v1",
            "2 handled asynchronously, from events",
        ] {
            assert!(html.contains(text), "{text} is not on the page");
        }
        let missing = http
            .get(format!("{page}/api/traces/{}", "0".repeat(32)))
            .send()
            .await
            .expect("missing");
        assert_eq!(missing.status(), 404);
        assert_eq!(
            missing.json::<Value>().await.expect("json")["code"],
            "trace_not_found"
        );
    });
    terminate(running);

    // Asked for none, there is none.
    let quiet = start(dir.path(), &["--no-traces-page"]);
    assert!(
        !quiet.stdout.iter().any(|l| l.contains("Recent traces")),
        "{:?}",
        quiet.stdout
    );
    terminate(quiet);
}

/// What a shopper's checkout makes that grants access (the cart id, the idempotency key, the
/// session cookie and the CSRF token in it) appears nowhere an operator or a log reader looks:
/// not in the log (written to a file, so without terminal colours either), not in the traces
/// page or its JSON, also when a call to the cart service fails and is logged.
#[test]
fn up_keeps_bearer_ids_out_of_its_log_and_traces_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("emporium.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let data = dir.path().join("data");
    let running = start_logging(
        &data,
        &[
            "--admin-key",
            "secrets-test-admin-key",
            "--http-timeout-ms",
            "700",
        ],
        "info",
        log,
    );
    let page = banner_url(&running, "Recent traces:");
    let (shop, cart_service) = (
        banner_url(&running, "storefront"),
        banner_url(&running, "cart"),
    );
    let product = all_products(&running.url)
        .into_iter()
        .next()
        .expect("a demo product");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (secrets, pages) = runtime.block_on(async {
        let http = reqwest::Client::new();
        let added = http
            .post(format!("{shop}/api/v1/cart/lines"))
            .json(&serde_json::json!({"product_id": product["id"], "quantity": 1}))
            .send()
            .await
            .expect("add");
        assert_eq!(added.status(), 200);
        let cookie = added
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        // The signed value is the signature (44 characters of base64), then the session.
        let value = cookie.trim_start_matches("emporium_session=");
        let session: Vec<&str> = value[44..].split('.').collect();
        let (cart_id, csrf) = (session[1].to_owned(), session[2].to_owned());
        assert_eq!(cart_id.len(), 26, "{value}");
        let idempotency = format!("idem-{}", "7".repeat(30));
        let placed = http
            .post(format!("{shop}/api/v1/checkout"))
            .header("cookie", &cookie)
            .header("idempotency-key", &idempotency)
            .json(&serde_json::json!({
                "customer": {"name": "Grace Hopper", "email": "grace@example.com",
                    "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
                "payment": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
            }))
            .send()
            .await
            .expect("checkout");
        assert_eq!(placed.status(), 201);
        // A cart service too slow to answer: the storefront logs the failed call.
        let slowed = http
            .put(format!("{cart_service}/admin/faults"))
            .bearer_auth("secrets-test-admin-key")
            .json(&serde_json::json!({"latency_ms": 1500}))
            .send()
            .await
            .expect("faults");
        assert!(slowed.status().is_success());
        let failed = http
            .get(format!("{shop}/cart"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("cart page");
        assert_eq!(failed.status(), 503);
        // Spans reach the page in batches, half a second apart.
        let mut pages = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = http.get(format!("{page}/")).send().await.expect("list");
            for header in [
                "content-security-policy",
                "x-frame-options",
                "x-content-type-options",
            ] {
                assert!(list.headers().contains_key(header), "{header}");
            }
            let traces: Value = http
                .get(format!("{page}/api/traces"))
                .send()
                .await
                .expect("traces")
                .json()
                .await
                .expect("json");
            let ids: Vec<String> = traces
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["trace_id"].as_str().map(str::to_owned))
                .collect();
            let has_checkout = traces
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["name"] == "POST /api/v1/checkout");
            if has_checkout {
                pages.push(list.text().await.expect("html"));
                pages.push(traces.to_string());
                for id in ids {
                    for path in [format!("/traces/{id}"), format!("/api/traces/{id}")] {
                        let text = http
                            .get(format!("{page}{path}"))
                            .send()
                            .await
                            .expect("trace")
                            .text()
                            .await
                            .expect("text");
                        pages.push(text);
                    }
                }
                break;
            }
            assert!(Instant::now() < deadline, "no checkout trace: {traces}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (vec![cart_id, csrf, idempotency, value.to_owned()], pages)
    });
    terminate(running);
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains("request completed") && text.contains("service unavailable"),
        "the log has the requests and the failed call:\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "no terminal colours in a file");
    let seen = pages.join("\n");
    assert!(seen.contains("POST /api/v1/checkout"), "{seen}");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret} is in the log:\n{text}"
        );
        assert!(
            !seen.contains(secret.as_str()),
            "{secret} is on the traces page"
        );
    }
}

/// Keys given to the binary, by flag or environment, appear in no `--help`, no banner and no
/// line of a start-up log at debug level.
#[test]
fn keys_given_to_the_binary_appear_in_no_help_banner_or_log() {
    let keys = [
        "admin-9f8e7d6c5b4a39281706",
        "gateway-1a2b3c4d5e6f7a8b9c0d",
        "session-0123456789abcdef0123456789abcdef",
    ];
    for sub in ["up", "serve"] {
        let output = Command::new(env!("CARGO_BIN_EXE_emporium"))
            .args([sub, "--help"])
            .env("EMPORIUM_ADMIN_KEY", keys[0])
            .env("EMPORIUM_GATEWAY_KEY", keys[1])
            .env("EMPORIUM_SESSION_KEY", keys[2])
            .output()
            .expect("help");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("EMPORIUM_ADMIN_KEY"), "{help}");
        for key in keys {
            assert!(!help.contains(key), "{key} in {sub} --help");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("emporium.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let running = start_logging(
        &dir.path().join("data"),
        &[
            "--admin-key",
            keys[0],
            "--gateway-key",
            keys[1],
            "--session-key",
            keys[2],
        ],
        "debug",
        log,
    );
    let banner = running.stdout.join("\n");
    terminate(running);
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(text.lines().count() > 10, "a log was written:\n{text}");
    for key in keys {
        assert!(!banner.contains(key), "{key} in the banner:\n{banner}");
        assert!(!text.contains(key), "{key} in the log:\n{text}");
    }
}

/// LocalStack's ready hook, as the compose file mounts it.
const LOCALSTACK_HOOK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../localstack/init/ready.d/10-emporium-init.sh"
);

/// Runs `program` with `args` and `env`, returning its stdout; panics with its output on failure.
fn run_ok(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(program)
        .args(args)
        .env_remove("EMPORIUM_STORAGE")
        .env_remove("EMPORIUM_BLOBS")
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `init` started before its storage waits for it (as a deployment's setup job does for a
/// LocalStack still starting) and then creates everything. The stand-in starts only once `init`
/// has said it is waiting: a fixed head start would race the SDK's own retries, which on a busy
/// machine can outlast it and hide the wait.
#[test]
fn init_waits_for_a_storage_that_is_not_up_yet() {
    use std::io::BufRead as _;
    emporium_adapters::testing::aws_stand_in();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let name = emporium_adapters::testing::unique("late");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut init = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args([
            "init",
            "--wait-secs",
            "60",
            "--storage",
            &format!("dynamodb://{name}?endpoint={endpoint}"),
            "--blobs",
            &format!("s3://{name}?endpoint={endpoint}"),
            "--log",
            "warn",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("init starts");
    let stderr = init.stderr.take().expect("piped stderr");
    let (lines, said) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // The receiver is gone once the wait was seen; the rest is only kept.
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match said.recv_timeout(left) {
            Ok(line) if line.contains("waiting for") => break,
            Ok(_) => {}
            Err(_) => panic!("init never said it was waiting for its storage"),
        }
    }
    let _moto = emporium_adapters::testing::MotoServer::start_on(port);
    let output = init.wait_with_output().expect("init ends");
    let stderr = reader.join().expect("stderr read");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Blob store ready"), "{stdout}");
}

/// LocalStack's ready hook creates the tables and bucket by running `emporium init` (here
/// against moto, which speaks the same APIs on one port); then `emporium seed` loads the demo
/// shop. Both run twice, as a restarted LocalStack or a re-run job would.
#[test]
fn the_localstack_hook_inits_and_seed_loads_the_demo_once() {
    let endpoint = emporium_adapters::testing::aws_stand_in();
    let name = emporium_adapters::testing::unique("hook");
    let storage = format!("dynamodb://{name}");
    let blobs = format!("s3://{name}");
    let binary = env!("CARGO_BIN_EXE_emporium");
    let hook_env = [
        ("EMPORIUM_BIN", binary),
        ("EMPORIUM_INIT_ENDPOINT", endpoint.as_str()),
        ("EMPORIUM_STORAGE", storage.as_str()),
        ("EMPORIUM_BLOBS", blobs.as_str()),
    ];
    for _ in 0..2 {
        let out = run_ok(LOCALSTACK_HOOK, &[], &hook_env);
        for table in ["catalog", "inventory", "carts", "orders"] {
            assert!(out.contains(table), "init names the {table} tables: {out}");
        }
        assert!(
            out.contains(&format!("Blob store ready at {blobs}")),
            "{out}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let seed = |expected: &str| {
        let out = run_ok(
            binary,
            &[
                "seed",
                "--storage",
                &storage,
                "--blobs",
                &blobs,
                "--data-dir",
                &data_dir,
            ],
            &[],
        );
        assert!(out.contains(expected), "expected {expected:?} in {out:?}");
    };
    seed("Demo shop seeded: 6 categories, 54 products and stock for 54 SKUs added");
    seed("Demo shop seeded: 0 categories, 0 products and stock for 0 SKUs added");
}

/// The hook fails clearly when no binary is mounted, which LocalStack reports as an ERROR state
/// (and the compose health check then never turns healthy).
#[test]
fn the_localstack_hook_fails_clearly_without_the_binary() {
    let output = Command::new(LOCALSTACK_HOOK)
        .env("EMPORIUM_BIN", "/nonexistent/emporium")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no emporium binary"));
}
