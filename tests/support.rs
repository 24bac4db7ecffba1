//! Helpers for whole-platform tests: every service started in this process on free ports, as
//! `emporium up` starts them, on either backend: the embedded stand-ins over a temporary data
//! directory, or the AWS adapters (DynamoDB and S3 on moto server, Redis) under names no other
//! test uses; and a client that speaks to them over HTTP as the storefront will.
//! [`on_every_backend!`] runs a test body once per backend. [`Shopper`] visits the storefront as
//! a browser would, keeping its session cookie.

pub mod manifests;

use clap::Parser as _;
use emporium::run::{Plan, Platform, Service, Settings};
use emporium_api::cart::Cart;
use emporium_api::catalog::{Product, ProductPage};
use emporium_api::inventory::StockLevel;
use emporium_api::order::{CUSTOMER_HEADER, IDEMPOTENCY_HEADER, Order, OrderPage};
use emporium_order::Faults;
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "platform-test-admin-key";

/// Settings as `emporium up` would parse them, with every port free-picked and data under
/// `dir`, plus the extra flags given.
pub fn settings(dir: &std::path::Path, extra: &[&str]) -> Settings {
    let mut args: Vec<String> = [
        "emporium",
        "up",
        "--data-dir",
        &dir.display().to_string(),
        "--workers",
        "2",
        "--admin-key",
        ADMIN_KEY,
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for service in Service::ALL {
        args.extend([format!("--{}-port", service.name()), "0".to_owned()]);
    }
    // A flag the caller gives replaces the default one (clap refuses a flag given twice).
    for flag in extra.iter().filter(|f| f.starts_with("--")) {
        if let Some(at) = args.iter().position(|a| a == flag) {
            args.drain(at..at + 2);
        }
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = emporium::cli::Cli::try_parse_from(args).expect("settings parse");
    match cli.command {
        emporium::cli::Command::Up(up) => up.services,
        _ => unreachable!("built an up command"),
    }
}

/// `emporium serve --help` in full, where every setting and its environment variable is named:
/// what deployment files may set is checked against it.
pub fn serve_help() -> String {
    use clap::CommandFactory as _;
    let mut command = emporium::cli::Cli::command();
    command
        .find_subcommand_mut("serve")
        .expect("serve")
        .render_long_help()
        .to_string()
}

/// The `emporium` binary this test run built, beside the test's own executable.
pub fn emporium_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let built = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the target directory")
        .join("emporium");
    assert!(
        built.is_file(),
        "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
        built.display()
    );
    built
}

/// A port nothing listens on now, for a process to be told to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Which adapters the services run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// redb storage, in-process cache, local blob directory.
    Embedded,
    /// DynamoDB, S3 and Redis, on the stand-ins `scripts/test.sh` starts.
    Aws,
}

/// What a platform on a backend runs on: its settings, and on AWS the moto server of its own
/// that holds its tables and bucket (dropped after the platform).
pub struct Stand {
    pub flags: Vec<String>,
    pub moto: Option<emporium_adapters::testing::MotoServer>,
}

impl Stand {
    pub fn flags(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }
}

impl Backend {
    /// The settings that put every port on this backend, with fresh tables, bucket and cache
    /// keys.
    pub fn stand(self) -> Stand {
        match self {
            Backend::Embedded => Stand {
                flags: Vec::new(),
                moto: None,
            },
            Backend::Aws => {
                // Credentials and region still come from the environment the stand-ins set.
                emporium_adapters::testing::aws_stand_in();
                let moto = emporium_adapters::testing::MotoServer::start();
                let name = emporium_adapters::testing::unique("shop");
                let flags = vec![
                    // moto answers one call at a time; on a busy machine a checkout's calls
                    // queue there longer than in production.
                    "--http-timeout-ms".into(),
                    "20000".into(),
                    "--storage".into(),
                    format!("dynamodb://{name}?endpoint={}", moto.endpoint),
                    "--blobs".into(),
                    format!("s3://{name}/assets?endpoint={}", moto.endpoint),
                    "--cache".into(),
                    format!("{}?prefix={name}:", emporium_adapters::testing::redis_url()),
                ];
                Stand {
                    flags,
                    moto: Some(moto),
                }
            }
        }
    }
}

