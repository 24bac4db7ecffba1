//! The cart's HTTP API, with a real catalog and inventory beside it, all on port 0.

use std::sync::Arc;
use std::time::Duration;

use emporium_api::cart::Cart;
use emporium_api::catalog::Product;
use emporium_api::client::RetryPolicy;
use emporium_cart::CartLimits;
use emporium_cart::startup::{self, CartConfig, CartPorts};
use emporium_catalog::startup::{self as catalog_startup, CatalogConfig, CatalogPorts};
use emporium_inventory::startup::{self as inventory_startup, InventoryConfig};
use emporium_platform::Problem;
use emporium_platform::client::ClientSettings;
use emporium_platform::server::HttpSettings;
use emporium_platform::testing::{self, Spawned, expect_problem};
use emporium_ports::blob::local::LocalBlobs;
use emporium_ports::cache::memory::MemoryCache;
use emporium_ports::storage::embedded::EmbeddedStorage;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "cart-test-admin";

/// One worker each: the replica tests race requests across services, not threads.
fn http() -> HttpSettings {
    HttpSettings {
        workers: Some(1),
        shutdown_timeout: Duration::from_secs(2),
        ..testing::http_settings()
    }
}

/// The key the shop's services show each other; the cart's checkout routes want it.
const GATEWAY_KEY: &str = "cart-test-gateway";

struct Shop {
    cart: String,
    cart_storage: Arc<dyn emporium_ports::storage::Storage>,
    cart_config: CartConfig,
    cart_ports: CartPorts,
    catalog: String,
    inventory: String,
    /// A client with no key, for the catalog and the inventory (and for refusals).
    http: reqwest::Client,
    /// A client showing the gateway key, as the shop's services do.
    services: reqwest::Client,
    servers: Vec<Spawned>,
    _dir: tempfile::TempDir,
}

async fn spawn_shop(limits: CartLimits) -> Shop {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(MemoryCache::new(8 * 1024 * 1024));
    let groups: Vec<_> = [emporium_inventory::GROUPS, emporium_cart::GROUPS].concat();
    let events: Arc<dyn emporium_ports::events::Events> = Arc::new(
        emporium_ports::events::stored::StoredEvents::embedded(
            &dir.path().join("events.redb"),
            &groups,
        )
        .expect("events"),
    );
    let catalog_ports = CatalogPorts {
        storage: Arc::new(
            EmbeddedStorage::open(&dir.path().join("catalog.redb"), emporium_catalog::TABLES)
                .expect("storage"),
        ),
        cache: cache.clone(),
        blobs: Arc::new(LocalBlobs::open(&dir.path().join("blobs")).expect("blobs")),
        events: events.clone(),
    };
    let catalog_config = CatalogConfig {
        http: http(),
        currency: "USD".into(),
        admin_key: ADMIN_KEY.into(),
        cache_ttl: Duration::from_secs(60),
        image_limit_bytes: 1024,
    };
    let catalog = catalog_startup::start(
        &catalog_config,
        catalog_startup::catalog(&catalog_config, &catalog_ports),
        &catalog_ports,
    )
    .expect("catalog");

    let inventory_storage: Arc<dyn emporium_ports::storage::Storage> = Arc::new(
        EmbeddedStorage::open(
            &dir.path().join("inventory.redb"),
            emporium_inventory::TABLES,
        )
        .expect("storage"),
    );
    let inventory_config = InventoryConfig {
        http: http(),
        admin_key: ADMIN_KEY.into(),
        reservation_ttl_secs: 60,
        sweep_interval: Duration::from_millis(500),
    };
    let inventory = inventory_startup::start(
        &inventory_config,
        inventory_startup::inventory(&inventory_config, inventory_storage.clone(), events.clone()),
        inventory_storage,
        events.clone(),
    )
    .expect("inventory");

    let cart_storage: Arc<dyn emporium_ports::storage::Storage> = Arc::new(
        EmbeddedStorage::open(&dir.path().join("cart.redb"), emporium_cart::TABLES)
            .expect("storage"),
    );
    let cart_ports = CartPorts {
        storage: cart_storage.clone(),
        cache,
        events,
    };
    let cart_config = CartConfig {
        http: HttpSettings {
            gateway_key: Some(emporium_platform::auth::GatewayKey::new(GATEWAY_KEY)),
            ..http()
        },
        client: ClientSettings {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(300),
            gateway_key: None,
        },
        retry: RetryPolicy::default(),
        catalog_url: catalog.url(),
        inventory_url: inventory.url(),
        limits,
        currency: "USD".into(),
        cache_ttl: Duration::from_secs(60),
    };
    let cart = startup::start(
        &cart_config,
        startup::carts(&cart_config, &cart_ports).expect("carts"),
        &cart_ports,
    )
    .expect("cart");
    Shop {
        cart: cart.url(),
        cart_storage,
        cart_config,
        cart_ports,
        catalog: catalog.url(),
        inventory: inventory.url(),
        http: reqwest::Client::new(),
        services: {
            // Calls to the cart as the storefront and the order service make them.
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                emporium_platform::auth::GATEWAY_HEADER,
                reqwest::header::HeaderValue::from_static(GATEWAY_KEY),
            );
            reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client")
        },
        servers: vec![cart, catalog, inventory]
            .into_iter()
            .map(Spawned::new)
            .collect(),
        _dir: dir,
    }
}

