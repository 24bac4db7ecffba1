//! Faults under a steady stream of checkouts, as they happen in production: a service stopped
//! and started again. Shoppers keep shopping through the storefront's API the whole time; what
//! they get must be a success or a clear, quick 503, never a 500 or a hang; success must come
//! back; and when it is over, the stock must add up: nothing left reserved, and every unit gone
//! accounted for by a confirmed order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use emporium::run::Service;
use emporium_order::Faults;
use emporium_tests::{Backend, CARD_OK, Shopper, TestPlatform, key};
use reqwest::Method;
use serde_json::json;

const SKU: &str = "KIT-001";
const STOCK: i64 = 100_000;

const BEFORE: u8 = 0;
const DOWN: u8 = 1;
const AFTER: u8 = 2;

/// What one call a shopper made got.
#[derive(Debug, Clone)]
struct Outcome {
    phase: u8,
    checkout: bool,
    status: u16,
    code: String,
    took: Duration,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A shopper adding the product and checking out, again and again, until `stop`.
async fn shop_until(
    base: String,
    product_id: String,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> (Shopper, Vec<Outcome>) {
    let mut shopper = Shopper::new(base);
    let mut seen = Vec::new();
    let checkout = json!({
        "customer": {"name": "Grace Hopper", "email": "grace@example.com",
            "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    });
    // One unit in the cart at a time: a failed checkout leaves it there for the next try.
    let mut in_cart = false;
    while !stop.load(Ordering::SeqCst) {
        for is_checkout in [false, true] {
            if !is_checkout && in_cart {
                continue;
            }
            let at = phase.load(Ordering::SeqCst);
            let started = Instant::now();
            let idempotency = key();
            let page = if is_checkout {
                shopper
                    .api(
                        Method::POST,
                        "/checkout",
                        Some(&checkout),
                        &[("idempotency-key", &idempotency)],
                    )
                    .await
            } else {
                shopper
                    .api(
                        Method::POST,
                        "/cart/lines",
                        Some(&json!({"product_id": product_id, "quantity": 1})),
                        &[],
                    )
                    .await
            };
            let code = serde_json::from_str::<serde_json::Value>(&page.body)
                .ok()
                .and_then(|body| body["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            seen.push(Outcome {
                // A call that spans a change counts in the phase it ended in.
                phase: phase.load(Ordering::SeqCst).max(at),
                checkout: is_checkout,
                status: page.status,
                code,
                took: started.elapsed(),
            });
            match (is_checkout, page.status) {
                (false, 200) => in_cart = true,
                (true, 201) => in_cart = false,
                _ => {}
            }
            if page.status != 200 && page.status != 201 {
                // A shopper told to come back later does, a moment later.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (shopper, seen)
}

/// The shopper's confirmed orders and the units in them, through the storefront.
async fn confirmed_orders(shopper: &mut Shopper) -> (usize, i64) {
    let (mut orders, mut units) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/orders?limit=50&cursor={cursor}"),
            None => "/orders?limit=50".to_owned(),
        };
        let page = shopper.api(Method::GET, &path, None, &[]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
        for order in page["items"].as_array().into_iter().flatten() {
            if order["status"] == "confirmed" {
                orders += 1;
                units += order["lines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|line| line["quantity"].as_i64())
                    .sum::<i64>();
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (orders, units),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_stopped_and_started_under_checkouts_fails_fast_leaks_nothing_and_recovers() {
    let inventory_port = free_port().to_string();
    let mut shop = TestPlatform::start_with(
        Backend::Embedded,
        &[
            "--inventory-port",
            &inventory_port,
            "--order-reconcile-interval-secs",
            "1",
            "--order-reconcile-grace-secs",
            "2",
        ],
        Faults::default(),
    )
    .await;
    shop.set_stock(SKU, STOCK).await;
    let product = shop.product_with_sku(SKU).await;
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(shop_until(
                shop.url(Service::Storefront),
                product.id.clone(),
                phase.clone(),
                stop.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(DOWN, Ordering::SeqCst);
    shop.platform
        .stop_service(Service::Inventory)
        .await
        .expect("stop inventory");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The order service stopped calling it: its circuit is open, and its metrics say so.
    let open_during = shop.metrics(Service::Order).await;
    shop.platform
        .start_service(&shop.settings, &shop.plan, Service::Inventory)
        .await
        .expect("start inventory");
    phase.store(AFTER, Ordering::SeqCst);
    // Long enough for the callers' circuits to let a probe through (1 s) and for success to
    // show, then some.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let closed_after = shop.metrics(Service::Order).await;
    let circuit = "emporium_order_circuit_open{dependency=\"inventory\"}";
    assert!(
        open_during.contains(&format!("{circuit} 1")),
        "open while inventory was down:\n{open_during}"
    );
    assert!(
        closed_after.contains(&format!("{circuit} 0")),
        "closed once it was back:\n{closed_after}"
    );
    let mut outcomes = Vec::new();
    let mut customers = Vec::new();
    for shopper in shoppers {
        let (shopper, seen) = shopper.await.expect("shopper");
        outcomes.extend(seen);
        customers.push(shopper);
    }

    let of = |phase: u8| outcomes.iter().filter(move |o| o.phase == phase);
    // Before: everything works.
    assert!(of(BEFORE).count() > 4, "{:?}", outcomes.len());
    for outcome in of(BEFORE) {
        assert!(
            [200, 201].contains(&outcome.status),
            "before the fault: {outcome:?}"
        );
    }
    // While inventory is down: a clear 503, quickly, or success (a cart line that needs no
    // stock check); never a 500, never a hang.
    let down: Vec<&Outcome> = of(DOWN).collect();
    assert!(
        down.iter().any(|o| o.status == 503),
        "the outage showed: {down:?}"
    );
    for outcome in &down {
        assert!(
            [200, 201, 503].contains(&outcome.status),
            "during the outage: {outcome:?}"
        );
        if outcome.status == 503 {
            assert!(
                !outcome.code.is_empty(),
                "a problem with a code: {outcome:?}"
            );
        }
        assert!(
            outcome.took < Duration::from_millis(2500),
            "failed fast: {outcome:?}"
        );
    }
    // After: checkouts succeed again.
    assert!(
        of(AFTER).any(|o| o.checkout && o.status == 201),
        "success resumed: {:?}",
        of(AFTER).collect::<Vec<_>>()
    );
    for outcome in of(AFTER) {
        assert_ne!(outcome.status, 500, "{outcome:?}");
    }

    // Nothing leaked: once the reconciler has finished what was cut short, no unit is held,
    // and the units sold are exactly those of the shoppers' confirmed orders (a line added
    // while its answer was lost makes two), of which every confirmation a shopper was given
    // is one.
    let answered = outcomes
        .iter()
        .filter(|o| o.checkout && o.status == 201)
        .count();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stock = shop.stock(SKU).await;
        let (mut confirmed, mut units) = (0, 0);
        for customer in &mut customers {
            let (orders, in_them) = confirmed_orders(customer).await;
            confirmed += orders;
            units += in_them;
        }
        if stock.reserved == 0 && stock.available + stock.sold == STOCK {
            assert_eq!(
                stock.sold, units,
                "units sold are those of the confirmed orders: {stock:?}"
            );
            assert!(
                confirmed >= answered,
                "{confirmed} confirmed, {answered} answered"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stock did not settle: {stock:?}, {confirmed} confirmed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
