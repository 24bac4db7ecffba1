//! The storefront in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! through the buying journey a shopper takes, with a screenshot of every step under
//! `target/tmp/browser/`. The shop serves no JavaScript at all (its pages forbid scripts by
//! Content-Security-Policy), so this journey is the journey with JavaScript off.
//!
//! Needs `chromedriver` and Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test.sh` installs); `EMPORIUM_TEST_CHROMEDRIVER` and `EMPORIUM_TEST_CHROMIUM` point
//! at other builds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emporium::run::Service;
use emporium_tests::{Backend, TestPlatform};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// A chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let binary = program("EMPORIUM_TEST_CHROMEDRIVER", "chromedriver");
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {binary} ({e}): install chromium and chromium-driver (scripts/test.sh does)")
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not start listening");
}

/// The browser session, the shop's URL and where screenshots go.
struct Browser {
    client: Client,
    shop: String,
    shots: PathBuf,
    step: usize,
}

impl Browser {
    async fn open(driver: &Driver, shop: String, run: &str) -> Self {
        let chromium = program("EMPORIUM_TEST_CHROMIUM", "/usr/bin/chromium");
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("browser")
            .join(run);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Self {
            client,
            shop,
            shots,
            step: 0,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.shop))
            .await
            .expect("navigate");
    }

    /// Saves a screenshot of the whole window as `NN-name.png`.
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&path, png).expect("write screenshot");
    }

    async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!("no {css} on {}: {error}", self.path().await),
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the browser is on a page whose path starts with `prefix`.
    async fn arrive(&self, prefix: &str) {
        for _ in 0..100 {
            if self.path().await.starts_with(prefix) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected to reach {prefix}, still at {}", self.path().await);
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Whether the page is wider than the window (content a phone would have to scroll
    /// sideways to see).
    async fn overflows(&self) -> bool {
        self.client
            .execute(
                "return document.documentElement.scrollWidth > window.innerWidth;",
                vec![],
            )
            .await
            .expect("measure")
            .as_bool()
            .unwrap_or(true)
    }

    /// What on the page a screen reader or keyboard user would miss: images without alt text,
    /// form controls without a label, a document without a language or a main landmark.
    async fn accessibility_problems(&self) -> Vec<String> {
        let found = self
            .client
            .execute(
                r#"
                const problems = [];
                if (!document.documentElement.lang) problems.push("no lang on <html>");
                if (!document.querySelector("main")) problems.push("no <main>");
                if (!document.querySelector("h1")) problems.push("no <h1>");
                for (const img of document.images) {
                    if (!img.hasAttribute("alt")) problems.push("image without alt: " + img.src);
                }
                for (const control of document.querySelectorAll("input, select, textarea")) {
                    if (control.type === "hidden") continue;
                    if (control.labels.length === 0 && !control.getAttribute("aria-label")) {
                        problems.push("control without label: " + (control.name || control.id));
                    }
                }
                for (const button of document.querySelectorAll("button, a")) {
                    if (button.closest("[aria-hidden=true]")) continue;
                    const pictured = [...button.querySelectorAll("img")].some((i) => i.alt.trim());
                    if (!button.textContent.trim() && !button.getAttribute("aria-label") && !pictured) {
                        problems.push("nameless " + button.tagName.toLowerCase() + " " + button.outerHTML.slice(0, 80));
                    }
                }
                return problems;
                "#,
                vec![],
            )
            .await
            .expect("inspect");
        serde_json::from_value(found).expect("a list")
    }

    /// Opens the first product on the current listing that is plainly in stock.
    async fn open_product_in_stock(&self) -> String {
        let cards = self
            .client
            .find_all(Locator::Css(".card"))
            .await
            .expect("cards");
        for card in cards {
            let stock = card
                .find(Locator::Css(".stock"))
                .await
                .expect("stock badge");
            if stock.text().await.expect("text") == "In stock" {
                let link = card.find(Locator::Css("a")).await.expect("link");
                let name = card
                    .find(Locator::Css(".card-title"))
                    .await
                    .expect("title")
                    .text()
                    .await
                    .expect("name");
                link.click().await.expect("open product");
                self.arrive("/p/").await;
                return name;
            }
        }
        panic!("no product in stock on {}", self.path().await);
    }

    async fn fill_checkout(&self, card: &str) {
        self.fill("#name", "Ada Lovelace").await;
        self.fill("#email", "ada@example.com").await;
        self.fill("#line1", "12 Analytical Row").await;
        self.fill("#city", "London").await;
        self.fill("#postal_code", "N1 9GU").await;
        self.find("#country")
            .await
            .select_by_value("GB")
            .await
            .expect("country");
        self.fill("#card_number", card).await;
        self.fill("#exp_month", "12").await;
        self.fill("#exp_year", "2031").await;
        self.fill("#cvc", "123").await;
    }
}

fn money(text: &str) -> i64 {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.parse().expect("a price")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_browses_buys_and_finds_the_order_and_a_declined_card_keeps_the_cart() {
    let platform = TestPlatform::start(Backend::Embedded).await;
    let driver = start_driver().await;
    let mut browser = Browser::open(&driver, platform.url(Service::Storefront), "journey").await;

    // Home → category.
    browser.goto("/").await;
    assert_eq!(browser.client.title().await.expect("title"), "Emporium");
    assert!(browser.text("h1").await.contains("Good things"));
    browser.shot("home").await;
    browser
        .client
        .find(Locator::Css(".categories a"))
        .await
        .expect("a category link")
        .click()
        .await
        .expect("open category");
    browser.arrive("/c/").await;
    let category = browser.text("h1").await;
    browser.shot("category").await;

    // Category → product → add two to the cart.
    let name = browser.open_product_in_stock().await;
    assert_eq!(browser.text("h1").await, name);
    assert!(browser.text(".breadcrumbs").await.contains(&category));
    let unit_price = money(&browser.text(".price-large").await);
    browser.fill("#quantity", "2").await;
    browser.shot("product").await;
    browser.click("form.add-to-cart button").await;
    browser.arrive("/cart").await;
    assert_eq!(browser.text(".notice").await, "Added to your cart.");
    assert!(browser.text(".cart-line").await.contains(&name));
    assert_eq!(money(&browser.text("#cart-subtotal").await), 2 * unit_price);
    assert_eq!(browser.text(".cart-link .badge").await, "2");
    browser.shot("cart-added").await;

    // Change the quantity to 3.
    browser
        .fill(".line-quantity input[name=quantity]", "3")
        .await;
    browser.click(".line-quantity button").await;
    browser.arrive("/cart?notice=updated").await;
    assert_eq!(money(&browser.text("#cart-subtotal").await), 3 * unit_price);
    let estimated_total = browser.text("#cart-total").await;
    browser.shot("cart-updated").await;

    // Checkout with an approving card → confirmation.
    browser.click(".summary a.button").await;
    browser.arrive("/checkout").await;
    assert!(
        browser
            .text(".test-cards")
            .await
            .contains("4242 4242 4242 4242")
    );
    browser.fill_checkout("4242 4242 4242 4242").await;
    browser.shot("checkout").await;
    browser.click("#place-order").await;
    browser.arrive("/orders/").await;
    assert_eq!(
        browser.text("h1").await,
        "Thank you, your order is confirmed"
    );
    let confirmation = browser.text(".confirmation").await;
    let reference = confirmation
        .split('#')
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .expect("an order reference")
        .to_owned();
    assert_eq!(browser.text("#order-status").await, "Confirmed");
    // The cart's estimate was the real total: same rules, same prices.
    assert_eq!(browser.text("#order-total").await, estimated_total);
    browser.shot("confirmation").await;
    // The session has a new, empty cart from the confirmation on.
    assert!(
        browser
            .client
            .find(Locator::Css(".cart-link .badge"))
            .await
            .is_err()
    );

    // Order history shows the order.
    browser
        .client
        .find(Locator::LinkText("Orders"))
        .await
        .expect("orders link")
        .click()
        .await
        .expect("open orders");
    browser.arrive("/orders").await;
    let history = browser.text("table.orders").await;
    assert!(history.contains(&format!("#{reference}")), "{history}");
    assert!(history.contains("Confirmed"));
    browser.shot("order-history").await;

    // A declined card: the reason is shown and the cart is kept.
    browser
        .goto(&format!("/c/{}", category.to_lowercase().replace(' ', "-")))
        .await;
    let second = browser.open_product_in_stock().await;
    browser.click("form.add-to-cart button").await;
    browser.arrive("/cart").await;
    browser.goto("/checkout").await;
    browser.fill_checkout("4000 0000 0000 0002").await;
    browser.click("#place-order").await;
    let notice = browser.text(".notice-error").await;
    assert!(notice.contains("declined"), "{notice}");
    assert!(notice.contains("card_declined"), "{notice}");
    assert_eq!(browser.path().await, "/checkout");
    // The other details are kept, the card number is not.
    assert_eq!(
        browser
            .find("#name")
            .await
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(
        browser
            .find("#card_number")
            .await
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("")
    );
    browser.shot("declined").await;
    browser.goto("/cart").await;
    assert!(browser.text(".cart-lines").await.contains(&second));
    browser.shot("cart-kept").await;

    // The same pages at phone width: nothing wider than the screen.
    browser
        .client
        .set_window_size(PHONE.0, PHONE.1)
        .await
        .expect("phone size");
    let order_url = format!("/orders/{}", history_link(&browser, &reference).await);
    for (name, path) in [
        ("phone-home", "/".to_owned()),
        (
            "phone-category",
            format!("/c/{}", category.to_lowercase().replace(' ', "-")),
        ),
        ("phone-cart", "/cart".to_owned()),
        ("phone-checkout", "/checkout".to_owned()),
        ("phone-order", order_url),
        ("phone-not-found", "/no/such/page".to_owned()),
    ] {
        browser.goto(&path).await;
        assert!(!browser.overflows().await, "{path} is wider than a phone");
        let problems = browser.accessibility_problems().await;
        assert!(problems.is_empty(), "{path}: {problems:?}");
        browser.shot(name).await;
    }
    browser.goto("/orders").await;
    browser
        .client
        .find(Locator::Css("table.orders a"))
        .await
        .expect("order link");
    assert!(!browser.overflows().await, "/orders is wider than a phone");
    browser.shot("phone-orders").await;
    browser.client.close().await.expect("close the browser");
    platform.platform.stop(true).await.expect("stop");
}

/// The id of the order whose reference is `reference`, from the history page.
async fn history_link(browser: &Browser, reference: &str) -> String {
    browser.goto("/orders").await;
    let link = browser
        .client
        .find(Locator::LinkText(&format!("#{reference}")))
        .await
        .expect("the order in the history");
    let href = link.attr("href").await.expect("href").expect("a link");
    href.trim_start_matches("/orders/").to_owned()
}
