//! Checkout through the order API with every service running: the saga, its races, its
//! failures, and the reconciler after a crash.

use std::collections::BTreeSet;
use std::time::Duration;

use emporium::run::Service;
use emporium_api::order::{Order, OrderStatus, PaymentStatus};
use emporium_order::{FaultAction, Faults};
use emporium_platform::testing::expect_problem as problem;
use emporium_tests::{
    Backend, CARD_DECLINED, CARD_NO_FUNDS, CARD_OK, TestPlatform, customer, key, order_body,
};
use reqwest::StatusCode;
use serde_json::json;

emporium_tests::on_every_backend!(
    a_checkout_confirms_the_order_sells_the_stock_and_empties_the_cart,
    sixty_checkouts_for_ten_units_confirm_exactly_ten,
    one_idempotency_key_sent_twice_at_once_places_one_order,
    declined_cards_leave_stock_and_cart_exactly_as_before,
    a_failure_after_the_reservation_returns_the_stock,
    a_repeat_after_a_failure_that_may_pass_tries_again_once,
    a_crash_before_payment_is_undone_by_the_reconciler_after_restart,
    a_crash_after_payment_is_finished_by_its_events_after_restart,
    a_reservation_arriving_after_the_reconciler_closed_the_order_is_given_back,
    bad_checkouts_are_client_errors_that_reserve_and_write_nothing,
    cancelling_a_confirmed_order_returns_its_stock,
    history_lists_a_customers_orders_newest_first_in_pages,
    checkouts_of_one_cart_at_once_with_different_keys_charge_it_once,
    a_line_added_while_the_checkout_runs_stays_in_the_cart,
    an_order_tells_the_bus_it_was_placed_confirmed_failed_or_cancelled,
);

fn counts(level: &emporium_api::inventory::StockLevel) -> (i64, i64, i64) {
    (level.available, level.reserved, level.sold)
}

async fn a_checkout_confirms_the_order_sells_the_stock_and_empties_the_cart(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let kettle = shop.product_with_sku("KIT-001").await;
    let mugs = shop.product_with_sku("KIT-005").await;
    let before = (shop.stock("KIT-001").await, shop.stock("KIT-005").await);
    let cart = shop.cart_with(&[(&kettle, 1), (&mugs, 2)]).await;
    let buyer = customer();

    let response = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("location");
    let order: Order = response.json().await.expect("order");
    assert_eq!(location, format!("/v1/orders/{}", order.id));
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.customer_id, buyer);
    assert_eq!(order.payment.status, PaymentStatus::Authorized);
    assert_eq!(
        (order.payment.brand.as_str(), order.payment.last4.as_str()),
        ("visa", "4242")
    );
    assert!(
        !serde_json::to_string(&order)
            .expect("json")
            .contains("4242 4242"),
        "no card number"
    );

    // 49.00 + 2 × 32.00 = 113.00; free shipping; tax 8.25% = 9.3225 → 9.32.
    let totals = &order.totals;
    assert_eq!(
        totals.subtotal.amount,
        kettle.price.amount + 2 * mugs.price.amount
    );
    assert_eq!(totals.subtotal.amount, 11_300);
    assert_eq!(
        (
            totals.shipping.amount,
            totals.tax.amount,
            totals.total.amount
        ),
        (0, 932, 12_232)
    );

    // The inventory's and the cart's consumers of `order.confirmed` sell the stock and clear
    // the cart.
    shop.stock_settles("KIT-001", (before.0.available - 1, 0, before.0.sold + 1))
        .await;
    shop.stock_settles("KIT-005", (before.1.available - 2, 0, before.1.sold + 2))
        .await;
    let cleared = shop
        .cart_settles(&cart.id, |cart| cart.checkout_order_id.is_none())
        .await;
    assert!(
        cleared.lines.is_empty(),
        "the cart was cleared: {cleared:?}"
    );

    let read: Order = shop
        .order(&buyer, &order.id)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(read, order);
    let history = shop.history(&buyer).await;
    assert_eq!(
        history.iter().map(|o| &o.id).collect::<Vec<_>>(),
        [&order.id]
    );
    // Another customer sees neither the order nor any history.
    problem(
        shop.order(&customer(), &order.id).await,
        404,
        "order_not_found",
    )
    .await;
    assert!(shop.history(&customer()).await.is_empty());
}

async fn sixty_checkouts_for_ten_units_confirm_exactly_ten(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let lamp = shop.product_with_sku("OFF-003").await;
    shop.set_stock("OFF-003", 10).await;
    let mut carts = Vec::new();
    for _ in 0..60 {
        carts.push(shop.cart_with(&[(&lamp, 1)]).await);
    }
    let attempts = futures::future::join_all(carts.iter().map(|cart| {
        let shop = &shop;
        async move {
            let buyer = customer();
            let response = shop
                .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
                .await;
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("json");
            (status, body)
        }
    }))
    .await;
    let confirmed = attempts
        .iter()
        .filter(|(status, body)| *status == StatusCode::CREATED && body["status"] == "confirmed")
        .count();
    let short: Vec<&serde_json::Value> = attempts
        .iter()
        .filter(|(status, _)| *status == StatusCode::CONFLICT)
        .map(|(_, body)| body)
        .collect();
    let outcomes: Vec<(u16, &serde_json::Value)> = attempts
        .iter()
        .map(|(status, body)| (status.as_u16(), body.get("code").unwrap_or(&body["status"])))
        .collect();
    assert_eq!(confirmed, 10, "{outcomes:?}");
    assert_eq!(short.len(), 50, "{outcomes:?}");
    for body in short {
        assert_eq!(body["code"], "out_of_stock");
        assert_eq!(body["skus"], json!(["OFF-003"]));
    }
    // Sold 10, nothing left held.
    shop.stock_settles("OFF-003", (0, 0, 10)).await;
}

