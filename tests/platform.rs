//! The whole platform, started as `emporium up` starts it, on each backend; and `init` and
//! `seed`, as the deployment's setup job runs them.

use emporium::run::{Service, Settings};
use emporium_ports::blob::BlobKey;
use emporium_tests::{Backend, CARD_DECLINED, CARD_OK, TestPlatform, customer, key, order_body};
use serde_json::{Value, json};

emporium_tests::on_every_backend!(
    up_serves_the_seeded_demo_catalog_with_its_images,
    init_and_seed_twice_leave_the_state_of_once,
    a_shopper_browses_fills_a_cart_checks_out_and_finds_the_order,
    every_service_serves_its_metrics_and_a_checkout_moves_them,
    catalog_changes_reach_a_listener_through_the_bus,
);

async fn up_serves_the_seeded_demo_catalog_with_its_images(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let catalog = shop.url(Service::Catalog);
    let seeded = shop.platform.seeded.expect("an empty store is seeded");
    assert!(
        seeded.products >= 48 && seeded.categories >= 6,
        "{seeded:?}"
    );

    let page = shop
        .get_json(&format!("{catalog}/v1/products?limit=100"))
        .await;
    let products = page["items"].as_array().expect("items");
    assert_eq!(products.len(), seeded.products);
    let categories = shop.get_json(&format!("{catalog}/v1/categories")).await;
    let counted: u64 = categories
        .as_array()
        .expect("categories")
        .iter()
        .map(|c| c["product_count"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        counted as usize,
        products.len(),
        "every product is counted once"
    );

    let blobs = emporium_adapters::connect::blobs(&shop.settings.common.blobs_uri())
        .await
        .expect("blobs");
    for product in products {
        let key = product["images"][0].as_str().expect("image key");
        let image = blobs
            .get(&BlobKey::parse(key).expect("valid key"))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(image.meta.content_type, "image/svg+xml");
        let svg = String::from_utf8(image.body.to_vec()).expect("text");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
    shop.platform.stop(true).await.expect("stops");
}

/// Everything `init` and `seed` leave behind, read through the services' own code: catalog
/// categories and products, stock levels, and the blob listing with ETags.
async fn state(settings: &Settings) -> Value {
    // No shared cache: the state as stored, not as remembered.
    let cache = emporium_adapters::connect::cache("memory://")
        .await
        .expect("cache");
    let shop = emporium::setup::DemoShop::open(settings, cache)
        .await
        .expect("stores");
    let (catalog, inventory, blobs) = (&shop.catalog, &shop.inventory, &shop.blobs);
    let categories = catalog.categories().await.expect("categories");
    let products = catalog
        .list_products(&emporium_api::catalog::ProductQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("products");
    assert!(
        products.next_cursor.is_none(),
        "one page holds the demo shop"
    );
    let stock = inventory.list_stock(Some(100), None).await.expect("stock");
    assert!(stock.next_cursor.is_none(), "one page holds the demo stock");
    let listed = blobs.list("", None, 1000).await.expect("blobs");
    let blob_list: Vec<Value> = listed
        .items
        .iter()
        .map(|b| json!({"key": b.key, "size": b.size, "etag": b.etag}))
        .collect();
    let state = json!({
        "categories": categories,
        "products": products.items,
        "stock": stock.items,
        "blobs": blob_list,
    });
    shop.close().await.expect("closed");
    state
}

async fn init_and_seed_twice_leave_the_state_of_once(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stand = backend.stand();
    let settings = emporium_tests::settings(dir.path(), &stand.flags());

    emporium::setup::init(&settings).await.expect("init");
    let first = emporium::setup::seed(&settings, &emporium::demo::quiet)
        .await
        .expect("seed");
    assert_eq!(first.categories, emporium::demo::CATEGORIES.len());
    assert_eq!(first.products, emporium::demo::PRODUCTS.len());
    assert_eq!(first.stock, emporium::demo::PRODUCTS.len());
    let once = state(&settings).await;
    assert_eq!(
        once["products"].as_array().map(Vec::len),
        Some(emporium::demo::PRODUCTS.len())
    );
    assert!(!once["blobs"].as_array().expect("blobs").is_empty());

    emporium::setup::init(&settings).await.expect("init again");
    let second = emporium::setup::seed(&settings, &emporium::demo::quiet)
        .await
        .expect("seed again");
    assert_eq!(
        second,
        emporium::demo::SeedReport::default(),
        "nothing new the second time"
    );
    let twice = state(&settings).await;
    assert_eq!(once, twice, "the second run changed nothing");

    // And the services serve what was seeded, without seeding again themselves.
    let plan = emporium::run::Plan {
        services: Service::ALL.to_vec(),
        seed_when_empty: true,
        ..Default::default()
    };
    let platform = emporium::run::Platform::start(&settings, &plan)
        .await
        .expect("starts");
    assert_eq!(platform.seeded, None, "found the shop already there");
    let catalog = platform.url(Service::Catalog).expect("catalog");
    let page: Value = reqwest::get(format!("{catalog}/v1/products?limit=100"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"], once["products"]);
    platform.stop(true).await.expect("stops");
}

/// Browse the catalog → fill a cart → check out → see the order in the history, through the
/// typed clients the storefront uses, with every service over HTTP.
async fn a_shopper_browses_fills_a_cart_checks_out_and_finds_the_order(backend: Backend) {
    use emporium_api::catalog::{ProductQuery, ProductSort};
    use emporium_api::client::{
        CartClient, CatalogClient, InventoryClient, OrderClient, RetryPolicy,
    };
    use emporium_api::order::OrderStatus;

    let shop = TestPlatform::start(backend).await;
    let http = shop.http.clone();
    let retry = RetryPolicy::default();
    let catalog = CatalogClient::new(&shop.url(Service::Catalog), http.clone(), retry);
    let inventory = InventoryClient::new(&shop.url(Service::Inventory), http.clone(), retry);
    let carts = CartClient::new(&shop.url(Service::Cart), http.clone(), retry);
    let orders = OrderClient::new(&shop.url(Service::Order), http, retry);

    // Browse: a department, cheapest first, then a search.
    let categories = catalog.categories().await.expect("categories");
    assert!(categories.len() >= 6);
    let audio = catalog
        .products(&ProductQuery {
            category: Some("audio".into()),
            sort: Some(ProductSort::PriceAsc),
            ..Default::default()
        })
        .await
        .expect("audio");
    let prices: Vec<i64> = audio.items.iter().map(|p| p.price.amount).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
    let found = catalog
        .products(&ProductQuery {
            q: Some("merino".into()),
            ..Default::default()
        })
        .await
        .expect("search");
    assert!(found.items.iter().all(|p| {
        let text = format!("{} {} {:?}", p.name, p.description, p.attributes).to_lowercase();
        text.contains("merino")
    }));

    // The demo shop has products out of stock and low on stock to show.
    let skus: Vec<&str> = audio.items.iter().map(|p| p.sku.as_str()).collect();
    let levels = inventory.stocks(&skus).await.expect("stock");
    assert_eq!(levels.len(), skus.len(), "every demo product has stock");
    assert!(levels.iter().any(|l| l.available == 0), "one is sold out");
    assert!(
        levels.iter().any(|l| (1..=3).contains(&l.available)),
        "one runs low"
    );

    // Fill a cart with two in-stock products.
    let buyable: Vec<_> = audio
        .items
        .iter()
        .filter(|p| levels.iter().any(|l| l.sku == p.sku && l.available >= 5))
        .take(2)
        .collect();
    assert_eq!(buyable.len(), 2);
    let cart = carts.create().await.expect("cart");
    for product in &buyable {
        carts
            .add_line(
                &cart.id,
                &emporium_api::cart::AddCartLine {
                    product_id: product.id.clone(),
                    quantity: 1,
                },
            )
            .await
            .expect("add");
    }
    let cart = carts
        .set_quantity(&cart.id, &buyable[0].id, 2)
        .await
        .expect("quantity");
    assert_eq!(cart.item_count, 3);

    // Check out.
    let customer = emporium_tests::customer();
    let body: emporium_api::order::PlaceOrder = serde_json::from_value(emporium_tests::order_body(
        &cart.id,
        emporium_tests::CARD_OK,
    ))
    .expect("body");
    let (status, order) = orders
        .place(&customer, &emporium_tests::key(), &body)
        .await
        .expect("place");
    assert_eq!(status.as_u16(), 201);
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.lines.len(), 2);
    assert_eq!(
        order.totals.subtotal.amount,
        2 * buyable[0].price.amount + buyable[1].price.amount
    );
    // The cart's consumer of `order.confirmed` clears it.
    shop.cart_settles(&cart.id, |cart| cart.lines.is_empty())
        .await;

    // History.
    let history = orders.orders(&customer, None, None).await.expect("history");
    assert_eq!(history.items.len(), 1);
    assert_eq!(history.items[0].id, order.id);
    assert_eq!(
        orders.order(&customer, &order.id).await.expect("order"),
        order
    );
    shop.platform.stop(true).await.expect("stops");
}

/// The value of the sample `series` (name and labels, exactly as exposed), 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// One confirmed checkout of one unit of KIT-001, made on the services' own APIs; the product.
async fn buy_one(shop: &TestPlatform) -> emporium_api::catalog::Product {
    let product = shop.product_with_sku("KIT-001").await;
    let cart = shop.cart_with(&[(&product, 1)]).await;
    let placed = shop
        .place(&customer(), &key(), &order_body(&cart.id, CARD_OK))
        .await;
    assert_eq!(placed.status(), 201);
    product
}

async fn every_service_serves_its_metrics_and_a_checkout_moves_them(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let mut before = std::collections::HashMap::new();
    for service in Service::ALL {
        before.insert(service.name(), shop.metrics(*service).await);
    }

    let product = buy_one(&shop).await;
    let declined_cart = shop.cart_with(&[(&product, 1)]).await;
    let declined = shop
        .place(
            &customer(),
            &key(),
            &order_body(&declined_cart.id, CARD_DECLINED),
        )
        .await;
    assert_eq!(declined.status(), 402);
    let page = reqwest::get(format!(
        "{}/p/{}",
        shop.url(Service::Storefront),
        product.id
    ))
    .await
    .expect("page");
    assert_eq!(page.status(), 200);

    // One series each service must have moved, by its route pattern.
    let moved = [
        (Service::Catalog, "GET", "/v1/products/{id}", 200),
        (Service::Inventory, "POST", "/v1/reservations", 201),
        (Service::Cart, "POST", "/v1/carts/{id}/lines", 200),
        (Service::Order, "POST", "/v1/orders", 201),
        (Service::Storefront, "GET", "/p/{id}", 200),
    ];
    for (service, method, route, status) in moved {
        let after = shop.metrics(service).await;
        let name = service.name();
        let series = format!(
            "emporium_{name}_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        );
        assert!(
            sample(&after, &series) > sample(&before[service.name()], &series),
            "{series} did not move:\n{after}"
        );
        let timed = format!(
            "emporium_{name}_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        );
        assert!(sample(&after, &timed) > 0.0, "{timed}");
        assert!(after.contains(&format!("emporium_{name}_http_requests_in_flight")));
    }

    // The services' own series.
    let moved = [
        (
            Service::Order,
            r#"emporium_order_checkouts_total{by="checkout",status="confirmed",reason="none"}"#,
        ),
        (
            Service::Order,
            r#"emporium_order_checkouts_total{by="checkout",status="failed",reason="payment_declined"}"#,
        ),
        (
            Service::Inventory,
            r#"emporium_inventory_reservations_total{outcome="held"}"#,
        ),
        // Adding the line read the product through the cart's cache; the checkout read the cart.
        (Service::Cart, "emporium_cart_cache_misses_total"),
        (Service::Catalog, "emporium_catalog_cache_misses_total"),
    ];
    for (service, series) in moved {
        let after = shop.metrics(service).await;
        assert!(
            sample(&after, series) > sample(&before[service.name()], series),
            "{series} did not move:\n{after}"
        );
    }
    let inventory = shop.metrics(Service::Inventory).await;
    assert!(inventory.contains("emporium_inventory_reservation_conflicts_total 0"));
    // Every caller reports the circuit of each service it calls, closed while all is well.
    for (service, dependencies) in [
        (
            Service::Storefront,
            &["catalog", "inventory", "cart", "order"][..],
        ),
        (Service::Order, &["catalog", "inventory", "cart"][..]),
        (Service::Cart, &["catalog", "inventory"][..]),
    ] {
        let text = shop.metrics(service).await;
        for dependency in dependencies {
            let series = format!(
                "emporium_{}_circuit_open{{dependency=\"{dependency}\"}} 0",
                service.name()
            );
            assert!(text.contains(&series), "{series} in:\n{text}");
        }
    }
    for service in [Service::Cart, Service::Catalog] {
        let text = shop.metrics(service).await;
        let name = service.name();
        assert!(
            text.contains(&format!("emporium_{name}_cache_degraded 0")),
            "{text}"
        );
        assert!(text.contains(&format!("emporium_{name}_cache_hits_total")));
        // Redis has a pool to report; the in-process cache has none.
        let pooled = text.contains(&format!("emporium_{name}_cache_pool_max_connections"));
        assert_eq!(pooled, backend == Backend::Aws, "{text}");
    }
}

/// Every series the Grafana dashboard queries is one the services serve: a renamed metric
/// would otherwise leave a panel silently empty.
#[tokio::test]
async fn the_dashboard_queries_only_series_the_services_serve() {
    let shop = TestPlatform::start(Backend::Embedded).await;
    // A checkout, so the labelled families have samples, and its events handled, so the
    // consumers' have too.
    buy_one(&shop).await;
    for service in [Service::Inventory, Service::Cart] {
        let lag = format!("emporium_{}_events_lag_seconds_count", service.name());
        for _ in 0..400 {
            if shop.metrics(service).await.contains(&lag) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    let mut served = std::collections::BTreeSet::new();
    for service in Service::ALL {
        // The first scrape is itself a request, so the second shows the HTTP families even of
        // a service nothing else called.
        shop.metrics(*service).await;
        for line in shop.metrics(*service).await.lines() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split(' ').next())
            {
                served.insert(name.to_owned());
            }
        }
    }
    // A series is its family's name plus the suffix of its type.
    let serves = |series: &str| {
        served.contains(series)
            || ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| {
                    series
                        .strip_suffix(suffix)
                        .is_some_and(|f| served.contains(f))
                })
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../helm/emporium/dashboards/emporium.json"
    ))
    .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut checked = 0;
    for expr in &exprs {
        for service in Service::ALL {
            let expr = expr.replace("${service}", service.name());
            let mut rest = expr.as_str();
            while let Some(at) = rest.find("emporium_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(serves(&name), "{name} in {expr} is not served");
                checked += 1;
                rest = &rest[at + name.len()..];
            }
        }
    }
    assert!(checked >= exprs.len());
}

/// One checkout through the storefront is one trace: the storefront's request span is the root,
/// the order service's request is its child, and the calls the order service makes (the cart,
/// the catalog's prices, the inventory's reservation) hang below the order's span, through its
/// saga step spans, all with the same trace id; so do the inventory's and the cart's handling of
/// its `order.confirmed`, after the answer, continued from the event's `traceparent`.
#[tokio::test]
async fn a_checkout_through_the_storefront_is_one_trace_across_the_services() {
    use opentelemetry::trace::SpanId;
    use opentelemetry_sdk::trace::SpanData;
    use std::collections::HashMap;

    let (exporter, logs, _telemetry) = telemetry_in_memory(
        "warn,emporium_platform=info,emporium_order=info,emporium_ports=info",
        emporium_platform::telemetry::RootSampler::new(0, 1.0),
    );
    let shop = TestPlatform::start(Backend::Embedded).await;
    let placed = check_out_through_the_storefront(&shop, &[]).await;

    // Spans are exported as they end; the storefront's ends just after its answer went out.
    // The consumers' spans end a moment later.
    const CONSUMED: &str = "consume emporium.order.confirmed.v1";
    let mut spans: Vec<SpanData> = Vec::new();
    for _ in 0..250 {
        spans = exporter.spans();
        if spans.iter().any(|s| s.name == "POST /api/v1/checkout")
            && spans.iter().filter(|s| s.name == CONSUMED).count() >= 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let root = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/checkout")
        .unwrap_or_else(|| panic!("no checkout span among {:?}", names(&spans)));
    let trace = root.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let by_id: HashMap<SpanId, &SpanData> = in_trace
        .iter()
        .map(|s| (s.span_context.span_id(), *s))
        .collect();
    // Every span of the trace leads up to the storefront's span, whose own parent (if any) is
    // outside Emporium.
    let ancestors = |span: &SpanData| -> Vec<String> {
        let mut chain = Vec::new();
        let mut parent = span.parent_span_id;
        while let Some(up) = by_id.get(&parent) {
            chain.push(up.name.to_string());
            parent = up.parent_span_id;
        }
        chain
    };
    let order = in_trace
        .iter()
        .find(|s| s.name == "POST /v1/orders")
        .unwrap_or_else(|| panic!("no order span in the trace: {:?}", names(&spans)));
    assert_eq!(
        order.parent_span_id,
        root.span_context.span_id(),
        "the order's parent"
    );
    for called in [
        "GET /v1/carts/{id}",
        "GET /v1/products/{id}",
        "POST /v1/reservations",
    ] {
        let span = in_trace
            .iter()
            .find(|s| s.name == called)
            .unwrap_or_else(|| panic!("no {called} in the trace: {:?}", names(&in_trace)));
        let chain = ancestors(span);
        assert_eq!(
            chain.last().map(String::as_str),
            Some("POST /api/v1/checkout"),
            "{called}: {chain:?}"
        );
        assert!(
            chain.iter().any(|name| name == "POST /v1/orders"),
            "{called}: {chain:?}"
        );
    }
    // The inventory and the cart each handled the confirmation in the checkout's trace, below
    // the order's span, and wrote what it did there.
    let consumed: Vec<&&SpanData> = in_trace.iter().filter(|s| s.name == CONSUMED).collect();
    assert_eq!(consumed.len(), 2, "{:?}", names(&in_trace));
    for span in &consumed {
        let chain = ancestors(span);
        assert_eq!(
            chain.last().map(String::as_str),
            Some("POST /api/v1/checkout"),
            "{chain:?}"
        );
        assert!(
            chain.iter().any(|name| name == "POST /v1/orders"),
            "{chain:?}"
        );
    }
    for table in ["inventory", "carts"] {
        assert!(
            in_trace.iter().any(|s| s.name == "storage transact"
                && attribute_of(s, "db.collection.name").as_deref() == Some(table)
                && ancestors(s).iter().any(|name| name == CONSUMED)),
            "the {table} consumer's write: {:?}",
            names(&in_trace)
        );
    }
    // The saga's steps are spans under the order's, with what they did.
    let reserve = in_trace
        .iter()
        .find(|s| s.name == "saga Reserve")
        .unwrap_or_else(|| panic!("no saga step span: {:?}", names(&in_trace)));
    assert_eq!(reserve.parent_span_id, order.span_context.span_id());
    let attribute = attribute_of;
    assert_eq!(
        attribute(reserve, "saga.result").as_deref(),
        Some("Authorize")
    );
    let order_id = serde_json::from_str::<Value>(&placed.body).expect("order")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(attribute(reserve, "order.id"), Some(order_id));
    let reservation = in_trace
        .iter()
        .find(|s| s.name == "POST /v1/reservations")
        .expect("reservation");
    assert_eq!(
        reservation.parent_span_id,
        reserve.span_context.span_id(),
        "the reservation was made by the Reserve step"
    );
    // Storage and cache calls are spans too, with the table, the adapter and the outcome. A
    // paid checkout's writes both change the status (placed, confirmed): transactions with
    // their events.
    let order_writes: Vec<&&SpanData> = in_trace
        .iter()
        .filter(|s| {
            s.name == "storage transact"
                && attribute(s, "db.collection.name").as_deref() == Some("orders")
        })
        .collect();
    assert_eq!(
        order_writes.len(),
        2,
        "the order's own transactions (placed, confirmed): {:?}",
        names(&in_trace)
    );
    for write in &order_writes {
        assert_eq!(attribute(write, "emporium.outcome").as_deref(), Some("ok"));
        assert_eq!(
            attribute(write, "emporium.adapter").as_deref(),
            Some("redb")
        );
        assert!(
            ancestors(write)
                .iter()
                .any(|name| name == "POST /v1/orders")
        );
    }
    assert!(
        in_trace.iter().any(|s| s.name == "storage transact"
            && ancestors(s)
                .iter()
                .any(|name| name == "POST /v1/reservations")),
        "the reservation's transaction: {:?}",
        names(&in_trace)
    );
    assert!(
        in_trace.iter().any(|s| s.name == "cache get"
            && attribute(s, "emporium.adapter").as_deref() == Some("memory")),
        "a cache read: {:?}",
        names(&in_trace)
    );

    // All five services share this process, yet each span is exported as its own service's,
    // as it would be from separate pods: a request's span is the serving service's, and every
    // other span is its parent's service's.
    let service_of = exporter.services();
    let service = |span: &SpanData| {
        service_of
            .get(&span.span_context.span_id())
            .cloned()
            .unwrap_or_else(|| panic!("{} was not exported", span.name))
    };
    for (request, serving) in [
        ("POST /api/v1/checkout", "storefront"),
        ("POST /v1/orders", "order"),
        ("GET /v1/carts/{id}", "cart"),
        ("GET /v1/products/{id}", "catalog"),
        ("POST /v1/reservations", "inventory"),
    ] {
        for span in in_trace.iter().filter(|s| s.name == request) {
            assert_eq!(service(span), serving, "{request}");
        }
    }
    let consumers: std::collections::BTreeSet<String> =
        consumed.iter().map(|span| service(span)).collect();
    assert_eq!(
        consumers,
        ["cart".to_owned(), "inventory".to_owned()].into(),
        "each consumer's span is its service's"
    );
    assert_eq!(service(reserve), "order");
    for span in &in_trace {
        assert!(
            attribute(span, "emporium.service").is_none(),
            "{} exports the routing attribute",
            span.name
        );
        // A request's span and an event's handling begin in the service they reach.
        if matches!(
            span.span_kind,
            opentelemetry::trace::SpanKind::Server | opentelemetry::trace::SpanKind::Consumer
        ) {
            continue;
        }
        if let Some(parent) = by_id.get(&span.parent_span_id) {
            assert_eq!(
                service(span),
                service(parent),
                "{} under {}",
                span.name,
                parent.name
            );
        }
    }
    let storage_services: std::collections::BTreeSet<String> = in_trace
        .iter()
        .filter(|s| s.name.starts_with("storage "))
        .map(|s| service(s))
        .collect();
    assert!(
        ["order", "inventory"]
            .iter()
            .all(|s| storage_services.contains(*s)),
        "storage calls by {storage_services:?}"
    );

    // The log has one JSON line per request, with the serving service, the trace id and the
    // request id: the order service's line for this checkout carries the same trace id as the
    // storefront's.
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("UTF-8");
    let completed: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("every log line is JSON"))
        .filter(|line| line["message"] == "request completed")
        .collect();
    let trace_id = trace.to_string();
    for (route, serving) in [
        ("/api/v1/checkout", "storefront"),
        ("/v1/orders", "order"),
        ("/v1/reservations", "inventory"),
    ] {
        let line = completed
            .iter()
            .find(|line| line["span"]["http.route"] == route)
            .unwrap_or_else(|| panic!("no request line for {route} in:\n{text}"));
        assert_eq!(line["span"]["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["span"]["service"], serving, "{line}");
        assert!(
            line["span"]["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{line}"
        );
        assert!(line["status"].as_u64().is_some(), "{line}");
    }
}

/// A shopper adds a kettle and checks out through the storefront's API, sending `headers` with
/// each call; the checkout's answer.
async fn check_out_through_the_storefront(
    shop: &TestPlatform,
    headers: &[(&str, &str)],
) -> emporium_tests::Page {
    let product = shop.product_with_sku("KIT-001").await;
    let mut shopper = emporium_tests::Shopper::new(shop.url(Service::Storefront));
    let added = shopper
        .api(
            reqwest::Method::POST,
            "/cart/lines",
            Some(&json!({"product_id": product.id, "quantity": 1})),
            headers,
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let checkout = json!({
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com",
            "address": {"line1": "1 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    });
    let idempotency = key();
    let mut with_key = headers.to_vec();
    with_key.push(("idempotency-key", &idempotency));
    let placed = shopper
        .api(
            reqwest::Method::POST,
            "/checkout",
            Some(&checkout),
            &with_key,
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    placed
}

/// When the sampler keeps no new trace, a checkout builds no span anywhere, yet the services'
/// request log lines share one trace id, passed on as not sampled; a stranger's sampled
/// `traceparent` at the storefront is not followed; and a trusted caller's is followed whatever
/// the sampler says.
#[tokio::test]
async fn a_checkout_not_sampled_builds_no_span_yet_its_log_lines_share_a_trace_id() {
    let (exporter, logs, _telemetry) = telemetry_in_memory(
        "warn,emporium_platform=info",
        emporium_platform::telemetry::RootSampler::new(0, 0.0),
    );
    let shop = TestPlatform::start(Backend::Embedded).await;
    // The demo's seeding is work of its own, traced as such; count what the checkout adds.
    let seeding = exporter.spans().len();
    check_out_through_the_storefront(&shop, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let request_spans: Vec<String> = exporter.spans()[seeding..]
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert!(request_spans.is_empty(), "{request_spans:?}");
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("UTF-8");
    let completed: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .filter(|line| line["message"] == "request completed")
        .collect();
    let checkout = completed
        .iter()
        .find(|line| line["span"]["http.route"] == "/api/v1/checkout")
        .unwrap_or_else(|| panic!("the checkout's line in:\n{text}"));
    let trace_id = checkout["span"]["trace_id"].as_str().expect("trace id");
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));
    for route in ["/v1/orders", "/v1/reservations", "/v1/carts/{id}"] {
        assert!(
            completed
                .iter()
                .any(|line| line["span"]["http.route"] == route
                    && line["span"]["trace_id"] == trace_id),
            "{route} logs trace {trace_id}:\n{text}"
        );
    }

    // A stranger's trace context is not followed: the storefront is the public edge, and a
    // context from anyone would let them add spans to others' traces and make the shop trace
    // whatever they send, whatever the sampler keeps.
    let stranger_trace = "5cf92f3577b34da6a3ce929d0e0e4737";
    let stranger = format!("00-{stranger_trace}-00f067aa0ba902b7-01");
    check_out_through_the_storefront(&shop, &[("traceparent", &stranger)]).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let joined: Vec<String> = exporter
        .spans()
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == stranger_trace)
        .map(|s| s.name.to_string())
        .collect();
    assert!(joined.is_empty(), "{joined:?}");

    // A caller that traces, where the storefront is told to trust it (behind a proxy that
    // starts traces), is followed: its trace continues through every service.
    let shop = TestPlatform::start_with(
        Backend::Embedded,
        &["--trust-trace-context"],
        emporium_order::Faults::default(),
    )
    .await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    check_out_through_the_storefront(&shop, &[("traceparent", &traceparent)]).await;
    let mut followed = Vec::new();
    for _ in 0..100 {
        followed = exporter
            .spans()
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == caller_trace)
            .map(|s| s.name.to_string())
            .collect();
        if followed.iter().any(|name| name == "POST /api/v1/checkout") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for name in [
        "POST /api/v1/checkout",
        "POST /v1/orders",
        "saga Reserve",
        "POST /v1/reservations",
    ] {
        assert!(followed.iter().any(|n| n == name), "{name} in {followed:?}");
    }
}

/// Telemetry for every service of this process into memory: the spans each service exported,
/// and the JSON log filtered by `filter`; new traces kept as `sampler` says.
fn telemetry_in_memory(
    filter: &str,
    sampler: emporium_platform::telemetry::RootSampler,
) -> (
    ServiceSpans,
    LogLines,
    emporium_platform::telemetry::TelemetryGuard,
) {
    let exporter = ServiceSpans::default();
    let logs = LogLines::default();
    let services: Vec<&'static str> = Service::ALL.iter().map(|s| s.name()).collect();
    let guard = emporium_platform::telemetry::init_with_exporter(
        "emporium",
        &services,
        emporium_platform::settings::LogFormat::Json,
        filter,
        sampler,
        {
            let exporter = exporter.clone();
            move || exporter.clone()
        },
        {
            let logs = logs.clone();
            move || logs.clone()
        },
    )
    .expect("telemetry");
    (exporter, logs, guard)
}

/// The log, written to memory.
#[derive(Clone, Default)]
struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spans as exported, each with the `service.name` of the resource it was exported under: the
/// telemetry makes one exporter per service and tells each its resource.
#[derive(Clone, Debug, Default)]
struct ServiceSpans {
    service: String,
    exported: std::sync::Arc<std::sync::Mutex<Vec<(String, opentelemetry_sdk::trace::SpanData)>>>,
}

impl ServiceSpans {
    fn spans(&self) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let exported = self.exported.lock().expect("lock");
        exported.iter().map(|(_, span)| span.clone()).collect()
    }

    fn services(&self) -> std::collections::HashMap<opentelemetry::trace::SpanId, String> {
        let exported = self.exported.lock().expect("lock");
        exported
            .iter()
            .map(|(service, span)| (span.span_context.span_id(), service.clone()))
            .collect()
    }
}

impl opentelemetry_sdk::trace::SpanExporter for ServiceSpans {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let mut exported = self.exported.lock().expect("lock");
        exported.extend(batch.into_iter().map(|span| (self.service.clone(), span)));
        std::future::ready(Ok(()))
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.service = resource
            .get(&opentelemetry::Key::new("service.name"))
            .map(|name| name.to_string())
            .unwrap_or_default();
    }
}

/// The value of a span's attribute `key`, as text.
fn attribute_of(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn names(spans: &[impl std::borrow::Borrow<opentelemetry_sdk::trace::SpanData>]) -> Vec<String> {
    spans.iter().map(|s| s.borrow().name.to_string()).collect()
}

/// The fault switches of a running shop: each service, with the admin key, can be made slow,
/// made to fail a share of its requests, or made to lose its store and cache, and recovers when
/// they are cleared; probes, metrics and the other services are untouched.
#[tokio::test]
async fn the_fault_switches_slow_fail_and_take_dependencies_away_until_cleared() {
    let shop = TestPlatform::start(Backend::Embedded).await;
    let http = reqwest::Client::new();
    let admin = format!("Bearer {}", shop.platform.admin_key);
    let catalog = shop.url(Service::Catalog);
    let product = shop.product_with_sku("KIT-001").await;
    let read = format!("{catalog}/v1/products/{}", product.id);
    let switch = |body: Value| {
        let (http, url, admin) = (
            http.clone(),
            format!("{catalog}/admin/faults"),
            admin.clone(),
        );
        async move {
            http.put(url)
                .header("authorization", admin)
                .json(&body)
                .send()
                .await
                .expect("switch")
        }
    };
    let get = |url: String| {
        let http = http.clone();
        async move {
            let started = std::time::Instant::now();
            let response = http.get(url).send().await.expect("get");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body, started.elapsed())
        }
    };

    // Only with the admin key.
    let refused = http
        .put(format!("{catalog}/admin/faults"))
        .json(&json!({"latency_ms": 300}))
        .send()
        .await
        .expect("switch");
    assert_eq!(refused.status(), 401);

    // Slow.
    let set = switch(json!({"latency_ms": 300})).await;
    assert_eq!(set.status(), 200);
    let (status, _, took) = get(read.clone()).await;
    assert_eq!(status, 200);
    assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
    let (status, _, took) = get(format!("{catalog}/healthz")).await;
    assert_eq!(status, 200);
    assert!(
        took < std::time::Duration::from_millis(200),
        "probes are not slowed: {took:?}"
    );

    // Failing.
    assert_eq!(switch(json!({"error_rate": 1.0})).await.status(), 200);
    let (status, body, _) = get(read.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "fault_injected");
    assert_eq!(get(format!("{catalog}/readyz")).await.0, 200);

    // Its store and cache gone: readiness says so, reads fail clearly, the others carry on.
    assert_eq!(
        switch(json!({"outage": ["storage", "cache"]}))
            .await
            .status(),
        200
    );
    let (status, report, _) = get(format!("{catalog}/readyz")).await;
    assert_eq!(status, 503, "{report}");
    let (status, body, _) = get(read.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(
        get(format!("{}/readyz", shop.url(Service::Cart))).await.0,
        200
    );

    // Nonsense is refused, and changes nothing.
    let wrong = switch(json!({"error_rate": 2})).await;
    assert_eq!(wrong.status(), 422);
    let wrong = switch(json!({"outage": ["database"]})).await;
    assert_eq!(wrong.status(), 400);
    // The catalog calls no other service, so it cannot lose one.
    let wrong = switch(json!({"outage": ["inventory"]})).await;
    assert_eq!(wrong.status(), 422);
    let said: Value = wrong.json().await.expect("problem");
    assert!(
        said.to_string().contains("does not use inventory"),
        "{said}"
    );
    let current: Value = http
        .get(format!("{catalog}/admin/faults"))
        .header("authorization", &admin)
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    assert_eq!(current["outage"], json!(["storage", "cache"]));

    // Cleared, all is well again.
    let cleared = http
        .delete(format!("{catalog}/admin/faults"))
        .header("authorization", &admin)
        .send()
        .await
        .expect("clear");
    assert_eq!(cleared.status(), 204);
    assert_eq!(get(read).await.0, 200);
    assert_eq!(get(format!("{catalog}/readyz")).await.0, 200);
}

/// Faults set in the settings (as a Deployment's environment sets them on every pod) are on from
/// the start and are cleared like any other; an outage of a dependency a service lacks stops the
/// start with a message naming the service and what it has.
#[tokio::test]
async fn faults_set_in_the_settings_are_on_from_the_start_and_checked_against_each_service() {
    let shop = TestPlatform::start_with(
        Backend::Embedded,
        &["--fault-error-rate", "1", "--fault-latency-ms", "50"],
        emporium_order::Faults::default(),
    )
    .await;
    let catalog = shop.url(Service::Catalog);
    let response = shop
        .http
        .get(format!("{catalog}/v1/categories"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["code"], "fault_injected");
    let ready = shop
        .http
        .get(format!("{catalog}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200, "probes are spared");
    assert_eq!(
        shop.switch_faults(Service::Catalog, None).await.status(),
        204
    );
    let healed = shop
        .http
        .get(format!("{catalog}/v1/categories"))
        .send()
        .await
        .expect("send");
    assert_eq!(healed.status(), 200);

    // The catalog calls no other service: asked to start without the inventory, it refuses;
    // and a name of nothing is refused as clearly.
    let refusal = |outage: &'static str| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = emporium_tests::settings(dir.path(), &["--fault-outage", outage]);
        let plan = emporium::run::Plan {
            services: vec![Service::Catalog],
            ..emporium::run::Plan::default()
        };
        let error = emporium::run::Platform::start(&settings, &plan)
            .await
            .err()
            .expect("refused");
        format!("{error:#}")
    };
    let said = refusal("storage,inventory").await;
    assert!(
        said.contains("the catalog service cannot start with these fault settings")
            && said.contains("does not use inventory; it uses: storage, cache, blobs"),
        "{said}"
    );
    let said = refusal("database").await;
    assert!(
        said.contains(
            "\"database\" is neither a port (storage, cache, blobs, events) nor a service"
        ),
        "{said}"
    );
    // A value out of range is refused as the flag is read.
    let parsed = <emporium::cli::Cli as clap::Parser>::try_parse_from([
        "emporium",
        "up",
        "--fault-latency-ms",
        "600000",
    ]);
    assert!(parsed.is_err());
}

/// A listener on the bus, as the search index will be: every catalog event.
const LISTENER: emporium_ports::events::GroupDef = emporium_ports::events::GroupDef {
    name: "test-listener",
    types: &[
        emporium_api::events::EventType::ProductCreated.as_str(),
        emporium_api::events::EventType::CategoryChanged.as_str(),
    ],
    visibility: std::time::Duration::from_secs(30),
    max_attempts: 3,
};

/// The catalog's admin writes come out of the bus as CloudEvents, on the embedded bus and on
/// SNS and SQS (moto).
async fn catalog_changes_reach_a_listener_through_the_bus(backend: Backend) {
    use emporium_api::events::{Envelope, EventType};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let stand = backend.stand();
    let settings = emporium_tests::settings(dir.path(), &stand.flags());
    if backend == Backend::Aws {
        emporium::setup::init(&settings).await.expect("init");
        emporium_adapters::connect::init_events(&settings.common.events_uri(), &[LISTENER])
            .await
            .expect("the listener's queue");
    }
    let plan = emporium::run::Plan {
        services: vec![Service::Catalog],
        listeners: vec![LISTENER],
        ..Default::default()
    };
    let platform = emporium::run::Platform::start(&settings, &plan)
        .await
        .expect("starts");
    let catalog = platform.url(Service::Catalog).expect("catalog");
    let admin = reqwest::Client::new();
    let created = admin
        .post(format!("{catalog}/v1/categories"))
        .bearer_auth(emporium_tests::ADMIN_KEY)
        .json(&serde_json::json!({"slug": "tea", "name": "Tea"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let product: Value = admin
        .post(format!("{catalog}/v1/products"))
        .bearer_auth(emporium_tests::ADMIN_KEY)
        .json(&serde_json::json!({
            "sku": "TEA-1", "name": "Teapot", "description": "A teapot.", "category": "tea",
            "price": {"amount": 2500, "currency": "USD"}
        }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("product");

    let heard: Vec<Envelope> = emporium_ports::events::conformance::collect(
        &*platform.events(),
        LISTENER.name,
        2,
        Duration::from_secs(30),
        true,
    )
    .await
    .iter()
    .map(|d| Envelope::from_json(d.event.body.as_bytes()).expect("envelope"))
    .collect();
    let kinds: Vec<EventType> = heard.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventType::CategoryChanged), "{heard:#?}");
    let created = heard
        .iter()
        .find(|e| e.kind == EventType::ProductCreated)
        .unwrap_or_else(|| panic!("no product.created in {heard:#?}"));
    assert_eq!(created.subject, product["id"].as_str().expect("id"));
    assert_eq!(created.data["product"], product);
    platform.stop(true).await.expect("stops");
}
