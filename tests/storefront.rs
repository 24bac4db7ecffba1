//! The storefront over HTTP, as a browser and an API client use it: every page and API route,
//! the session cookie (tampering starts a fresh session), cross-site form posts, stock states,
//! assets with ETags, and what shoppers see when a service is down or slow.

use std::time::{Duration, Instant};

use emporium::run::{Plan, Platform, Service};
use emporium_order::Faults;
use emporium_tests::{Backend, CARD_DECLINED, CARD_OK, Page, Shopper, TestPlatform};
use reqwest::Method;
use serde_json::{Value, json};

async fn shop() -> (TestPlatform, Shopper) {
    shop_on(Backend::Embedded).await
}

async fn shop_on(backend: Backend) -> (TestPlatform, Shopper) {
    shop_on_with(backend, &[]).await
}

async fn shop_on_with(backend: Backend, extra: &[&str]) -> (TestPlatform, Shopper) {
    let platform = TestPlatform::start_with(backend, extra, Faults::default()).await;
    let shopper = Shopper::new(platform.url(Service::Storefront));
    (platform, shopper)
}

/// Settings that turn the storefront's near cache off, for tests of what a page shows the
/// moment something changes behind it.
const NO_NEAR_CACHE: &[&str] = &["--product-cache-ms", "0", "--stock-cache-ms", "0"];

async fn shop_with(extra: &[&str]) -> (TestPlatform, Shopper) {
    shop_on_with(Backend::Embedded, extra).await
}

fn assert_page(page: &Page, status: u16) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{}",
        page.header("content-type")
    );
    assert!(page.body.starts_with("<!doctype html>"));
    // No script anywhere: the journey works with JavaScript off, and the policy forbids any.
    assert!(!page.body.contains("<script"), "a page carries a script");
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'none'")
    );
    assert!(
        page.header("content-security-policy")
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
}

/// The form fields of a checkout with `card`, carrying the page's token and key.
fn checkout_fields<'a>(page: &'a Page, csrf: &'a str, card: &'a str) -> Vec<(&'a str, String)> {
    let key_marker = r#"name="idempotency_key" value=""#;
    let start = page.body.find(key_marker).expect("idempotency key") + key_marker.len();
    let key = page.body[start..start + 26].to_owned();
    vec![
        ("csrf", csrf.to_owned()),
        ("idempotency_key", key),
        ("name", "Grace Hopper".into()),
        ("email", "grace@example.com".into()),
        ("line1", "1 Harbor Way".into()),
        ("line2", String::new()),
        ("city", "Arlington".into()),
        ("region", "VA".into()),
        ("postal_code", "22201".into()),
        ("country", "US".into()),
        ("card_number", card.into()),
        ("exp_month", "12".into()),
        ("exp_year", "2035".into()),
        ("cvc", "123".into()),
    ]
}

fn set(fields: &mut [(&str, String)], name: &str, value: &str) {
    for (field, old) in fields {
        if *field == name {
            *old = value.to_owned();
        }
    }
}

fn borrowed<'a>(fields: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Posts one of the cart's forms (`add`, `update`, `remove`) for a product.
async fn cart_form(
    shopper: &mut Shopper,
    action: &str,
    csrf: &str,
    product_id: &str,
    quantity: &str,
) -> Page {
    shopper
        .post_form(
            &format!("/cart/{action}"),
            &[
                ("csrf", csrf),
                ("product_id", product_id),
                ("quantity", quantity),
            ],
        )
        .await
}

