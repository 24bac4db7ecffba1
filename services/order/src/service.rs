//! Placing, reading and cancelling orders.
//!
//! Placing an order first checks everything that can be checked without writing: the customer,
//! the idempotency key (a repeat returns the first request's order), the body, the cart (it must
//! exist, hold lines and not be in another checkout) and the products (each must still be sold;
//! its current catalog price is the price). A request rejected there writes nothing. Then the
//! order is recorded as PENDING together with its idempotency key, and the checkout saga
//! (`saga` for its moves, `checkout` for the calls that make them) drives it.
//!
//! The claim is what makes one cart one order: the cart service records the order on the cart
//! on the condition that the cart is still at the version this order priced and that no other
//! order holds it, so two checkouts of one cart at once (two tabs, a double tap that makes two
//! keys) cannot both reserve and charge; the second is refused with `cart_in_checkout`. Clearing
//! takes out exactly the units claimed, so a line added while the checkout ran stays in the cart;
//! every failure ends the claim and keeps the lines.

use std::sync::Arc;
use std::time::Duration;

use emporium_api::Money;
use emporium_api::client::{CartClient, CatalogClient, ClientError, InventoryClient};
use emporium_api::events::{Envelope, EventType, OrderChanged};
use emporium_api::order::{
    Order, OrderLine, OrderPage, OrderStatus, PaymentStatus, PaymentSummary, PlaceOrder,
};
use emporium_ports::events::Events;
use emporium_ports::events::outbox::{Outbox, Pending};
use emporium_ports::storage::{Storage, cursor_from_token, page_token};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::checkout::moved;
use crate::domain::{self, Pricing, ValidOrder};
use crate::error::OrderError;
use crate::hooks::CheckoutHooks;
use crate::metrics::Outcome;
use crate::payment::SimulatedProvider;
use crate::repository::{Repository, Step, StoredOrder, WriteError};
use crate::saga::{self, StepOutcome};

/// The name events give as their source.
const PRODUCER: &str = "order";

const DEFAULT_PAGE: u32 = 10;
const MAX_PAGE: u32 = 50;
/// How long a repeated request waits for the first one's checkout to finish.
const REPLAY_WAIT: Duration = Duration::from_secs(10);

/// The outcome of placing an order.
#[derive(Debug, Clone)]
pub struct Placement {
    pub order: Order,
    /// True when the request repeated an earlier one (same idempotency key).
    pub replayed: bool,
}

pub struct Orders {
    pub(crate) repository: Repository,
    /// Where the order's events are recorded with its writes (`emporium.order.*`).
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) catalog: CatalogClient,
    pub(crate) inventory: InventoryClient,
    pub(crate) carts: CartClient,
    pub(crate) payments: SimulatedProvider,
    pricing: Pricing,
    currency: String,
    pub(crate) reservation_ttl_secs: u64,
    pub(crate) hooks: Arc<dyn CheckoutHooks>,
    pub(crate) outcomes: Family<Outcome, Counter>,
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("pricing", &self.pricing)
            .finish()
    }
}

/// The clients the order service calls.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub catalog: CatalogClient,
    pub inventory: InventoryClient,
    pub carts: CartClient,
}

fn unavailable(service: &'static str, error: ClientError) -> OrderError {
    OrderError::DependencyUnavailable(service, error.into())
}

impl Orders {
    pub fn new(
        storage: Arc<dyn Storage>,
        dependencies: Dependencies,
        pricing: Pricing,
        currency: &str,
        reservation_ttl_secs: u64,
        hooks: Arc<dyn CheckoutHooks>,
        events: Arc<dyn Events>,
    ) -> Self {
        Self {
            outbox: Arc::new(Outbox::new(
                storage.clone(),
                events,
                crate::repository::TABLE.name,
            )),
            repository: Repository::new(storage),
            catalog: dependencies.catalog,
            inventory: dependencies.inventory,
            carts: dependencies.carts,
            payments: SimulatedProvider,
            pricing,
            currency: currency.to_owned(),
            reservation_ttl_secs,
            hooks,
            outcomes: Family::default(),
        }
    }