async fn one_idempotency_key_sent_twice_at_once_places_one_order(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let tent = shop.product_with_sku("OUT-009").await;
    let before = shop.stock("OUT-009").await;
    let cart = shop.cart_with(&[(&tent, 2)]).await;
    let buyer = customer();
    let key = key();
    let body = order_body(&cart.id, CARD_OK);
    let (first, second) = tokio::join!(
        shop.place(&buyer, &key, &body),
        shop.place(&buyer, &key, &body)
    );
    let statuses: BTreeSet<u16> = [first.status().as_u16(), second.status().as_u16()].into();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 201]),
        "one created, one repeated"
    );
    let first: Order = first.json().await.expect("order");
    let second: Order = second.json().await.expect("order");
    assert_eq!(first.id, second.id);
    assert_eq!(first.status, OrderStatus::Confirmed);
    assert_eq!(second.status, OrderStatus::Confirmed);
    assert_eq!(shop.history(&buyer).await.len(), 1);
    // Sold once.
    shop.stock_settles(
        "OUT-009",
        (before.available - 2, before.reserved, before.sold + 2),
    )
    .await;

    // Later repeats return the same order even though the cart is empty now.
    let again = shop.place(&buyer, &key, &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Order>().await.expect("order").id, first.id);
    // The same key with another body is refused, and nothing happens.
    let mut other = body.clone();
    other["customer"]["name"] = json!("Someone Else");
    problem(
        shop.place(&buyer, &key, &other).await,
        409,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(shop.stock("OUT-009").await.sold, before.sold + 2);
}

async fn declined_cards_leave_stock_and_cart_exactly_as_before(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let socks = shop.product_with_sku("APP-008").await;
    let before = shop.stock("APP-008").await;
    let cart = shop.cart_with(&[(&socks, 3)]).await;
    let buyer = customer();
    for (card, decline) in [
        (CARD_DECLINED, "card_declined"),
        (CARD_NO_FUNDS, "insufficient_funds"),
    ] {
        let refused = problem(
            shop.place(&buyer, &key(), &order_body(&cart.id, card))
                .await,
            402,
            "payment_declined",
        )
        .await;
        assert_eq!(refused.extensions["decline_code"], decline);
        let order_id = refused.extensions["order_id"]
            .as_str()
            .expect("order id")
            .to_owned();
        let failed: Order = shop
            .order(&buyer, &order_id)
            .await
            .json()
            .await
            .expect("order");
        assert_eq!(failed.status, OrderStatus::Failed);
        assert_eq!(failed.payment.status, PaymentStatus::Declined);
        assert_eq!(
            counts(&shop.stock("APP-008").await),
            counts(&before),
            "{decline}: stock untouched"
        );
        assert_eq!(
            shop.cart(&cart.id).await.item_count,
            3,
            "the cart keeps its lines"
        );
    }
    assert!(
        shop.history(&buyer).await.is_empty(),
        "failed checkouts are not orders"
    );
    // The same cart then goes through with a good card.
    let placed = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await;
    assert_eq!(placed.status(), StatusCode::CREATED);
}

async fn a_failure_after_the_reservation_returns_the_stock(backend: Backend) {
    let faults = Faults::default();
    let shop = TestPlatform::start_with(backend, &[], faults.clone()).await;
    let beanie = shop.product_with_sku("APP-005").await;
    let before = shop.stock("APP-005").await;
    let cart = shop.cart_with(&[(&beanie, 2)]).await;
    faults.after_reserve(Some(FaultAction::Fail));
    let failed = problem(
        shop.place(&customer(), &key(), &order_body(&cart.id, CARD_OK))
            .await,
        503,
        "injected_fault",
    )
    .await;
    assert!(failed.extensions.contains_key("order_id"));
    assert_eq!(counts(&shop.stock("APP-005").await), counts(&before));
    assert_eq!(shop.cart(&cart.id).await.item_count, 2);
}

