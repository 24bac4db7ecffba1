//! The whole platform, started as `emporium up` starts it.

use emporium::run::Service;
use emporium_ports::blob::BlobKey;
use emporium_tests::TestPlatform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_seeded_demo_catalog_with_its_images() {
    let shop = TestPlatform::start().await;
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

    let blobs = emporium_adapters::connect::blobs(&format!(
        "file://{}",
        shop.data_dir.path().join("blobs").display()
    ))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_again_changes_nothing() {
    let shop = TestPlatform::start().await;
    let catalog_url = shop.url(Service::Catalog);
    let before = shop
        .get_json(&format!("{catalog_url}/v1/products?limit=100"))
        .await;
    let settings = emporium_tests::settings(shop.data_dir.path(), &[]);
    // The same service code the platform runs, over a second handle on the same blobs.
    let blobs = emporium_adapters::connect::blobs(&settings.common.blobs_uri())
        .await
        .expect("blobs");
    let cache = emporium_adapters::connect::cache("memory://")
        .await
        .expect("cache");
    shop.platform.stop(true).await.expect("stops");
    let storage = emporium_adapters::connect::storage(
        &settings.common.storage_uri(),
        "catalog",
        emporium_catalog::TABLES,
    )
    .await
    .expect("storage");
    let catalog = emporium_catalog::Catalog::new(
        storage,
        cache,
        blobs.clone(),
        "USD",
        std::time::Duration::from_secs(60),
    );
    let report = emporium::demo::seed_catalog(&catalog, blobs.as_ref())
        .await
        .expect("seed");
    assert_eq!(report, emporium::demo::SeedReport::default());
    let page = catalog
        .list_products(&emporium_api_query())
        .await
        .expect("list");
    assert_eq!(
        serde_json::to_value(&page.items).expect("json"),
        before["items"],
        "nothing changed"
    );
}

fn emporium_api_query() -> emporium_api::catalog::ProductQuery {
    emporium_api::catalog::ProductQuery {
        limit: Some(100),
        ..Default::default()
    }
}

/// Browse the catalog → fill a cart → check out → see the order in the history, through the
/// typed clients the storefront uses, with every service over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_browses_fills_a_cart_checks_out_and_finds_the_order() {
    use emporium_api::catalog::{ProductQuery, ProductSort};
    use emporium_api::client::{
        CartClient, CatalogClient, InventoryClient, OrderClient, RetryPolicy,
    };
    use emporium_api::order::OrderStatus;

    let shop = TestPlatform::start().await;
    let http = reqwest::Client::new();
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
    assert!(carts.cart(&cart.id).await.expect("cart").lines.is_empty());

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
