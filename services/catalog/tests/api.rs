//! The catalog's HTTP API, spawned on port 0 over the embedded adapters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use emporium_api::Money;
use emporium_api::catalog::{Category, Product, ProductPage, StoredImage};
use emporium_api::events::{Envelope, EventType};
use emporium_catalog::startup::{self, CatalogConfig, CatalogPorts};
use emporium_platform::testing::{self, Spawned, TestClient, expect_problem};
use emporium_ports::blob::local::LocalBlobs;
use emporium_ports::cache::memory::MemoryCache;
use emporium_ports::events::stored::StoredEvents;
use emporium_ports::events::{Events, GroupDef};
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{
    Condition, Item, Key, Page, Query, Result as StorageResult, Storage, TxOp, Update,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "test-admin-key";

/// A consumer group of every catalog event, standing for the search index and the others.
const LISTENER: GroupDef = GroupDef {
    name: "listener",
    types: &[
        EventType::ProductCreated.as_str(),
        EventType::ProductUpdated.as_str(),
        EventType::ProductDeleted.as_str(),
        EventType::CategoryChanged.as_str(),
    ],
    visibility: Duration::from_secs(30),
    max_attempts: 3,
};

// === impl CountingStorage ===

/// The embedded store, counting reads of products and optionally slowing every read, so tests
/// can see how often the catalog reaches the store for a product (the outbox's sweeper reads
/// its lease once a second, which is not counted).
struct CountingStorage {
    inner: EmbeddedStorage,
    gets: AtomicUsize,
    get_delay_ms: AtomicU64,
}

#[async_trait]
impl Storage for CountingStorage {
    async fn get(&self, table: &'static str, key: &Key) -> StorageResult<Option<Item>> {
        if key.pk.starts_with("product#") {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        let delay = self.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.get(table, key).await
    }
    async fn put(&self, t: &'static str, i: Item, c: Option<Condition>) -> StorageResult<()> {
        self.inner.put(t, i, c).await
    }
    async fn update(
        &self,
        t: &'static str,
        k: &Key,
        u: Update,
        c: Option<Condition>,
    ) -> StorageResult<Item> {
        self.inner.update(t, k, u, c).await
    }
    async fn delete(
        &self,
        t: &'static str,
        k: &Key,
        c: Option<Condition>,
    ) -> StorageResult<Option<Item>> {
        self.inner.delete(t, k, c).await
    }
    async fn query(&self, t: &'static str, q: Query) -> StorageResult<Page> {
        self.inner.query(t, q).await
    }
    async fn query_index(&self, t: &'static str, i: &'static str, q: Query) -> StorageResult<Page> {
        self.inner.query_index(t, i, q).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> StorageResult<()> {
        self.inner.transact(ops).await
    }
    async fn ping(&self) -> StorageResult<()> {
        self.inner.ping().await
    }
}

// === impl TestApp ===

struct TestApp {
    client: TestClient,
    /// The bus the catalog publishes to, with [`LISTENER`] on it.
    events: Arc<dyn Events>,
    storage: Arc<CountingStorage>,
    _server: Spawned,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = EmbeddedStorage::open(&dir.path().join("catalog.redb"), emporium_catalog::TABLES)
        .expect("open storage");
    let storage = Arc::new(CountingStorage {
        inner,
        gets: AtomicUsize::new(0),
        get_delay_ms: AtomicU64::new(0),
    });
    let ports = CatalogPorts {
        storage: storage.clone(),
        cache: Arc::new(MemoryCache::new(16 * 1024 * 1024)),
        blobs: Arc::new(LocalBlobs::open(&dir.path().join("blobs")).expect("blobs")),
        events: Arc::new(
            StoredEvents::embedded(&dir.path().join("events.redb"), &[LISTENER]).expect("events"),
        ),
    };
    let config = CatalogConfig {
        http: testing::http_settings(),
        currency: "USD".into(),
        admin_key: ADMIN_KEY.into(),
        cache_ttl: Duration::from_secs(300),
        image_limit_bytes: 64 * 1024,
    };
    let catalog = startup::catalog(&config, &ports);
    let server = Spawned::new(startup::start(&config, catalog, &ports).expect("start catalog"));
    TestApp {
        client: TestClient::new(server.url()).with_admin_key(ADMIN_KEY),
        events: ports.events.clone(),
        storage,
        _server: server,
        _dir: dir,
    }
}

impl TestApp {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, path)
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.admin(method, path)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.client.get_json(path).await
    }

    async fn create_category(&self, slug: &str, name: &str) -> Category {
        let response = self
            .admin(Method::POST, "/v1/categories")
            .json(&json!({"slug": slug, "name": name}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("category")
    }

    async fn create_product(&self, body: Value) -> Product {
        let response = self
            .admin(Method::POST, "/v1/products")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        response.json().await.expect("product")
    }

    async fn product_count(&self) -> usize {
        let mut count = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/products?limit=100&cursor={c}"),
                None => "/v1/products?limit=100".to_owned(),
            };
            let page: ProductPage = self.get_json(&path).await;
            count += page.items.len();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return count,
            }
        }
    }

    /// Every product of a listing, following cursors, with the page sizes seen.
    async fn walk(&self, query: &str) -> (Vec<Product>, Vec<usize>) {
        let mut products = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..200 {
            let path = match &cursor {
                Some(c) => format!("/v1/products?{query}&cursor={c}"),
                None => format!("/v1/products?{query}"),
            };
            let page: ProductPage = self.get_json(&path).await;
            sizes.push(page.items.len());
            products.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return (products, sizes),
            }
        }
        panic!("listing did not end");
    }
}

