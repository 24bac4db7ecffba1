//! What the cart does. Reads go through the cache (`cart:<id>`, retired on every change);
//! changes read the store, apply, and save on the version they read. Changes to one cart take
//! turns within a replica (a lock per stripe of cart ids), so a burst of adds to one cart
//! queues instead of colliding; a change that still loses to other replicas' retries a few
//! times, then answers 409 `cart_busy` with `Retry-After` rather than fail.
//!
//! A checkout claims its cart (`claim`): on the condition that the cart is still at the version
//! the order priced and no other order holds it, the cart records the order and the units it
//! buys. A second checkout of the cart is refused while the claim lasts, so one cart is never
//! paid for twice, and so is taking out units the order is buying (adding and raising are
//! fine). The order then either completes the claim, which takes exactly the claimed units out
//! of the cart (what was added meanwhile stays), or releases it, which leaves the lines.
//! Both are idempotent: they act only while that order holds the claim.
//!
//! Adding or raising a line checks the product against the catalog (it must exist; its current
//! price and name are copied into the line) and the wanted quantity against the stock. The stock
//! check is advice for the shopper, not a hold: only the order's reservation holds stock. When
//! the inventory does not answer, the cart accepts the line and checkout decides.

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use emporium_api::Money;
use emporium_api::cart::{Cart, CartLine};
use emporium_api::client::{CatalogClient, InventoryClient};
use emporium_api::inventory::Shortage;
use emporium_ports::cache::{Cache, CacheAside};
use emporium_ports::storage::Storage;
use time::OffsetDateTime;

use crate::error::CartError;
use crate::repository::{Checkout, ClaimedLine, Repository, SaveError, StoredCart};

/// Attempts at a change that keeps losing to concurrent changes of the same cart (made by other
/// replicas: within one, changes of a cart take turns).
const SAVE_ATTEMPTS: usize = 10;

/// Locks that changes of one cart take turns on, a cart id picking its stripe. A fixed set
/// rather than one per cart, so nothing grows with the number of carts; two carts sharing a
/// stripe only wait for each other's write, a few milliseconds.
const LOCK_STRIPES: usize = 256;

/// What a change makes of a cart: its lines and its checkout claim.
struct Draft {
    lines: Vec<CartLine>,
    checkout: Option<Checkout>,
}

impl Draft {
    /// New lines, the claim as it was.
    fn lines(cart: &StoredCart, lines: Vec<CartLine>) -> Self {
        Self {
            lines,
            checkout: cart.checkout.clone(),
        }
    }

    /// The cart as it is: nothing to write.
    fn unchanged(cart: &StoredCart) -> Self {
        Self::lines(cart, cart.lines.clone())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CartLimits {
    pub ttl: Duration,
    pub max_lines: usize,
    pub max_quantity: i64,
}

pub struct Carts {
    repository: Repository,
    locks: Box<[tokio::sync::Mutex<()>]>,
    stripes: std::hash::RandomState,
    cache: CacheAside,
    catalog: CatalogClient,
    inventory: InventoryClient,
    limits: CartLimits,
    currency: String,
}

impl std::fmt::Debug for Carts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carts")
            .field("limits", &self.limits)
            .finish()
    }
}

fn group(id: &str) -> String {
    format!("cart:{id}")
}

fn to_wire(cart: &StoredCart) -> Result<Cart, CartError> {
    let mut subtotal: i64 = 0;
    let mut item_count: i64 = 0;
    for line in &cart.lines {
        subtotal = subtotal
            .checked_add(line.line_total.amount)
            .ok_or_else(|| anyhow::anyhow!("cart subtotal overflows"))?;
        item_count += line.quantity;
    }
    Ok(Cart {
        id: cart.id.clone(),
        lines: cart.lines.clone(),
        item_count,
        subtotal: Money::new(subtotal, cart.currency.clone()),
        created_at: cart.created_at,
        updated_at: cart.updated_at,
        expires_at: cart.expires_at,
        version: cart.version,
        checkout_order_id: cart.checkout.as_ref().map(|c| c.order_id.clone()),
    })
}

fn line_total(unit_price: &Money, quantity: i64) -> Result<Money, CartError> {
    let amount = unit_price
        .amount
        .checked_mul(quantity)
        .ok_or_else(|| anyhow::anyhow!("line total overflows"))?;
    Ok(Money::new(amount, unit_price.currency.clone()))
}

