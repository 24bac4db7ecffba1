//! The sessions a virtual shopper runs, over the storefront's public API and product pages,
//! keeping its own session cookie as a browser does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_api::ProblemCode;
use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::config::Weights;
use crate::stats::{CHECKOUT_PENDING, Kind, Outcome, Recorder};

/// The test cards the shop's simulated provider approves and declines.
const CARD_APPROVED: &str = "4242 4242 4242 4242";
const CARDS_DECLINED: &[&str] = &["4000 0000 0000 0002", "4000 0000 0000 9995"];

/// Words shoppers search for; some match nothing, as real searches do.
const SEARCH_WORDS: &[&str] = &[
    "mug", "lamp", "wool", "speaker", "tent", "book", "steel", "linen", "desk", "bottle",
    "organic", "travel", "zebra",
];

/// What the shop sells, read once before the run.
#[derive(Debug, Default)]
pub struct Catalog {
    pub categories: Vec<String>,
    pub products: Vec<String>,
}

impl Catalog {
    /// Reads the categories and every product id through the public API.
    pub async fn load(http: &reqwest::Client, target: &str) -> anyhow::Result<Self> {
        let categories: Value = http
            .get(format!("{target}/api/v1/categories"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let categories: Vec<String> = categories
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["slug"].as_str().map(str::to_owned))
            .collect();
        let mut products = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = http
                .get(format!("{target}/api/v1/products"))
                .query(&[("limit", "100")]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            products.extend(
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned)),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        if products.is_empty() || categories.is_empty() {
            anyhow::bail!("the shop at {target} has no products to load it with; seed it first");
        }
        Ok(Self {
            categories,
            products,
        })
    }
}

/// The session kinds of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    Browse,
    Search,
    View,
    Buy,
}

impl Session {
    pub fn pick(weights: &Weights, rng: &mut impl Rng) -> Self {
        let mut roll = rng.random_range(0..weights.total());
        for (session, weight) in [
            (Self::Browse, weights.browse),
            (Self::Search, weights.search),
            (Self::View, weights.view),
            (Self::Buy, weights.buy),
        ] {
            if roll < weight {
                return session;
            }
            roll -= weight;
        }
        Self::Buy
    }
}

/// One virtual shopper: its own session cookie, over a connection pool all shoppers share (a
/// client per shopper would cost the generator more than the requests it times).
pub struct Shopper {
    http: reqwest::Client,
    /// `emporium_session=...`, once the shop set one.
    cookie: std::sync::Mutex<Option<String>>,
    target: String,
    catalog: Arc<Catalog>,
    recorder: Arc<Recorder>,
    decline_share: f64,
}

impl Shopper {
    pub fn new(
        http: reqwest::Client,
        target: &str,
        catalog: Arc<Catalog>,
        recorder: Arc<Recorder>,
        decline_share: f64,
    ) -> Self {
        Self {
            http,
            cookie: std::sync::Mutex::new(None),
            target: target.trim_end_matches('/').to_owned(),
            catalog,
            recorder,
            decline_share,
        }
    }

