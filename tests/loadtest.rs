//! The included load generator against the whole shop for about ten seconds: no request fails,
//! and afterwards stock is conserved exactly: for every SKU, what it started with equals
//! available + reserved + sold, nothing stays reserved, and what was sold equals the units in
//! the orders the shoppers saw confirmed.

use std::collections::BTreeMap;

use clap::Parser;
use emporium::run::Service;
use emporium_api::inventory::StockPage;
use emporium_tests::{Backend, TestPlatform};

#[derive(Parser)]
struct Load {
    #[command(flatten)]
    config: emporium_loadgen::LoadConfig,
}

/// Every SKU's stock: (available, reserved, sold).
async fn stock(platform: &TestPlatform) -> BTreeMap<String, (i64, i64, i64)> {
    let base = platform.url(Service::Inventory);
    let mut levels = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = platform
            .http
            .get(format!("{base}/v1/stock"))
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: StockPage = request
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("page");
        for level in page.items {
            levels.insert(level.sku, (level.available, level.reserved, level.sold));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return levels,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_shoppers_make_no_errors_and_conserve_stock() {
    let platform = TestPlatform::start(Backend::Embedded).await;
    let before = stock(&platform).await;
    assert!(before.len() >= 50, "{} SKUs", before.len());
    let out = tempfile::tempdir().expect("tempdir");
    let result = out.path().join("result.json");
    let html = out.path().join("report.html");
    let load = Load::try_parse_from([
        "load",
        "--target",
        &platform.url(Service::Storefront),
        "--users",
        "8",
        "--duration",
        "10s",
        "--ramp-up",
        "1s",
        "--weights",
        "browse=30,search=20,view=20,buy=30",
        "--quiet",
        "--out",
        &result.display().to_string(),
        "--html",
        &html.display().to_string(),
    ])
    .expect("load settings");
    let report = emporium_loadgen::run(&load.config).await.expect("load run");
    let summary = report.summary();
    println!("{summary}");
    assert_eq!(report.errors, 0, "{summary}");
    assert!(report.requests > 200, "{summary}");
    assert!(report.business.orders_placed > 10, "{summary}");
    assert!(
        report.business.payment_declined > 0,
        "declines were tried: {summary}"
    );
    assert_eq!(report.business.checkout_pending, 0, "{summary}");
    assert!(report.by_kind.contains_key("checkout") && report.by_kind.contains_key("search"));
    assert!(report.timeline.len() >= 10);

    // The JSON result has the documented shape, and the HTML report its charts.
    emporium_loadgen::write(&load.config, &report).expect("write the result");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result).expect("result")).expect("JSON");
    assert_eq!(json["schema"], "emporium-loadtest/1");
    assert_eq!(json["model"]["kind"], "closed");
    for field in [
        "requests",
        "errors",
        "error_rate",
        "throughput_rps",
        "duration_secs",
    ] {
        assert!(json[field].is_number(), "{field}");
    }
    for field in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"] {
        assert!(json["latency"][field].is_number(), "latency.{field}");
        assert!(json["by_kind"]["checkout"]["latency"][field].is_number());
    }
    assert!(json["timeline"][0]["p99_ms"].is_number());
    assert!(json["distribution"].as_array().is_some_and(|d| d.len() > 5));
    assert_eq!(json["objectives"]["met"], true);
    let page = std::fs::read_to_string(&html).expect("report");
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    for caption in ["Throughput", "Latency over time", "Latency distribution"] {
        assert!(page.contains(caption), "{caption}");
    }
    // Keep a copy to look at.
    let kept = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadtest-report.html");
    std::fs::copy(&html, &kept).expect("keep the report");

    // The inventory's consumer of `order.confirmed` sells each order's hold a moment after its
    // answer, and nothing on the checkout's path waits for it: the last orders' holds settle
    // after the run.
    let mut after = stock(&platform).await;
    for _ in 0..100 {
        if after.values().all(|(_, reserved, _)| *reserved == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = stock(&platform).await;
    }
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let mut sold_total = 0;
    for (sku, (available, reserved, sold)) in &after {
        let (a0, r0, s0) = before[sku];
        assert_eq!(
            a0 + r0 + s0,
            available + reserved + sold,
            "{sku}: stock is conserved"
        );
        assert_eq!(*reserved, 0, "{sku}: nothing stays reserved");
        let confirmed = report.business.units_sold.get(sku).copied().unwrap_or(0);
        assert_eq!(
            sold - s0,
            confirmed,
            "{sku}: sold equals the units in confirmed orders"
        );
        sold_total += sold - s0;
    }
    assert!(sold_total > 10);
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_keeps_its_arrival_rate() {
    let platform = TestPlatform::start(Backend::Embedded).await;
    let out = tempfile::tempdir().expect("tempdir");
    let load = Load::try_parse_from([
        "load",
        "--target",
        &platform.url(Service::Storefront),
        "--rate",
        "40",
        "--duration",
        "3s",
        "--quiet",
        "--out",
        &out.path().join("r.json").display().to_string(),
        "--html",
        &out.path().join("r.html").display().to_string(),
    ])
    .expect("load settings");
    let report = emporium_loadgen::run(&load.config).await.expect("load run");
    let summary = report.summary();
    assert_eq!(report.errors, 0, "{summary}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(
        json["model"],
        serde_json::json!({"kind": "open", "rate_per_sec": 40.0})
    );
    // 120 sessions of one to four requests each.
    assert!((120..=520).contains(&report.requests), "{summary}");
    platform.platform.stop(true).await.expect("stop");
}