/// Generates, for each named `async fn test(backend: Backend)`, a test per backend:
/// `embedded::test` and `aws::test`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Embedded).await;
                }
            )*
        }
        mod aws {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Aws).await;
                }
            )*
        }
    };
}

/// How often, and how many times, a test looks for the effect of an event (10 s in all: on
/// the embedded bus it comes within milliseconds, through SQS within a long poll).
const SETTLE_POLLS: usize = 400;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// A running platform, the directory holding its data, and what it was started with.
pub struct TestPlatform {
    pub platform: Platform,
    pub settings: Settings,
    pub plan: Plan,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The platform's own moto server, on AWS; declared last so it outlives the platform.
    pub moto: Option<emporium_adapters::testing::MotoServer>,
}

/// A client that calls the services as one of them does, showing the gateway key.
pub fn gateway_client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            emporium_platform::auth::GATEWAY_HEADER,
            reqwest::header::HeaderValue::from_str(key).expect("a header value"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl TestPlatform {
    /// Every service on `backend`, seeded with the demo shop.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[], Faults::default()).await
    }

    /// Every service on `backend` with extra settings and checkout fault switches. On AWS,
    /// `emporium init` runs first, as the deployment's setup job does.
    pub async fn start_with(backend: Backend, extra: &[&str], faults: Faults) -> Self {
        Self::start_listening(backend, extra, faults, &[]).await
    }

    /// [`TestPlatform::start_with`], with `listeners` on the bus beside the services' own
    /// consumer groups (on AWS, their queues made as `init` makes the services').
    pub async fn start_listening(
        backend: Backend,
        extra: &[&str],
        faults: Faults,
        listeners: &[emporium_ports::events::GroupDef],
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let stand = backend.stand();
        let mut flags = stand.flags();
        flags.extend(extra.iter().copied());
        let settings = settings(data_dir.path(), &flags);
        if backend == Backend::Aws {
            emporium::setup::init(&settings).await.expect("init");
            emporium_adapters::connect::init_events(&settings.common.events_uri(), listeners)
                .await
                .expect("the listeners' queues");
        }
        let plan = Plan {
            services: Service::ALL.to_vec(),
            seed_when_empty: true,
            order_faults: Some(faults),
            listeners: listeners.to_vec(),
        };
        let platform = Platform::start(&settings, &plan)
            .await
            .expect("platform starts");
        let http = gateway_client(platform.gateway_key.as_deref());
        Self {
            platform,
            settings,
            plan,
            data_dir,
            http,
            moto: stand.moto,
        }
    }

    pub fn url(&self, service: Service) -> String {
        self.platform.url(service).expect("service runs")
    }

    /// Stops a service and starts it again on the same data, as a crashed process restarts.
    pub async fn restart(&mut self, service: Service) {
        self.platform.stop_service(service).await.expect("stop");
        self.platform
            .start_service(&self.settings, &self.plan, service)
            .await
            .expect("restart");
    }

    pub async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.expect("send");
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// The service's `/metrics` text.
    pub async fn metrics(&self, service: Service) -> String {
        let url = format!("{}/metrics", self.url(service));
        let response = self.http.get(&url).send().await.expect("scrape");
        assert_eq!(response.status(), 200, "GET {url}");
        response.text().await.expect("text")
    }

    /// Sets `service`'s fault switches (`PUT /admin/faults` with the admin key), or turns them
    /// all off with `None`; answers the response.
    pub async fn switch_faults(
        &self,
        service: Service,
        faults: Option<Value>,
    ) -> reqwest::Response {
        let url = format!("{}/admin/faults", self.url(service));
        let request = match faults {
            Some(faults) => self.http.put(url).json(&faults),
            None => self.http.delete(url),
        };
        request
            .bearer_auth(&self.platform.admin_key)
            .send()
            .await
            .expect("fault switches")
    }

    // === Catalog and stock ===

    /// Every product of the catalog.
    pub async fn products(&self) -> Vec<Product> {
        let page: ProductPage = self
            .http
            .get(format!(
                "{}/v1/products?limit=100",
                self.url(Service::Catalog)
            ))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("page");
        page.items
    }

    pub async fn product_with_sku(&self, sku: &str) -> Product {
        self.products()
            .await
            .into_iter()
            .find(|p| p.sku == sku)
            .unwrap_or_else(|| panic!("no product {sku}"))
    }

    pub async fn stock(&self, sku: &str) -> StockLevel {
        self.http
            .get(format!("{}/v1/stock/{sku}", self.url(Service::Inventory)))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("stock")
    }

    /// The stock of `sku` once its counters are `(available, reserved, sold)`: what an order's
    /// events do to it (selling, returning) happens a moment after the order's answer.
    pub async fn stock_settles(&self, sku: &str, expected: (i64, i64, i64)) -> StockLevel {
        self.stock_settles_when(sku, |level| {
            (level.available, level.reserved, level.sold) == expected
        })
        .await
    }

    /// The stock of `sku` once `settled` holds of it.
    pub async fn stock_settles_when(
        &self,
        sku: &str,
        settled: impl Fn(&StockLevel) -> bool,
    ) -> StockLevel {
        let mut level = self.stock(sku).await;
        for _ in 0..SETTLE_POLLS {
            if settled(&level) {
                return level;
            }
            tokio::time::sleep(SETTLE_PAUSE).await;
            level = self.stock(sku).await;
        }
        panic!("the stock of {sku} did not settle: {level:?}");
    }

    pub async fn set_stock(&self, sku: &str, available: i64) {
        let status = self
            .http
            .put(format!("{}/v1/stock/{sku}", self.url(Service::Inventory)))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "available": available }))
            .send()
            .await
            .expect("send")
            .status();
        assert!(status.is_success(), "set stock: {status}");
    }

    // === Carts ===

    pub async fn new_cart(&self) -> Cart {
        self.http
            .post(format!("{}/v1/carts", self.url(Service::Cart)))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("cart")
    }

    pub async fn add_to_cart(&self, cart_id: &str, product_id: &str, quantity: i64) -> Cart {
        let response = self
            .http
            .post(format!(
                "{}/v1/carts/{cart_id}/lines",
                self.url(Service::Cart)
            ))
            .json(&json!({ "product_id": product_id, "quantity": quantity }))
            .send()
            .await
            .expect("send");
        assert!(
            response.status().is_success(),
            "add to cart: {}",
            response.status()
        );
        response.json().await.expect("cart")
    }

    pub async fn cart(&self, cart_id: &str) -> Cart {
        self.http
            .get(format!("{}/v1/carts/{cart_id}", self.url(Service::Cart)))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("cart")
    }

    /// Cart `cart_id` once `settled` holds of it: what an order's events do to its cart
    /// (clearing what it bought, ending its claim) happens a moment after the order's answer.
    pub async fn cart_settles(&self, cart_id: &str, settled: impl Fn(&Cart) -> bool) -> Cart {
        let mut cart = self.cart(cart_id).await;
        for _ in 0..SETTLE_POLLS {
            if settled(&cart) {
                return cart;
            }
            tokio::time::sleep(SETTLE_PAUSE).await;
            cart = self.cart(cart_id).await;
        }
        panic!("cart {cart_id} did not settle: {cart:?}");
    }

    /// Asks the order service, as `customer`, to cancel order `order_id`.
    pub async fn cancel(&self, customer: &str, order_id: &str) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/v1/orders/{order_id}/cancel",
                self.url(Service::Order)
            ))
            .header("x-customer-id", customer)
            .send()
            .await
            .expect("send")
    }

    /// A new cart holding `quantity` of each product.
    pub async fn cart_with(&self, lines: &[(&Product, i64)]) -> Cart {
        let cart = self.new_cart().await;
        for (product, quantity) in lines {
            self.add_to_cart(&cart.id, &product.id, *quantity).await;
        }
        self.cart(&cart.id).await
    }

    // === Orders ===

    pub async fn place(&self, customer: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/orders", self.url(Service::Order)))
            .header(CUSTOMER_HEADER, customer)
            .header(IDEMPOTENCY_HEADER, key)
            .json(body)
            .send()
            .await
            .expect("send")
    }

    pub async fn order(&self, customer: &str, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/orders/{id}", self.url(Service::Order)))
            .header(CUSTOMER_HEADER, customer)
            .send()
            .await
            .expect("send")
    }

    pub async fn history(&self, customer: &str) -> Vec<Order> {
        let page: OrderPage = self
            .http
            .get(format!("{}/v1/orders?limit=50", self.url(Service::Order)))
            .header(CUSTOMER_HEADER, customer)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("page");
        page.items
    }
}

