//! Redis killed in the middle of a run of requests: the services keep answering from storage,
//! say so in their readiness, and cache again by themselves once Redis is back.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_redis::redis;
use emporium::run::Service;
use emporium_order::Faults;
use emporium_tests::{Backend, CARD_OK, TestPlatform, customer, key, order_body};
use serde_json::{Value, json};

/// A redis-server of this test's own, so it can be killed and started again on the same port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut redis = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        redis.run();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new(emporium_adapters::testing::redis_server())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    /// SIGKILL: no goodbye to the clients, and everything cached is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis");
            child.wait().expect("reap redis");
        }
    }

    async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .expect("keys")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the run saw go wrong.
#[derive(Default)]
struct Failures {
    requests: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Failures {
    fn check(
        &self,
        what: &str,
        outcome: Result<reqwest::Response, reqwest::Error>,
    ) -> Option<Value> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failed = match outcome {
            Ok(response) if response.status().is_success() => return Some(Value::Null),
            Ok(response) => format!("{what}: {}", response.status()),
            Err(error) => format!("{what}: {error}"),
        };
        self.errors.lock().expect("lock").push(failed);
        None
    }
}

/// One shopper, over and over until `stop`: product and category reads (cached by the catalog),
/// a cart filled and read back (cached by the cart service), and a checkout.
async fn shopper(
    shop: Arc<TestPlatform>,
    product_id: String,
    stop: Arc<AtomicBool>,
    failures: Arc<Failures>,
) {
    let http = &shop.http;
    let catalog = shop.url(Service::Catalog);
    let carts = shop.url(Service::Cart);
    let orders = shop.url(Service::Order);
    while !stop.load(Ordering::Relaxed) {
        failures.check(
            "product",
            http.get(format!("{catalog}/v1/products/{product_id}"))
                .send()
                .await,
        );
        failures.check(
            "categories",
            http.get(format!("{catalog}/v1/categories")).send().await,
        );
        let cart: Value = match http.post(format!("{carts}/v1/carts")).send().await {
            Ok(response) if response.status().is_success() => response.json().await.expect("cart"),
            other => {
                failures.check("new cart", other);
                continue;
            }
        };
        let cart_id = cart["id"].as_str().expect("cart id").to_owned();
        failures.check(
            "add line",
            http.post(format!("{carts}/v1/carts/{cart_id}/lines"))
                .json(&json!({"product_id": product_id, "quantity": 1}))
                .send()
                .await,
        );
        failures.check(
            "cart",
            http.get(format!("{carts}/v1/carts/{cart_id}")).send().await,
        );
        failures.check(
            "checkout",
            http.post(format!("{orders}/v1/orders"))
                .header(emporium_api::order::CUSTOMER_HEADER, customer())
                .header(emporium_api::order::IDEMPOTENCY_HEADER, key())
                .json(&order_body(&cart_id, CARD_OK))
                .send()
                .await,
        );
    }
}

async fn readiness(shop: &TestPlatform, service: Service) -> Value {
    shop.get_json(&format!("{}/readyz", shop.url(service)))
        .await
}

fn cache_check(report: &Value) -> &Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "cache"))
        .expect("a cache check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_run_costs_no_request_and_caching_comes_back() {
    let mut redis = OwnRedis::start();
    let prefix = emporium_adapters::testing::unique("outage");
    let cache = format!("{}?prefix={prefix}:&timeout_ms=200", redis.url());
    let shop = Arc::new(
        TestPlatform::start_with(Backend::Embedded, &["--cache", &cache], Faults::default()).await,
    );
    let product = shop.product_with_sku("KIT-001").await;
    shop.set_stock("KIT-001", 1_000_000).await;
    assert_eq!(readiness(&shop, Service::Catalog).await["status"], "ready");
    assert!(
        !redis.keys(&format!("{prefix}:*")).await.is_empty(),
        "the catalog caches"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Failures::default());
    let shoppers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(shopper(
                shop.clone(),
                product.id.clone(),
                stop.clone(),
                failures.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_outage = failures.requests.load(Ordering::Relaxed);
    redis.kill();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let during_outage = failures.requests.load(Ordering::Relaxed) - before_outage;
    for service in [Service::Catalog, Service::Cart] {
        let report = readiness(&shop, service).await;
        assert_eq!(report["status"], "degraded", "{service:?}: {report}");
        assert_eq!(cache_check(&report)["up"], false);
        let metrics = shop.metrics(service).await;
        let name = service.name();
        assert!(
            metrics.contains(&format!("emporium_{name}_cache_degraded 1")),
            "{metrics}"
        );
        assert!(!metrics.contains(&format!("emporium_{name}_cache_errors_total 0")));
    }

    redis.run();
    let mut recovered = false;
    for _ in 0..50 {
        let catalog = readiness(&shop, Service::Catalog).await;
        let cart = readiness(&shop, Service::Cart).await;
        if catalog["status"] == "ready" && cart["status"] == "ready" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readiness reports the cache up again");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for shopper in shoppers {
        shopper.await.expect("shopper");
    }
    for service in [Service::Catalog, Service::Cart] {
        let metrics = shop.metrics(service).await;
        let name = service.name();
        assert!(
            metrics.contains(&format!("emporium_{name}_cache_degraded 0")),
            "{metrics}"
        );
    }

    let errors = failures.errors.lock().expect("lock").clone();
    assert!(errors.is_empty(), "requests failed: {errors:?}");
    assert!(
        during_outage > 20,
        "requests kept flowing during the outage: {during_outage}"
    );
    // The restarted Redis started empty; what is in it now was cached after it came back.
    let cached = redis.keys(&format!("{prefix}:*")).await;
    assert!(
        cached.iter().any(|k| k.contains("product")) && cached.iter().any(|k| k.contains("cart")),
        "the catalog and the cart cache again: {cached:?}"
    );
}
