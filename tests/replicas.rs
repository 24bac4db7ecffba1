//! Every service as separate `emporium serve` processes on the AWS adapters (moto for DynamoDB,
//! S3, SNS and SQS; redis-server), as pods run them, with HAProxy in front of each service
//! spreading connections over its replicas as a Kubernetes Service or an NLB does (TCP, round
//! robin, a replica that stops answering taken out by its health check). The services reach
//! each other only through HAProxy.
//!
//! Three stories: a producer killed (SIGKILL) after its state write and before the publish, whose
//! event is delivered after the restart; consumers killed while handling an event, which is
//! redelivered after their restart and applied once; and three replicas of every service under a steady
//! stream of checkouts while one replica of each is killed and restarted in turn, after which no
//! confirmed order is lost, no event is lost, the stock adds up, and every confirmed order's
//! reservation is sold and its cart cleared exactly once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use emporium::run::Service;
use emporium_adapters::testing::{MotoServer, aws_stand_in, redis_url, unique};
use emporium_tests::{CARD_OK, Shopper, emporium_binary, free_port, key};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "replicas-test-admin-key";
const GATEWAY_KEY: &str = "replicas-test-gateway-key";
/// The storefront's session key, the same on every replica (as the deployment's secret is).
const SESSION_KEY: &str = "replicas-test-session-key-of-32-bytes-or-more";

/// One `emporium serve` process.
struct Replica {
    service: Service,
    port: u16,
    child: Option<Child>,
}

/// The shop as separate processes behind HAProxy.
struct Cluster {
    dir: tempfile::TempDir,
    _moto: MotoServer,
    /// The adapters' settings every process and the in-process setup share.
    flags: Vec<String>,
    /// Where HAProxy listens for each service.
    fronts: BTreeMap<Service, u16>,
    replicas: Vec<Replica>,
    haproxy: Child,
    http: reqwest::Client,
    /// The bus, as an operator's tool opens it.
    events: Arc<dyn emporium_ports::events::Events>,
}