    /// The outbox the order's writes record their events in; its relay runs beside the server.
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// The event of `order` having entered its status, for the write that moves it there (none
    /// when `before`, the status stored, is the same).
    pub(crate) fn status_events(
        &self,
        before: Option<OrderStatus>,
        stored: &StoredOrder,
    ) -> Result<Pending, OrderError> {
        let order = &stored.order;
        let unexpected = |error: anyhow::Error| OrderError::from(error);
        if before == Some(order.status) {
            return self
                .outbox
                .record(Vec::new())
                .map_err(|error| unexpected(error.into()));
        }
        let (kind, version) = match order.status {
            OrderStatus::Pending => (EventType::OrderPlaced, 1),
            OrderStatus::Confirmed => (EventType::OrderConfirmed, 2),
            OrderStatus::Failed => (EventType::OrderFailed, 2),
            OrderStatus::Cancelled => (EventType::OrderCancelled, 3),
        };
        let data = OrderChanged {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            cart_id: stored.cart_id.clone(),
            status: order.status,
            lines: order.lines.clone(),
            totals: order.totals.clone(),
            failure: order.failure.clone(),
            version,
        };
        let envelope =
            Envelope::traced(PRODUCER, kind, &data).map_err(|error| unexpected(error.into()))?;
        self.outbox
            .record(vec![envelope.to_event()])
            .map_err(|error| unexpected(error.into()))
    }

    /// Checkouts and reconciliations by outcome, for the service's metrics.
    /// The clients of the services a checkout calls, for their circuits' gauges.
    pub fn circuits(&self) -> Vec<Box<dyn emporium_api::client::Circuit + Send + Sync>> {
        vec![
            Box::new(self.catalog.clone()),
            Box::new(self.inventory.clone()),
            Box::new(self.carts.clone()),
        ]
    }

    pub fn outcomes(&self) -> Family<Outcome, Counter> {
        self.outcomes.clone()
    }

    // === Placing ===

