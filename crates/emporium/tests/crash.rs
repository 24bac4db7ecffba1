//! The whole shop in one process (`emporium up`, embedded stores) killed with SIGKILL in the
//! middle of a stream of checkouts, then started again on the same data: no order a customer was
//! told is confirmed may be lost, no checkout may stay pending once the reconciler has run, and
//! every unit of stock must still be accounted for.

mod common;

use common::free_port;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN_KEY: &str = "crash-test-admin-key";
/// The key the services show each other; the test calls them as one of them.
const GATEWAY_KEY: &str = "crash-test-gateway-key";
const SKU: &str = "KIT-001";
const STOCK: i64 = 10_000;

struct Ports {
    catalog: u16,
    inventory: u16,
    cart: u16,
    order: u16,
    storefront: u16,
}

impl Ports {
    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

fn up(data: &std::path::Path, ports: &Ports) -> Child {
    Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["up", "--data-dir", &data.display().to_string()])
        .args([
            "--log",
            "warn",
            "--admin-key",
            ADMIN_KEY,
            "--no-traces-page",
            "--gateway-key",
            GATEWAY_KEY,
        ])
        .args(["--catalog-port", &ports.catalog.to_string()])
        .args(["--inventory-port", &ports.inventory.to_string()])
        .args(["--cart-port", &ports.cart.to_string()])
        .args(["--order-port", &ports.order.to_string()])
        .args(["--storefront-port", &ports.storefront.to_string()])
        .args(["--order-reconcile-interval-secs", "1"])
        .args(["--order-reconcile-grace-secs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn emporium")
}

async fn wait_ready(http: &reqwest::Client, ports: &Ports) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in [
        ports.catalog,
        ports.inventory,
        ports.cart,
        ports.order,
        ports.storefront,
    ] {
        loop {
            let ready = http
                .get(format!("{}/readyz", Ports::url(port)))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "port {port} never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A customer id: 26 characters of Crockford's base32, as the storefront makes them.
fn customer(n: usize) -> String {
    format!("{:0>26}", format!("cafe{n}"))
}

/// One customer checking out again and again until `stop`; the ids of the orders it was told
/// are confirmed (201).
async fn check_out_until(
    http: reqwest::Client,
    cart_url: String,
    order_url: String,
    product_id: String,
    customer: String,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut confirmed = Vec::new();
    let mut attempt = 0;
    while !stop.load(Ordering::SeqCst) {
        attempt += 1;
        let Ok(created) = http.post(format!("{cart_url}/v1/carts")).send().await else {
            continue;
        };
        let Ok(cart) = created.json::<Value>().await else {
            continue;
        };
        let cart_id = cart["id"].as_str().unwrap_or_default().to_owned();
        let added = http
            .post(format!("{cart_url}/v1/carts/{cart_id}/lines"))
            .json(&json!({"product_id": product_id, "quantity": 1}))
            .send()
            .await;
        if !added.is_ok_and(|r| r.status() == 200) {
            continue;
        }
        let placed = http
            .post(format!("{order_url}/v1/orders"))
            .header("x-customer-id", &customer)
            .header("idempotency-key", format!("crash-{customer}-{attempt}"))
            .json(&json!({
                "cart_id": cart_id,
                "customer": {"name": "Grace Hopper", "email": "grace@example.com",
                    "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
                "payment": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
            }))
            .send()
            .await;
        if let Ok(response) = placed
            && response.status() == 201
            && let Ok(order) = response.json::<Value>().await
        {
            confirmed.push(order["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    confirmed
}

/// A customer's orders by id, with their status and units.
async fn orders_of(
    http: &reqwest::Client,
    order_url: &str,
    customer: &str,
) -> BTreeMap<String, (String, i64)> {
    let orders = common::every_item(|| {
        http.get(format!("{order_url}/v1/orders"))
            .header("x-customer-id", customer)
    })
    .await;
    orders
        .iter()
        .map(|order| {
            let units = order["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|line| line["quantity"].as_i64())
                .sum();
            (
                order["id"].as_str().unwrap_or_default().to_owned(),
                (
                    order["status"].as_str().unwrap_or_default().to_owned(),
                    units,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_checkouts_loses_no_confirmed_order_and_conserves_stock() {
    let data = tempfile::tempdir().expect("tempdir");
    let ports = Ports {
        catalog: free_port(),
        inventory: free_port(),
        cart: free_port(),
        order: free_port(),
        storefront: free_port(),
    };
    let (cart_url, order_url) = (Ports::url(ports.cart), Ports::url(ports.order));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-emporium-gateway",
        reqwest::header::HeaderValue::from_static(GATEWAY_KEY),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("client");
    let mut shop = up(data.path(), &ports);
    wait_ready(&http, &ports).await;

    let stocked = http
        .put(format!("{}/v1/stock/{SKU}", Ports::url(ports.inventory)))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"available": STOCK}))
        .send()
        .await
        .expect("restock");
    assert!(stocked.status().is_success());
    let products: Value = http
        .get(format!(
            "{}/v1/products?limit=50",
            Ports::url(ports.catalog)
        ))
        .send()
        .await
        .expect("products")
        .json()
        .await
        .expect("JSON");
    let product_id = products["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["sku"] == SKU)
        .and_then(|p| p["id"].as_str())
        .expect("the product")
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let customers: Vec<String> = (0..4).map(customer).collect();
    let shoppers: Vec<_> = customers
        .iter()
        .map(|customer| {
            tokio::spawn(check_out_until(
                http.clone(),
                cart_url.clone(),
                order_url.clone(),
                product_id.clone(),
                customer.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // No warning, no draining: the process is gone mid-write.
    shop.kill().expect("SIGKILL");
    shop.wait().expect("reaped");
    stop.store(true, Ordering::SeqCst);
    let mut told_confirmed = Vec::new();
    for shopper in shoppers {
        told_confirmed.extend(shopper.await.expect("shopper"));
    }
    assert!(!told_confirmed.is_empty(), "checkouts ran before the kill");

    let mut shop = up(data.path(), &ports);
    wait_ready(&http, &ports).await;
    // The reconciler takes over checkouts idle for a second, every second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_look = None;
    let (orders, stock) = loop {
        let mut orders = BTreeMap::new();
        for customer in &customers {
            orders.extend(orders_of(&http, &order_url, customer).await);
        }
        let stock: Value = http
            .get(format!("{}/v1/stock/{SKU}", Ports::url(ports.inventory)))
            .send()
            .await
            .expect("stock")
            .json()
            .await
            .expect("JSON");
        let pending = orders.values().filter(|(s, _)| s == "pending").count();
        first_look.get_or_insert((pending, stock["reserved"].clone()));
        if pending == 0 && stock["reserved"] == 0 {
            break (orders, stock);
        }
        assert!(
            Instant::now() < deadline,
            "{pending} checkouts still pending, stock {stock}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    eprintln!(
        "{} confirmed before the kill; after the restart {} orders, pending and reserved at \
         first look {first_look:?}",
        told_confirmed.len(),
        orders.len()
    );
    for id in &told_confirmed {
        assert_eq!(
            orders.get(id).map(|(status, _)| status.as_str()),
            Some("confirmed"),
            "order {id} was confirmed to its customer"
        );
    }
    let sold_in_orders: i64 = orders
        .values()
        .filter(|(status, _)| status == "confirmed")
        .map(|(_, units)| units)
        .sum();
    let (available, reserved, sold) = (
        stock["available"].as_i64().expect("available"),
        stock["reserved"].as_i64().expect("reserved"),
        stock["sold"].as_i64().expect("sold"),
    );
    assert_eq!(reserved, 0);
    assert_eq!(available + sold, STOCK, "no unit created or lost: {stock}");
    assert_eq!(sold, sold_in_orders, "units sold are the confirmed orders'");

    let _ = shop.kill();
    let _ = shop.wait();
}