/// A new customer id, as the storefront's session makes one.
pub fn customer() -> String {
    emporium_platform::id::new_id()
}

/// A new idempotency key.
pub fn key() -> String {
    format!("key-{}", emporium_platform::id::new_id())
}

/// The test card that approves.
pub const CARD_OK: &str = "4242 4242 4242 4242";
pub const CARD_DECLINED: &str = "4000 0000 0000 0002";
pub const CARD_NO_FUNDS: &str = "4000 0000 0000 9995";

/// A valid order body for `cart_id` paid with `card`.
pub fn order_body(cart_id: &str, card: &str) -> Value {
    json!({
        "cart_id": cart_id,
        "customer": {
            "name": "Grace Hopper",
            "email": "grace@example.com",
            "address": {
                "line1": "1 Harbor Way",
                "city": "Arlington",
                "region": "VA",
                "postal_code": "22201",
                "country": "US"
            }
        },
        "payment": {
            "number": card,
            "expiry_month": 12,
            "expiry_year": 2035,
            "cvc": "123"
        }
    })
}

// === The storefront, as a browser sees it ===

/// An answer from the storefront.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.header("location")
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no form token on the page: {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').expect("token end") + start;
        self.body[start..end].to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A visitor of the storefront: follows no redirects by itself and keeps the session cookie
/// the storefront sets, as a browser does.
pub struct Shopper {
    pub http: reqwest::Client,
    pub base: String,
    /// `emporium_session=<value>`, once the storefront set one.
    pub cookie: Option<String>,
}

impl Shopper {
    pub fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base,
            cookie: None,
        }
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        self.try_send(request).await.expect("send")
    }

    /// [`Shopper::send`], or the error of a request that got no answer (a connection cut by a
    /// replica going away).
    pub async fn try_send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> Result<Page, reqwest::Error> {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().expect("cookie text");
            if let Some(pair) = text.split(';').next()
                && pair.starts_with("emporium_session=")
            {
                self.cookie = Some(pair.to_owned());
            }
        }
        let body = response.text().await?;
        Ok(Page {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form as the shop's own pages do.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_form_with(path, fields, &[("origin", &self.base.clone())])
            .await
    }

    pub async fn post_form_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).expect("form"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Posts `body` as it is, under `content_type`: for requests no page or client would make.
    pub async fn post_raw(&mut self, path: &str, content_type: &str, body: &str) -> Page {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        self.send(request).await
    }

    /// Every order of the shopper's session, through the public API, a page at a time.
    pub async fn orders(&mut self) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/orders?limit=50&cursor={cursor}"),
                None => "/orders?limit=50".to_owned(),
            };
            let page = self.api(reqwest::Method::GET, &path, None, &[]).await;
            assert_eq!(page.status, 200, "{}", page.body);
            let page = page.json();
            orders.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return orders,
            }
        }
    }

    /// Calls the public API.
    pub async fn api(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Page {
        self.try_api(method, path, body, headers)
            .await
            .expect("send")
    }

    /// [`Shopper::api`], or the error of a call that got no answer.
    pub async fn try_api(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Page, reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.try_send(request).await
    }
}