fn product_body(sku: &str, name: &str, category: &str, amount: i64) -> Value {
    json!({
        "sku": sku,
        "name": name,
        "description": format!("The {name}."),
        "category": category,
        "price": {"amount": amount, "currency": "USD"},
        "attributes": {"colour": "teal"}
    })
}

/// A small catalog: two categories, five products.
async fn seeded() -> (TestApp, Vec<Product>) {
    let app = spawn_app().await;
    app.create_category("kitchen", "Kitchen").await;
    app.create_category("garden", "Garden").await;
    let mut products = Vec::new();
    for (sku, name, category, amount) in [
        ("KIT-1", "Copper kettle", "kitchen", 4500),
        ("KIT-2", "Bread knife", "kitchen", 2500),
        ("KIT-3", "Apron", "kitchen", 1900),
        ("GAR-1", "Watering can", "garden", 3100),
        ("GAR-2", "Trowel", "garden", 1200),
    ] {
        products.push(
            app.create_product(product_body(sku, name, category, amount))
                .await,
        );
    }
    (app, products)
}

/// Every event [`LISTENER`] receives until `count` came or `within` passed, acknowledged and
/// read back as envelopes.
async fn heard(events: &dyn Events, count: usize, within: Duration) -> Vec<Envelope> {
    emporium_ports::events::conformance::collect(events, LISTENER.name, count, within, true)
        .await
        .iter()
        .map(|delivery| {
            let envelope = Envelope::from_json(delivery.event.body.as_bytes()).expect("envelope");
            assert_eq!(envelope.id, delivery.event.id);
            assert_eq!(envelope.kind.as_str(), delivery.event.kind);
            envelope
        })
        .collect()
}

// === Events ===

