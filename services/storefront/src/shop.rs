//! The storefront's view of the services: the calls pages and the API share, with the session
//! rules applied (a cart is made on the first add; an expired cart is forgotten and replaced).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use emporium_api::cart::{AddCartLine, Cart};
use emporium_api::catalog::{Category, Product};
use emporium_api::client::{CartClient, CatalogClient, ClientError, InventoryClient, OrderClient};
use emporium_api::inventory::StockLevel;
use emporium_api::order::Pricing;

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
    pub navigation: moka::future::Cache<(), Arc<Vec<Category>>>,
}

/// How long the navigation's categories are reused.
pub const NAVIGATION_TTL: Duration = Duration::from_secs(10);

/// The cache behind [`Shop::navigation`].
pub fn navigation_cache() -> moka::future::Cache<(), Arc<Vec<Category>>> {
    moka::future::Cache::builder()
        .max_capacity(1)
        .time_to_live(NAVIGATION_TTL)
        .build()
}

impl Shop {
    /// Stock of each SKU, in one call. Empty when the inventory does not answer: pages then say
    /// availability is unknown instead of failing.
    pub async fn stock_of(&self, skus: &[&str]) -> HashMap<String, StockLevel> {
        if skus.is_empty() {
            return HashMap::new();
        }
        match self.inventory.stocks(skus).await {
            Ok(levels) => {
                let mut known: HashMap<String, StockLevel> =
                    levels.into_iter().map(|l| (l.sku.clone(), l)).collect();
                // A SKU the inventory has never stocked has none to sell.
                for sku in skus {
                    known
                        .entry((*sku).to_owned())
                        .or_insert_with(|| no_stock(sku));
                }
                known
            }
            Err(error) => {
                tracing::warn!(%error, "stock levels unavailable; showing products without them");
                HashMap::new()
            }
        }
    }

    /// Categories for navigation, reused for [`NAVIGATION_TTL`]; empty when the catalog does
    /// not answer (and then not kept), so a page can still show what it has.
    pub async fn categories_or_none(&self) -> Arc<Vec<Category>> {
        let fetched = self
            .navigation
            .try_get_with((), async {
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

    /// The visitor's cart, if they have one that still exists.
    pub async fn cart(&self, visitor: &Visitor) -> Result<Option<Cart>, ClientError> {
        let Some(id) = visitor.cart_id() else {
            return Ok(None);
        };
        match self.carts.cart(&id).await {
            Ok(cart) => Ok(Some(cart)),
            Err(error) if error.is_not_found() => {
                visitor.set_cart(None);
                Ok(None)
            }
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
        if visitor.cart_id().is_none() {
            return 0;
        }
        self.cart(visitor)
            .await
            .ok()
            .flatten()
            .map_or(0, |c| c.item_count)
    }

    /// Adds units of a product, making the visitor a cart first if they have none (or theirs
    /// expired).
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
        if let Some(id) = visitor.cart_id() {
            match self.carts.add_line(&id, &line).await {
                Err(error) if error.code() == Some("cart_not_found") => {}
                outcome => return outcome,
            }
        }
        let cart = self.carts.create().await?;
        visitor.set_cart(Some(cart.id.clone()));
        self.carts.add_line(&cart.id, &line).await
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
        let Some(id) = visitor.cart_id() else {
            return Ok(None);
        };
        self.forget_missing(
            visitor,
            self.carts.set_quantity(&id, product_id, quantity).await,
        )
    }

    pub async fn remove(
        &self,
        visitor: &Visitor,
        product_id: &str,
    ) -> Result<Option<Cart>, ClientError> {
        let Some(id) = visitor.cart_id() else {
            return Ok(None);
        };
        match self.carts.remove_line(&id, product_id).await {
            // Removing what is not there leaves the cart as the visitor wants it.
            Err(error) if error.code() == Some("line_not_found") => self.cart(visitor).await,
            outcome => self.forget_missing(visitor, outcome),
        }
    }

    fn forget_missing(
        &self,
        visitor: &Visitor,
        outcome: Result<Cart, ClientError>,
    ) -> Result<Option<Cart>, ClientError> {
        match outcome {
            Ok(cart) => Ok(Some(cart)),
            Err(error) if error.code() == Some("cart_not_found") => {
                visitor.set_cart(None);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}
