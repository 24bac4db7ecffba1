//! The storefront's view of the services: the calls pages and the API share, with the session
//! rules applied (a cart is made on the first add; an expired cart is forgotten and replaced).
//!
//! Reads for display go through a near cache: products, listings and stock levels are kept for
//! a short, configurable time and shared by every request of this replica, as a CDN keeps pages
//! for seconds. Under load most pages then make no call at all (a product page made three, and
//! served 0.03 × the bytes-from-memory baseline). What is shown may be that many seconds old;
//! what is charged never is, because the cart and order services read the catalog and
//! inventory themselves. A checkout through this replica forgets the stock it changed.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use emporium_api::cart::{AddCartLine, Cart};
use emporium_api::catalog::{Category, Product, ProductPage, ProductQuery};
use emporium_api::client::{CartClient, CatalogClient, ClientError, InventoryClient, OrderClient};
use emporium_api::inventory::StockLevel;
use emporium_api::order::{CustomerDetails, Order, OrderStatus, PaymentCard, PlaceOrder, Pricing};
use emporium_api::{ProblemCode, ProblemMembers};

use crate::session::Visitor;

fn no_stock(sku: &str) -> StockLevel {
    StockLevel {
        sku: sku.to_owned(),
        available: 0,
        reserved: 0,
        sold: 0,
        updated_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// The four services the storefront fronts.
#[derive(Debug, Clone)]
pub struct Shop {
    pub catalog: CatalogClient,
    pub inventory: InventoryClient,
    pub carts: CartClient,
    pub orders: OrderClient,
    /// Products per listing page.
    pub page_size: u32,
    /// Most units of one product a cart takes (the cart service's limit).
    pub max_quantity: i64,
    /// The order service's pricing rules, for the estimate shown before checkout.
    pub pricing: Pricing,
    /// The navigation's categories for a few seconds: every page shows them and they change
    /// rarely, so this spares the catalog a call per page (a renamed category shows within
    /// `NAVIGATION_TTL`).
    pub navigation: Recent<(), Arc<Vec<Category>>>,
    /// Recently read products, by id.
    pub products: Recent<String, Arc<Product>>,
    /// Recently read listings, by their query string.
    pub listings: Recent<String, Arc<ProductPage>>,
    /// Recently read stock levels, by SKU.
    pub stock: Recent<String, StockLevel>,
}

/// How long the navigation's categories are reused.
pub const NAVIGATION_TTL: Duration = Duration::from_secs(10);

/// Answers another service gave recently, kept for a fixed time; nothing is kept when the
/// time is zero. Concurrent misses of one key make one call. Failures are not kept.
#[derive(Clone)]
pub struct Recent<K, V> {
    entries: Option<moka::future::Cache<K, V>>,
}

impl<K, V> std::fmt::Debug for Recent<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("enabled", &self.entries.is_some())
            .finish()
    }
}

impl<K, V> Recent<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Keeps up to `capacity` answers for `ttl` each.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self { entries }
    }

    /// The kept answer for `key`, or `fetch`'s (then kept).
    pub async fn get_or_fetch<F>(&self, key: K, fetch: F) -> Result<V, ClientError>
    where
        F: Future<Output = Result<V, ClientError>>,
    {
        match &self.entries {
            None => fetch.await,
            Some(entries) => entries.try_get_with(key, fetch).await.map_err(unshare),
        }
    }

    async fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &self.entries {
            Some(entries) => entries.get(key).await,
            None => None,
        }
    }

    async fn insert(&self, key: K, value: V) {
        if let Some(entries) = &self.entries {
            entries.insert(key, value).await;
        }
    }

    /// Drops the answer for `key`, after this replica changed it.
    pub async fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entries) = &self.entries {
            entries.invalidate(key).await;
        }
    }
}

/// A failure shared by the callers of one fetch, handed to one of them: a problem keeps its
/// details; an outage keeps its message (its source chain stays with the logged original).
fn unshare(error: Arc<ClientError>) -> ClientError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| match shared.as_ref() {
        ClientError::Problem { service, problem } => ClientError::Problem {
            service,
            problem: problem.clone(),
        },
        ClientError::Unavailable { service, source } => ClientError::Unavailable {
            service,
            source: anyhow::anyhow!("{source:#}"),
        },
    })
}