/// Each product and category write publishes its event, with the state after the change, and a
/// refused write publishes nothing.
#[tokio::test]
async fn every_change_publishes_its_event_and_a_refused_one_none() {
    let app = spawn_app().await;
    let kitchen = app.create_category("kitchen", "Kitchen").await;
    let kettle = app
        .create_product(product_body("KIT-1", "Copper kettle", "kitchen", 4500))
        .await;
    let taken = app
        .admin(Method::POST, "/v1/products")
        .json(&product_body("KIT-1", "Another kettle", "kitchen", 100))
        .send()
        .await
        .expect("send");
    expect_problem(taken, 409, "sku_taken").await;
    let path = format!("/v1/products/{}", kettle.id);
    let renamed: Product = app
        .admin(Method::PATCH, &path)
        .json(&json!({"version": 1, "name": "Copper kettle II"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("product");
    let gone = app
        .admin(Method::DELETE, &format!("{path}?version=2"))
        .send()
        .await
        .expect("send");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let patched = app
        .admin(Method::PATCH, "/v1/categories/kitchen")
        .json(&json!({"version": 1, "name": "Cookware"}))
        .send()
        .await
        .expect("send");
    assert_eq!(patched.status(), StatusCode::OK);
    let removed = app
        .admin(Method::DELETE, "/v1/categories/kitchen?version=2")
        .send()
        .await
        .expect("send");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);

    let mut got = heard(&*app.events, 6, Duration::from_secs(10)).await;
    // Nothing more: the refused product published nothing.
    got.extend(heard(&*app.events, 1, Duration::from_secs(2)).await);
    assert_eq!(got.len(), 6, "{got:#?}");
    let of =
        |kind: EventType| -> Vec<&Envelope> { got.iter().filter(|e| e.kind == kind).collect() };
    for envelope in &got {
        assert_eq!(envelope.specversion, "1.0");
        assert_eq!(envelope.source, "/emporium/catalog");
        assert_eq!(envelope.datacontenttype, "application/json");
    }
    let created = of(EventType::ProductCreated);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].subject, kettle.id);
    assert_eq!(created[0].data["product"]["sku"], "KIT-1");
    assert_eq!(created[0].data["product"]["name"], "Copper kettle");
    assert_eq!(created[0].data["product"]["version"], 1);
    let updated = of(EventType::ProductUpdated);
    assert_eq!(updated.len(), 1);
    assert_eq!(
        serde_json::from_value::<Product>(updated[0].data["product"].clone()).expect("product"),
        renamed
    );
    let deleted = of(EventType::ProductDeleted);
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        deleted[0].data,
        json!({"id": kettle.id, "sku": "KIT-1", "category": "kitchen", "version": 2})
    );
    let categories = of(EventType::CategoryChanged);
    let states: Vec<(String, u64, bool)> = categories
        .iter()
        .map(|e| {
            (
                e.data["category"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.data["category"]["version"].as_u64().unwrap_or_default(),
                e.data["deleted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    for state in [
        ("Kitchen".to_owned(), kitchen.version, false),
        ("Cookware".to_owned(), 2, false),
        ("Cookware".to_owned(), 2, true),
    ] {
        assert!(states.contains(&state), "{state:?} in {states:?}");
    }
}

// === Reading ===

#[tokio::test]
async fn products_are_listed_in_each_order_and_pages_cover_all_exactly_once() {
    let (app, _) = seeded().await;
    let names = |products: &[Product]| products.iter().map(|p| p.name.clone()).collect::<Vec<_>>();

    let (by_name, sizes) = app.walk("limit=2").await;
    assert_eq!(
        names(&by_name),
        [
            "Apron",
            "Bread knife",
            "Copper kettle",
            "Trowel",
            "Watering can"
        ]
    );
    assert_eq!(sizes, [2, 2, 1], "no empty trailing page");

    let (cheapest, _) = app.walk("sort=price_asc&limit=3").await;
    let prices: Vec<i64> = cheapest.iter().map(|p| p.price.amount).collect();
    assert_eq!(prices, [1200, 1900, 2500, 3100, 4500]);
    let (dearest, _) = app.walk("sort=price_desc&limit=1").await;
    let prices: Vec<i64> = dearest.iter().map(|p| p.price.amount).collect();
    assert_eq!(prices, [4500, 3100, 2500, 1900, 1200]);
    let (newest, _) = app.walk("sort=newest&limit=4").await;
    assert_eq!(newest.first().map(|p| p.sku.as_str()), Some("GAR-2"));
    assert_eq!(newest.last().map(|p| p.sku.as_str()), Some("KIT-1"));

    let (garden, _) = app.walk("category=garden&limit=1").await;
    assert_eq!(names(&garden), ["Trowel", "Watering can"]);
}

#[tokio::test]
async fn search_matches_every_word_and_combines_with_filters_and_paging() {
    let (app, _) = seeded().await;
    let (found, _) = app.walk("q=KNIFE").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].sku, "KIT-2");
    let (teal, sizes) = app.walk("q=teal&limit=2&sort=price_asc").await;
    assert_eq!(teal.len(), 5, "attribute values are searched");
    assert_eq!(sizes, [2, 2, 1]);
    let (kitchen, _) = app.walk("q=the+kettle&category=kitchen").await;
    assert_eq!(kitchen.len(), 1);
    let (none, sizes) = app.walk("q=kettle&category=garden").await;
    assert!(none.is_empty());
    assert_eq!(sizes, [0]);
}

#[tokio::test]
async fn one_product_is_read_by_id() {
    let (app, products) = seeded().await;
    let product: Product = app
        .get_json(&format!("/v1/products/{}", products[0].id))
        .await;
    assert_eq!(product, products[0]);
    let missing = app
        .request(
            Method::GET,
            &format!("/v1/products/{}", emporium_platform::id::new_id()),
        )
        .send()
        .await
        .expect("send");
    expect_problem(missing, 404, "product_not_found").await;
    let junk = app
        .request(Method::GET, "/v1/products/..%2F..%2Fetc")
        .send()
        .await
        .expect("send");
    expect_problem(junk, 404, "product_not_found").await;
}

#[tokio::test]
async fn bad_listing_queries_are_client_errors() {
    let (app, _) = seeded().await;
    let page: ProductPage = app.get_json("/v1/products?limit=2").await;
    let cursor = page.next_cursor.expect("more");
    let cases = [
        ("/v1/products?limit=0", 400, "invalid_query"),
        ("/v1/products?limit=10000", 400, "invalid_query"),
        ("/v1/products?limit=-1", 400, "invalid_query"),
        ("/v1/products?limit=ten", 400, "invalid_query"),
        ("/v1/products?sort=cheapest", 400, "invalid_query"),
        ("/v1/products?colour=red", 400, "invalid_query"),
        ("/v1/products?category=Not%20A%20Slug", 400, "invalid_query"),
        ("/v1/products?category=toys", 404, "category_not_found"),
        ("/v1/products?cursor=not-a-cursor", 400, "invalid_cursor"),
        (
            "/v1/products?cursor=eyJmIjoiMDAiLCJzIjoiYSJ9",
            400,
            "invalid_cursor",
        ),
        (
            &format!("/v1/products?limit=2&sort=price_asc&cursor={cursor}"),
            400,
            "invalid_cursor",
        ),
        (
            &format!("/v1/products?q={}", "x".repeat(101)),
            400,
            "invalid_query",
        ),
    ];
    for (path, status, code) in cases {
        let response = app.request(Method::GET, path).send().await.expect("send");
        expect_problem(response, status, code).await;
    }
}

#[tokio::test]
async fn categories_are_listed_with_product_counts() {
    let (app, _) = seeded().await;
    let categories: Vec<Category> = app.get_json("/v1/categories").await;
    let counts: Vec<(String, u64)> = categories
        .iter()
        .map(|c| (c.slug.clone(), c.product_count))
        .collect();
    assert_eq!(counts, [("garden".into(), 2), ("kitchen".into(), 3)]);
    let kitchen: Category = app.get_json("/v1/categories/kitchen").await;
    assert_eq!(kitchen.product_count, 3);
    let missing = app
        .request(Method::GET, "/v1/categories/toys")
        .send()
        .await
        .expect("send");
    expect_problem(missing, 404, "category_not_found").await;
}

// === Writing ===

#[tokio::test]
async fn admin_writes_need_the_right_key() {
    let (app, products) = seeded().await;
    let id = &products[0].id;
    let attempts = [
        (
            Method::POST,
            "/v1/products".to_owned(),
            Some(product_body("NEW-1", "New", "kitchen", 100)),
        ),
        (
            Method::PATCH,
            format!("/v1/products/{id}"),
            Some(json!({"version": 1, "name": "x"})),
        ),
        (Method::DELETE, format!("/v1/products/{id}"), None),
        (
            Method::POST,
            "/v1/categories".to_owned(),
            Some(json!({"slug": "toys", "name": "Toys"})),
        ),
        (
            Method::PATCH,
            "/v1/categories/kitchen".to_owned(),
            Some(json!({"version": 1, "name": "x"})),
        ),
        (Method::DELETE, "/v1/categories/garden".to_owned(), None),
        (Method::POST, "/v1/images".to_owned(), None),
    ];
    for (method, path, body) in attempts {
        for key in [None, Some("wrong-key"), Some("")] {
            let mut request = app.request(method.clone(), &path);
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("send");
            expect_problem(response, 401, "unauthorized").await;
        }
    }
    assert_eq!(app.product_count().await, 5, "nothing was written");
    let product: Product = app.get_json(&format!("/v1/products/{id}")).await;
    assert_eq!(product, products[0]);
    let categories: Vec<Category> = app.get_json("/v1/categories").await;
    assert_eq!(categories.len(), 2);
}

#[tokio::test]
async fn creating_a_product_returns_it_with_its_location() {
    let app = spawn_app().await;
    app.create_category("kitchen", "Kitchen").await;
    let response = app
        .admin(Method::POST, "/v1/products")
        .json(&product_body("  kit-9 ", "  Whisk ", "kitchen", 650))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    let product: Product = response.json().await.expect("product");
    assert_eq!(location, format!("/v1/products/{}", product.id));
    assert_eq!(product.sku, "KIT-9");
    assert_eq!(product.name, "Whisk");
    assert_eq!(product.version, 1);
    assert!(emporium_platform::id::is_valid(&product.id));
    let read: Product = app.get_json(&location).await;
    assert_eq!(read, product);
}

#[tokio::test]
async fn bad_product_bodies_are_refused_and_write_nothing() {
    let (app, _) = seeded().await;
    let valid = product_body("NEW-1", "New thing", "kitchen", 1000);
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let json_cases = [
        (
            with("price", json!({"amount": -5, "currency": "USD"})),
            422,
            "validation_failed",
        ),
        (
            with(
                "price",
                json!({"amount": 100_000_000_000i64, "currency": "USD"}),
            ),
            422,
            "validation_failed",
        ),
        (
            with("price", json!({"amount": 100, "currency": "EUR"})),
            422,
            "validation_failed",
        ),
        (
            with("price", json!({"amount": "ten", "currency": "USD"})),
            400,
            "invalid_body",
        ),
        (
            with("price", json!({"amount": 1e30, "currency": "USD"})),
            400,
            "invalid_body",
        ),
        (with("price", json!({"amount": 100})), 400, "invalid_body"),
        (with("name", json!("")), 422, "validation_failed"),
        (with("name", json!("   ")), 422, "validation_failed"),
        (with("name", json!(42)), 400, "invalid_body"),
        (with("sku", json!("has spaces")), 422, "validation_failed"),
        (with("category", json!("toys")), 422, "validation_failed"),
        (
            with("images", json!(["images/missing.png"])),
            422,
            "validation_failed",
        ),
        (
            with("images", json!(["../../etc/passwd"])),
            422,
            "validation_failed",
        ),
        (with("surprise", json!(true)), 400, "invalid_body"),
        (with("sku", json!("KIT-1")), 409, "sku_taken"),
        (json!([]), 400, "invalid_body"),
        (json!({}), 400, "invalid_body"),
    ];
    for (body, status, code) in json_cases {
        let response = app
            .admin(Method::POST, "/v1/products")
            .json(&body)
            .send()
            .await
            .expect("send");
        let problem = expect_problem(response, status, code).await;
        if code == "validation_failed" {
            assert!(!problem.errors.is_empty(), "validation lists the fields");
        }
    }
    let raw_cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "application/json",
            b"{\"sku\": ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            b"{\"sku\": \"\xff\xfe\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "text/plain",
            valid.to_string().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!("{{\"sku\":\"{}\"}}", "x".repeat(20_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (content_type, body, status, code) in raw_cases {
        let response = app
            .admin(Method::POST, "/v1/products")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        expect_problem(response, status, code).await;
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let response = app
        .admin(Method::POST, "/v1/products")
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("send");
    // Rejected at the first bracket (a list is not a product), before any recursion.
    expect_problem(response, 400, "invalid_body").await;
    assert_eq!(app.product_count().await, 5, "no partial write");
    let kitchen: Category = app.get_json("/v1/categories/kitchen").await;
    assert_eq!(kitchen.product_count, 3, "counts untouched");
}

#[tokio::test]
async fn updates_use_optimistic_concurrency_and_readers_see_them_at_once() {
    let (app, products) = seeded().await;
    let kettle = &products[0];
    let path = format!("/v1/products/{}", kettle.id);
    // Warm the caches for the product and for a listing.
    let _: Product = app.get_json(&path).await;
    let _: ProductPage = app.get_json("/v1/products?category=kitchen").await;

    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"version": 1, "price": {"amount": 3900, "currency": "USD"}, "name": "Copper kettle II"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Product = response.json().await.expect("product");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.price, Money::new(3900, "USD"));
    assert_eq!(updated.created_at, kettle.created_at);

    let read: Product = app.get_json(&path).await;
    assert_eq!(read, updated, "the cached product was invalidated");
    let listed: ProductPage = app.get_json("/v1/products?category=kitchen").await;
    assert!(
        listed
            .items
            .iter()
            .any(|p| p.name == "Copper kettle II" && p.price.amount == 3900),
        "the cached listing was invalidated"
    );

    let stale = app
        .admin(Method::PATCH, &path)
        .json(&json!({"version": 1, "name": "Lost update"}))
        .send()
        .await
        .expect("send");
    let problem = expect_problem(stale, 409, "version_conflict").await;
    assert_eq!(problem.extensions["current_version"], 2);
    let read: Product = app.get_json(&path).await;
    assert_eq!(read.name, "Copper kettle II");
}

#[tokio::test]
async fn bad_updates_are_refused_and_change_nothing() {
    let (app, products) = seeded().await;
    let path = format!("/v1/products/{}", products[0].id);
    let cases = [
        (json!({"name": "no version"}), 400, "invalid_body"),
        (
            json!({"version": 1, "price": {"amount": -1, "currency": "USD"}}),
            422,
            "validation_failed",
        ),
        (json!({"version": 1, "name": ""}), 422, "validation_failed"),
        (
            json!({"version": 1, "category": "toys"}),
            422,
            "validation_failed",
        ),
        (json!({"version": 1, "sku": "GAR-1"}), 409, "sku_taken"),
        (json!({"version": 1, "colour": "red"}), 400, "invalid_body"),
        (json!({"version": -1}), 400, "invalid_body"),
        (json!({"version": 7, "name": "x"}), 409, "version_conflict"),
    ];
    for (body, status, code) in cases {
        let response = app
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .expect("send");
        expect_problem(response, status, code).await;
    }
    let unknown = app
        .admin(
            Method::PATCH,
            &format!("/v1/products/{}", emporium_platform::id::new_id()),
        )
        .json(&json!({"version": 1, "name": "x"}))
        .send()
        .await
        .expect("send");
    expect_problem(unknown, 404, "product_not_found").await;
    let read: Product = app.get_json(&path).await;
    assert_eq!(read, products[0]);
    let counts: Vec<Category> = app.get_json("/v1/categories").await;
    assert_eq!(counts.iter().map(|c| c.product_count).sum::<u64>(), 5);
}

#[tokio::test]
async fn moving_a_product_and_changing_its_sku_keep_counts_and_claims_right() {
    let (app, products) = seeded().await;
    let apron = &products[2];
    let path = format!("/v1/products/{}", apron.id);
    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"version": 1, "category": "garden", "sku": "GAR-3"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let categories: Vec<Category> = app.get_json("/v1/categories").await;
    let counts: Vec<u64> = categories.iter().map(|c| c.product_count).collect();
    assert_eq!(counts, [3, 2], "garden gained, kitchen lost");
    let (garden, _) = app.walk("category=garden").await;
    assert!(garden.iter().any(|p| p.id == apron.id));
    // The old SKU is free again; the new one is taken.
    app.create_product(product_body("KIT-3", "Oven mitt", "kitchen", 900))
        .await;
    let taken = app
        .admin(Method::POST, "/v1/products")
        .json(&product_body("gar-3", "Rake", "garden", 900))
        .send()
        .await
        .expect("send");
    expect_problem(taken, 409, "sku_taken").await;
}

#[tokio::test]
async fn deleting_a_product_removes_it_everywhere() {
    let (app, products) = seeded().await;
    let trowel = &products[4];
    let path = format!("/v1/products/{}", trowel.id);
    let _: Product = app.get_json(&path).await;
    let stale = app
        .admin(Method::DELETE, &format!("{path}?version=9"))
        .send()
        .await
        .expect("send");
    expect_problem(stale, 409, "version_conflict").await;
    let bad = app
        .admin(Method::DELETE, &format!("{path}?version=x"))
        .send()
        .await
        .expect("send");
    expect_problem(bad, 400, "invalid_query").await;
    let deleted = app
        .admin(Method::DELETE, &format!("{path}?version=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app.request(Method::GET, &path).send().await.expect("send");
    expect_problem(gone, 404, "product_not_found").await;
    let again = app.admin(Method::DELETE, &path).send().await.expect("send");
    expect_problem(again, 404, "product_not_found").await;
    assert_eq!(app.product_count().await, 4);
    let garden: Category = app.get_json("/v1/categories/garden").await;
    assert_eq!(garden.product_count, 1);
    app.create_product(product_body("GAR-2", "Trowel", "garden", 1200))
        .await;
}

#[tokio::test]
async fn categories_are_created_changed_and_deleted_only_when_empty() {
    let (app, _) = seeded().await;
    let cases = [
        (
            json!({"slug": "kitchen", "name": "Again"}),
            409,
            "category_exists",
        ),
        (
            json!({"slug": "Bad Slug", "name": "x"}),
            422,
            "validation_failed",
        ),
        (
            json!({"slug": "-edge", "name": "x"}),
            422,
            "validation_failed",
        ),
        (
            json!({"slug": "toys", "name": ""}),
            422,
            "validation_failed",
        ),
        (json!({"slug": "toys"}), 400, "invalid_body"),
        (
            json!({"slug": "toys", "name": "Toys", "extra": 1}),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let response = app
            .admin(Method::POST, "/v1/categories")
            .json(&body)
            .send()
            .await
            .expect("send");
        expect_problem(response, status, code).await;
    }
    let not_empty = app
        .admin(Method::DELETE, "/v1/categories/garden")
        .send()
        .await
        .expect("send");
    let problem = expect_problem(not_empty, 409, "category_not_empty").await;
    assert_eq!(problem.extensions["product_count"], 2);

    let toys = app.create_category("toys", "Toys").await;
    let renamed = app
        .admin(Method::PATCH, "/v1/categories/toys")
        .json(&json!({"version": toys.version, "name": "Toys & games", "position": 3}))
        .send()
        .await
        .expect("send");
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Category = renamed.json().await.expect("category");
    assert_eq!(renamed.version, 2);
    let listed: Category = app.get_json("/v1/categories/toys").await;
    assert_eq!(listed.name, "Toys & games");
    let stale = app
        .admin(Method::PATCH, "/v1/categories/toys")
        .json(&json!({"version": 1, "name": "Old"}))
        .send()
        .await
        .expect("send");
    expect_problem(stale, 409, "version_conflict").await;
    let deleted = app
        .admin(Method::DELETE, "/v1/categories/toys?version=2")
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app
        .admin(Method::DELETE, "/v1/categories/toys")
        .send()
        .await
        .expect("send");
    expect_problem(gone, 404, "category_not_found").await;
}

// === Images ===

fn png(seed: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(seed, 64));
    bytes
}

#[tokio::test]
async fn images_are_stored_by_content_and_usable_in_products() {
    let app = spawn_app().await;
    app.create_category("kitchen", "Kitchen").await;
    let upload = |body: Vec<u8>, content_type: &'static str| {
        app.admin(Method::POST, "/v1/images")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let first = upload(png(1), "image/png").await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: StoredImage = first.json().await.expect("stored");
    assert!(first.key.starts_with("images/") && first.key.ends_with(".png"));
    let again: StoredImage = upload(png(1), "image/png")
        .await
        .expect("send")
        .json()
        .await
        .expect("stored");
    assert_eq!(again.key, first.key, "same bytes, same key");
    let other: StoredImage = upload(png(2), "image/png")
        .await
        .expect("send")
        .json()
        .await
        .expect("stored");
    assert_ne!(other.key, first.key);

    let svg = upload(b"<svg onload='alert(1)'/>".to_vec(), "image/svg+xml")
        .await
        .expect("send");
    expect_problem(svg, 415, "unsupported_media_type").await;
    let lying = upload(b"<html>".to_vec(), "image/png").await.expect("send");
    expect_problem(lying, 422, "validation_failed").await;
    let empty = upload(Vec::new(), "image/png").await.expect("send");
    expect_problem(empty, 422, "validation_failed").await;
    let huge = upload(vec![0u8; 200 * 1024], "image/png")
        .await
        .expect("send");
    expect_problem(huge, 413, "payload_too_large").await;

    let mut body = product_body("IMG-1", "Pictured", "kitchen", 100);
    body["images"] = json!([first.key, other.key]);
    let product = app.create_product(body).await;
    assert_eq!(product.images, [first.key, other.key]);
}

// === The cache ===

#[tokio::test]
async fn concurrent_misses_for_one_product_read_the_store_once() {
    let (app, products) = seeded().await;
    let path = format!("/v1/products/{}", products[1].id);
    app.storage.get_delay_ms.store(300, Ordering::SeqCst);
    let before = app.storage.gets.load(Ordering::SeqCst);
    let responses =
        futures::future::join_all((0..40).map(|_| app.request(Method::GET, &path).send())).await;
    for response in responses {
        let response = response.expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        let product: Product = response.json().await.expect("product");
        assert_eq!(product.id, products[1].id);
    }
    assert_eq!(
        app.storage.gets.load(Ordering::SeqCst) - before,
        1,
        "40 concurrent requests, one store read"
    );
    // Hits afterwards do not touch the store at all.
    let _: Product = app.get_json(&path).await;
    assert_eq!(app.storage.gets.load(Ordering::SeqCst) - before, 1);
}

// === Races ===

/// Exactly one attempt got `winner`; every other one a 409.
fn assert_one_winner(attempts: &[reqwest::Result<reqwest::Response>], winner: u16) {
    let statuses: Vec<u16> = attempts
        .iter()
        .map(|r| r.as_ref().expect("send").status().as_u16())
        .collect();
    let won = statuses.iter().filter(|&&s| s == winner).count();
    let lost = statuses.iter().filter(|&&s| s == 409).count();
    assert_eq!((won, lost), (1, statuses.len() - 1), "{statuses:?}");
}

#[tokio::test]
async fn concurrent_updates_from_one_version_have_exactly_one_winner() {
    let (app, products) = seeded().await;
    let path = format!("/v1/products/{}", products[3].id);
    let attempts = futures::future::join_all((0..20).map(|i| {
        app.admin(Method::PATCH, &path)
            .json(&json!({"version": 1, "name": format!("Can {i}")}))
            .send()
    }))
    .await;
    assert_one_winner(&attempts, 200);
    let read: Product = app.get_json(&path).await;
    assert_eq!(read.version, 2);
}

#[tokio::test]
async fn concurrent_creates_of_one_sku_have_exactly_one_winner() {
    let (app, _) = seeded().await;
    let attempts = futures::future::join_all((0..20).map(|i| {
        app.admin(Method::POST, "/v1/products")
            .json(&product_body(
                "RACE-1",
                &format!("Racer {i}"),
                "garden",
                500,
            ))
            .send()
    }))
    .await;
    assert_one_winner(&attempts, 201);
    let garden: Category = app.get_json("/v1/categories/garden").await;
    assert_eq!(garden.product_count, 3);
}

// === The service itself ===

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let document: Value = app.get_json("/openapi.json").await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/products", &["get", "post"][..]),
        ("/v1/products/{id}", &["get", "patch", "delete"][..]),
        ("/v1/categories", &["get", "post"][..]),
        ("/v1/categories/{slug}", &["get", "patch", "delete"][..]),
        ("/v1/images", &["post"][..]),
    ] {
        for method in methods {
            assert!(
                paths[path].get(*method).is_some(),
                "{method} {path} documented"
            );
        }
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert!(document["components"]["securitySchemes"]["admin_key"].is_object());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_and_probes_answer() {
    let app = spawn_app().await;
    let nowhere = app
        .request(Method::GET, "/v1/nowhere")
        .send()
        .await
        .expect("send");
    expect_problem(nowhere, 404, "not_found").await;
    let put = app
        .admin(Method::PUT, "/v1/products")
        .send()
        .await
        .expect("send");
    expect_problem(put, 405, "method_not_allowed").await;
    let health = app
        .request(Method::GET, "/healthz")
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    let ready: Value = app.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["storage", "blobs", "cache", "events relay"]);
}