fn limits() -> CartLimits {
    CartLimits {
        ttl: Duration::from_secs(3600),
        max_lines: 3,
        max_quantity: 10,
    }
}

impl Shop {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.services
            .request(method, format!("{}{path}", self.cart))
    }

    /// A request to the cart from a caller without the gateway key.
    fn stranger(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.cart))
    }

    /// Another cart service on the same store, as a second replica is; its base URL.
    fn replica(&mut self) -> String {
        let server = startup::start(
            &self.cart_config,
            startup::carts(&self.cart_config, &self.cart_ports).expect("carts"),
            &self.cart_ports,
        )
        .expect("cart replica");
        let url = server.url();
        self.servers.push(Spawned::new(server));
        url
    }

    /// A checkout route called as the order service calls it.
    fn checkout(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
    }

    async fn claim(&self, id: &str, order_id: &str, version: u64) -> reqwest::Response {
        self.checkout(Method::PUT, &format!("/v1/carts/{id}/checkout"))
            .json(&json!({"order_id": order_id, "version": version}))
            .send()
            .await
            .expect("send")
    }

    async fn complete(&self, id: &str, order_id: &str) -> reqwest::Response {
        self.checkout(
            Method::POST,
            &format!("/v1/carts/{id}/checkout/{order_id}/complete"),
        )
        .send()
        .await
        .expect("send")
    }

    async fn release(&self, id: &str, order_id: &str) -> reqwest::Response {
        self.checkout(
            Method::DELETE,
            &format!("/v1/carts/{id}/checkout/{order_id}"),
        )
        .send()
        .await
        .expect("send")
    }

    async fn product(&self, sku: &str, amount: i64, stock: i64) -> Product {
        if !self
            .http
            .get(format!("{}/v1/categories/kitchen", self.catalog))
            .send()
            .await
            .expect("send")
            .status()
            .is_success()
        {
            self.http
                .post(format!("{}/v1/categories", self.catalog))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"slug": "kitchen", "name": "Kitchen"}))
                .send()
                .await
                .expect("send");
        }
        let product: Product = self
            .http
            .post(format!("{}/v1/products", self.catalog))
            .bearer_auth(ADMIN_KEY)
            .json(
                &json!({"sku": sku, "name": format!("Thing {sku}"), "category": "kitchen",
                          "price": {"amount": amount, "currency": "USD"}}),
            )
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("product");
        let status = self
            .http
            .put(format!("{}/v1/stock/{sku}", self.inventory))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"available": stock}))
            .send()
            .await
            .expect("send")
            .status();
        assert!(status.is_success());
        product
    }

    async fn new_cart(&self) -> Cart {
        let response = self
            .request(Method::POST, "/v1/carts")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("cart")
    }

    async fn get(&self, id: &str) -> reqwest::Response {
        self.request(Method::GET, &format!("/v1/carts/{id}"))
            .send()
            .await
            .expect("send")
    }

    async fn cart(&self, id: &str) -> Cart {
        let response = self.get(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("cart")
    }

    async fn add(&self, id: &str, product_id: &str, quantity: i64) -> reqwest::Response {
        self.request(Method::POST, &format!("/v1/carts/{id}/lines"))
            .json(&json!({"product_id": product_id, "quantity": quantity}))
            .send()
            .await
            .expect("send")
    }
}