impl Shop {
    /// Stock of each SKU: levels recently read are reused, the others are read in one call.
    /// SKUs the inventory does not answer for are left out: pages then say availability is
    /// unknown instead of failing.
    pub async fn stock_of(&self, skus: &[&str]) -> HashMap<String, StockLevel> {
        let mut known = HashMap::with_capacity(skus.len());
        let mut missing = Vec::new();
        for sku in skus {
            match self.stock.get(*sku).await {
                Some(level) => {
                    known.insert((*sku).to_owned(), level);
                }
                None => missing.push(*sku),
            }
        }
        if missing.is_empty() {
            return known;
        }
        match self.inventory.stocks(&missing).await {
            Ok(levels) => {
                let mut read: HashMap<String, StockLevel> =
                    levels.into_iter().map(|l| (l.sku.clone(), l)).collect();
                for sku in missing {
                    // A SKU the inventory has never stocked has none to sell.
                    let level = read.remove(sku).unwrap_or_else(|| no_stock(sku));
                    self.stock.insert(sku.to_owned(), level.clone()).await;
                    known.insert(sku.to_owned(), level);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "stock levels unavailable; showing products without them");
            }
        }
        known
    }

    /// Checks the session's cart out for `customer`, paid with `payment`, under the idempotency
    /// key `key`. A confirmed order has paid for the cart, and the session moves
    /// to a new, empty one ([`Visitor::cart_paid`]): the cart service clears the paid cart when
    /// `order.confirmed` reaches it, and the shopper need not wait for that. A repeat of the
    /// checkout that paid for the session's previous cart (the same key, which the order
    /// service ties to that cart) answers with its order.
    pub async fn check_out(
        &self,
        visitor: &Visitor,
        key: &str,
        customer: CustomerDetails,
        payment: PaymentCard,
    ) -> Result<(actix_web::http::StatusCode, Order), ClientError> {
        let cart_id = visitor.cart_id();
        let mut order = PlaceOrder {
            cart_id: cart_id.clone(),
            customer,
            payment,
        };
        let customer = visitor.customer_id();
        let placed = self.orders.place(&customer, key, &order).await;
        match (placed, visitor.paid_cart_id()) {
            (Err(error), Some(paid)) if error.is(&ProblemCode::IdempotencyKeyReused) => {
                // Only the answer the key got: the paid cart may hold other things by now (a
                // tab with an older cookie adds to it once it is cleared), and a key whose
                // first try failed for a reason that may pass would otherwise start a new
                // checkout of it.
                order.cart_id = paid;
                self.orders.replay(&customer, key, &order).await
            }
            (placed, _) => {
                if let Ok((_, placed)) = &placed
                    && placed.status == OrderStatus::Confirmed
                {
                    visitor.cart_paid(&cart_id);
                }
                placed
            }
        }
        .map(|(status, order)| {
            let status = actix_web::http::StatusCode::from_u16(status.as_u16())
                .unwrap_or(actix_web::http::StatusCode::OK);
            (status, order)
        })
    }