    pub async fn place(
        &self,
        customer_id: Option<&str>,
        idempotency_key: Option<&str>,
        input: &PlaceOrder,
        replay_only: bool,
    ) -> Result<Placement, OrderError> {
        let customer_id = customer_id
            .filter(|id| domain::is_customer_id(id))
            .ok_or(OrderError::CustomerRequired)?;
        let key = idempotency_key.ok_or(OrderError::IdempotencyKeyMissing)?;
        if !domain::is_idempotency_key(key) {
            return Err(OrderError::InvalidIdempotencyKey);
        }
        let request_hash = hex::encode(Sha256::digest(
            serde_json::to_vec(input).map_err(anyhow::Error::from)?,
        ));
        let mut previous = None;
        if let Some(record) = self.repository.idempotency(customer_id, key).await? {
            let first = self
                .replay(&record.order_id, &record.request_hash, &request_hash)
                .await?;
            if replay_only || !self.may_try_again(&first.order).await? {
                return Ok(first);
            }
            // The first try charged nothing and failed for a reason that may have passed:
            // this repeat is a new try under the same key.
            previous = Some(first.order.id);
        } else if replay_only {
            // Nothing to answer from (the key expired, or never came with this request).
            return Err(OrderError::IdempotencyKeyReused);
        }
        let now = OffsetDateTime::now_utc();
        let valid = ValidOrder::parse(input, now).map_err(OrderError::Validation)?;
        let cart = match self.carts.cart(&valid.cart_id).await {
            Ok(cart) => cart,
            Err(error) if error.is_not_found() => return Err(OrderError::CartNotFound),
            Err(error) => return Err(unavailable("cart", error)),
        };
        if cart.lines.is_empty() {
            return Err(OrderError::CartEmpty);
        }
        if cart.checkout_order_id.is_some() {
            return Err(OrderError::CartInCheckout);
        }
        let lines = self.price(&cart.lines).await?;
        let amounts: Vec<(i64, i64)> = lines
            .iter()
            .map(|line| (line.unit_price.amount, line.quantity))
            .collect();
        let totals = domain::totals(&amounts, &self.currency, &self.pricing)
            .ok_or_else(|| anyhow::anyhow!("order totals overflow"))?;
        let order = Order {
            id: emporium_platform::id::new_id(),
            customer_id: customer_id.to_owned(),
            status: OrderStatus::Pending,
            lines,
            totals,
            customer: valid.customer.clone(),
            payment: PaymentSummary {
                brand: valid.card.brand.to_owned(),
                last4: valid.card.last4.clone(),
                status: PaymentStatus::NotAuthorized,
                authorization_id: None,
            },
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let stored = StoredOrder {
            order,
            step: Step::ClaimCart,
            cart_id: valid.cart_id.clone(),
            cart_version: cart.version,
        };
        let events = self.status_events(None, &stored)?;
        let recorded = match &previous {
            None => {
                self.repository
                    .create(&stored, key, &request_hash, now, &events)
                    .await
            }
            Some(previous) => {
                self.repository
                    .retake(&stored, key, &request_hash, previous, now, &events)
                    .await
            }
        };
        match recorded {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::KeyTaken) => {
                // A concurrent request with this key won; answer as its repeat.
                let record = self
                    .repository
                    .idempotency(customer_id, key)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("idempotency record vanished"))?;
                return self
                    .replay(&record.order_id, &record.request_hash, &request_hash)
                    .await;
            }
            Err(WriteError::Changed) => return Err(anyhow::anyhow!("new order id in use").into()),
            Err(WriteError::Storage(error)) => return Err(error.into()),
        }
        tracing::info!(order_id = stored.id(), "checkout started");
        let done = match self.drive(stored, Some(&valid.card)).await {
            Ok(done) => done,
            Err(error) => {
                let reason = match &error {
                    OrderError::Interrupted(_) => "interrupted",
                    _ => "error",
                };
                self.outcomes
                    .get_or_create(&Outcome {
                        by: "checkout",
                        status: "pending",
                        reason: reason.to_owned(),
                    })
                    .inc();
                return Err(error);
            }
        };
        self.outcomes
            .get_or_create(&Outcome::of("checkout", &done.order))
            .inc();
        Ok(Placement {
            order: done.order,
            replayed: false,
        })
    }

    /// The order lines at the catalog's current prices.
    async fn price(
        &self,
        cart_lines: &[emporium_api::cart::CartLine],
    ) -> Result<Vec<OrderLine>, OrderError> {
        let lookups = cart_lines
            .iter()
            .map(|line| self.catalog.product(&line.product_id));
        let found = futures::future::join_all(lookups).await;
        let mut lines = Vec::with_capacity(cart_lines.len());
        let mut gone = Vec::new();
        for (cart_line, product) in cart_lines.iter().zip(found) {
            let product = match product {
                Ok(product) => product,
                Err(error) if error.is_not_found() => {
                    gone.push(cart_line.product_id.clone());
                    continue;
                }
                Err(error) => return Err(unavailable("catalog", error)),
            };
            if product.price.currency != self.currency {
                return Err(anyhow::anyhow!(
                    "product {} is not priced in {}",
                    product.id,
                    self.currency
                )
                .into());
            }
            let amount = product
                .price
                .amount
                .checked_mul(cart_line.quantity)
                .ok_or_else(|| anyhow::anyhow!("line total overflows"))?;
            lines.push(OrderLine {
                product_id: product.id,
                sku: product.sku,
                name: product.name,
                unit_price: product.price.clone(),
                quantity: cart_line.quantity,
                line_total: Money::new(amount, product.price.currency),
            });
        }
        if gone.is_empty() {
            Ok(lines)
        } else {
            Err(OrderError::ProductUnavailable(gone))
        }
    }

    /// Whether a repeat of the request that made `order` is a new try: the order ended without
    /// charging, for a reason that may pass (`saga::may_pass`), and has given back all it held
    /// (tidied now if a dependency kept that from happening before), so a new try finds the
    /// stock and the cart free.
    async fn may_try_again(&self, order: &Order) -> Result<bool, OrderError> {
        let passing = order
            .failure
            .as_ref()
            .is_some_and(|failure| saga::may_pass(&failure.code));
        if !passing || order.payment.status == PaymentStatus::Authorized {
            return Ok(false);
        }
        let Some(stored) = self.repository.order(&order.id).await? else {
            return Ok(false);
        };
        let tidied = match stored.step {
            Step::Done => stored,
            _ => self.drive(stored, None).await?,
        };
        Ok(tidied.step == Step::Done)
    }

    /// The answer to a repeated request: the first request's order, once its checkout is over.
    async fn replay(
        &self,
        order_id: &str,
        first_hash: &str,
        hash: &str,
    ) -> Result<Placement, OrderError> {
        if first_hash != hash {
            return Err(OrderError::IdempotencyKeyReused);
        }
        let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
        loop {
            let stored = self.repository.order(order_id).await?.ok_or_else(|| {
                anyhow::anyhow!("order {order_id} of an idempotency key is missing")
            })?;
            if stored.order.status != OrderStatus::Pending
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(Placement {
                    order: stored.order,
                    replayed: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    // === Reading and cancelling ===

    async fn own(&self, customer_id: Option<&str>, id: &str) -> Result<StoredOrder, OrderError> {
        let customer_id = customer_id
            .filter(|c| domain::is_customer_id(c))
            .ok_or(OrderError::CustomerRequired)?;
        if !emporium_platform::id::is_valid(id) {
            return Err(OrderError::OrderNotFound);
        }
        match self.repository.order(id).await? {
            // Another customer's order is reported as missing, not forbidden: its existence is
            // none of this customer's business.
            Some(stored) if stored.order.customer_id == customer_id => Ok(stored),
            _ => Err(OrderError::OrderNotFound),
        }
    }

    pub async fn order(&self, customer_id: Option<&str>, id: &str) -> Result<Order, OrderError> {
        Ok(self.own(customer_id, id).await?.order)
    }

    pub async fn orders(
        &self,
        customer_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<OrderPage, OrderError> {
        let customer_id = customer_id
            .filter(|c| domain::is_customer_id(c))
            .ok_or(OrderError::CustomerRequired)?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(OrderError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let scope = format!("orders:{customer_id}");
        let after = match cursor {
            None | Some("") => None,
            Some(token) => Some(cursor_from_token(token, &scope)?),
        };
        let (orders, next) = self
            .repository
            .customer_orders(customer_id, after, limit as usize)
            .await?;
        Ok(OrderPage {
            items: orders.into_iter().map(|stored| stored.order).collect(),
            next_cursor: next.map(|cursor| page_token(&cursor, &scope)),
        })
    }

    /// Cancels a confirmed order: its stock returns and its payment is voided. Cancelling a
    /// cancelled order changes nothing.
    pub async fn cancel(&self, customer_id: Option<&str>, id: &str) -> Result<Order, OrderError> {
        for _ in 0..3 {
            let stored = self.own(customer_id, id).await?;
            match stored.order.status {
                OrderStatus::Cancelled => return Ok(stored.order),
                OrderStatus::Pending => {
                    return Err(OrderError::NotCancellable(
                        "the checkout is still in progress",
                    ));
                }
                OrderStatus::Failed => {
                    return Err(OrderError::NotCancellable(
                        "the checkout failed; there is nothing to cancel",
                    ));
                }
                OrderStatus::Confirmed => {}
            }
            let next = moved(&stored, &StepOutcome::CancelledByCustomer)?;
            let events = self.status_events(Some(stored.order.status), &next)?;
            match self
                .repository
                .advance(&next, stored.step, stored.order.status, &events)
                .await
            {
                Ok(()) => {
                    self.outbox.committed(events);
                    return Ok(self.drive(next, None).await?.order);
                }
                Err(WriteError::Changed) => continue,
                Err(WriteError::Storage(error)) => return Err(error.into()),
                Err(WriteError::KeyTaken) => {
                    return Err(anyhow::anyhow!("unexpected key claim").into());
                }
            }
        }
        Err(anyhow::anyhow!("order {id} kept changing during cancel").into())
    }
}