impl Cluster {
    /// Initialises and seeds fresh backends, then starts `replicas` processes of every service
    /// and HAProxy, and waits until each service answers ready through HAProxy.
    async fn start(replicas: usize) -> Self {
        aws_stand_in();
        let moto = MotoServer::start();
        let name = unique("replicas");
        let flags: Vec<String> = vec![
            "--storage".into(),
            format!("dynamodb://{name}?endpoint={}", moto.endpoint),
            "--blobs".into(),
            format!("s3://{name}/assets?endpoint={}", moto.endpoint),
            "--cache".into(),
            format!("{}?prefix={name}:", redis_url()),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let settings = emporium_tests::settings(dir.path(), &flag_refs);
        emporium::setup::init(&settings).await.expect("init");
        emporium::setup::seed(&settings, &emporium::demo::quiet)
            .await
            .expect("seed");

        let fronts: BTreeMap<Service, u16> =
            Service::ALL.iter().map(|&s| (s, free_port())).collect();
        let mut cluster_replicas = Vec::new();
        for &service in Service::ALL {
            for _ in 0..replicas {
                cluster_replicas.push(Replica {
                    service,
                    port: free_port(),
                    child: None,
                });
            }
        }
        let haproxy = start_haproxy(dir.path(), &fronts, &cluster_replicas);
        let events = emporium_adapters::connect::events(
            &settings.common.events_uri(),
            &Service::all_groups(),
        )
        .await
        .expect("the bus");
        let mut cluster = Self {
            dir,
            _moto: moto,
            flags,
            fronts,
            replicas: cluster_replicas,
            haproxy,
            http: emporium_tests::gateway_client(Some(GATEWAY_KEY)),
            events,
        };
        for at in 0..cluster.replicas.len() {
            cluster.spawn(at);
        }
        for at in 0..cluster.replicas.len() {
            cluster.await_ready(at).await;
        }
        for &service in Service::ALL {
            let url = cluster.url(service);
            wait_until(Duration::from_secs(30), &format!("{url} ready"), || async {
                ready(&cluster.http, &url).await
            })
            .await;
        }
        cluster
    }

    /// Where the shop's services reach `service`: HAProxy.
    fn url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.fronts[&service])
    }

    fn replica_url(&self, at: usize) -> String {
        format!("http://127.0.0.1:{}", self.replicas[at].port)
    }

    /// Indexes of `service`'s replicas.
    fn of(&self, service: Service) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|&at| self.replicas[at].service == service)
            .collect()
    }

    /// Starts replica `at` as its own process.
    fn spawn(&mut self, at: usize) {
        let Replica { service, port, .. } = self.replicas[at];
        let name = service.name();
        let mut args: Vec<String> = vec![
            "serve".into(),
            name.into(),
            "--host".into(),
            "127.0.0.1".into(),
            format!("--{name}-port"),
            port.to_string(),
            "--admin-key".into(),
            ADMIN_KEY.into(),
            "--gateway-key".into(),
            GATEWAY_KEY.into(),
            "--workers".into(),
            "2".into(),
            "--log".into(),
            "warn".into(),
            // moto answers one call at a time: a checkout's calls queue there.
            "--http-timeout-ms".into(),
            "20000".into(),
            "--order-reconcile-grace-secs".into(),
            "5".into(),
            "--order-reconcile-interval-secs".into(),
            "1".into(),
        ];
        args.extend(self.flags.iter().cloned());
        if service == Service::Storefront {
            args.extend(["--session-key".into(), SESSION_KEY.into()]);
        }
        for callee in service.calls() {
            args.push(format!("--{}-url", callee.name()));
            args.push(self.url(*callee));
        }
        // Appended to: a restarted replica's log follows the one it replaces.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}-{port}.log")))
            .expect("a log file");
        let child = Command::new(emporium_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("emporium serve starts");
        self.replicas[at].child = Some(child);
    }

    /// Kills replica `at` with SIGKILL: no shutdown, no flush, whatever it was doing cut short.
    fn kill(&mut self, at: usize) {
        if let Some(mut child) = self.replicas[at].child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// Stops replica `at` as Kubernetes stops a pod (SIGTERM) and waits for it to exit.
    async fn terminate(&mut self, at: usize) {
        let Some(mut child) = self.replicas[at].child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("waited") {
                assert!(status.success(), "a graceful stop exits cleanly: {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {at} did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn await_ready(&self, at: usize) {
        let url = self.replica_url(at);
        wait_until(Duration::from_secs(60), &format!("{url} ready"), || async {
            ready(&self.http, &url).await
        })
        .await;
    }

    /// A metric's value summed over `service`'s replicas.
    async fn metric(&self, service: Service, series: &str) -> f64 {
        let mut sum = 0.0;
        for at in self.of(service) {
            let text = self
                .http
                .get(format!("{}/metrics", self.replica_url(at)))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text");
            sum += text
                .lines()
                .find_map(|line| {
                    let (name, value) = line.rsplit_once(' ')?;
                    (name == series)
                        .then(|| value.parse::<f64>().ok())
                        .flatten()
                })
                .unwrap_or(0.0);
        }
        sum
    }

    async fn admin(&self, method: Method, url: String, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.request(method, url).bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("send")
    }

    /// What `url` answers, as JSON. A connection the load balancer had tied to a replica that
    /// has stopped since fails without an answer; the request is sent again, as a client does.
    async fn read(&self, url: String) -> Value {
        let mut tries = 0;
        loop {
            match self.http.get(&url).send().await {
                Ok(response) => return response.json().await.expect("JSON"),
                Err(error) if tries < 5 => {
                    tries += 1;
                    eprintln!("{url}: {error}; again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("{url}: {error}"),
            }
        }
    }

    async fn stock(&self, sku: &str) -> Value {
        self.read(format!("{}/v1/stock/{sku}", self.url(Service::Inventory)))
            .await
    }

    /// A cart as the cart service holds it.
    async fn cart(&self, id: &str) -> Value {
        self.read(format!("{}/v1/carts/{id}", self.url(Service::Cart)))
            .await
    }

    async fn reservation(&self, id: &str) -> Value {
        self.read(format!(
            "{}/v1/reservations/{id}",
            self.url(Service::Inventory)
        ))
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for at in 0..self.replicas.len() {
            self.kill(at);
        }
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}

/// HAProxy in TCP mode: a frontend per service, round robin over its replicas, each checked
/// every 250 ms by connecting; a connection that cannot be made is tried on another replica.
fn start_haproxy(
    dir: &std::path::Path,
    fronts: &BTreeMap<Service, u16>,
    replicas: &[Replica],
) -> Child {
    let mut config = String::from(
        "global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n",
    );
    for (service, front) in fronts {
        let name = service.name();
        config.push_str(&format!(
            "\nfrontend {name}\n  bind 127.0.0.1:{front}\n  default_backend {name}\n\nbackend {name}\n  balance roundrobin\n  default-server check inter 250ms fall 1 rise 1\n"
        ));
        for replica in replicas.iter().filter(|r| r.service == *service) {
            config.push_str(&format!(
                "  server {name}-{port} 127.0.0.1:{port}\n",
                port = replica.port
            ));
        }
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("haproxy.cfg");
    let program = std::env::var("EMPORIUM_TEST_HAPROXY").unwrap_or_else(|_| "haproxy".into());
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
    Command::new(&program)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}): run the tests with scripts/test.sh, which installs HAProxy")
        })
}

async fn ready(http: &reqwest::Client, url: &str) -> bool {
    matches!(
        http.get(format!("{url}/readyz")).send().await,
        Ok(response) if response.status() == 200
    )
}

/// Polls `check` until it holds, or fails the test saying `what` did not happen.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(within, what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// What `check` finds, asking until it finds something, for up to `within`.
async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn checkout_body() -> Value {
    json!({
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com",
            "address": {"line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    })
}

/// The storefront's products, through its public API.
async fn products(storefront: &str) -> Vec<Value> {
    let mut shopper = Shopper::new(storefront.to_owned());
    let page = shopper
        .api(Method::GET, "/products?limit=50", None, &[])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.json()["items"].as_array().cloned().unwrap_or_default()
}

/// A confirmed order's id and its units per SKU.
type Confirmed = (String, Vec<(String, i64)>);

/// The shopper's confirmed orders, as the shop lists them.
async fn confirmed(shopper: &mut Shopper) -> Vec<Confirmed> {
    shopper
        .orders()
        .await
        .iter()
        .filter(|order| order["status"] == "confirmed")
        .map(|order| {
            let lines = order["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|line| {
                    (
                        line["sku"].as_str().unwrap_or_default().to_owned(),
                        line["quantity"].as_i64().unwrap_or_default(),
                    )
                })
                .collect();
            (order["id"].as_str().unwrap_or_default().to_owned(), lines)
        })
        .collect()
}

/// A checkout of one unit of `product`, confirmed while the order service's events are
/// switched off, so its `order.confirmed` waits in the order's outbox.
struct HeldCheckout {
    sku: String,
    /// The product's stock before the checkout.
    before: Value,
    cart_id: String,
    order_id: String,
}

async fn checkout_with_its_event_held(cluster: &Cluster, product: &Value) -> HeldCheckout {
    let order = cluster.of(Service::Order)[0];
    let switched = cluster
        .admin(
            Method::PUT,
            format!("{}/admin/faults", cluster.replica_url(order)),
            Some(json!({"outage": ["events"]})),
        )
        .await;
    assert!(switched.status().is_success(), "{}", switched.status());
    let sku = product["sku"].as_str().expect("sku").to_owned();
    let before = cluster.stock(&sku).await;
    let mut shopper = Shopper::new(cluster.url(Service::Storefront));
    let added = shopper
        .api(
            Method::POST,
            "/cart/lines",
            Some(&json!({"product_id": product["id"], "quantity": 1})),
            &[],
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let cart_id = added.json()["id"].as_str().expect("cart id").to_owned();
    let placed = shopper
        .api(
            Method::POST,
            "/checkout",
            Some(&checkout_body()),
            &[("idempotency-key", &key())],
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let confirmed = placed.json();
    assert_eq!(confirmed["status"], "confirmed");
    HeldCheckout {
        sku,
        before,
        cart_id,
        order_id: confirmed["id"].as_str().expect("id").to_owned(),
    }
}

/// The producer (the order service) confirms an order but cannot publish (its events switched
/// off), and is killed with SIGKILL: the event waits in its outbox, and the restarted process's
/// relay publishes it, so the stock is sold and the cart cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_recorded_by_a_producer_killed_before_publishing_is_delivered_after_its_restart() {
    let mut cluster = Cluster::start(1).await;
    let order_replica = cluster.of(Service::Order)[0];
    let product = products(&cluster.url(Service::Storefront)).await.remove(0);
    let HeldCheckout {
        sku,
        before,
        cart_id,
        order_id,
    } = checkout_with_its_event_held(&cluster, &product).await;

    // Recorded, not published: the relay's backlog holds it, the stock is only held.
    wait_until(
        Duration::from_secs(10),
        "the outbox holds the event",
        || async {
            cluster
                .metric(Service::Order, "emporium_order_outbox_backlog")
                .await
                >= 1.0
        },
    )
    .await;
    let held = cluster.stock(&sku).await;
    assert_eq!(
        held["reserved"],
        before["reserved"].as_i64().unwrap_or(0) + 1
    );
    assert_eq!(held["sold"], before["sold"]);

    cluster.kill(order_replica);
    cluster.spawn(order_replica);
    cluster.await_ready(order_replica).await;

    // The restarted relay's sweeper publishes it (after 5 s recorded); the consumers apply it.
    wait_until(Duration::from_secs(30), "the stock sold", || async {
        cluster.stock(&sku).await["sold"].as_i64() == before["sold"].as_i64().map(|s| s + 1)
    })
    .await;
    let after = cluster.stock(&sku).await;
    assert_eq!(after["reserved"], before["reserved"]);
    assert_eq!(cluster.reservation(&order_id).await["status"], "committed");
    // The paid cart (the session has a new one since the answer) is cleared by the consumer.
    wait_until(Duration::from_secs(30), "the paid cart cleared", || async {
        let cart = cluster.cart(&cart_id).await;
        cart["item_count"] == 0 && cart["checkout_order_id"].is_null()
    })
    .await;
}

/// An order confirmed whose `order.confirmed` the inventory's and the cart's consumers are
/// handling now, held mid-work by their stores slowed through the fault switches.
struct EventInHand {
    sku: String,
    before: Value,
    order_id: String,
    cart_id: String,
    /// A product added to the paid cart after the checkout, before the event was applied.
    later_id: Value,
    /// When both consumers were seen handling it (each received it before then).
    seen_at: Instant,
}

const CONSUMERS: [(Service, &str); 2] = [
    (Service::Inventory, "inventory-orders"),
    (Service::Cart, "cart-orders"),
];

async fn event_in_hand(cluster: &Cluster) -> EventInHand {
    let order = cluster.of(Service::Order)[0];
    let catalog = products(&cluster.url(Service::Storefront)).await;
    let (bought, later) = (&catalog[0], &catalog[1]);
    // The event waits in the order's outbox until both consumers are slowed.
    let HeldCheckout {
        sku,
        before,
        cart_id,
        order_id,
    } = checkout_with_its_event_held(cluster, bought).await;
    let url = format!("{}/v1/carts/{cart_id}/lines", cluster.url(Service::Cart));
    let meanwhile = cluster
        .http
        .post(&url)
        .json(&json!({"product_id": later["id"], "quantity": 1}))
        .send()
        .await
        .expect("send");
    assert!(meanwhile.status().is_success(), "{}", meanwhile.status());

    for (service, _) in CONSUMERS {
        let slowed = cluster
            .admin(
                Method::PUT,
                format!(
                    "{}/admin/faults",
                    cluster.replica_url(cluster.of(service)[0])
                ),
                Some(json!({"slow": ["storage"], "slow_ms": 60_000})),
            )
            .await;
        assert!(slowed.status().is_success(), "{}", slowed.status());
    }
    let released = cluster
        .admin(
            Method::DELETE,
            format!("{}/admin/faults", cluster.replica_url(order)),
            None,
        )
        .await;
    assert!(released.status().is_success(), "{}", released.status());
    // The order's sweeper publishes it (after 5 s recorded); each consumer takes it and waits
    // on its store.
    for (service, group) in CONSUMERS {
        let series = format!(
            "emporium_{}_events_in_hand{{group=\"{group}\"}}",
            service.name()
        );
        wait_until(
            Duration::from_secs(30),
            &format!("{group} handling it"),
            || {
                let series = series.clone();
                async move { cluster.metric(service, &series).await >= 1.0 }
            },
        )
        .await;
    }
    // (The stock is not read now: the inventory's store is slowed. The restarted replicas'
    // counts show which applied it.)
    let seen_at = Instant::now();
    EventInHand {
        sku,
        before,
        order_id,
        cart_id,
        later_id: later["id"].clone(),
        seen_at,
    }
}

/// The event's effects are there within `within` of its being seen in hand, and happened once:
/// the stock sold once, the cart's bought unit taken out once, the unit added meanwhile kept,
/// each applied by the restarted consumers.
async fn applied_once(cluster: &Cluster, event: &EventInHand, within: Duration) {
    let deadline = event.seen_at + within;
    let sold = event.before["sold"].as_i64().expect("sold") + 1;
    let left = || deadline.saturating_duration_since(Instant::now());
    wait_until(left(), "the stock sold", || async {
        cluster.stock(&event.sku).await["sold"].as_i64() == Some(sold)
    })
    .await;
    wait_until(left(), "the paid cart settled", || async {
        cluster.cart(&event.cart_id).await["checkout_order_id"].is_null()
    })
    .await;
    // Once: a while later, nothing moved again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cluster.stock(&event.sku).await;
    assert_eq!(
        (&after["sold"], &after["reserved"]),
        (&json!(sold), &event.before["reserved"]),
        "{after}"
    );
    assert_eq!(
        cluster.reservation(&event.order_id).await["status"],
        "committed"
    );
    let settled = cluster.cart(&event.cart_id).await;
    let lines = settled["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 1, "{settled}");
    assert_eq!(lines[0]["product_id"], event.later_id, "{settled}");
    assert_eq!(settled["item_count"], 1, "{settled}");
    for (service, group) in CONSUMERS {
        let applied = format!(
            "emporium_{}_events_handled_total{{group=\"{group}\",outcome=\"applied\"}}",
            service.name()
        );
        assert_eq!(cluster.metric(service, &applied).await, 1.0, "{applied}");
    }
}

/// The consumers killed (SIGKILL) while handling an event: after their restart it comes back,
/// once the group's visibility timeout (30 s) has passed, and its effects happen once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_killed_while_handling_an_event_apply_it_once_after_their_restart() {
    let mut cluster = Cluster::start(1).await;
    let event = event_in_hand(&cluster).await;
    let consumers = CONSUMERS.map(|(service, _)| cluster.of(service)[0]);
    for at in consumers {
        cluster.kill(at);
        cluster.spawn(at);
    }
    for at in consumers {
        cluster.await_ready(at).await;
    }
    applied_once(&cluster, &event, Duration::from_secs(90)).await;
}

/// The consumers stopped (SIGTERM, as Kubernetes stops a pod) while handling an event hand it
/// back as they stop: their restarted replicas apply it at once, well before the 30 s
/// visibility timeout after its delivery would have let them, and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_stopped_while_handling_an_event_hand_it_back_at_once() {
    let mut cluster = Cluster::start(1).await;
    let event = event_in_hand(&cluster).await;
    let consumers = CONSUMERS.map(|(service, _)| cluster.of(service)[0]);
    for at in consumers {
        cluster.terminate(at).await;
        cluster.spawn(at);
    }
    for at in consumers {
        cluster.await_ready(at).await;
    }
    // Each consumer received it at most about a second before it was seen in hand; without
    // the hand-back it could come again no sooner than 29 s after that.
    applied_once(&cluster, &event, Duration::from_secs(22)).await;
}

/// What each shopper did: the orders the shop answered as confirmed, the carts it added to (a
/// confirmed checkout gives the session a new one), and whether a unit waits in its cart
/// (added, its checkout not confirmed yet).
struct Shopped {
    shopper: Shopper,
    answered: Vec<String>,
    carts: std::collections::BTreeSet<String>,
    in_cart: bool,
    server_errors: Vec<String>,
}

/// A shopper adding one unit and checking out, again and again, until `stop`. A call that gets
/// no answer (its replica killed under it) is what a real client meets: a checkout is asked
/// again under the same key until it answers, and after a lost add the cart is read to see
/// what it holds.
async fn shop_until(storefront: String, product_id: String, stop: Arc<AtomicBool>) -> Shopped {
    let mut shopped = Shopped {
        shopper: Shopper::new(storefront),
        answered: Vec::new(),
        carts: std::collections::BTreeSet::new(),
        in_cart: false,
        server_errors: Vec::new(),
    };
    let line = json!({"product_id": product_id, "quantity": 1});
    while !stop.load(Ordering::SeqCst) {
        if !shopped.in_cart {
            match shopped
                .shopper
                .try_api(Method::POST, "/cart/lines", Some(&line), &[])
                .await
            {
                Ok(added) if added.status == 200 => {
                    if let Some(id) = added.json()["id"].as_str() {
                        shopped.carts.insert(id.to_owned());
                    }
                    shopped.in_cart = true;
                }
                Ok(added) if added.status == 500 => shopped.server_errors.push(added.body),
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(_) => shopped.in_cart = cart_units(&mut shopped.shopper).await > 0,
            }
            continue;
        }
        let idempotency = key();
        let mut placed = None;
        for _ in 0..50 {
            match shopped
                .shopper
                .try_api(
                    Method::POST,
                    "/checkout",
                    Some(&checkout_body()),
                    &[("idempotency-key", &idempotency)],
                )
                .await
            {
                // Still being processed (202) is asked again too, as the API says.
                Ok(page) if page.status != 202 => {
                    placed = Some(page);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let Some(placed) = placed else {
            continue;
        };
        let order = placed.json();
        let code = order["code"].as_str().unwrap_or_default().to_owned();
        match placed.status {
            200 | 201 if order["status"] == "confirmed" => {
                shopped
                    .answered
                    .push(order["id"].as_str().unwrap_or_default().to_owned());
                shopped.in_cart = false;
            }
            // An earlier checkout went through after all: the cart was emptied by it.
            409 if code == "cart_empty" => shopped.in_cart = false,
            500 => shopped.server_errors.push(placed.body),
            // A dependency's replica going away mid-call (503), a checkout still holding the
            // cart: the unit stays, and the shopper tries again in a moment.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    shopped
}

/// How many units the shopper's cart holds, asking until it answers.
async fn cart_units(shopper: &mut Shopper) -> i64 {
    loop {
        if let Ok(cart) = shopper.try_api(Method::GET, "/cart", None, &[]).await
            && cart.status == 200
        {
            return cart.json()["item_count"].as_i64().unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_of_every_service_lose_nothing_while_one_of_each_is_killed_in_turn() {
    let mut cluster = Cluster::start(3).await;
    let storefront = cluster.url(Service::Storefront);
    let catalog = products(&storefront).await;
    let chosen: Vec<Value> = catalog.into_iter().take(3).collect();
    let mut initial = BTreeMap::new();
    for product in &chosen {
        let sku = product["sku"].as_str().expect("sku").to_owned();
        let set = cluster
            .admin(
                Method::PUT,
                format!("{}/v1/stock/{sku}", cluster.url(Service::Inventory)),
                Some(json!({"available": 1000})),
            )
            .await;
        assert!(set.status().is_success(), "{}", set.status());
        let level = cluster.stock(&sku).await;
        initial.insert(sku, level);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = (0..6)
        .map(|at| {
            let product = chosen[at % chosen.len()]["id"]
                .as_str()
                .expect("id")
                .to_owned();
            tokio::spawn(shop_until(storefront.clone(), product, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // One replica of each service killed and started again, in turn, while the shoppers shop.
    for &service in Service::ALL {
        let at = cluster.of(service)[0];
        cluster.kill(at);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.spawn(at);
        cluster.await_ready(at).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut shopped = Vec::new();
    for shopper in shoppers {
        shopped.push(shopper.await.expect("shopper"));
    }
    let answered: usize = shopped.iter().map(|s| s.answered.len()).sum();
    assert!(answered >= 6, "checkouts went through: {answered}");
    for one in &shopped {
        assert!(one.server_errors.is_empty(), "{:?}", one.server_errors);
    }

    // Once everything cut short is settled: no unit held, and every unit sold is one of a
    // confirmed order's, counted once.
    let mut orders: Vec<Confirmed> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        orders.clear();
        for one in &mut shopped {
            orders.extend(confirmed(&mut one.shopper).await);
        }
        let mut settled = true;
        for (sku, before) in &initial {
            let now = cluster.stock(sku).await;
            let units: i64 = orders
                .iter()
                .flat_map(|(_, lines)| lines)
                .filter(|(line_sku, _)| line_sku == sku)
                .map(|(_, quantity)| quantity)
                .sum();
            let sold = now["sold"].as_i64().unwrap_or(0) - before["sold"].as_i64().unwrap_or(0);
            settled &= now["reserved"] == before["reserved"] && sold == units;
            assert!(
                sold <= units,
                "{sku}: {sold} sold, {units} in confirmed orders: sold twice ({} orders listed, {answered} answered: {:?})",
                orders.len(),
                shopped.iter().map(|s| s.answered.len()).collect::<Vec<_>>()
            );
            let total = |level: &Value| {
                ["available", "reserved", "sold"]
                    .iter()
                    .map(|field| level[*field].as_i64().unwrap_or(0))
                    .sum::<i64>()
            };
            assert_eq!(total(&now), total(before), "{sku}: stock conserved: {now}");
        }
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stock did not settle: {:?}",
            {
                let mut levels = Vec::new();
                for sku in initial.keys() {
                    levels.push(cluster.stock(sku).await);
                }
                levels
            }
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // No confirmed order lost: every confirmation a shopper was given is in the shop.
    let ids: std::collections::BTreeSet<&str> = orders.iter().map(|(id, _)| id.as_str()).collect();
    for one in &shopped {
        for id in &one.answered {
            assert!(ids.contains(id.as_str()), "confirmed order {id} was lost");
        }
    }
    // No event lost: every confirmed order's reservation was sold, and every cart holds just
    // what its shopper added after its last confirmed checkout, with no claim left on it.
    for (id, _) in &orders {
        assert_eq!(cluster.reservation(id).await["status"], "committed", "{id}");
    }
    for one in &mut shopped {
        let current = one.shopper.api(Method::GET, "/cart", None, &[]).await;
        assert_eq!(current.status, 200, "{}", current.body);
        let current = current.json()["id"].as_str().map(str::to_owned);
        // An add whose answer was lost may have made a cart this list misses; the session's
        // cart is looked at too.
        let carts: std::collections::BTreeSet<String> =
            one.carts.iter().cloned().chain(current.clone()).collect();
        for id in &carts {
            // An event a killed cart replica had received comes back after the group's
            // visibility timeout (30 s), to another replica.
            let settled = wait_for(
                Duration::from_secs(60),
                &format!("cart {id} unclaimed"),
                || {
                    let cluster = &cluster;
                    async move {
                        let cart = cluster.cart(id).await;
                        cart["checkout_order_id"].is_null().then_some(cart)
                    }
                },
            )
            .await;
            // The session's cart holds what was added after its last confirmed checkout; a
            // cart paid for was cleared of what its order bought, once.
            let expected = if current.as_deref() == Some(id.as_str()) {
                i64::from(one.in_cart)
            } else {
                0
            };
            assert_eq!(
                settled["item_count"], expected,
                "the cart was cleared exactly once: {settled}"
            );
        }
    }
    // Nothing failed for good.
    for group in Service::all_groups() {
        let dead = cluster
            .events
            .dead_letters(group.name, 10)
            .await
            .expect("dead letters");
        assert!(dead.is_empty(), "{}: {dead:?}", group.name);
    }
    for service in [Service::Catalog, Service::Inventory, Service::Order] {
        let name = service.name();
        wait_until(
            Duration::from_secs(30),
            &format!("{name}'s outbox empty"),
            || async {
                cluster
                    .metric(service, &format!("emporium_{name}_outbox_backlog"))
                    .await
                    == 0.0
            },
        )
        .await;
    }
}