    /// The client every shopper shares.
    pub fn client(timeout: Duration, connections: usize) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(connections)
            .build()?)
    }

    fn session_cookie(&self) -> Option<String> {
        self.cookie
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Keeps the session cookie the shop sets, as a browser would.
    fn remember(&self, headers: &reqwest::header::HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            if let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next())
                && pair.starts_with("emporium_session=")
            {
                *self
                    .cookie
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pair.to_owned());
            }
        }
    }

    /// Runs one session. `intended` is when it was meant to start: the first request's latency
    /// counts from there (the open model's arrivals keep their schedule).
    pub async fn session(&self, session: Session, intended: Instant) {
        let (category, product, word, decline) = {
            let mut rng = rand::rng();
            (
                self.catalog
                    .categories
                    .choose(&mut rng)
                    .cloned()
                    .unwrap_or_default(),
                self.catalog
                    .products
                    .choose(&mut rng)
                    .cloned()
                    .unwrap_or_default(),
                SEARCH_WORDS.choose(&mut rng).copied().unwrap_or("mug"),
                rng.random_bool(self.decline_share),
            )
        };
        match session {
            Session::Browse => {
                if self
                    .get(Kind::Categories, "/api/v1/categories", intended)
                    .await
                {
                    self.get(
                        Kind::Browse,
                        &format!("/api/v1/products?category={category}&limit=24"),
                        Instant::now(),
                    )
                    .await;
                }
            }
            Session::Search => {
                self.get(
                    Kind::Search,
                    &format!("/api/v1/products?q={word}&limit=24"),
                    intended,
                )
                .await;
            }
            Session::View => {
                if self
                    .get(
                        Kind::Product,
                        &format!("/api/v1/products/{product}"),
                        intended,
                    )
                    .await
                {
                    self.get(Kind::Page, &format!("/p/{product}"), Instant::now())
                        .await;
                }
            }
            Session::Buy => self.buy(&product, decline, intended).await,
        }
    }

    async fn buy(&self, product: &str, decline: bool, intended: Instant) {
        if !self
            .get(
                Kind::Product,
                &format!("/api/v1/products/{product}"),
                intended,
            )
            .await
        {
            return;
        }
        let line = json!({"product_id": product, "quantity": 1});
        let added = self
            .send(
                Kind::AddToCart,
                self.http.post(self.url("/api/v1/cart/lines")).json(&line),
                Instant::now(),
            )
            .await;
        if !matches!(added, Some((StatusCode::OK, _))) {
            return;
        }
        if !self.get(Kind::Cart, "/api/v1/cart", Instant::now()).await {
            return;
        }
        let card = if decline {
            let mut rng = rand::rng();
            CARDS_DECLINED
                .choose(&mut rng)
                .copied()
                .unwrap_or(CARDS_DECLINED[0])
        } else {
            CARD_APPROVED
        };
        let body = json!({
            "customer": {
                "name": "Load Tester",
                "email": "load@example.com",
                "address": {"line1": "1 Test Street", "city": "Springfield",
                            "postal_code": "12345", "country": "US"}
            },
            "payment": {"number": card, "expiry_month": 12, "expiry_year": 2099, "cvc": "123"}
        });
        let key = format!("load-{:032x}", rand::random::<u128>());
        let placed = self
            .send(
                Kind::Checkout,
                self.http
                    .post(self.url("/api/v1/checkout"))
                    .header("idempotency-key", key)
                    .json(&body),
                Instant::now(),
            )
            .await;
        if let Some((status, order)) = &placed
            && (*status == StatusCode::CREATED || *status == StatusCode::OK)
            && order["status"] == "confirmed"
        {
            let lines: Vec<(String, i64)> = order["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| Some((l["sku"].as_str()?.to_owned(), l["quantity"].as_i64()?)))
                .collect();
            self.recorder.order_placed(&lines);
        }
        // A declined or out-of-stock checkout leaves the line in the cart; the next buy adds
        // to it, as a shopper retrying would. Empty it so carts stay small.
        if !matches!(placed, Some((StatusCode::CREATED | StatusCode::OK, _))) {
            self.send(
                Kind::AddToCart,
                self.http
                    .delete(self.url(&format!("/api/v1/cart/lines/{product}"))),
                Instant::now(),
            )
            .await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target)
    }

    async fn get(&self, kind: Kind, path: &str, intended: Instant) -> bool {
        matches!(
            self.send(kind, self.http.get(self.url(path)), intended).await,
            Some((status, _)) if status.is_success()
        )
    }

    /// Sends a request and records it; the status and JSON body (if any) when it was answered.
    async fn send(
        &self,
        kind: Kind,
        request: reqwest::RequestBuilder,
        intended: Instant,
    ) -> Option<(StatusCode, Value)> {
        let request = match self.session_cookie() {
            Some(cookie) => request.header(reqwest::header::COOKIE, cookie),
            None => request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let what = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                self.recorder
                    .record(kind, intended, &Outcome::Error(what.into()));
                return None;
            }
        };
        let status = response.status();
        self.remember(response.headers());
        let body = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(error) => {
                let what = if error.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                self.recorder
                    .record(kind, intended, &Outcome::Error(what.into()));
                return None;
            }
        };
        let outcome = classify(kind, status, &body);
        self.recorder.record(kind, intended, &outcome);
        Some((status, body))
    }
}

/// Which answers are the shop working as designed, and which are errors.
fn classify(kind: Kind, status: StatusCode, body: &Value) -> Outcome {
    let code = body["code"].as_str().map(ProblemCode::from_wire);
    match (kind, status.as_u16(), code) {
        (Kind::Checkout, 202, _) => Outcome::Business(CHECKOUT_PENDING),
        (_, 200..=299, _) => Outcome::Ok,
        (Kind::AddToCart | Kind::Checkout, 409, Some(ProblemCode::OutOfStock)) => {
            Outcome::Business(ProblemCode::OutOfStock.as_str())
        }
        (Kind::Checkout, 402, Some(ProblemCode::PaymentDeclined)) => {
            Outcome::Business(ProblemCode::PaymentDeclined.as_str())
        }
        (_, 429 | 503, _) => Outcome::Error(format!("http_{}", status.as_u16())),
        (_, 400..=499, Some(code)) if !code.as_str().is_empty() => Outcome::Error(code.to_string()),
        (_, status, _) => Outcome::Error(format!("http_{status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shop_saying_no_is_not_an_error() {
        let out = json!({"code": "out_of_stock"});
        assert_eq!(
            classify(Kind::Checkout, StatusCode::CONFLICT, &out),
            Outcome::Business("out_of_stock")
        );
        assert_eq!(
            classify(
                Kind::Checkout,
                StatusCode::PAYMENT_REQUIRED,
                &json!({"code": "payment_declined"})
            ),
            Outcome::Business("payment_declined")
        );
        assert_eq!(
            classify(Kind::Product, StatusCode::OK, &Value::Null),
            Outcome::Ok
        );
        assert_eq!(
            classify(
                Kind::Product,
                StatusCode::INTERNAL_SERVER_ERROR,
                &Value::Null
            ),
            Outcome::Error("http_500".into())
        );
        assert_eq!(
            classify(
                Kind::AddToCart,
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"code": "cart_full"})
            ),
            Outcome::Error("cart_full".into())
        );
    }

    #[test]
    fn the_mix_follows_the_weights() {
        let weights = Weights {
            browse: 1,
            search: 0,
            view: 0,
            buy: 3,
        };
        let mut rng = rand::rng();
        let buys = (0..4000)
            .filter(|_| Session::pick(&weights, &mut rng) == Session::Buy)
            .count();
        assert!((2800..3200).contains(&buys), "{buys} of 4000");
        assert!((0..1000).all(|_| Session::pick(&weights, &mut rng) != Session::Search));
    }
}