/// Adds `quantity` of a product through the product page's form.
async fn add(shopper: &mut Shopper, product_id: &str, quantity: &str) -> Page {
    let page = shopper.get(&format!("/p/{product_id}")).await;
    let csrf = page.csrf();
    cart_form(shopper, "add", &csrf, product_id, quantity).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_for_a_new_visitor_who_gets_a_session_cookie() {
    let (platform, mut shopper) = shop().await;
    let product = &platform.products().await[0];
    let home = shopper.get("/").await;
    assert_page(&home, 200);
    let cookie = home.header("set-cookie");
    assert!(cookie.starts_with("emporium_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP gets no Secure cookie: {cookie}"
    );
    assert_eq!(home.header("cache-control"), "private, no-store");
    assert!(home.body.contains("Shop by category") && home.body.contains("New arrivals"));
    for path in [
        "/c/kitchen".to_owned(),
        "/c/kitchen?sort=price_desc".to_owned(),
        "/c/kitchen?sort=nonsense".to_owned(),
        "/search?q=mug".to_owned(),
        "/search".to_owned(),
        format!("/p/{}", product.id),
        "/cart".to_owned(),
        "/orders".to_owned(),
    ] {
        let page = shopper.get(&path).await;
        assert_page(&page, 200);
        // The session is set once; later pages do not send it again.
        assert_eq!(page.header("set-cookie"), "", "{path} resent the cookie");
    }
    let product_page = shopper.get(&format!("/p/{}", product.id)).await;
    assert!(product_page.body.contains(&product.name));
    assert!(
        product_page
            .body
            .contains(&format!("alt=\"{}\"", product.name))
    );
    assert!(product_page.body.contains(r#"<label for="quantity">"#));
    // Checkout with an empty cart goes back to the cart, which says why.
    let checkout = shopper.get("/checkout").await;
    assert_eq!(
        (checkout.status, checkout.location()),
        (303, "/cart?notice=empty")
    );
    let cart = shopper.get("/cart?notice=empty").await;
    assert!(cart.body.contains("Your cart is empty"));
    // Behind HTTPS (a TLS-terminating load balancer) the cookie is Secure.
    let mut secure = Shopper::new(shopper.base.clone());
    let page = secure
        .send(
            secure
                .http
                .get(format!("{}/", secure.base))
                .header("x-forwarded-proto", "https"),
        )
        .await;
    assert!(
        page.header("set-cookie").contains("Secure"),
        "{}",
        page.header("set-cookie")
    );
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pages_products_and_categories_get_the_friendly_404() {
    let (platform, mut shopper) = shop().await;
    for path in [
        "/no/such/page",
        "/p/not-an-id",
        "/p/0000000000000000000000000a",
        "/c/no-such-category",
        "/orders/0000000000000000000000000a",
        "/orders/..%2F..%2Fetc",
    ] {
        let page = shopper.get(path).await;
        assert_page(&page, 404);
        assert!(page.body.contains("We couldn’t find that page"), "{path}");
    }
    // The API answers unknown routes and products with problems, not pages.
    let api = shopper
        .api(
            Method::GET,
            "/products/0000000000000000000000000a",
            None,
            &[],
        )
        .await;
    assert_eq!(api.status, 404);
    assert!(
        api.header("content-type")
            .starts_with("application/problem+json")
    );
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_sort_paginate_and_escape_what_shoppers_type() {
    let (platform, mut shopper) = shop().await;
    let first = shopper.get("/search?sort=price_asc").await;
    assert_page(&first, 200);
    let next = first
        .body
        .split(r#"rel="next""#)
        .next()
        .and_then(|head| head.rsplit("href=\"").next())
        .and_then(|tail| tail.split('"').next())
        .expect("a next page link")
        .replace("&#38;", "&");
    assert!(next.starts_with("/search?sort=price_asc&cursor="), "{next}");
    let second = shopper.get(&next).await;
    assert_page(&second, 200);
    assert!(second.body.contains("First page"));
    let names = |page: &Page| -> Vec<String> {
        page.body
            .split(r#"<h3 class="card-title">"#)
            .skip(1)
            .map(|s| s.split('<').next().unwrap_or_default().to_owned())
            .collect()
    };
    let (a, b) = (names(&first), names(&second));
    assert_eq!(a.len(), 12);
    assert!(
        !b.is_empty() && a.iter().all(|n| !b.contains(n)),
        "pages overlap"
    );
    // A cursor that is not one starts the listing again.
    let junk = shopper.get("/search?sort=price_asc&cursor=junk").await;
    assert_eq!(
        (junk.status, junk.location()),
        (303, "/search?sort=price_asc")
    );
    // What shoppers type is shown, escaped.
    let hostile = shopper
        .get("/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%3E")
        .await;
    assert_page(&hostile, 200);
    assert!(
        hostile
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
    );
    assert!(hostile.body.contains("Nothing matched your search"));
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_adds_changes_and_removes_and_stock_states_show() {
    let (platform, mut shopper) = shop().await;
    let products = platform.products().await;
    let (plenty, low, sold_out) = (&products[0], &products[1], &products[2]);
    platform.set_stock(&plenty.sku, 50).await;
    platform.set_stock(&low.sku, 3).await;
    platform.set_stock(&sold_out.sku, 0).await;

    let page = shopper.get(&format!("/p/{}", plenty.id)).await;
    assert!(page.body.contains("In stock"));
    let page = shopper.get(&format!("/p/{}", low.id)).await;
    assert!(page.body.contains("Only 3 left"));
    assert!(page.body.contains(r#"max="3""#));
    let page = shopper.get(&format!("/p/{}", sold_out.id)).await;
    assert!(page.body.contains("Out of stock"));
    assert!(page.body.contains("disabled"));
    assert!(!page.body.contains("Add to cart"));
    // A new product the inventory has never stocked is out of stock too, not "unknown".
    let created: Value = platform
        .http
        .post(format!("{}/v1/products", platform.url(Service::Catalog)))
        .bearer_auth(emporium_tests::ADMIN_KEY)
        .json(
            &json!({"sku": "KIT-900", "name": "Butter Dish", "category": "kitchen",
            "price": {"amount": 1500, "currency": "USD"}}),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("product");
    let page = shopper
        .get(&format!("/p/{}", created["id"].as_str().expect("id")))
        .await;
    assert!(page.body.contains("Out of stock"), "{}", page.body);
    let listing = shopper.get("/search?q=butter").await;
    assert!(listing.body.contains("stock-out"), "{}", listing.body);

    // Add: redirect to the cart, which shows the line.
    let added = add(&mut shopper, &plenty.id, "2").await;
    assert_eq!(
        (added.status, added.location()),
        (303, "/cart?notice=added")
    );
    let cart = shopper.get("/cart?notice=added").await;
    assert!(cart.body.contains("Added to your cart."));
    assert!(cart.body.contains(&plenty.name));
    assert!(cart.body.contains(r#"class="badge" aria-label="2 items""#));
    let csrf = cart.csrf();

    // Change the quantity.
    let changed = cart_form(&mut shopper, "update", &csrf, &plenty.id, "4").await;
    assert_eq!(
        (changed.status, changed.location()),
        (303, "/cart?notice=updated")
    );
    let cart = shopper.get("/cart").await;
    assert!(cart.body.contains(r#"value="4""#));

    // More than the stock: a clear message on the product page, nothing added.
    let short = add(&mut shopper, &low.id, "5").await;
    assert_page(&short, 409);
    assert!(
        short.body.contains("we don’t have that many"),
        "{}",
        short.body
    );
    // Sold out (its page has no form; the post is made by hand): the same.
    let none = cart_form(&mut shopper, "add", &csrf, &sold_out.id, "1").await;
    assert_page(&none, 409);
    // Not a number, or not a product.
    let junk = add(&mut shopper, &plenty.id, "lots").await;
    assert_page(&junk, 400);
    let unknown = cart_form(
        &mut shopper,
        "add",
        &csrf,
        "0000000000000000000000000a",
        "1",
    )
    .await;
    assert_page(&unknown, 404);
    let huge = add(&mut shopper, &plenty.id, "99999999999999999999999").await;
    assert_page(&huge, 400);
    let oversized = shopper
        .post_form(
            "/cart/add",
            &[
                ("csrf", &csrf),
                ("product_id", &"x".repeat(20_000)),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_page(&oversized, 400);
    assert!(oversized.body.contains("too large"));
    let not_a_form = shopper
        .post_raw("/cart/add", "application/json", "{}")
        .await;
    assert_page(&not_a_form, 400);
    let too_many = add(&mut shopper, &plenty.id, "999").await;
    assert_eq!(too_many.status, 422, "{}", too_many.body);
    let cart = shopper.get("/cart").await;
    assert!(!cart.body.contains(&low.name) && !cart.body.contains(&sold_out.name));
    assert!(cart.body.contains(r#"aria-label="4 items""#));

    // Quantity 0 removes; so does the remove button.
    add(&mut shopper, &low.id, "1").await;
    let zero = cart_form(&mut shopper, "update", &csrf, &plenty.id, "0").await;
    assert_eq!(zero.location(), "/cart?notice=removed");
    let removed = shopper
        .post_form("/cart/remove", &[("csrf", &csrf), ("product_id", &low.id)])
        .await;
    assert_eq!(removed.location(), "/cart?notice=removed");
    let cart = shopper.get("/cart").await;
    assert!(cart.body.contains("Your cart is empty"));
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_cookie_starts_a_fresh_session_and_cross_site_forms_are_refused() {
    let (platform, mut shopper) = shop().await;
    let product = &platform.products().await[0];
    platform.set_stock(&product.sku, 50).await;
    add(&mut shopper, &product.id, "1").await;
    let cart = shopper.get("/cart").await;
    assert!(cart.body.contains(&product.name));
    let csrf = cart.csrf();
    let original = shopper.cookie.clone().expect("a session");

    // Cross-site: the browser names another origin, or says the request is cross-site.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let page = shopper
            .post_form_with(
                "/cart/update",
                &[
                    ("csrf", &csrf),
                    ("product_id", &product.id),
                    ("quantity", "7"),
                ],
                &headers,
            )
            .await;
        assert_page(&page, 403);
        assert!(page.body.contains("This form has expired"));
    }
    // A missing or foreign token.
    let mut stranger = Shopper::new(shopper.base.clone());
    let foreign = stranger.get(&format!("/p/{}", product.id)).await.csrf();
    for token in ["", foreign.as_str(), "x"] {
        let page = cart_form(&mut shopper, "update", token, &product.id, "7").await;
        assert_page(&page, 403);
    }
    // Nothing changed.
    let cart = shopper.get("/cart").await;
    assert!(
        cart.body.contains(r#"aria-label="1 items""#),
        "{}",
        cart.body
    );

    // Tamper with the signed value: the storefront ignores it and starts a new session.
    let value = original.trim_start_matches("emporium_session=");
    let position = value.len() - 10;
    let flipped = if &value[position..=position] == "a" {
        "b"
    } else {
        "a"
    };
    let tampered = format!(
        "emporium_session={}{}{}",
        &value[..position],
        flipped,
        &value[position + 1..]
    );
    shopper.cookie = Some(tampered.clone());
    let fresh = shopper.get("/cart").await;
    assert_page(&fresh, 200);
    assert!(fresh.body.contains("Your cart is empty"));
    let renewed = shopper.cookie.clone().expect("a new session");
    assert_ne!(renewed, tampered);
    assert_ne!(renewed, original);
    // The old page's token is worthless in the new session.
    let page = cart_form(&mut shopper, "update", &csrf, &product.id, "2").await;
    assert_page(&page, 403);
    // An unsigned cookie is no better.
    shopper.cookie = Some("emporium_session=whatever".into());
    let page = shopper.get("/orders").await;
    assert_page(&page, 200);
    assert!(page.header("set-cookie").starts_with("emporium_session="));
    platform.platform.stop(true).await.expect("stop");
}

emporium_tests::on_every_backend!(
    checkout_confirms_declines_keep_the_cart_and_orders_stay_private,
    assets_come_from_the_blob_store_with_etags_and_immutable_caching,
);

async fn checkout_confirms_declines_keep_the_cart_and_orders_stay_private(backend: Backend) {
    let (platform, mut shopper) = shop_on(backend).await;
    let product = &platform.products().await[3];
    platform.set_stock(&product.sku, 20).await;
    add(&mut shopper, &product.id, "2").await;

    // A declined card: the reason, a kept cart, the stock untouched.
    let form = shopper.get("/checkout").await;
    assert_page(&form, 200);
    assert!(form.body.contains("4242 4242 4242 4242") && form.body.contains("4000 0000 0000 0002"));
    let csrf = form.csrf();
    let fields = checkout_fields(&form, &csrf, CARD_DECLINED);
    let declined = shopper.post_form("/checkout", &borrowed(&fields)).await;
    assert_page(&declined, 402);
    assert!(declined.body.contains("card_declined"), "{}", declined.body);
    assert!(
        declined.body.contains("Grace Hopper"),
        "the details are kept"
    );
    assert!(
        !declined
            .body
            .contains(&format!(r#"value="{CARD_DECLINED}""#)),
        "the card number is not filled in again"
    );
    let stock = platform.stock(&product.sku).await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (20, 0, 0));
    assert!(shopper.get("/cart").await.body.contains(&product.name));

    // Invalid details: messages beside the fields, nothing placed.
    let mut bad = checkout_fields(&declined, &csrf, CARD_OK);
    set(&mut bad, "email", "not-an-email");
    set(&mut bad, "exp_month", "December");
    let invalid = shopper.post_form("/checkout", &borrowed(&bad)).await;
    assert_page(&invalid, 422);
    assert!(
        invalid.body.contains(r#"id="exp_month-error""#),
        "{}",
        invalid.body
    );
    let mut bad_email = checkout_fields(&invalid, &csrf, CARD_OK);
    set(&mut bad_email, "email", "not-an-email");
    let invalid = shopper.post_form("/checkout", &borrowed(&bad_email)).await;
    assert_page(&invalid, 422);
    assert!(
        invalid.body.contains(r#"aria-describedby="email-error""#),
        "{}",
        invalid.body
    );

    // An approving card: one order, even when the form is sent twice.
    let form = shopper.get("/checkout").await;
    let fields = checkout_fields(&form, &csrf, CARD_OK);
    let placed = shopper.post_form("/checkout", &borrowed(&fields)).await;
    assert_eq!(placed.status, 303, "{}", placed.body);
    let location = placed.location().to_owned();
    assert!(location.starts_with("/orders/") && location.ends_with("?placed=1"));
    // The session has a new cart at once, whenever the paid one is cleared.
    let cart = shopper.get("/cart").await;
    assert_page(&cart, 200);
    assert!(cart.body.contains("Your cart is empty."), "{}", cart.body);
    let again = shopper.post_form("/checkout", &borrowed(&fields)).await;
    // The repeat buys nothing more; its key names the order placed, which it is shown.
    assert_eq!(again.status, 303);
    assert_eq!(again.location(), location);
    let confirmation = shopper.get(&location).await;
    assert_page(&confirmation, 200);
    assert!(
        confirmation
            .body
            .contains("Thank you, your order is confirmed")
    );
    let order_id = location
        .trim_start_matches("/orders/")
        .trim_end_matches("?placed=1")
        .to_owned();
    // Sold by the inventory's consumer of `order.confirmed`.
    platform.stock_settles(&product.sku, (18, 0, 2)).await;
    let history = shopper.get("/orders").await;
    assert_page(&history, 200);
    assert_eq!(history.body.matches("/orders/").count(), 1, "one order");
    assert!(history.body.contains(&format!("/orders/{order_id}")));

    // Another visitor cannot see it.
    let mut stranger = Shopper::new(shopper.base.clone());
    let page = stranger.get(&format!("/orders/{order_id}")).await;
    assert_page(&page, 404);

    // Cancel: stock returns.
    let csrf = confirmation.csrf();
    let cancelled = shopper
        .post_form(&format!("/orders/{order_id}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        cancelled.location(),
        format!("/orders/{order_id}?notice=cancelled")
    );
    let page = shopper.get(cancelled.location()).await;
    assert!(page.body.contains("Your order was cancelled") && page.body.contains("Cancelled"));
    // Returned by its consumer of `order.cancelled`.
    platform.stock_settles(&product.sku, (20, 0, 0)).await;
    platform.platform.stop(true).await.expect("stop");
}

async fn assets_come_from_the_blob_store_with_etags_and_immutable_caching(backend: Backend) {
    let (platform, mut shopper) = shop_on(backend).await;
    let home = shopper.get("/").await;
    let stylesheet = home
        .body
        .split(r#"<link rel="stylesheet" href=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a stylesheet")
        .to_owned();
    assert!(stylesheet.starts_with("/assets/static/shop."));
    let css = shopper.get(&stylesheet).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert_eq!(
        css.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(css.header("set-cookie"), "", "assets carry no session");
    let etag = css.header("etag").to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    let revalidated = shopper
        .send(
            shopper
                .http
                .get(format!("{}{stylesheet}", shopper.base))
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!((revalidated.status, revalidated.body.as_str()), (304, ""));
    assert_eq!(revalidated.header("etag"), etag);
    let stale = shopper
        .send(
            shopper
                .http
                .get(format!("{}{stylesheet}", shopper.base))
                .header("if-none-match", "\"other\""),
        )
        .await;
    assert_eq!(stale.status, 200);
    let head = shopper
        .send(shopper.http.head(format!("{}{stylesheet}", shopper.base)))
        .await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    let product = &platform.products().await[0];
    let image = format!("/assets/{}", product.images[0]);
    assert!(home.body.contains("/assets/images/"));
    let svg = shopper.get(&image).await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), "image/svg+xml");
    assert!(svg.header("content-security-policy").contains("sandbox"));
    assert_eq!(
        svg.header("cache-control"),
        "public, max-age=31536000, immutable"
    );

    for path in [
        "/assets/images/ffffffffffffffffffffffffffffffff.svg",
        "/assets/images/../static/x.css",
        "/assets/images/%2E%2E/%2E%2E/etc/passwd",
        "/assets/private/key.pem",
        "/assets/images//x.svg",
    ] {
        let page = shopper.get(path).await;
        assert_eq!(page.status, 404, "{path}");
    }
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_covers_the_journey_with_problem_codes() {
    let (platform, mut client) = shop().await;
    let products = platform.products().await;
    let (item, scarce) = (&products[5], &products[6]);
    platform.set_stock(&item.sku, 10).await;
    platform.set_stock(&scarce.sku, 1).await;

    let categories = client.api(Method::GET, "/categories", None, &[]).await;
    assert_eq!(categories.status, 200);
    assert_eq!(categories.json().as_array().map(Vec::len), Some(6));
    let search = client
        .api(Method::GET, "/products?q=skillet&limit=5", None, &[])
        .await;
    assert_eq!(search.status, 200);
    assert!(!search.json()["items"].as_array().expect("items").is_empty());
    let bad = client
        .api(Method::GET, "/products?limit=1000", None, &[])
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let view = client
        .api(Method::GET, &format!("/products/{}", scarce.id), None, &[])
        .await;
    assert_eq!(view.status, 200);
    assert_eq!(
        view.json()["stock"],
        json!({"state": "low_stock", "available": 1, "purchasable": 1})
    );

    let empty = client.api(Method::GET, "/cart", None, &[]).await;
    assert_eq!(empty.json(), json!({"lines": [], "item_count": 0}));
    let line = json!({"product_id": item.id, "quantity": 2});
    let added = client
        .api(Method::POST, "/cart/lines", Some(&line), &[])
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.json()["item_count"], 2);
    let short = client
        .api(
            Method::POST,
            "/cart/lines",
            Some(&json!({"product_id": scarce.id, "quantity": 2})),
            &[],
        )
        .await;
    assert_eq!(
        (short.status, short.json()["code"].as_str()),
        (409, Some("out_of_stock"))
    );
    let unknown = client
        .api(
            Method::POST,
            "/cart/lines",
            Some(&json!({"product_id": "0000000000000000000000000a", "quantity": 1})),
            &[],
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (422, Some("unknown_product"))
    );
    let malformed = client
        .post_raw(
            "/api/v1/cart/lines",
            "application/json",
            "{\"product_id\": ",
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.json()["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let cross = client
        .api(
            Method::POST,
            "/cart/lines",
            Some(&line),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(
        (cross.status, cross.json()["code"].as_str()),
        (403, Some("cross_site_request"))
    );
    let changed = client
        .api(
            Method::PUT,
            &format!("/cart/lines/{}", item.id),
            Some(&json!({"quantity": 3})),
            &[],
        )
        .await;
    assert_eq!(changed.json()["item_count"], 3);

    let checkout = json!({
        "customer": {"name": "Grace Hopper", "email": "grace@example.com",
            "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    });
    let no_key = client
        .api(Method::POST, "/checkout", Some(&checkout), &[])
        .await;
    assert_eq!(
        no_key.json()["code"].as_str(),
        Some("idempotency_key_missing"),
        "{}",
        no_key.body
    );
    let paid_cart = client.api(Method::GET, "/cart", None, &[]).await.json()["id"]
        .as_str()
        .expect("cart id")
        .to_owned();
    let key = emporium_tests::key();
    let placed = api_checkout(&mut client, &checkout, &key).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let order: Value = placed.json();
    assert_eq!(order["status"], "confirmed");
    let id = order["id"].as_str().expect("id");
    // The session has a new, empty cart from the answer on: nothing waits for the cart
    // service's consumer of `order.confirmed`, and another checkout finds nothing to buy.
    let cart = client.api(Method::GET, "/cart", None, &[]).await.json();
    assert_eq!(cart["item_count"], 0, "{cart}");
    assert_ne!(cart["id"].as_str(), Some(paid_cart.as_str()), "{cart}");
    let again = api_checkout(&mut client, &checkout, &emporium_tests::key()).await;
    assert_eq!(
        (again.status, again.json()["code"].as_str()),
        (409, Some("cart_empty")),
        "{}",
        again.body
    );
    // The shopper buys on at once, and a repeat of the paid checkout (a retry after a lost
    // answer) gets its order, and leaves the new cart as it is.
    let added = client
        .api(Method::POST, "/cart/lines", Some(&line), &[])
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let repeat = api_checkout(&mut client, &checkout, &key).await;
    assert_eq!(
        (repeat.status, repeat.json()["id"].as_str()),
        (200, Some(id)),
        "{}",
        repeat.body
    );
    let cart = client.api(Method::GET, "/cart", None, &[]).await.json();
    assert_eq!(cart["item_count"], 2, "{cart}");
    // The paid cart is cleared by the cart's consumer, once.
    platform
        .cart_settles(&paid_cart, |cart| {
            cart.lines.is_empty() && cart.checkout_order_id.is_none()
        })
        .await;
    let orders = client.api(Method::GET, "/orders", None, &[]).await;
    assert_eq!(orders.json()["items"][0]["id"], id);
    let fetched = client
        .api(Method::GET, &format!("/orders/{id}"), None, &[])
        .await;
    assert_eq!(fetched.json()["totals"], order["totals"]);
    let mut stranger = Shopper::new(client.base.clone());
    let hidden = stranger
        .api(Method::GET, &format!("/orders/{id}"), None, &[])
        .await;
    assert_eq!(hidden.status, 404);

    // Declined through the API: 402 with the reason; the cart stays.
    let mut declined_body = checkout.clone();
    declined_body["payment"]["number"] = json!(CARD_DECLINED);
    let declined = api_checkout(&mut client, &declined_body, &emporium_tests::key()).await;
    assert_eq!(declined.status, 402, "{}", declined.body);
    assert_eq!(declined.json()["decline_code"], "card_declined");
    let cart = client.api(Method::GET, "/cart", None, &[]).await;
    assert_eq!(cart.json()["item_count"], 2);
    let removed = client
        .api(
            Method::DELETE,
            &format!("/cart/lines/{}", item.id),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.json()["item_count"], 0);

    let openapi = client.api(Method::GET, "/openapi.json", None, &[]).await;
    let paths = openapi.json()["paths"].as_object().expect("paths").clone();
    for path in [
        "/api/v1/categories",
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/cart",
        "/api/v1/cart/lines",
        "/api/v1/cart/lines/{product_id}",
        "/api/v1/checkout",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
    ] {
        assert!(paths.contains_key(path), "OpenAPI lacks {path}");
    }
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_gets_a_clear_message_not_a_hang() {
    // Without the near cache, which would otherwise keep showing what it read (see
    // the_near_cache_keeps_pages_briefly_and_forgets_what_this_shop_changed).
    let (mut platform, mut shopper) = shop_with(NO_NEAR_CACHE).await;
    let product = platform.products().await[0].clone();
    platform.set_stock(&product.sku, 10).await;
    add(&mut shopper, &product.id, "1").await;
    let form = shopper.get("/checkout").await;
    let csrf = form.csrf();

    // Inventory down: pages still show products, availability unknown.
    platform
        .platform
        .stop_service(Service::Inventory)
        .await
        .expect("stop");
    let page = shopper.get(&format!("/p/{}", product.id)).await;
    assert_page(&page, 200);
    assert!(page.body.contains("Availability unknown"));

    // Order service down: checkout says so, with Retry-After, and keeps the cart.
    platform
        .platform
        .stop_service(Service::Order)
        .await
        .expect("stop");
    let fields = checkout_fields(&form, &csrf, CARD_OK);
    let started = Instant::now();
    let page = shopper.post_form("/checkout", &borrowed(&fields)).await;
    assert_page(&page, 503);
    assert!(
        page.body.contains("Checkout is temporarily unavailable"),
        "{}",
        page.body
    );
    assert_eq!(page.header("retry-after"), "5");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(shopper.get("/cart").await.body.contains(&product.name));
    let history = shopper.get("/orders").await;
    assert_page(&history, 503);
    assert!(history.body.contains("Checkout is temporarily unavailable"));

    // Catalog down: the home page says the catalog is unavailable; the API gives a problem.
    platform
        .platform
        .stop_service(Service::Catalog)
        .await
        .expect("stop");
    let home = shopper.get("/").await;
    assert_page(&home, 503);
    assert!(home.body.contains("The catalog is temporarily unavailable"));
    assert_eq!(home.header("retry-after"), "5");
    let api = shopper.api(Method::GET, "/products", None, &[]).await;
    assert_eq!(
        (api.status, api.json()["code"].as_str()),
        (503, Some("service_unavailable"))
    );
    assert!(
        !api.body.contains("127.0.0.1"),
        "no internal detail: {}",
        api.body
    );
    platform.platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_times_out_into_a_clear_message() {
    // An order service that accepts connections and never answers.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = blackhole.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = blackhole.accept().await {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let order_url = format!("http://{address}");
    let settings = emporium_tests::settings(
        dir.path(),
        &["--order-url", &order_url, "--http-timeout-ms", "300"],
    );
    let plan = Plan {
        services: vec![
            Service::Catalog,
            Service::Inventory,
            Service::Cart,
            Service::Storefront,
        ],
        seed_when_empty: true,
        ..Plan::default()
    };
    let platform = Platform::start(&settings, &plan).await.expect("start");
    let mut shopper = Shopper::new(platform.url(Service::Storefront).expect("storefront"));
    let products: Value = reqwest::get(format!(
        "{}/v1/products?limit=1",
        platform.url(Service::Catalog).expect("catalog")
    ))
    .await
    .expect("products")
    .json()
    .await
    .expect("json");
    let product_id = products["items"][0]["id"].as_str().expect("id").to_owned();
    add(&mut shopper, &product_id, "1").await;
    let form = shopper.get("/checkout").await;
    let csrf = form.csrf();
    let fields = checkout_fields(&form, &csrf, CARD_OK);
    let started = Instant::now();
    let page = shopper.post_form("/checkout", &borrowed(&fields)).await;
    let waited = started.elapsed();
    assert_page(&page, 503);
    assert!(page.body.contains("Checkout is temporarily unavailable"));
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    held.abort();
    platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storefront_started_before_its_bucket_exists_waits_for_it() {
    // As on Kubernetes, where pods may start before the setup job has created the bucket.
    emporium_adapters::testing::aws_stand_in();
    let moto = emporium_adapters::testing::MotoServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = format!(
        "s3://{}?endpoint={}",
        emporium_adapters::testing::unique("late"),
        moto.endpoint
    );
    let settings = emporium_tests::settings(dir.path(), &["--blobs", &blobs]);
    let plan = Plan {
        services: vec![Service::Storefront],
        seed_when_empty: false,
        ..Plan::default()
    };
    let platform = Platform::start(&settings, &plan)
        .await
        .expect("starts anyway");
    let base = platform.url(Service::Storefront).expect("storefront");
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16()
    };
    assert_eq!(
        ready(http.clone(), base.clone()).await,
        503,
        "not ready without a bucket"
    );
    emporium_adapters::connect::init_blobs(&blobs)
        .await
        .expect("bucket");
    let stylesheet = format!("{base}{}", emporium_storefront::assets::stylesheet_url());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http.get(&stylesheet).send().await.expect("get").status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the stylesheet never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready(http.clone(), base.clone()).await, 200);
    platform.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_keeps_pages_briefly_and_forgets_what_this_shop_changed() {
    // Long enough that nothing expires during the test: what changes, this shop changed.
    let (mut platform, mut shopper) =
        shop_with(&["--product-cache-ms", "60000", "--stock-cache-ms", "60000"]).await;
    let product = platform.products().await[2].clone();
    let page_of = format!("/p/{}", product.id);
    platform.set_stock(&product.sku, 3).await;
    assert!(shopper.get(&page_of).await.body.contains("Only 3 left"));

    // A change behind the storefront's back shows only when the entry expires.
    platform.set_stock(&product.sku, 2).await;
    assert!(shopper.get(&page_of).await.body.contains("Only 3 left"));

    // The cart refuses 3 and names the shortage: the page shown with the message is current.
    let refused = add(&mut shopper, &product.id, "3").await;
    assert_page(&refused, 409);
    assert!(refused.body.contains("Only 2 left"), "{}", refused.body);

    // A checkout through this shop forgets the stock it sold.
    let added = add(&mut shopper, &product.id, "1").await;
    assert_eq!(added.status, 303);
    let form = shopper.get("/checkout").await;
    let csrf = form.csrf();
    let placed = shopper
        .post_form(
            "/checkout",
            &borrowed(&checkout_fields(&form, &csrf, CARD_OK)),
        )
        .await;
    assert_eq!(placed.status, 303, "{}", placed.body);
    assert!(shopper.get(&page_of).await.body.contains("Only 1 left"));

    // With the inventory and then the catalog stopped, the page is still served as it was.
    for service in [Service::Inventory, Service::Catalog] {
        platform.platform.stop_service(service).await.expect("stop");
        let page = shopper.get(&page_of).await;
        assert_page(&page, 200);
        assert!(page.body.contains(&product.name) && page.body.contains("Only 1 left"));
    }
    platform.platform.stop(true).await.expect("stop");

    // A short-lived entry: the change behind the back shows once it expires.
    let (platform, mut shopper) = shop_with(&["--stock-cache-ms", "200"]).await;
    let product = platform.products().await[2].clone();
    let page_of = format!("/p/{}", product.id);
    platform.set_stock(&product.sku, 3).await;
    assert!(shopper.get(&page_of).await.body.contains("Only 3 left"));
    platform.set_stock(&product.sku, 4).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shopper.get(&page_of).await.body.contains("Only 4 left") {
        assert!(Instant::now() < deadline, "the stock level never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    platform.platform.stop(true).await.expect("stop");
}

/// Each client gets its burst, then 429 with `Retry-After` while others carry on; behind a
/// trusted balancer the client is the last `X-Forwarded-For` address, so one a client prepends
/// changes nothing; the API's answers carry headers that forbid rendering and framing them.
#[tokio::test]
async fn clients_over_their_rate_get_429_with_retry_after_while_others_carry_on() {
    let (shop, _) = shop_with(&[
        "--rate-limit",
        "1",
        "--rate-burst",
        "3",
        "--trust-forwarded",
    ])
    .await;
    let base = shop.url(Service::Storefront);
    let http = reqwest::Client::new();
    let from = |client: &'static str, path: &'static str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            http.get(url)
                .header("x-forwarded-for", client)
                .send()
                .await
                .expect("send")
        }
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.9", "/api/v1/products").await.status(), 200);
    }
    let limited = from("203.0.113.9", "/api/v1/products").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let problem: Value = limited.json().await.expect("problem");
    assert_eq!(problem["code"], "rate_limited");
    // Pages count too, and a forged first address does not help.
    assert_eq!(
        from("10.0.0.1, 203.0.113.9", "/").await.status(),
        429,
        "the balancer's entry is the last one"
    );
    // Another client is served; and after the wait, so is the first.
    assert_eq!(from("198.51.100.2", "/api/v1/products").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = from("203.0.113.9", "/api/v1/products").await;
    assert_eq!(again.status(), 200);
    for header in ["content-security-policy", "x-content-type-options"] {
        assert!(again.headers().contains_key(header), "{header}");
    }
    assert_eq!(
        again.headers()["x-content-type-options"].to_str().ok(),
        Some("nosniff")
    );
}

/// Without a trusted balancer the client is the connection's address, and one on this machine
/// (a load test beside the shop) is never limited.
#[tokio::test]
async fn clients_on_this_machine_are_not_limited() {
    let (shop, _) = shop_with(&["--rate-limit", "1", "--rate-burst", "1"]).await;
    let base = shop.url(Service::Storefront);
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let response = http
            .get(format!("{base}/api/v1/products"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            200,
            "X-Forwarded-For is not trusted here"
        );
    }
}

/// The ways a client could choose or dodge its key behind trusted proxies: a line of its own
/// before the proxy's, loopback named in it, a new IPv6 address per request, an address with a
/// port; and with networks, a peer that is no proxy.
#[tokio::test]
async fn forwarded_addresses_cannot_be_forged_or_dodged_past_the_limit() {
    let (shop, _) = shop_with(&[
        "--rate-limit",
        "1",
        "--rate-burst",
        "2",
        "--trusted-proxies",
        "1",
    ])
    .await;
    let base = shop.url(Service::Storefront);
    let http = reqwest::Client::new();
    let statuses = |lines: Vec<String>| {
        let (http, url) = (http.clone(), format!("{base}/api/v1/products"));
        async move {
            let mut request = http.get(url);
            for line in &lines {
                // Each call adds a line: the client's own, then the proxy's.
                request = request.header("x-forwarded-for", line);
            }
            request.send().await.expect("send").status().as_u16()
        }
    };
    let burst_then = |make: fn(usize) -> Vec<String>| async move {
        let mut seen = Vec::new();
        for n in 0..3 {
            seen.push(statuses(make(n)).await);
        }
        seen
    };
    assert_eq!(
        burst_then(|_| vec!["127.0.0.1".into(), "203.0.113.9".into()]).await,
        [200, 200, 429],
        "the client's own line, loopback and all, is not the key"
    );
    assert_eq!(
        burst_then(|n| vec![format!("2001:db8:5:6::{}", n + 1)]).await,
        [200, 200, 429],
        "a /64 is one client"
    );
    assert_eq!(
        burst_then(|n| vec![format!("198.51.100.4:{}", 5000 + n)]).await,
        [200, 200, 429],
        "an address with a port is its address"
    );
    assert_eq!(
        burst_then(|_| vec!["127.0.0.1".into(), "unknown".into()]).await,
        [200, 200, 429],
        "junk where the proxy writes is counted, not exempt"
    );

    // With networks: the loopback peer is a trusted proxy here, and the right-most address
    // outside the networks is the client, whatever the client put before it.
    let (networks, _) = shop_with(&[
        "--rate-limit",
        "1",
        "--rate-burst",
        "2",
        "--trusted-proxies",
        "127.0.0.0/8, 10.0.0.0/8",
    ])
    .await;
    let url = format!("{}/api/v1/products", networks.url(Service::Storefront));
    let mut seen = Vec::new();
    for forged in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
        let response = http
            .get(&url)
            .header(
                "x-forwarded-for",
                format!("{forged}, 203.0.113.77, 10.2.3.4"),
            )
            .send()
            .await
            .expect("send");
        seen.push(response.status().as_u16());
    }
    assert_eq!(seen, [200, 200, 429]);
}

/// A session lasts its lifetime from its last use: one in use is issued again and carries on,
/// and a cookie left unused for longer (a copy taken earlier, say) opens nothing it held.
#[tokio::test]
async fn a_session_unused_for_its_lifetime_starts_afresh_and_one_in_use_rolls_on() {
    let (platform, mut shopper) = shop_with(&["--session-lifetime-secs", "3"]).await;
    let item = &platform.products().await[5];
    platform.set_stock(&item.sku, 10).await;
    let line = json!({"product_id": item.id, "quantity": 1});
    assert_eq!(
        shopper
            .api(Method::POST, "/cart/lines", Some(&line), &[])
            .await
            .status,
        200
    );
    let checkout = json!({
        "customer": {"name": "Grace Hopper", "email": "grace@example.com",
            "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    });
    let key = emporium_tests::key();
    let placed = shopper
        .api(
            Method::POST,
            "/checkout",
            Some(&checkout),
            &[("idempotency-key", &key)],
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    assert_eq!(
        shopper
            .api(Method::POST, "/cart/lines", Some(&line), &[])
            .await
            .status,
        200
    );
    let copied = shopper.cookie.clone().expect("a session cookie");
    let history = |page: &Page| page.json()["items"].as_array().map_or(0, Vec::len);

    // In use before the lifetime is up: the same session, issued again.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let seen = shopper.api(Method::GET, "/orders", None, &[]).await;
    assert_eq!(history(&seen), 1);
    assert!(
        seen.header("set-cookie").starts_with("emporium_session="),
        "a session in use is issued again"
    );
    assert_ne!(shopper.cookie.as_deref(), Some(copied.as_str()));

    // The copy, now older than the lifetime (issue times count whole seconds), is refused: a
    // fresh session, nothing of the old.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut thief = Shopper::new(platform.url(Service::Storefront));
    thief.cookie = Some(copied);
    let stolen = thief.api(Method::GET, "/orders", None, &[]).await;
    assert_eq!(stolen.status, 200);
    assert_eq!(history(&stolen), 0, "{}", stolen.body);
    let cart = thief.api(Method::GET, "/cart", None, &[]).await;
    assert_eq!(cart.json()["item_count"], 0);
    // The shopper's rolled cookie is still within its lifetime.
    let seen = shopper.api(Method::GET, "/orders", None, &[]).await;
    assert_eq!(history(&seen), 1);
    assert_eq!(
        shopper.api(Method::GET, "/cart", None, &[]).await.json()["item_count"],
        1
    );
}

/// A search longer than the catalog takes (nine words, a long word, a control character) shows
/// results for what fits, not an error page.
#[tokio::test]
async fn a_long_search_shows_results_for_its_first_words() {
    let (_platform, mut shopper) = shop_with(&[]).await;
    let nine = shopper
        .get("/search?q=cast+iron+skillet+red+blue+green+big+small+extra")
        .await;
    assert_page(&nine, 200);
    assert!(
        nine.body.contains("Only the first 8 words"),
        "{}",
        nine.body
    );
    for q in ["%01skillet", &"x".repeat(300), "tea%0Acup"] {
        let page = shopper.get(&format!("/search?q={q}")).await;
        assert_page(&page, 200);
    }
}

/// A session's first adds arriving at once all land in its one cart: every 200 is in the cart
/// the session shows afterwards.
#[tokio::test]
async fn a_sessions_first_adds_at_once_all_land_in_one_cart() {
    let (platform, mut shopper) = shop_with(&[]).await;
    let products = platform.products().await;
    for product in &products[..5] {
        platform.set_stock(&product.sku, 100).await;
    }
    // A session, with no cart made yet.
    let empty = shopper.api(Method::GET, "/cart", None, &[]).await;
    assert_eq!(empty.json()["item_count"], 0);
    let cookie = shopper.cookie.clone().expect("a session");
    let url = format!("{}/api/v1/cart/lines", platform.url(Service::Storefront));
    let http = reqwest::Client::new();
    let adds = futures::future::join_all((0..20).map(|n| {
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        let product = products[n % 5].id.clone();
        async move {
            let response = http
                .post(url)
                .header("cookie", cookie)
                .json(&json!({"product_id": product, "quantity": 1}))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (status, body["id"].as_str().map(str::to_owned))
        }
    }))
    .await;
    assert!(adds.iter().all(|(status, _)| *status == 200), "{adds:?}");
    let carts: std::collections::BTreeSet<_> = adds.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(carts.len(), 1, "one cart: {carts:?}");
    let cart = shopper.api(Method::GET, "/cart", None, &[]).await;
    assert_eq!(cart.json()["item_count"], 20, "{}", cart.body);
}

/// A checkout that failed for a reason that may pass, repeated under its key after another
/// checkout paid for the cart: the repeat gets the first try's answer and buys nothing, though
/// the paid cart holds something again (a tab with an older cookie adds to it once cleared).
#[tokio::test]
async fn a_failed_checkout_repeated_after_another_paid_for_the_cart_buys_nothing() {
    let (platform, mut client) = shop().await;
    let products = platform.products().await;
    let (bought, later) = (&products[5], &products[7]);
    platform.set_stock(&bought.sku, 10).await;
    platform.set_stock(&later.sku, 10).await;
    let added = client
        .api(
            Method::POST,
            "/cart/lines",
            Some(&json!({"product_id": bought.id, "quantity": 1})),
            &[],
        )
        .await;
    let paid_cart = added.json()["id"].as_str().expect("cart id").to_owned();
    let checkout = json!({
        "customer": {"name": "Grace Hopper", "email": "grace@example.com",
            "address": {"line1": "1 Harbor Way", "city": "Arlington", "postal_code": "22201", "country": "US"}},
        "payment": {"number": CARD_OK, "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
    });
    let (first, second) = (emporium_tests::key(), emporium_tests::key());

    let cut = platform
        .switch_faults(Service::Order, Some(json!({"outage": ["inventory"]})))
        .await;
    assert!(cut.status().is_success());
    let failed = api_checkout(&mut client, &checkout, &first).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    platform.switch_faults(Service::Order, None).await;
    // Once the order service's breaker lets calls to the inventory through again.
    let mut paid = api_checkout(&mut client, &checkout, &second).await;
    for _ in 0..100 {
        if paid.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        paid = api_checkout(&mut client, &checkout, &second).await;
    }
    assert_eq!(paid.status, 201, "{}", paid.body);
    platform
        .cart_settles(&paid_cart, |cart| {
            cart.lines.is_empty() && cart.checkout_order_id.is_none()
        })
        .await;
    platform.add_to_cart(&paid_cart, &later.id, 1).await;

    let repeat = api_checkout(&mut client, &checkout, &first).await;
    assert_eq!(
        repeat.status, 503,
        "the first try's answer: {}",
        repeat.body
    );
    let orders = client.api(Method::GET, "/orders", None, &[]).await.json();
    let items = orders["items"].as_array().expect("orders");
    assert_eq!(items.len(), 1, "one confirmed order: {orders}");
    assert_eq!(items[0]["id"], paid.json()["id"]);
    let cart = platform.cart(&paid_cart).await;
    assert_eq!(
        (cart.lines.len(), cart.checkout_order_id.as_deref()),
        (1, None),
        "{cart:?}"
    );
}

/// `POST /api/v1/checkout` of `body` under `key`.
async fn api_checkout(client: &mut Shopper, body: &Value, key: &str) -> Page {
    client
        .api(
            Method::POST,
            "/checkout",
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
}