impl Carts {
    /// What the cache did, for metrics.
    /// The clients of the catalog and the inventory, for their circuits' gauges.
    pub fn circuits(&self) -> Vec<Box<dyn emporium_api::client::Circuit + Send + Sync>> {
        vec![
            Box::new(self.catalog.clone()),
            Box::new(self.inventory.clone()),
        ]
    }

    /// The cart's store (its consumers' processed records live there too).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        self.repository.storage()
    }

    pub fn cache_stats(&self) -> &std::sync::Arc<emporium_ports::cache::CacheStats> {
        self.cache.stats()
    }

    pub fn new(
        storage: Arc<dyn Storage>,
        cache: Arc<dyn Cache>,
        cache_ttl: Duration,
        catalog: CatalogClient,
        inventory: InventoryClient,
        limits: CartLimits,
        currency: &str,
    ) -> Self {
        Self {
            repository: Repository::new(storage),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stripes: std::hash::RandomState::new(),
            cache: CacheAside::new(cache, cache_ttl),
            catalog,
            inventory,
            limits,
            currency: currency.to_owned(),
        }
    }

    fn expiry(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + time::Duration::seconds(
            i64::try_from(self.limits.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        )
    }

    pub async fn create(&self) -> Result<Cart, CartError> {
        let cart = self.empty(emporium_platform::id::new_id());
        match self.repository.insert(&cart).await {
            Ok(()) => to_wire(&cart),
            // 128 random bits do not collide; if they did, the caller may simply ask again.
            Err(SaveError::Changed) => Err(anyhow::anyhow!("new cart id already in use").into()),
            Err(SaveError::Storage(error)) => Err(error.into()),
        }
    }

    /// The cart at `id`, made empty if there is none (or it expired); whether it was made.
    pub async fn open(&self, id: &str) -> Result<(Cart, bool), CartError> {
        if !emporium_platform::id::is_valid(id) {
            return Err(CartError::field(
                "id",
                "not a cart id (26 characters, 0-9 and a-z)",
            ));
        }
        let cart = self.empty(id.to_owned());
        match self.repository.insert(&cart).await {
            Ok(()) => {
                // A cached "no such cart" must not outlive the new one.
                self.cache.retire(&group(id)).await;
                Ok((to_wire(&cart)?, true))
            }
            // Made by a concurrent open (or there all along): that one, from the store, since
            // the cache may still hold the miss from before it was made.
            Err(SaveError::Changed) => match self.repository.cart(id).await? {
                Some(cart) => Ok((to_wire(&cart)?, false)),
                None => Err(anyhow::anyhow!("a cart that was there is gone").into()),
            },
            Err(SaveError::Storage(error)) => Err(error.into()),
        }
    }

    fn empty(&self, id: String) -> StoredCart {
        let now = OffsetDateTime::now_utc();
        let expires_at = self.expiry(now);
        StoredCart {
            id,
            lines: Vec::new(),
            currency: self.currency.clone(),
            created_at: now,
            updated_at: now,
            expires_at,
            expires_epoch: expires_at.unix_timestamp(),
            version: 1,
            checkout: None,
        }
    }

    pub async fn cart(&self, id: &str) -> Result<Cart, CartError> {
        if !emporium_platform::id::is_valid(id) {
            return Err(CartError::CartNotFound);
        }
        let found: Option<StoredCart> = self
            .cache
            .get_or_load(&format!("cart:{id}"), Some(&group(id)), || {
                self.repository.cart(id)
            })
            .await?;
        match found {
            // A cached copy may outlive the cart itself by up to the cache TTL.
            Some(cart) if cart.expires_at > OffsetDateTime::now_utc() => to_wire(&cart),
            _ => Err(CartError::CartNotFound),
        }
    }

    /// Adds `quantity` units of a product, merging with its line if there is one.
    pub async fn add_line(
        &self,
        id: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, CartError> {
        self.check_quantity(quantity)?;
        if !emporium_platform::id::is_valid(product_id) {
            return Err(CartError::UnknownProduct(product_id.to_owned()));
        }
        // Ask the other services once, before the read-modify-write loop, so a retry after a
        // concurrent change of this cart is quick.
        let product = match self.catalog.product(product_id).await {
            Ok(product) => product,
            Err(error) if error.is_not_found() => {
                return Err(CartError::UnknownProduct(product_id.to_owned()));
            }
            Err(error) => return Err(CartError::CatalogUnavailable(error.into())),
        };
        if product.price.currency != self.currency {
            return Err(anyhow::anyhow!(
                "product {} is priced in {}, the shop in {}",
                product.id,
                product.price.currency,
                self.currency
            )
            .into());
        }
        let available = self.available(&product.sku).await;
        self.change(id, |cart| {
            let existing = cart
                .lines
                .iter()
                .find(|line| line.product_id == product_id)
                .map_or(0, |line| line.quantity);
            let wanted = existing + quantity;
            if wanted > self.limits.max_quantity {
                return Err(CartError::field(
                    "quantity",
                    format!(
                        "at most {} of one product; the cart already has {existing}",
                        self.limits.max_quantity
                    ),
                ));
            }
            if existing == 0 && cart.lines.len() >= self.limits.max_lines {
                return Err(CartError::CartFull {
                    max_lines: self.limits.max_lines,
                });
            }
            check_stock(&product.sku, wanted, available)?;
            let line = CartLine {
                product_id: product.id.clone(),
                sku: product.sku.clone(),
                name: product.name.clone(),
                image: product.images.first().cloned(),
                line_total: line_total(&product.price, wanted)?,
                unit_price: product.price.clone(),
                quantity: wanted,
            };
            let mut lines = cart.lines.clone();
            match lines.iter_mut().find(|l| l.product_id == product_id) {
                Some(slot) => *slot = line,
                None => lines.push(line),
            }
            Ok(Draft::lines(cart, lines))
        })
        .await
    }

    /// Sets a line's quantity (1 or more; removing is its own call).
    pub async fn set_quantity(
        &self,
        id: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, CartError> {
        self.check_quantity(quantity)?;
        if !emporium_platform::id::is_valid(id) {
            return Err(CartError::CartNotFound);
        }
        let current = self
            .repository
            .cart(id)
            .await?
            .ok_or(CartError::CartNotFound)?;
        let line = current
            .lines
            .iter()
            .find(|line| line.product_id == product_id)
            .ok_or(CartError::LineNotFound)?;
        let available = if quantity > line.quantity {
            self.available(&line.sku).await
        } else {
            Availability::Unchecked
        };
        self.change(id, |cart| {
            let mut lines = cart.lines.clone();
            let line = lines
                .iter_mut()
                .find(|line| line.product_id == product_id)
                .ok_or(CartError::LineNotFound)?;
            if quantity > line.quantity {
                check_stock(&line.sku, quantity, available)?;
            }
            keeps_what_is_bought(cart, product_id, quantity)?;
            line.quantity = quantity;
            line.line_total = line_total(&line.unit_price, quantity)?;
            Ok(Draft::lines(cart, lines))
        })
        .await
    }

    pub async fn remove_line(&self, id: &str, product_id: &str) -> Result<Cart, CartError> {
        self.change(id, |cart| {
            if !cart.lines.iter().any(|line| line.product_id == product_id) {
                return Err(CartError::LineNotFound);
            }
            keeps_what_is_bought(cart, product_id, 0)?;
            let lines = cart
                .lines
                .iter()
                .filter(|line| line.product_id != product_id)
                .cloned()
                .collect();
            Ok(Draft::lines(cart, lines))
        })
        .await
    }

    /// Empties the cart. Emptying an empty cart changes nothing.
    pub async fn clear(&self, id: &str) -> Result<Cart, CartError> {
        self.change(id, |cart| {
            if let Some(held) = cart.checkout.as_ref().filter(|held| !held.lines.is_empty()) {
                return Err(CartError::InCheckout(held.order_id.clone()));
            }
            Ok(Draft::lines(cart, Vec::new()))
        })
        .await
    }

    /// Claims the cart for `order_id`'s checkout, if it is still at `version` (the one the
    /// order priced) and no other order holds it. The same order claiming again gets the cart
    /// it holds.
    pub async fn claim(&self, id: &str, order_id: &str, version: u64) -> Result<Cart, CartError> {
        check_order_id(order_id)?;
        self.change(id, |cart| match &cart.checkout {
            Some(held) if held.order_id == order_id => Ok(Draft::unchanged(cart)),
            Some(held) => Err(CartError::InCheckout(held.order_id.clone())),
            None if cart.version != version => Err(CartError::Changed {
                current_version: cart.version,
            }),
            None => Ok(Draft {
                lines: cart.lines.clone(),
                checkout: Some(Checkout {
                    order_id: order_id.to_owned(),
                    lines: cart
                        .lines
                        .iter()
                        .map(|line| ClaimedLine {
                            product_id: line.product_id.clone(),
                            quantity: line.quantity,
                        })
                        .collect(),
                    claimed_at: OffsetDateTime::now_utc(),
                }),
            }),
        })
        .await
    }

    /// Ends `order_id`'s checkout: its claimed units leave the cart (a line raised meanwhile
    /// keeps the rise, a line added meanwhile stays) and the claim ends. Nothing happens when
    /// the order holds no claim, so doing it twice does it once. (The cart's consumer of
    /// `order.confirmed` does the same, `events.rs`.)
    pub async fn complete_checkout(&self, id: &str, order_id: &str) -> Result<Cart, CartError> {
        check_order_id(order_id)?;
        self.change(id, |cart| completed(cart, order_id)).await
    }

    /// Ends `order_id`'s claim and keeps the lines (the checkout failed or was undone). Nothing
    /// happens when the order holds no claim.
    pub async fn release_checkout(&self, id: &str, order_id: &str) -> Result<Cart, CartError> {
        check_order_id(order_id)?;
        self.change(id, |cart| Ok(released(cart, order_id))).await
    }

    /// `cart` as `draft` makes it, now, or `None` when that changes nothing.
    fn next_state(
        &self,
        cart: &StoredCart,
        draft: Draft,
        now: OffsetDateTime,
    ) -> Option<StoredCart> {
        if draft.lines == cart.lines && draft.checkout == cart.checkout {
            return None;
        }
        let expires_at = self.expiry(now);
        Some(StoredCart {
            lines: draft.lines,
            checkout: draft.checkout,
            updated_at: now,
            expires_at,
            expires_epoch: expires_at.unix_timestamp(),
            version: cart.version + 1,
            ..cart.clone()
        })
    }

    /// The write an order's event makes of its cart (`events.rs`): the checkout completed
    /// (`complete`) or its claim released, on the condition that the cart is still at the
    /// version read; `None` when there is no cart or nothing to change.
    pub(crate) async fn settle_order(
        &self,
        id: &str,
        order_id: &str,
        complete: bool,
    ) -> Result<Option<emporium_ports::storage::TxOp>, CartError> {
        if !emporium_platform::id::is_valid(id) {
            return Ok(None);
        }
        let Some(cart) = self.repository.cart(id).await? else {
            return Ok(None);
        };
        let draft = if complete {
            completed(&cart, order_id)?
        } else {
            released(&cart, order_id)
        };
        match self.next_state(&cart, draft, OffsetDateTime::now_utc()) {
            Some(next) => Ok(Some(self.repository.replace_op(&next, cart.version)?)),
            None => Ok(None),
        }
    }

    /// Forgets the cached copy of cart `id`, after a write outside [`Self::change`].
    pub(crate) async fn retire(&self, id: &str) {
        self.cache.retire(&group(id)).await;
    }

    fn check_quantity(&self, quantity: i64) -> Result<(), CartError> {
        if (1..=self.limits.max_quantity).contains(&quantity) {
            Ok(())
        } else {
            Err(CartError::field(
                "quantity",
                format!("must be 1 to {}", self.limits.max_quantity),
            ))
        }
    }

    /// What the inventory says is available, or that it could not be asked.
    async fn available(&self, sku: &str) -> Availability {
        match self.inventory.stock(sku).await {
            Ok(level) => Availability::Units(level.available),
            Err(error) if error.is_not_found() => Availability::Units(0),
            Err(error) => {
                tracing::warn!(%error, sku, "inventory unavailable; accepting the line unchecked");
                Availability::Unchecked
            }
        }
    }

    /// Reads the cart, computes its new state with `edit`, and saves it on the version read.
    /// Changes of one cart take turns here; a change that loses to another replica's is redone
    /// on the new cart, a few times, then refused as busy.
    async fn change<F>(&self, id: &str, edit: F) -> Result<Cart, CartError>
    where
        F: Fn(&StoredCart) -> Result<Draft, CartError>,
    {
        if !emporium_platform::id::is_valid(id) {
            return Err(CartError::CartNotFound);
        }
        let stripe = self.stripes.hash_one(id) as usize % self.locks.len();
        let _turn = self.locks[stripe].lock().await;
        for _ in 0..SAVE_ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let cart = self
                .repository
                .cart(id)
                .await?
                .ok_or(CartError::CartNotFound)?;
            let version = cart.version;
            let draft = edit(&cart)?;
            let Some(next) = self.next_state(&cart, draft, now) else {
                return to_wire(&cart);
            };
            match self.repository.replace(&next, version).await {
                Ok(()) => {
                    self.cache.retire(&group(id)).await;
                    return to_wire(&next);
                }
                Err(SaveError::Changed) => {
                    // Another replica changed the cart meanwhile: back off a little, at random,
                    // so concurrent changes stop colliding, then redo the edit on the new cart.
                    let pause = rand::random_range(1..=8);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(SaveError::Storage(error)) => return Err(error.into()),
            }
        }
        tracing::warn!(
            attempts = SAVE_ATTEMPTS,
            "a cart kept changing under a change; answered busy"
        );
        Err(CartError::Busy)
    }
}

/// `cart` with `order_id`'s claimed units taken out and its claim ended; as it is when that
/// order holds no claim.
fn completed(cart: &StoredCart, order_id: &str) -> Result<Draft, CartError> {
    match &cart.checkout {
        Some(held) if held.order_id == order_id => {
            let mut lines = Vec::with_capacity(cart.lines.len());
            for line in &cart.lines {
                let bought = held
                    .lines
                    .iter()
                    .filter(|claimed| claimed.product_id == line.product_id)
                    .map(|claimed| claimed.quantity)
                    .sum::<i64>();
                let left = line.quantity - bought;
                if left > 0 {
                    lines.push(CartLine {
                        quantity: left,
                        line_total: line_total(&line.unit_price, left)?,
                        ..line.clone()
                    });
                }
            }
            Ok(Draft {
                lines,
                checkout: None,
            })
        }
        _ => Ok(Draft::unchanged(cart)),
    }
}

/// `cart` with `order_id`'s claim ended and its lines kept.
fn released(cart: &StoredCart, order_id: &str) -> Draft {
    match &cart.checkout {
        Some(held) if held.order_id == order_id => Draft {
            lines: cart.lines.clone(),
            checkout: None,
        },
        _ => Draft::unchanged(cart),
    }
}

/// Refuses to leave fewer than `quantity` units of a product an order is checking out: the
/// order charges what it claimed, so a removal answered 200 while it runs would be a removal
/// the shopper is charged for anyway. More (an add, a raise) is fine: what comes after stays.
fn keeps_what_is_bought(
    cart: &StoredCart,
    product_id: &str,
    quantity: i64,
) -> Result<(), CartError> {
    let Some(held) = &cart.checkout else {
        return Ok(());
    };
    let bought: i64 = held
        .lines
        .iter()
        .filter(|line| line.product_id == product_id)
        .map(|line| line.quantity)
        .sum();
    if quantity < bought {
        return Err(CartError::InCheckout(held.order_id.clone()));
    }
    Ok(())
}

fn check_order_id(order_id: &str) -> Result<(), CartError> {
    if emporium_platform::id::is_valid(order_id) {
        Ok(())
    } else {
        Err(CartError::field("order_id", "not an order id"))
    }
}

/// Units available for a line, as far as the inventory could tell.
#[derive(Debug, Clone, Copy)]
enum Availability {
    Units(i64),
    /// The inventory did not answer; the line is accepted and checkout decides.
    Unchecked,
}

fn check_stock(sku: &str, wanted: i64, available: Availability) -> Result<(), CartError> {
    match available {
        Availability::Units(available) if available < wanted => {
            Err(CartError::OutOfStock(Shortage {
                sku: sku.to_owned(),
                requested: wanted,
                available,
            }))
        }
        _ => Ok(()),
    }
}
