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

    let blobs = emporium_ports::connect::blobs(&format!(
        "file://{}",
        shop.data_dir.path().join("blobs").display()
    ))
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
    let blobs = emporium_ports::connect::blobs(&settings.common.blobs_uri()).expect("blobs");
    let cache = emporium_ports::connect::cache("memory://").expect("cache");
    shop.platform.stop(true).await.expect("stops");
    let storage = emporium_ports::connect::storage(
        &settings.common.storage_uri(),
        "catalog",
        emporium_catalog::TABLES,
    )
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