    /// Forgets the stock of these SKUs, after this replica placed an order for them or was
    /// told they ran short.
    pub async fn forget_stock<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        for sku in skus {
            self.stock.forget(sku).await;
        }
    }

    /// A product, recently read or from the catalog.
    pub async fn product(&self, id: &str) -> Result<Arc<Product>, ClientError> {
        self.products
            .get_or_fetch(id.to_owned(), async {
                self.catalog.product(id).await.map(Arc::new)
            })
            .await
    }

    /// A page of products, recently read or from the catalog.
    pub async fn products(&self, query: &ProductQuery) -> Result<Arc<ProductPage>, ClientError> {
        // The query string the catalog gets is the key: equal queries, equal answers.
        let Ok(key) = serde_urlencoded::to_string(query) else {
            return self.catalog.products(query).await.map(Arc::new);
        };
        self.listings
            .get_or_fetch(key, async {
                self.catalog.products(query).await.map(Arc::new)
            })
            .await
    }

    /// Categories for navigation, reused for [`NAVIGATION_TTL`]; empty when the catalog does
    /// not answer (and then not kept), so a page can still show what it has.
    pub async fn categories_or_none(&self) -> Arc<Vec<Category>> {
        let fetched = self
            .navigation
            .get_or_fetch((), async {
                let mut categories = self.catalog.categories().await?;
                categories.sort_by_key(|c| (c.position, c.name.clone()));
                Ok::<_, ClientError>(Arc::new(categories))
            })
            .await;
        fetched.unwrap_or_else(|error| {
            tracing::warn!(%error, "categories unavailable");
            Arc::new(Vec::new())
        })
    }

    /// The visitor's cart, once their first add made it (and until it expires). Asked for even
    /// when the session says it has none yet: an answer carrying an older copy of the session
    /// may have arrived after the one that said it was made; finding it puts that right.
    pub async fn cart(&self, visitor: &Visitor) -> Result<Option<Cart>, ClientError> {
        match self.carts.cart(&visitor.cart_id()).await {
            Ok(cart) => {
                visitor.set_cart_made();
                Ok(Some(cart))
            }
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The stock of each of `products`, by SKU (see [`Shop::stock_of`]).
    pub async fn stock_of_products(&self, products: &[Product]) -> HashMap<String, StockLevel> {
        let skus: Vec<&str> = products.iter().map(|p| p.sku.as_str()).collect();
        self.stock_of(&skus).await
    }

    /// Units in the visitor's cart, 0 when it cannot be read (for the header's badge).
    pub async fn cart_count(&self, visitor: &Visitor) -> i64 {
        // Every page shows it: a session whose cart was never made costs no call.
        if !visitor.cart_made() {
            return 0;
        }
        self.cart(visitor)
            .await
            .ok()
            .flatten()
            .map_or(0, |c| c.item_count)
    }

    /// Adds units of a product, making the session's cart first if it has none yet (or it
    /// expired). The cart is made at the session's cart id, which is idempotent: adds that
    /// arrive at once all land in the one cart.
    pub async fn add(
        &self,
        visitor: &Visitor,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, ClientError> {
        let line = AddCartLine {
            product_id: product_id.to_owned(),
            quantity,
        };
        let id = visitor.cart_id();
        if visitor.cart_made() {
            match self.carts.add_line(&id, &line).await {
                // Expired: made again below, at the same id.
                Err(error) if error.is(&ProblemCode::CartNotFound) => {}
                outcome => return self.noting_shortage(outcome).await,
            }
        }
        self.carts.open(&id).await?;
        visitor.set_cart_made();
        let outcome = self.carts.add_line(&id, &line).await;
        self.noting_shortage(outcome).await
    }

    /// Forgets the stock the cart service just said is short, so the page shown with its
    /// message shows the current level too.
    async fn noting_shortage(
        &self,
        outcome: Result<Cart, ClientError>,
    ) -> Result<Cart, ClientError> {
        if let Err(error) = &outcome
            && let Some(problem) = error.problem()
            && problem.is(&ProblemCode::OutOfStock)
        {
            let short = problem.short();
            self.forget_stock(short.iter().map(|s| s.sku.as_str()))
                .await;
        }
        outcome
    }

    /// Sets a line's quantity; 0 removes the line. `None` when the visitor has no cart.
    pub async fn set_quantity(
        &self,
        visitor: &Visitor,
        product_id: &str,
        quantity: i64,
    ) -> Result<Option<Cart>, ClientError> {
        if quantity == 0 {
            return self.remove(visitor, product_id).await;
        }
        no_cart_is_none(
            self.carts
                .set_quantity(&visitor.cart_id(), product_id, quantity)
                .await,
        )
    }

    pub async fn remove(
        &self,
        visitor: &Visitor,
        product_id: &str,
    ) -> Result<Option<Cart>, ClientError> {
        match self.carts.remove_line(&visitor.cart_id(), product_id).await {
            // Removing what is not there leaves the cart as the visitor wants it.
            Err(error) if error.is(&ProblemCode::LineNotFound) => self.cart(visitor).await,
            outcome => no_cart_is_none(outcome),
        }
    }
}

/// A change of a cart that does not exist (yet, or any more) is a change of no cart.
fn no_cart_is_none(outcome: Result<Cart, ClientError>) -> Result<Option<Cart>, ClientError> {
    match outcome {
        Ok(cart) => Ok(Some(cart)),
        Err(error) if error.is(&ProblemCode::CartNotFound) => Ok(None),
        Err(error) => Err(error),
    }
}