/// A checkout that failed without charging, for a reason that may pass, is tried again by a
/// repeat of its request (the same key): once, whatever the number of repeats at once, and only
/// once it has given back what it held, which the repeat finishes itself when a dependency kept
/// that from happening.
async fn a_repeat_after_a_failure_that_may_pass_tries_again_once(backend: Backend) {
    let faults = Faults::default();
    let shop = TestPlatform::start_with(backend, &[], faults.clone()).await;
    let mug = shop.product_with_sku("KIT-001").await;
    let before = shop.stock("KIT-001").await;
    let buyer = customer();

    // A fault after the reservation: the stock goes back at once.
    let cart = shop.cart_with(&[(&mug, 2)]).await;
    let body = order_body(&cart.id, CARD_OK);
    let key = key();
    faults.after_reserve(Some(FaultAction::Fail));
    let failed = problem(shop.place(&buyer, &key, &body).await, 503, "injected_fault").await;
    let first_id = failed.extensions["order_id"]
        .as_str()
        .expect("id")
        .to_owned();
    faults.after_reserve(None);
    let (one, two, three) = tokio::join!(
        shop.place(&buyer, &key, &body),
        shop.place(&buyer, &key, &body),
        shop.place(&buyer, &key, &body)
    );
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for response in [one, two, three] {
        created += usize::from(response.status() == StatusCode::CREATED);
        assert!(response.status().is_success(), "{}", response.status());
        let order: Order = response.json().await.expect("order");
        assert_eq!(order.status, OrderStatus::Confirmed);
        ids.insert(order.id);
    }
    assert_eq!(ids.len(), 1, "one new try for three repeats at once");
    assert_eq!(created, 1, "one answer made it, the others repeat it");
    assert!(!ids.contains(&first_id));
    let first: Order = shop
        .order(&buyer, &first_id)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(
        first.status,
        OrderStatus::Failed,
        "the first try stays failed"
    );
    // Sold once.
    shop.stock_settles(
        "KIT-001",
        (before.available - 2, before.reserved, before.sold + 2),
    )
    .await;
    // Now that it went through, a repeat answers that order again.
    let again = shop.place(&buyer, &key, &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(ids.contains(&again.json::<Order>().await.expect("order").id));

    // The order service cut off from the inventory: the try fails and cannot give back what
    // it may hold until the inventory answers again; the repeat does that, then tries again.
    let cart = shop.cart_with(&[(&mug, 1)]).await;
    let body = order_body(&cart.id, CARD_OK);
    let key = emporium_tests::key();
    let cut = shop
        .switch_faults(Service::Order, Some(json!({"outage": ["inventory"]})))
        .await;
    assert!(cut.status().is_success());
    problem(
        shop.place(&buyer, &key, &body).await,
        503,
        "inventory_unavailable",
    )
    .await;
    // While it lasts, a repeat gets the same answer and starts nothing.
    problem(
        shop.place(&buyer, &key, &body).await,
        503,
        "inventory_unavailable",
    )
    .await;
    shop.switch_faults(Service::Order, None).await;
    let mut placed = None;
    for _ in 0..100 {
        let response = shop.place(&buyer, &key, &body).await;
        if response.status() == StatusCode::CREATED {
            placed = Some(response.json::<Order>().await.expect("order"));
            break;
        }
        // The circuit to the inventory closes a moment after the switch.
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let placed = placed.expect("the repeat went through once the inventory answered");
    assert_eq!(placed.status, OrderStatus::Confirmed);
    // Nothing left held.
    shop.stock_settles(
        "KIT-001",
        (before.available - 3, before.reserved, before.sold + 3),
    )
    .await;
    assert_eq!(shop.history(&buyer).await.len(), 2);
}

async fn a_crash_before_payment_is_undone_by_the_reconciler_after_restart(backend: Backend) {
    let faults = Faults::default();
    let mut shop = TestPlatform::start_with(
        backend,
        &["--order-reconcile-grace-secs", "0"],
        faults.clone(),
    )
    .await;
    let knife = shop.product_with_sku("KIT-003").await;
    let before = shop.stock("KIT-003").await;
    let cart = shop.cart_with(&[(&knife, 2)]).await;
    let buyer = customer();
    faults.after_reserve(Some(FaultAction::Crash));
    let interrupted = problem(
        shop.place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
            .await,
        503,
        "checkout_interrupted",
    )
    .await;
    let order_id = interrupted.extensions["order_id"]
        .as_str()
        .expect("order id")
        .to_owned();
    let held = shop.stock("KIT-003").await;
    assert_eq!(
        counts(&held),
        (before.available - 2, before.reserved + 2, before.sold),
        "stock is held mid-checkout"
    );
    let pending: Order = shop
        .order(&buyer, &order_id)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(pending.status, OrderStatus::Pending);

    faults.after_reserve(None);
    shop.restart(Service::Order).await;
    let resolved = wait_for_status(&shop, &buyer, &order_id, OrderStatus::Pending).await;
    assert_eq!(resolved.status, OrderStatus::Cancelled);
    assert_eq!(
        resolved.failure.as_ref().map(|f| f.code.as_str()),
        Some("checkout_interrupted")
    );
    // The reconciler writes the outcome first and moves the stock in its next step.
    shop.stock_settles("KIT-003", counts(&before)).await;
    assert!(shop.history(&buyer).await.is_empty());
    // With the stock, the cart's claim was ended: its lines are there to buy again.
    let kept = shop.cart(&cart.id).await;
    assert_eq!((kept.item_count, kept.checkout_order_id), (2, None));
    let again = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
}

async fn a_crash_after_payment_is_finished_by_its_events_after_restart(backend: Backend) {
    let faults = Faults::default();
    let mut shop = TestPlatform::start_with(
        backend,
        &["--order-reconcile-grace-secs", "0"],
        faults.clone(),
    )
    .await;
    let pan = shop.product_with_sku("KIT-002").await;
    let before = shop.stock("KIT-002").await;
    let cart = shop.cart_with(&[(&pan, 1)]).await;
    let buyer = customer();
    faults.after_authorize(Some(FaultAction::Crash));
    let interrupted = problem(
        shop.place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
            .await,
        503,
        "checkout_interrupted",
    )
    .await;
    let order_id = interrupted.extensions["order_id"]
        .as_str()
        .expect("order id")
        .to_owned();

    faults.after_authorize(None);
    shop.restart(Service::Order).await;
    let resolved = wait_for_status(&shop, &buyer, &order_id, OrderStatus::Pending).await;
    assert_eq!(resolved.status, OrderStatus::Confirmed);
    shop.stock_settles("KIT-002", (before.available - 1, 0, before.sold + 1))
        .await;
    // The reconciler also finishes the tidy-up: the cart ends empty.
    let mut cleared = false;
    for _ in 0..100 {
        if shop.cart(&cart.id).await.lines.is_empty() {
            cleared = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(cleared);
    assert_eq!(shop.cart(&cart.id).await.checkout_order_id, None);
    assert_eq!(shop.history(&buyer).await.len(), 1);
}

async fn a_reservation_arriving_after_the_reconciler_closed_the_order_is_given_back(
    backend: Backend,
) {
    let faults = Faults::default();
    let shop = TestPlatform::start_with(
        backend,
        &[
            "--order-reconcile-grace-secs",
            "0",
            "--order-reconcile-interval-secs",
            "1",
        ],
        faults.clone(),
    )
    .await;
    let mitt = shop.product_with_sku("KIT-007").await;
    let before = shop.stock("KIT-007").await;
    let cart = shop.cart_with(&[(&mitt, 1)]).await;
    // The reservation call takes longer than the reconciler waits: it closes the order first.
    faults.delay_before_reserve(Some(std::time::Duration::from_millis(2500)));
    let response = shop
        .place(&customer(), &key(), &order_body(&cart.id, CARD_OK))
        .await;
    let closed = problem(response, 409, "checkout_interrupted").await;
    assert!(closed.extensions.contains_key("order_id"));
    assert_eq!(
        counts(&shop.stock("KIT-007").await),
        counts(&before),
        "the late reservation was released at once"
    );
}

async fn wait_for_status(
    shop: &TestPlatform,
    buyer: &str,
    order_id: &str,
    leaving: OrderStatus,
) -> Order {
    for _ in 0..200 {
        let order: Order = shop
            .order(buyer, order_id)
            .await
            .json()
            .await
            .expect("order");
        if order.status != leaving {
            return order;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("order {order_id} stayed {leaving:?}");
}

async fn bad_checkouts_are_client_errors_that_reserve_and_write_nothing(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let book = shop.product_with_sku("BKS-005").await;
    let before = shop.stock("BKS-005").await;
    let cart = shop.cart_with(&[(&book, 1)]).await;
    let empty = shop.new_cart().await;
    let buyer = customer();
    let good = order_body(&cart.id, CARD_OK);
    let with = |path: &[&str], value: serde_json::Value| {
        let mut body = good.clone();
        let mut slot = &mut body;
        for part in path {
            slot = &mut slot[*part];
        }
        *slot = value;
        body
    };
    let url = format!("{}/v1/orders", shop.url(Service::Order));
    let reused_key = key();

    // Missing or wrong identity and keys.
    let no_customer = shop
        .http
        .post(&url)
        .header("idempotency-key", key())
        .json(&good)
        .send()
        .await
        .expect("send");
    problem(no_customer, 401, "customer_required").await;
    problem(
        shop.place("not-a-customer", &key(), &good).await,
        401,
        "customer_required",
    )
    .await;
    let no_key = shop
        .http
        .post(&url)
        .header("x-customer-id", &buyer)
        .json(&good)
        .send()
        .await
        .expect("send");
    problem(no_key, 400, "idempotency_key_missing").await;
    problem(
        shop.place(&buyer, "has space", &good).await,
        400,
        "invalid_idempotency_key",
    )
    .await;
    problem(
        shop.place(&buyer, &"k".repeat(129), &good).await,
        400,
        "invalid_idempotency_key",
    )
    .await;

    // Bad bodies.
    let cases = [
        (
            with(&["cart_id"], json!(emporium_platform::id::new_id())),
            422,
            "cart_not_found",
        ),
        (
            with(&["cart_id"], json!("../carts")),
            422,
            "validation_failed",
        ),
        (with(&["cart_id"], json!(empty.id)), 422, "cart_empty"),
        (
            with(&["customer", "email"], json!("grace@")),
            422,
            "validation_failed",
        ),
        (
            with(&["customer", "name"], json!("")),
            422,
            "validation_failed",
        ),
        (
            with(&["customer", "address", "country"], json!("USA")),
            422,
            "validation_failed",
        ),
        (
            with(&["payment", "number"], json!("4242 4242 4242 4241")),
            422,
            "validation_failed",
        ),
        (
            with(&["payment", "expiry_year"], json!(2020)),
            422,
            "validation_failed",
        ),
        (
            with(&["payment", "cvc"], json!("12a")),
            422,
            "validation_failed",
        ),
        (
            with(&["payment", "expiry_month"], json!(-1)),
            400,
            "invalid_body",
        ),
        (
            with(&["customer", "phone"], json!("555")),
            400,
            "invalid_body",
        ),
        (json!({"cart_id": cart.id}), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        problem(shop.place(&buyer, &reused_key, &body).await, status, code).await;
    }
    let raw = shop
        .http
        .post(&url)
        .header("x-customer-id", &buyer)
        .header("idempotency-key", key())
        .header("content-type", "application/json")
        .body("{\"cart_id\":")
        .send()
        .await
        .expect("send");
    problem(raw, 400, "invalid_json").await;

    // A product that left the catalog after it went into the cart.
    let doomed_cart = shop
        .cart_with(&[(&shop.product_with_sku("BKS-006").await, 1)])
        .await;
    let doomed = shop.product_with_sku("BKS-006").await;
    let deleted = shop
        .http
        .delete(format!(
            "{}/v1/products/{}",
            shop.url(Service::Catalog),
            doomed.id
        ))
        .bearer_auth(emporium_tests::ADMIN_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = problem(
        shop.place(&buyer, &key(), &order_body(&doomed_cart.id, CARD_OK))
            .await,
        422,
        "product_unavailable",
    )
    .await;
    assert_eq!(gone.extensions["product_ids"], json!([doomed.id]));

    assert_eq!(
        counts(&shop.stock("BKS-005").await),
        counts(&before),
        "nothing reserved"
    );
    assert!(shop.history(&buyer).await.is_empty(), "nothing written");
    // Rejected requests did not use up their idempotency key.
    let placed = shop.place(&buyer, &reused_key, &good).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
}

async fn cancelling_a_confirmed_order_returns_its_stock(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let shell = shop.product_with_sku("OUT-008").await;
    let before = shop.stock("OUT-008").await;
    let buyer = customer();
    let cart = shop.cart_with(&[(&shell, 2)]).await;
    let order: Order = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await
        .json()
        .await
        .expect("order");
    shop.stock_settles(
        "OUT-008",
        (before.available - 2, before.reserved, before.sold + 2),
    )
    .await;

    let cancel_url = format!("{}/v1/orders/{}/cancel", shop.url(Service::Order), order.id);
    let stranger = shop
        .http
        .post(&cancel_url)
        .header("x-customer-id", customer())
        .send()
        .await
        .expect("send");
    problem(stranger, 404, "order_not_found").await;
    for _ in 0..2 {
        let cancelled: Order = shop
            .http
            .post(&cancel_url)
            .header("x-customer-id", &buyer)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("order");
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert_eq!(cancelled.payment.status, PaymentStatus::Voided);
    }
    // Returned once, by the inventory's consumer of `order.cancelled`.
    shop.stock_settles("OUT-008", counts(&before)).await;
    let history = shop.history(&buyer).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, OrderStatus::Cancelled);

    // A failed checkout has nothing to cancel.
    let declined = problem(
        shop.place(
            &buyer,
            &key(),
            &order_body(&shop.cart_with(&[(&shell, 1)]).await.id, CARD_DECLINED),
        )
        .await,
        402,
        "payment_declined",
    )
    .await;
    let failed_id = declined.extensions["order_id"].as_str().expect("id");
    let refused = shop
        .http
        .post(format!(
            "{}/v1/orders/{failed_id}/cancel",
            shop.url(Service::Order)
        ))
        .header("x-customer-id", &buyer)
        .send()
        .await
        .expect("send");
    problem(refused, 409, "order_not_cancellable").await;
}

async fn history_lists_a_customers_orders_newest_first_in_pages(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let pencil = shop.product_with_sku("OFF-007").await;
    let buyer = customer();
    let mut placed = Vec::new();
    for _ in 0..3 {
        let cart = shop.cart_with(&[(&pencil, 1)]).await;
        let order: Order = shop
            .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
            .await
            .json()
            .await
            .expect("order");
        placed.push(order.id);
    }
    placed.reverse();
    let url = format!("{}/v1/orders", shop.url(Service::Order));
    let first: serde_json::Value = shop
        .http
        .get(format!("{url}?limit=2"))
        .header("x-customer-id", &buyer)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("page");
    let cursor = first["next_cursor"].as_str().expect("more").to_owned();
    let second: serde_json::Value = shop
        .http
        .get(format!("{url}?limit=2&cursor={cursor}"))
        .header("x-customer-id", &buyer)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("page");
    let ids: Vec<&str> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .chain(second["items"].as_array().expect("items"))
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(ids, placed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(second.get("next_cursor").is_none());

    let stolen = shop
        .http
        .get(format!("{url}?limit=2&cursor={cursor}"))
        .header("x-customer-id", customer())
        .send()
        .await
        .expect("send");
    problem(stolen, 400, "invalid_cursor").await;
    let no_customer = shop.http.get(&url).send().await.expect("send");
    problem(no_customer, 401, "customer_required").await;
    let bad_limit = shop
        .http
        .get(format!("{url}?limit=0"))
        .header("x-customer-id", &buyer)
        .send()
        .await
        .expect("send");
    problem(bad_limit, 400, "invalid_query").await;
}

/// The order service serves a customer's orders only to the shop's own services: a caller that
/// does not show the gateway key, or shows a wrong one, cannot place, read or cancel orders in
/// any customer's name, and nothing is written.
#[tokio::test]
async fn customer_requests_without_the_gateway_key_are_refused_and_write_nothing() {
    let shop = TestPlatform::start(Backend::Embedded).await;
    let product = shop.product_with_sku("KIT-001").await;
    let cart = shop.cart_with(&[(&product, 1)]).await;
    let buyer = customer();
    let before = shop.stock("KIT-001").await;
    let url = format!("{}/v1/orders", shop.url(Service::Order));
    for shown in [None, Some("not-the-key")] {
        let outsider = reqwest::Client::new();
        let with_key = |request: reqwest::RequestBuilder| match shown {
            Some(shown) => request.header("x-emporium-gateway", shown),
            None => request,
        };
        let placed = with_key(outsider.post(&url))
            .header("x-customer-id", &buyer)
            .header("idempotency-key", key())
            .json(&order_body(&cart.id, CARD_OK))
            .send()
            .await
            .expect("send");
        problem(placed, 401, "gateway_required").await;
        // Refused before the body is looked at: a stranger learns nothing of its rules.
        let malformed = with_key(outsider.post(&url))
            .header("content-type", "text/plain")
            .body("{")
            .send()
            .await
            .expect("send");
        problem(malformed, 401, "gateway_required").await;
        let listed = with_key(outsider.get(&url))
            .header("x-customer-id", &buyer)
            .send()
            .await
            .expect("send");
        problem(listed, 401, "gateway_required").await;
        // Nor can it hold stock, or claim the cart, in an order's name.
        let held =
            with_key(outsider.post(format!("{}/v1/reservations", shop.url(Service::Inventory))))
                .json(&json!({"id": emporium_platform::id::new_id(),
            "lines": [{"sku": "KIT-001", "quantity": 1}], "ttl_seconds": 86400}))
                .send()
                .await
                .expect("send");
        problem(held, 401, "gateway_required").await;
        let claimed = with_key(outsider.put(format!(
            "{}/v1/carts/{}/checkout",
            shop.url(Service::Cart),
            cart.id
        )))
        .json(&json!({"order_id": emporium_platform::id::new_id(), "version": cart.version}))
        .send()
        .await
        .expect("send");
        problem(claimed, 401, "gateway_required").await;
    }
    // Nothing happened: no order, the stock and the cart as they were.
    assert!(shop.history(&buyer).await.is_empty());
    let after = shop.stock("KIT-001").await;
    assert_eq!(
        (after.available, after.reserved),
        (before.available, before.reserved)
    );
    assert_eq!(shop.cart(&cart.id).await.lines.len(), 1);
    assert_eq!(shop.cart(&cart.id).await.checkout_order_id, None);
    // The shop's own client, which shows the key, is served.
    let placed = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await;
    assert_eq!(placed.status(), 201);
}

async fn checkouts_of_one_cart_at_once_with_different_keys_charge_it_once(backend: Backend) {
    let shop = TestPlatform::start(backend).await;
    let kettle = shop.product_with_sku("KIT-001").await;
    shop.set_stock("KIT-001", 100).await;
    let cart = shop.cart_with(&[(&kettle, 2)]).await;
    // A slow inventory keeps the first checkout in flight while the others arrive, as two tabs
    // or a double tap on a client that makes a key per tap would send them.
    let slowed = shop
        .switch_faults(Service::Inventory, Some(json!({"latency_ms": 300})))
        .await;
    assert!(slowed.status().is_success());
    let buyer = customer();
    let body = order_body(&cart.id, CARD_OK);
    let attempts = futures::future::join_all((0..8).map(|_| async {
        let response = shop.place(&buyer, &key(), &body).await;
        let status = response.status().as_u16();
        (
            status,
            response.json::<serde_json::Value>().await.expect("json"),
        )
    }))
    .await;
    assert!(
        shop.switch_faults(Service::Inventory, None)
            .await
            .status()
            .is_success()
    );

    let placed: Vec<&serde_json::Value> = attempts
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(placed.len(), 1, "one order: {attempts:?}");
    for (status, body) in &attempts {
        let code = body["code"].as_str().unwrap_or_default();
        match status {
            201 => {}
            // Refused while the first holds the cart, or after it took the cart's units.
            409 => assert!(
                ["cart_in_checkout", "cart_changed"].contains(&code),
                "{body}"
            ),
            422 => assert_eq!(code, "cart_empty", "{body}"),
            other => panic!("{other}: {body}"),
        }
        // A refused attempt that got as far as an order of its own charged nothing.
        if *status != 201
            && let Some(order_id) = body["order_id"].as_str()
        {
            let order: Order = shop
                .order(&buyer, order_id)
                .await
                .json()
                .await
                .expect("order");
            assert_eq!(order.status, OrderStatus::Failed, "{order:?}");
            assert_eq!(
                order.payment.status,
                PaymentStatus::NotAuthorized,
                "{order:?}"
            );
        }
    }
    let history = shop.history(&buyer).await;
    assert_eq!(history.len(), 1, "one authorised order");
    assert_eq!(history[0].id, placed[0]["id"].as_str().expect("id"));
    assert_eq!(history[0].payment.status, PaymentStatus::Authorized);
    // Sold once.
    shop.stock_settles("KIT-001", (98, 0, 2)).await;
    let after = shop
        .cart_settles(&cart.id, |cart| cart.checkout_order_id.is_none())
        .await;
    assert!(after.lines.is_empty(), "{after:?}");
    assert_eq!(
        after.checkout_order_id, None,
        "the claim ended with the checkout"
    );
}

async fn a_line_added_while_the_checkout_runs_stays_in_the_cart(backend: Backend) {
    let faults = Faults::default();
    let shop = TestPlatform::start_with(backend, &[], faults.clone()).await;
    let tent = shop.product_with_sku("OUT-009").await;
    let lamp = shop.product_with_sku("OFF-003").await;
    shop.set_stock("OUT-009", 50).await;
    shop.set_stock("OFF-003", 50).await;
    let cart = shop.cart_with(&[(&tent, 1)]).await;
    // The checkout pauses after claiming its cart, before it reserves.
    faults.delay_before_reserve(Some(std::time::Duration::from_millis(800)));
    let buyer = customer();
    let body = order_body(&cart.id, CARD_OK);
    let first_key = key();
    let (placed, during) = tokio::join!(shop.place(&buyer, &first_key, &body), async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shop.cart(&cart.id).await.checkout_order_id.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkout claimed its cart"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Taking out what is being bought is refused: the order charges it.
        let removed = shop
            .http
            .delete(format!(
                "{}/v1/carts/{}/lines/{}",
                shop.url(Service::Cart),
                cart.id,
                tent.id
            ))
            .send()
            .await
            .expect("send");
        problem(removed, 409, "cart_in_checkout").await;
        // Another product, and one more of the one being bought, both answered 200.
        shop.add_to_cart(&cart.id, &lamp.id, 1).await;
        shop.add_to_cart(&cart.id, &tent.id, 1).await
    });
    faults.delay_before_reserve(None);
    assert_eq!(placed.status(), StatusCode::CREATED);
    let order: Order = placed.json().await.expect("order");
    let bought: Vec<(String, i64)> = order
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    assert_eq!(
        bought,
        [("OUT-009".to_owned(), 1)],
        "the order is what was priced"
    );
    assert_eq!(during.item_count, 3);
    let after = shop
        .cart_settles(&cart.id, |cart| cart.checkout_order_id.is_none())
        .await;
    let mut left: Vec<(String, i64)> = after
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [("OFF-003".to_owned(), 1), ("OUT-009".to_owned(), 1)],
        "what came during the checkout is still in the cart"
    );
    assert_eq!(after.checkout_order_id, None);
    // And it can be bought next.
    let next = shop.place(&buyer, &key(), &body).await;
    assert_eq!(next.status(), StatusCode::CREATED);
    shop.cart_settles(&cart.id, |cart| cart.lines.is_empty())
        .await;
    for (sku, sold) in [("OUT-009", 2), ("OFF-003", 1)] {
        let level = shop
            .stock_settles_when(sku, |level| level.reserved == 0 && level.sold >= sold)
            .await;
        assert_eq!(level.sold, sold, "{sku} sold once");
    }
}

/// Listens to every order event, as fulfilment and notifications will.
const ORDER_LISTENER: emporium_ports::events::GroupDef = emporium_ports::events::GroupDef {
    name: "test-orders",
    types: &[
        emporium_api::events::EventType::OrderPlaced.as_str(),
        emporium_api::events::EventType::OrderConfirmed.as_str(),
        emporium_api::events::EventType::OrderFailed.as_str(),
        emporium_api::events::EventType::OrderCancelled.as_str(),
    ],
    visibility: Duration::from_secs(30),
    max_attempts: 3,
};

/// A confirmed checkout tells of its order placed then confirmed, a declined one placed then
/// failed, a cancel cancelled: each once, with lines, totals and customer id, and nothing of the
/// card or the customer's address.
async fn an_order_tells_the_bus_it_was_placed_confirmed_failed_or_cancelled(backend: Backend) {
    use emporium_api::events::{Envelope, EventType};
    let shop =
        TestPlatform::start_listening(backend, &[], Faults::default(), &[ORDER_LISTENER]).await;
    let mug = shop.products().await.remove(0);
    let buyer = customer();
    let cart = shop.cart_with(&[(&mug, 2)]).await;
    let confirmed: Order = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
    let other = shop.cart_with(&[(&mug, 1)]).await;
    let declined = shop
        .place(&buyer, &key(), &order_body(&other.id, CARD_DECLINED))
        .await;
    assert_eq!(declined.status(), 402);
    // Cancelled twice at once: both answered cancelled, one cancellation told.
    let (cancel, again) = tokio::join!(
        shop.cancel(&buyer, &confirmed.id),
        shop.cancel(&buyer, &confirmed.id)
    );
    assert_eq!(
        (cancel.status(), again.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    let mut heard: Vec<(EventType, String, serde_json::Value)> = Vec::new();
    for delivery in emporium_ports::events::conformance::collect(
        &*shop.platform.events(),
        ORDER_LISTENER.name,
        usize::MAX,
        Duration::from_secs(8),
        true,
    )
    .await
    {
        assert!(
            !delivery.event.body.contains("4242") && !delivery.event.body.contains("Harbor"),
            "card or address in {}",
            delivery.event.body
        );
        let envelope = Envelope::from_json(delivery.event.body.as_bytes()).expect("envelope");
        assert_eq!(envelope.source, "/emporium/order");
        assert_eq!(envelope.data["order_id"], envelope.subject.as_str());
        assert_eq!(envelope.data["customer_id"], buyer.as_str());
        heard.push((envelope.kind, envelope.subject, envelope.data));
    }
    let of = |order: &str| -> Vec<EventType> {
        let mut kinds: Vec<EventType> = heard
            .iter()
            .filter(|(_, subject, _)| subject == order)
            .map(|(kind, _, _)| *kind)
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(
        of(&confirmed.id),
        vec![
            EventType::OrderPlaced,
            EventType::OrderConfirmed,
            EventType::OrderCancelled
        ],
        "{heard:#?}"
    );
    let failed: Vec<&(EventType, String, serde_json::Value)> = heard
        .iter()
        .filter(|(kind, _, _)| *kind == EventType::OrderFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{heard:#?}");
    assert_eq!(
        of(&failed[0].1),
        vec![EventType::OrderPlaced, EventType::OrderFailed]
    );
    assert_eq!(failed[0].2["failure"]["code"], "payment_declined");
    let confirmation = heard
        .iter()
        .find(|(kind, _, _)| *kind == EventType::OrderConfirmed)
        .expect("confirmed");
    assert_eq!(confirmation.2["lines"][0]["sku"], mug.sku.as_str());
    assert_eq!(confirmation.2["lines"][0]["quantity"], 2);
    assert_eq!(
        confirmation.2["totals"]["total"],
        serde_json::to_value(&confirmed.totals.total).expect("json")
    );
    assert_eq!(confirmation.2["version"], 2);
}

/// Runs `emporium events <args>` against the platform's bus, as an operator would beside the
/// running shop (SNS and SQS), and returns what it printed.
async fn events_command(shop: &TestPlatform, args: &[&str]) -> String {
    let uri = shop.settings.common.events_uri();
    let mut argv = vec!["emporium", "events"];
    argv.extend(args);
    argv.extend(["--events", uri.as_str(), "--log", "warn"]);
    let cli = <emporium::cli::Cli as clap::Parser>::try_parse_from(argv).expect("events command");
    let emporium::cli::Command::Events(command) = cli.command else {
        unreachable!("parsed an events command")
    };
    let mut out = Vec::new();
    emporium::events_cli::run(command, &mut out)
        .await
        .expect("events command runs");
    String::from_utf8(out).expect("utf-8")
}

/// An event whose handler fails every time (the inventory cut off from its store by a fault
/// switch, when an order is cancelled) is tried a few times, sooner each than the visibility
/// timeout, then waits in the group's dead letters, where `emporium events dlq list` shows it;
/// once the store is back, `dlq redrive` hands it back and it is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_waits_in_the_dead_letters_until_redriven_then_applies_once() {
    let shop = TestPlatform::start(Backend::Aws).await;
    let bag = shop.product_with_sku("OUT-007").await;
    let before = shop.stock("OUT-007").await;
    let buyer = customer();
    let cart = shop.cart_with(&[(&bag, 2)]).await;
    let order: Order = shop
        .place(&buyer, &key(), &order_body(&cart.id, CARD_OK))
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(order.status, OrderStatus::Confirmed);
    let sold = (before.available - 2, before.reserved, before.sold + 2);
    shop.stock_settles("OUT-007", sold).await;

    let cut = shop
        .switch_faults(Service::Inventory, Some(json!({"outage": ["storage"]})))
        .await;
    assert!(cut.status().is_success());
    let cancelled = shop.cancel(&buyer, &order.id).await;
    assert_eq!(cancelled.status(), StatusCode::OK);

    // Ten attempts, a second more apart each time, then the dead letters.
    let mut listed = String::new();
    for _ in 0..120 {
        listed = events_command(&shop, &["dlq", "list", "--group", "inventory-orders"]).await;
        if listed.contains("1 dead letters") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        listed.contains("1 dead letters in inventory-orders"),
        "{listed}"
    );
    assert!(
        listed.contains("emporium.order.cancelled.v1") && listed.contains(&order.id),
        "{listed}"
    );
    let as_json = events_command(
        &shop,
        &["dlq", "list", "--group", "inventory-orders", "--json"],
    )
    .await;
    let envelope: serde_json::Value =
        serde_json::from_str(as_json.lines().next().expect("one line")).expect("an envelope");
    assert_eq!(envelope["subject"], order.id.as_str());
    let metrics = shop.metrics(Service::Inventory).await;
    assert!(
        metrics.contains(
            "emporium_inventory_events_handled_total{group=\"inventory-orders\",outcome=\"failed\"} 10"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("emporium_inventory_events_redelivered_total{group=\"inventory-orders\"} 9"),
        "{metrics}"
    );
    // Nothing happened to the stock meanwhile, and the cart group was not held up.
    shop.switch_faults(Service::Inventory, None).await;
    assert_eq!(counts(&shop.stock("OUT-007").await), sold);

    let redriven = events_command(&shop, &["dlq", "redrive", "--group", "inventory-orders"]).await;
    assert!(redriven.starts_with("1 dead letters"), "{redriven}");
    shop.stock_settles("OUT-007", counts(&before)).await;
    let left = events_command(&shop, &["dlq", "list", "--group", "inventory-orders"]).await;
    assert!(left.contains("0 dead letters"), "{left}");
    // Applied once: a while later the stock is still as before the order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counts(&shop.stock("OUT-007").await), counts(&before));
}