fn quantities(cart: &Cart) -> Vec<(String, i64)> {
    cart.lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect()
}

#[tokio::test]
async fn a_cart_is_filled_changed_and_emptied() {
    let shop = spawn_shop(limits()).await;
    let kettle = shop.product("KET-1", 4500, 20).await;
    let mug = shop.product("MUG-1", 800, 20).await;
    let cart = shop.new_cart().await;
    assert!(emporium_platform::id::is_valid(&cart.id), "128 random bits");
    assert_eq!(cart.subtotal.amount, 0);
    assert_eq!(cart.subtotal.currency, "USD");

    shop.add(&cart.id, &kettle.id, 1).await;
    shop.add(&cart.id, &mug.id, 2).await;
    let response = shop.add(&cart.id, &kettle.id, 2).await;
    assert_eq!(response.status(), StatusCode::OK);
    let filled: Cart = response.json().await.expect("cart");
    assert_eq!(
        quantities(&filled),
        [("KET-1".into(), 3), ("MUG-1".into(), 2)]
    );
    assert_eq!(filled.item_count, 5);
    assert_eq!(filled.subtotal.amount, 3 * 4500 + 2 * 800);
    assert_eq!(filled.lines[0].name, "Thing KET-1");
    assert_eq!(filled.lines[0].line_total.amount, 13_500);
    assert_eq!(
        shop.cart(&cart.id).await,
        filled,
        "reads see the change at once"
    );

    let changed: Cart = shop
        .request(
            Method::PUT,
            &format!("/v1/carts/{}/lines/{}", cart.id, mug.id),
        )
        .json(&json!({"quantity": 5}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("cart");
    assert_eq!(
        quantities(&changed),
        [("KET-1".into(), 3), ("MUG-1".into(), 5)]
    );
    let removed: Cart = shop
        .request(
            Method::DELETE,
            &format!("/v1/carts/{}/lines/{}", cart.id, kettle.id),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("cart");
    assert_eq!(quantities(&removed), [("MUG-1".into(), 5)]);
    for _ in 0..2 {
        let cleared: Cart = shop
            .request(Method::DELETE, &format!("/v1/carts/{}/lines", cart.id))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("cart");
        assert!(cleared.lines.is_empty());
        assert_eq!(cleared.subtotal.amount, 0);
    }
    assert!(shop.cart(&cart.id).await.lines.is_empty());
}

#[tokio::test]
async fn bad_cart_requests_are_client_errors_and_change_nothing() {
    let shop = spawn_shop(limits()).await;
    let kettle = shop.product("KET-1", 4500, 4).await;
    let a = shop.product("A-1", 100, 50).await;
    let b = shop.product("B-1", 100, 50).await;
    let c = shop.product("C-1", 100, 50).await;
    let cart = shop.new_cart().await;
    shop.add(&cart.id, &kettle.id, 2).await;
    shop.add(&cart.id, &a.id, 1).await;
    shop.add(&cart.id, &b.id, 1).await;
    let before = shop.cart(&cart.id).await;
    let id = &cart.id;
    let unknown_cart = emporium_platform::id::new_id();

    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (
            shop.request(Method::GET, &format!("/v1/carts/{unknown_cart}")),
            404,
            "cart_not_found",
        ),
        (
            shop.request(Method::GET, "/v1/carts/not-a-cart"),
            404,
            "cart_not_found",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{unknown_cart}/lines"))
                .json(&json!({"product_id": kettle.id, "quantity": 1})),
            404,
            "cart_not_found",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": kettle.id, "quantity": 0})),
            422,
            "validation_failed",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": kettle.id, "quantity": -1})),
            422,
            "validation_failed",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": kettle.id, "quantity": 11})),
            422,
            "validation_failed",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": a.id, "quantity": 10})),
            422,
            "validation_failed",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": kettle.id, "quantity": 3})),
            409,
            "out_of_stock",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": emporium_platform::id::new_id(), "quantity": 1})),
            422,
            "unknown_product",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": "../x", "quantity": 1})),
            422,
            "unknown_product",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": c.id, "quantity": 1})),
            422,
            "cart_full",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": c.id, "quantity": "1"})),
            400,
            "invalid_body",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .json(&json!({"product_id": c.id, "quantity": 1, "price": 1})),
            400,
            "invalid_body",
        ),
        (
            shop.request(Method::POST, &format!("/v1/carts/{id}/lines"))
                .header("content-type", "application/json")
                .body("{"),
            400,
            "invalid_json",
        ),
        (
            shop.request(Method::PUT, &format!("/v1/carts/{id}/lines/{}", c.id))
                .json(&json!({"quantity": 1})),
            404,
            "line_not_found",
        ),
        (
            shop.request(Method::PUT, &format!("/v1/carts/{id}/lines/{}", kettle.id))
                .json(&json!({"quantity": 0})),
            422,
            "validation_failed",
        ),
        (
            shop.request(Method::PUT, &format!("/v1/carts/{id}/lines/{}", kettle.id))
                .json(&json!({"quantity": 5})),
            409,
            "out_of_stock",
        ),
        (
            shop.request(Method::DELETE, &format!("/v1/carts/{id}/lines/{}", c.id)),
            404,
            "line_not_found",
        ),
        (
            shop.request(Method::DELETE, &format!("/v1/carts/{unknown_cart}/lines")),
            404,
            "cart_not_found",
        ),
    ];
    for (request, status, code) in cases {
        let problem = expect_problem(request.send().await.expect("send"), status, code).await;
        if code == "out_of_stock" {
            assert_eq!(problem.extensions["short"][0]["sku"], "KET-1");
            assert_eq!(problem.extensions["short"][0]["available"], 4);
        }
    }
    assert_eq!(shop.cart(&cart.id).await, before, "nothing changed");
}

#[tokio::test]
async fn reads_come_from_the_cache_until_a_change_retires_them() {
    use emporium_ports::storage::{Key, Update};
    let shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    shop.add(&cart.id, &mug.id, 1).await;
    assert_eq!(shop.cart(&cart.id).await.item_count, 1);
    // Change the stored cart behind the service's back: reads still answer from the cache.
    shop.cart_storage
        .update(
            "carts",
            &Key::new(format!("cart#{}", cart.id), "cart"),
            Update::new().set("lines", json!([])),
            None,
        )
        .await
        .expect("write behind the service");
    assert_eq!(
        shop.cart(&cart.id).await.item_count,
        1,
        "served from the cache"
    );
    // A change through the service reads the store, writes, and retires the cached copy.
    shop.add(&cart.id, &mug.id, 2).await;
    assert_eq!(shop.cart(&cart.id).await.item_count, 2);
}

#[tokio::test]
async fn concurrent_adds_to_one_cart_lose_nothing() {
    let shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    let adds = futures::future::join_all((0..10).map(|_| shop.add(&cart.id, &mug.id, 1))).await;
    assert!(adds.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(
        quantities(&shop.cart(&cart.id).await),
        [("MUG-1".into(), 10)]
    );
}

#[tokio::test]
async fn carts_expire_after_inactivity() {
    let shop = spawn_shop(CartLimits {
        ttl: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    shop.add(&cart.id, &mug.id, 1).await;
    assert_eq!(
        shop.cart(&cart.id).await.item_count,
        1,
        "read (and cached) while alive"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    expect_problem(shop.get(&cart.id).await, 404, "cart_not_found").await;
    expect_problem(shop.add(&cart.id, &mug.id, 1).await, 404, "cart_not_found").await;
}

#[tokio::test]
async fn a_missing_catalog_fails_clearly_and_a_missing_inventory_does_not_block() {
    let mut shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    // Stop the inventory: adding still works, unchecked against stock. Graceful stops: an
    // ungraceful one returns before the workers are gone, and a pooled connection could still
    // reach them.
    let inventory = shop.servers.remove(2);
    inventory.stop(true).await;
    let response = shop.add(&cart.id, &mug.id, 1).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Stop the catalog: a new line cannot be priced, so it is refused with a retryable error.
    let catalog = shop.servers.remove(1);
    catalog.stop(true).await;
    let problem = expect_problem(
        shop.add(&cart.id, &mug.id, 1).await,
        503,
        "service_unavailable",
    )
    .await;
    assert!(
        !problem.detail.unwrap_or_default().contains("127.0.0.1"),
        "no internal detail"
    );
    assert_eq!(shop.cart(&cart.id).await.item_count, 1);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let shop = spawn_shop(limits()).await;
    let document: Value = shop
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/carts",
        "/v1/carts/{id}",
        "/v1/carts/{id}/lines",
        "/v1/carts/{id}/lines/{product_id}",
        "/v1/carts/{id}/checkout",
        "/v1/carts/{id}/checkout/{order_id}",
        "/v1/carts/{id}/checkout/{order_id}/complete",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_adds_to_one_cart_all_succeed_and_lose_nothing() {
    let shop = spawn_shop(CartLimits {
        max_quantity: 1000,
        ..limits()
    })
    .await;
    let mug = shop.product("MUG-1", 800, 1000).await;
    let cart = shop.new_cart().await;
    let adds = futures::future::join_all((0..100).map(|_| shop.add(&cart.id, &mug.id, 1))).await;
    let statuses: Vec<u16> = adds.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        quantities(&shop.cart(&cart.id).await),
        [("MUG-1".into(), 100)]
    );
}

#[tokio::test]
async fn replicas_writing_one_cart_at_once_lose_nothing_and_never_fail_with_a_5xx() {
    let mut shop = spawn_shop(CartLimits {
        max_quantity: 1000,
        ..limits()
    })
    .await;
    let mug = shop.product("MUG-1", 800, 1000).await;
    let cart = shop.new_cart().await;
    let replicas = [shop.cart.clone(), shop.replica(), shop.replica()];
    let adds = futures::future::join_all((0..150).map(|n| {
        let url = format!("{}/v1/carts/{}/lines", replicas[n % 3], cart.id);
        let http = shop.services.clone();
        let product_id = mug.id.clone();
        async move {
            let response = http
                .post(url)
                .json(&json!({"product_id": product_id, "quantity": 1}))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.expect("json");
            (status, retry_after, body)
        }
    }))
    .await;
    let mut added = 0;
    for (status, retry_after, body) in &adds {
        match status {
            200 => added += 1,
            // Contention a client can act on: told to wait and try again.
            409 => {
                assert_eq!(body["code"], "cart_busy", "{body}");
                assert!(retry_after.is_some(), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(added > 0);
    assert_eq!(
        quantities(&shop.cart(&cart.id).await),
        [("MUG-1".into(), added)],
        "every add that was answered 200 is in the cart, and nothing else"
    );
}

#[tokio::test]
async fn a_checkout_claims_the_cart_and_no_other_order_can_until_it_ends() {
    let shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    let cart = {
        shop.add(&cart.id, &mug.id, 2).await;
        shop.cart(&cart.id).await
    };
    let (first, second) = (
        emporium_platform::id::new_id(),
        emporium_platform::id::new_id(),
    );

    // Only at the version the order read.
    let stale = expect_problem(
        shop.claim(&cart.id, &first, cart.version - 1).await,
        409,
        "cart_changed",
    )
    .await;
    assert_eq!(stale.extensions["current_version"], cart.version);
    let claimed = shop.claim(&cart.id, &first, cart.version).await;
    assert_eq!(claimed.status(), StatusCode::OK);
    let claimed: Cart = claimed.json().await.expect("cart");
    assert_eq!(claimed.checkout_order_id.as_deref(), Some(first.as_str()));
    assert_eq!(
        shop.cart(&cart.id).await.checkout_order_id,
        Some(first.clone())
    );
    // The same order again gets what it holds; another order, at any version, is refused.
    assert_eq!(
        shop.claim(&cart.id, &first, cart.version).await.status(),
        StatusCode::OK
    );
    for version in [cart.version, claimed.version] {
        let taken = expect_problem(
            shop.claim(&cart.id, &second, version).await,
            409,
            "cart_in_checkout",
        )
        .await;
        assert_eq!(taken.extensions["order_id"], first.as_str());
    }
    // Releasing ends the claim and keeps the lines; then the other order may claim.
    let released: Cart = shop
        .release(&cart.id, &first)
        .await
        .json()
        .await
        .expect("cart");
    assert_eq!(released.checkout_order_id, None);
    assert_eq!(quantities(&released), [("MUG-1".into(), 2)]);
    assert_eq!(
        shop.claim(&cart.id, &second, released.version)
            .await
            .status(),
        StatusCode::OK
    );
    // The first order's late release or completion changes nothing now.
    let late: Cart = shop
        .release(&cart.id, &first)
        .await
        .json()
        .await
        .expect("cart");
    assert_eq!(late.checkout_order_id, Some(second.clone()));
    let late: Cart = shop
        .complete(&cart.id, &first)
        .await
        .json()
        .await
        .expect("cart");
    assert_eq!(late.checkout_order_id, Some(second.clone()));
    assert_eq!(quantities(&late), [("MUG-1".into(), 2)]);
}

#[tokio::test]
async fn completing_a_checkout_takes_out_what_it_bought_and_keeps_what_came_after() {
    let shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let pot = shop.product("POT-1", 2500, 100).await;
    let lid = shop.product("LID-1", 300, 100).await;
    let cart = shop.new_cart().await;
    shop.add(&cart.id, &mug.id, 2).await;
    shop.add(&cart.id, &lid.id, 1).await;
    let before = shop.cart(&cart.id).await;
    let order = emporium_platform::id::new_id();
    assert_eq!(
        shop.claim(&cart.id, &order, before.version).await.status(),
        StatusCode::OK
    );
    // While the checkout runs, the shopper raises a line and adds one...
    assert_eq!(
        shop.add(&cart.id, &mug.id, 1).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        shop.add(&cart.id, &pot.id, 1).await.status(),
        StatusCode::OK
    );
    let set = |product: &str, quantity: i64| {
        shop.request(
            Method::PUT,
            &format!("/v1/carts/{}/lines/{product}", cart.id),
        )
        .json(&json!({ "quantity": quantity }))
        .send()
    };
    assert_eq!(
        set(&mug.id, 3).await.expect("send").status(),
        StatusCode::OK
    );
    // ...but cannot take out what the order is buying (it is charged for it): not the lid,
    // not below the two mugs, not everything at once. What came after may go.
    let held = |response: reqwest::Response| expect_problem(response, 409, "cart_in_checkout");
    held(
        shop.request(
            Method::DELETE,
            &format!("/v1/carts/{}/lines/{}", cart.id, lid.id),
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    held(set(&mug.id, 1).await.expect("send")).await;
    held(
        shop.request(Method::DELETE, &format!("/v1/carts/{}/lines", cart.id))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        set(&mug.id, 2).await.expect("send").status(),
        StatusCode::OK
    );
    assert_eq!(
        set(&mug.id, 3).await.expect("send").status(),
        StatusCode::OK
    );
    let after: Cart = shop
        .complete(&cart.id, &order)
        .await
        .json()
        .await
        .expect("cart");
    assert_eq!(after.checkout_order_id, None);
    assert_eq!(
        quantities(&after),
        [("MUG-1".into(), 1), ("POT-1".into(), 1)],
        "two mugs and the lid were bought; the third mug and the pot came after"
    );
    assert_eq!(after.subtotal.amount, 800 + 2500);
    // Done once: completing again takes nothing more; now anything may go.
    let again: Cart = shop
        .complete(&cart.id, &order)
        .await
        .json()
        .await
        .expect("cart");
    assert_eq!(quantities(&again), quantities(&after));
    assert_eq!(again.version, after.version);
    assert_eq!(
        shop.request(Method::DELETE, &format!("/v1/carts/{}/lines", cart.id))
            .send()
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn many_orders_claiming_one_cart_at_once_leave_exactly_one_holding_it() {
    let shop = spawn_shop(limits()).await;
    let mug = shop.product("MUG-1", 800, 100).await;
    let cart = shop.new_cart().await;
    shop.add(&cart.id, &mug.id, 1).await;
    let version = shop.cart(&cart.id).await.version;
    let orders: Vec<String> = (0..20).map(|_| emporium_platform::id::new_id()).collect();
    let claims = futures::future::join_all(
        orders
            .iter()
            .map(|order| shop.claim(&cart.id, order, version)),
    )
    .await;
    let mut winners = Vec::new();
    for (order, response) in orders.iter().zip(claims) {
        match response.status().as_u16() {
            200 => winners.push(order.clone()),
            409 => {
                let problem: Problem = response.json().await.expect("problem");
                assert!(
                    ["cart_in_checkout", "cart_changed"].contains(&problem.code.as_str()),
                    "{problem:?}"
                );
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        shop.cart(&cart.id).await.checkout_order_id,
        Some(winners[0].clone())
    );
}

#[tokio::test]
async fn checkout_routes_are_for_the_shops_services_and_check_what_they_are_given() {
    let shop = spawn_shop(limits()).await;
    let cart = shop.new_cart().await;
    let order = emporium_platform::id::new_id();
    // Without the gateway key: refused, nothing read, made, claimed or changed.
    let product = emporium_platform::id::new_id();
    for request in [
        shop.stranger(Method::PUT, &format!("/v1/carts/{}/checkout", cart.id))
            .json(&json!({"order_id": order, "version": cart.version})),
        shop.stranger(
            Method::POST,
            &format!("/v1/carts/{}/checkout/{order}/complete", cart.id),
        ),
        shop.stranger(
            Method::DELETE,
            &format!("/v1/carts/{}/checkout/{order}", cart.id),
        )
        .header(emporium_platform::auth::GATEWAY_HEADER, "a guess"),
        shop.stranger(Method::POST, "/v1/carts"),
        shop.stranger(
            Method::PUT,
            &format!("/v1/carts/{}", emporium_platform::id::new_id()),
        ),
        shop.stranger(Method::GET, &format!("/v1/carts/{}", cart.id)),
        shop.stranger(Method::POST, &format!("/v1/carts/{}/lines", cart.id))
            .json(&json!({"product_id": product, "quantity": 1})),
        shop.stranger(Method::DELETE, &format!("/v1/carts/{}/lines", cart.id)),
        shop.stranger(
            Method::PUT,
            &format!("/v1/carts/{}/lines/{product}", cart.id),
        )
        .json(&json!({"quantity": 2})),
        shop.stranger(
            Method::DELETE,
            &format!("/v1/carts/{}/lines/{product}", cart.id),
        ),
    ] {
        expect_problem(request.send().await.expect("send"), 401, "gateway_required").await;
    }
    assert_eq!(shop.cart(&cart.id).await.checkout_order_id, None);
    // With it, bad values are client errors.
    expect_problem(
        shop.claim(&cart.id, "not-an-id", cart.version).await,
        422,
        "validation_failed",
    )
    .await;
    expect_problem(
        shop.complete(&cart.id, "nope").await,
        422,
        "validation_failed",
    )
    .await;
    let missing = emporium_platform::id::new_id();
    expect_problem(shop.claim(&missing, &order, 1).await, 404, "cart_not_found").await;
    expect_problem(shop.release(&missing, &order).await, 404, "cart_not_found").await;
    assert_eq!(shop.cart(&cart.id).await, cart, "nothing changed");
}

#[tokio::test]
async fn carts_opened_at_one_id_at_once_are_one_cart_that_keeps_every_add() {
    let shop = spawn_shop(CartLimits {
        max_quantity: 1000,
        ..limits()
    })
    .await;
    let mug = shop.product("MUG-1", 800, 1000).await;
    let id = emporium_platform::id::new_id();
    assert_eq!(shop.get(&id).await.status(), StatusCode::NOT_FOUND);
    // As a session's first adds arriving at once do: open the session's cart, then add.
    let opened = futures::future::join_all((0..20).map(|_| async {
        let opened = shop
            .request(Method::PUT, &format!("/v1/carts/{id}"))
            .send()
            .await
            .expect("send");
        let status = opened.status().as_u16();
        let added = shop.add(&id, &mug.id, 1).await.status().as_u16();
        (status, added)
    }))
    .await;
    let made = opened.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(made, 1, "{opened:?}");
    assert!(
        opened
            .iter()
            .all(|(status, added)| [200, 201].contains(status) && *added == 200)
    );
    assert_eq!(quantities(&shop.cart(&id).await), [("MUG-1".into(), 20)]);
    // Opening it again changes nothing; a malformed id is refused.
    let again = shop
        .request(Method::PUT, &format!("/v1/carts/{id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Cart>().await.expect("cart").item_count, 20);
    expect_problem(
        shop.request(Method::PUT, "/v1/carts/not-a-cart")
            .send()
            .await
            .expect("send"),
        422,
        "validation_failed",
    )
    .await;
}
