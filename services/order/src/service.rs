//! Placing, reading and cancelling orders, and the checkout saga behind them.
//!
//! Placing an order first checks everything that can be checked without writing: the customer,
//! the idempotency key (a repeat returns the first request's order), the body, the cart (it must
//! exist, hold lines and not be in another checkout) and the products (each must still be sold;
//! its current catalog price is the price). A request rejected there writes nothing. Then the
//! order is recorded as PENDING together with its idempotency key, and the saga drives it:
//!
//! ```text
//! ClaimCart ──► Reserve ──► Authorize ──► Commit ──► ClearCart ──► Done         (CONFIRMED)
//!    │             │            │
//!    │             │ short      └─ declined ──► Release ──► ReleaseCart ──► Done (FAILED)
//!    │             └──────────────────────────────────────► ReleaseCart ──► Done (FAILED)
//!    └─ held by another order, or the cart changed ───────────────────────► Done (FAILED)
//! ```
//!
//! The claim is what makes one cart one order: the cart service records the order on the cart
//! on the condition that the cart is still at the version this order priced and that no other
//! order holds it, so two checkouts of one cart at once (two tabs, a double tap that makes two
//! keys) cannot both reserve and charge; the second is refused with `cart_in_checkout`. Clearing
//! takes out exactly the units claimed, so a line added while the checkout ran stays in the cart;
//! every failure ends the claim and keeps the lines.
//!
//! Each step's outcome is written before the next call to another service (see `repository`),
//! so a crash leaves the order at a known step, and the reconciler, which takes over orders that
//! have not moved for a while, picks up from there: before payment it cancels, releases the
//! stock and the cart (the card was never stored, so it cannot pay); after payment it commits
//! and clears the cart. Three steps are carried in memory instead of written, because their
//! writes were a quarter of a checkout's cost (docs/BENCHMARKS.md) and redoing what follows them
//! is safe: ClaimCart and Authorize (a crash before the Commit write leaves the order at
//! ClaimCart, which the reconciler cancels, releasing a stock hold and a claim that may exist)
//! and ClearCart (a crash before the Done write leaves the order at Commit, and committing and
//! clearing again change nothing). A successful checkout writes three times: ClaimCart with the
//! idempotency key, Commit (confirmed), Done. Steps that only tidy up (commit, clear, release,
//! return, releasing the cart) are idempotent and retried until they succeed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use emporium_api::client::{CartClient, CatalogClient, ClientError, InventoryClient};
use emporium_api::inventory::{NewReservation, ReservationLine, ReservationStatus};
use emporium_api::order::{
    Order, OrderFailure, OrderLine, OrderPage, OrderStatus, PaymentStatus, PaymentSummary,
    PlaceOrder,
};
use emporium_api::{Money, ProblemCode, ProblemMembers};
use emporium_platform::request_id::past_deadline;
use emporium_ports::storage::{Storage, cursor_from_token, page_token};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::domain::{self, Pricing, ValidCard, ValidOrder};
use crate::error::OrderError;
use crate::payment::{Decision, SimulatedProvider};
use crate::repository::{Repository, Step, StoredOrder, WriteError};

const DEFAULT_PAGE: u32 = 10;
const MAX_PAGE: u32 = 50;
/// How long a repeated request waits for the first one's checkout to finish.
const REPLAY_WAIT: Duration = Duration::from_secs(10);
/// Open orders the reconciler looks at per round.
const RECONCILE_BATCH: usize = 100;

/// What a fault switch does when the saga reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The step fails; the saga compensates as for any failure.
    Fail,
    /// The process "dies": the saga stops where it is, leaving the order to the reconciler.
    Crash,
}

#[derive(Debug, Default, Clone, Copy)]
struct FaultPlan {
    delay_before_reserve: Option<Duration>,
    after_reserve: Option<FaultAction>,
    after_authorize: Option<FaultAction>,
}

/// Fault switches for practising failures (off unless set).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    plan: Arc<Mutex<FaultPlan>>,
}

impl Faults {
    fn with(&self, change: impl FnOnce(&mut FaultPlan)) {
        let mut plan = self
            .plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut plan);
    }

    fn get(&self) -> FaultPlan {
        *self
            .plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Latency added before a checkout asks for its stock, as if the inventory were slow.
    pub fn delay_before_reserve(&self, delay: Option<Duration>) {
        self.with(|plan| plan.delay_before_reserve = delay);
    }

    /// What happens right after the stock is reserved.
    pub fn after_reserve(&self, action: Option<FaultAction>) {
        self.with(|plan| plan.after_reserve = action);
    }

    /// What happens right after the payment is authorised.
    pub fn after_authorize(&self, action: Option<FaultAction>) {
        self.with(|plan| plan.after_authorize = action);
    }
}

/// The outcome of placing an order.
#[derive(Debug, Clone)]
pub struct Placement {
    pub order: Order,
    /// True when the request repeated an earlier one (same idempotency key).
    pub replayed: bool,
}

pub struct Orders {
    repository: Repository,
    catalog: CatalogClient,
    inventory: InventoryClient,
    carts: CartClient,
    payments: SimulatedProvider,
    pricing: Pricing,
    currency: String,
    reservation_ttl_secs: u64,
    faults: Faults,
    outcomes: Family<Outcome, Counter>,
}

/// Labels of a finished checkout or reconciliation: the order's status and, when it failed or
/// was cancelled, the failure code (a fixed set, so the series stay few).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `checkout` (the customer's request) or `reconciler`.
    pub by: &'static str,
    pub status: &'static str,
    pub reason: String,
}

impl Outcome {
    fn of(by: &'static str, order: &Order) -> Self {
        let status = match order.status {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        };
        let reason = order
            .failure
            .as_ref()
            .map_or_else(|| "none".to_owned(), |failure| failure.code.to_string());
        Self { by, status, reason }
    }
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

fn failure(code: ProblemCode, message: &str) -> OrderFailure {
    OrderFailure {
        code,
        message: message.to_owned(),
        skus: Vec::new(),
        decline_code: None,
    }
}

/// `stored` moved to `step` (and changed by `change`), stamped now.
fn moved(stored: &StoredOrder, step: Step, change: impl FnOnce(&mut Order)) -> StoredOrder {
    let mut next = stored.clone();
    next.step = step;
    change(&mut next.order);
    next.order.updated_at = OffsetDateTime::now_utc();
    next
}

impl Orders {
    pub fn new(
        storage: Arc<dyn Storage>,
        dependencies: Dependencies,
        pricing: Pricing,
        currency: &str,
        reservation_ttl_secs: u64,
        faults: Faults,
    ) -> Self {
        Self {
            repository: Repository::new(storage),
            catalog: dependencies.catalog,
            inventory: dependencies.inventory,
            carts: dependencies.carts,
            payments: SimulatedProvider,
            pricing,
            currency: currency.to_owned(),
            reservation_ttl_secs,
            faults,
            outcomes: Family::default(),
        }
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

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    // === Placing ===

    pub async fn place(
        &self,
        customer_id: Option<&str>,
        idempotency_key: Option<&str>,
        input: &PlaceOrder,
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
        if let Some(record) = self.repository.idempotency(customer_id, key).await? {
            return self
                .replay(&record.order_id, &record.request_hash, &request_hash)
                .await;
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
        match self
            .repository
            .create(&stored, key, &request_hash, now)
            .await
        {
            Ok(()) => {}
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

    // === The saga ===

    /// Advances `stored` step by step until it is done or a step must wait (a dependency that
    /// does not answer: the reconciler retries later). `card` is known only during the checkout
    /// request; without it, an unpaid order is cancelled.
    pub async fn drive(
        &self,
        mut stored: StoredOrder,
        card: Option<&ValidCard>,
    ) -> Result<StoredOrder, OrderError> {
        // The step the store holds; `stored` runs one carried step ahead of it at times.
        let mut written = stored.step;
        loop {
            let from = stored.step;
            if from == Step::Done {
                return Ok(stored);
            }
            // A span per step, so a checkout's trace shows where its time went and how each
            // step ended.
            let span = if emporium_platform::telemetry::traced_here() {
                tracing::info_span!(
                    "saga step",
                    otel.name = %format!("saga {from:?}"),
                    order.id = %stored.id(),
                    saga.step = ?from,
                    saga.result = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            let next = self.step(&stored, card).instrument(span.clone()).await;
            if !span.is_disabled() {
                let result = next
                    .as_ref()
                    .map_or_else(|| "deferred".to_owned(), |n| format!("{:?}", n.step));
                span.record("saga.result", result.as_str());
            }
            let Some(mut next) = next else {
                // A dependency did not answer; the order stays at its written step for the
                // reconciler.
                return Ok(stored);
            };
            let fault = match (from, next.step) {
                (Step::Reserve, Step::Authorize) => self.faults.get().after_reserve,
                (Step::Authorize, Step::Commit) => self.faults.get().after_authorize,
                _ => None,
            };
            if fault == Some(FaultAction::Fail) {
                next = moved(&next, Step::Release, |order| {
                    order.status = OrderStatus::Failed;
                    order.payment.status = match order.payment.status {
                        PaymentStatus::Authorized => PaymentStatus::Voided,
                        other => other,
                    };
                    order.failure = Some(failure(
                        ProblemCode::InjectedFault,
                        "a fault was injected into the checkout",
                    ));
                });
            }
            if is_carried(from, next.step) {
                if fault == Some(FaultAction::Crash) {
                    return Err(OrderError::Interrupted(stored.id().to_owned()));
                }
                stored = next;
                continue;
            }
            match self.repository.advance(&next, written).await {
                Ok(()) => {
                    tracing::info!(order_id = next.id(), from = ?written, to = ?next.step, status = ?next.order.status, "checkout step");
                    stored = next;
                    written = stored.step;
                }
                Err(WriteError::Changed) => {
                    // Another actor moved the order; carry on from where it is now.
                    // Only the checkout itself (it has the card) reserves, and it holds stock
                    // when it got as far as committing or releasing it.
                    let may_hold = matches!(written, Step::ClaimCart | Step::Reserve)
                        && card.is_some()
                        && matches!(next.step, Step::Commit | Step::Release);
                    stored = self
                        .repository
                        .order(stored.id())
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
                    written = stored.step;
                    if may_hold && matches!(stored.step, Step::ReleaseCart | Step::Done) {
                        // The order was closed (by the reconciler) while this checkout's
                        // reservation was on its way: nothing will ever use that stock, so give
                        // it back now rather than when the reservation expires.
                        if let Err(error) = self.inventory.release(stored.id()).await {
                            tracing::warn!(order_id = stored.id(), %error, "releasing a late reservation failed; it expires by itself");
                        }
                    }
                    continue;
                }
                Err(WriteError::KeyTaken) => {
                    return Err(anyhow::anyhow!("unexpected key claim").into());
                }
                Err(WriteError::Storage(error)) => return Err(error.into()),
            }
            if fault == Some(FaultAction::Crash) {
                return Err(OrderError::Interrupted(stored.id().to_owned()));
            }
        }
    }

    /// Runs the step `stored` is at; `None` when a dependency did not answer.
    async fn step(&self, stored: &StoredOrder, card: Option<&ValidCard>) -> Option<StoredOrder> {
        match stored.step {
            // The saga stops before a done order; nothing to run.
            Step::Done => None,
            Step::ClaimCart | Step::Reserve | Step::Authorize if card.is_none() => {
                Some(abandon(stored))
            }
            Step::ClaimCart => Some(self.claim_cart(stored).await),
            Step::Reserve => {
                if let Some(delay) = self.faults.get().delay_before_reserve {
                    tokio::time::sleep(delay).await;
                }
                Some(self.reserve(stored).await)
            }
            Step::Authorize => Some(self.authorize(stored, card)),
            Step::Confirm => Some(moved(stored, Step::Commit, |order| {
                order.status = OrderStatus::Confirmed;
            })),
            // Once the outcome is decided, the rest is owed whether or not the caller still
            // waits: finished now, a failed checkout's stock and cart are free at once, rather
            // than after the reconciler's grace.
            Step::Commit => past_deadline(self.commit(stored)).await,
            Step::ClearCart => past_deadline(self.clear_cart(stored)).await,
            Step::Release => past_deadline(self.release(stored)).await,
            Step::Return => past_deadline(self.return_stock(stored)).await,
            Step::ReleaseCart => past_deadline(self.release_cart(stored)).await,
        }
    }

    /// Claims the cart at the version this order priced, so no other checkout of it runs.
    async fn claim_cart(&self, stored: &StoredOrder) -> StoredOrder {
        let refused = |code: ProblemCode, message: &str| {
            moved(stored, Step::Done, |order| {
                order.status = OrderStatus::Failed;
                order.failure = Some(failure(code, message));
            })
        };
        match self
            .carts
            .claim(&stored.cart_id, stored.id(), stored.cart_version)
            .await
        {
            Ok(_) => moved(stored, Step::Reserve, |_| {}),
            // Nothing was claimed in these cases, so nothing is left to release.
            Err(error) if error.is(&ProblemCode::CartInCheckout) => refused(
                ProblemCode::CartInCheckout,
                "this cart is already being checked out; nothing was charged, see your orders",
            ),
            Err(error) if error.is(&ProblemCode::CartChanged) => refused(
                ProblemCode::CartChanged,
                "the cart changed during checkout; nothing was charged, review it and try again",
            ),
            Err(error) if error.is(&ProblemCode::CartBusy) => refused(
                ProblemCode::CartBusy,
                "the cart was changing during checkout; nothing was charged, try again",
            ),
            Err(error) if error.is_not_found() => refused(
                ProblemCode::CartNotFound,
                "the cart does not exist or expired; nothing was charged",
            ),
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "claiming the cart failed");
                // The claim may have been made although no answer came back: end it to be sure.
                moved(stored, Step::ReleaseCart, |order| {
                    order.status = OrderStatus::Failed;
                    order.failure = Some(failure(
                        ProblemCode::CartUnavailable,
                        "the cart could not be read; nothing was charged, try again shortly",
                    ));
                })
            }
        }
    }

    /// Ends the order's claim on its cart; the lines stay.
    async fn release_cart(&self, stored: &StoredOrder) -> Option<StoredOrder> {
        self.unclaim_cart(stored)
            .await
            .then(|| moved(stored, Step::Done, |_| {}))
    }

    /// Whether the order no longer holds a claim on its cart (ended now, or before).
    async fn unclaim_cart(&self, stored: &StoredOrder) -> bool {
        match self
            .carts
            .release_checkout(&stored.cart_id, stored.id())
            .await
        {
            Ok(_) => true,
            // An expired cart holds no claim.
            Err(error) if error.is_not_found() => true,
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "releasing the cart deferred");
                false
            }
        }
    }

    async fn reserve(&self, stored: &StoredOrder) -> StoredOrder {
        let request = NewReservation {
            id: stored.order.id.clone(),
            lines: stored
                .order
                .lines
                .iter()
                .map(|line| ReservationLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                })
                .collect(),
            ttl_seconds: Some(self.reservation_ttl_secs),
        };
        match self.inventory.reserve(&request).await {
            Ok(reservation) if reservation.status == ReservationStatus::Held => {
                moved(stored, Step::Authorize, |_| {})
            }
            Ok(_) => moved(stored, Step::Release, |order| {
                order.status = OrderStatus::Failed;
                order.failure = Some(failure(
                    ProblemCode::InventoryUnavailable,
                    "the stock hold ended before payment",
                ));
            }),
            Err(error) if error.is(&ProblemCode::OutOfStock) => {
                let skus = error
                    .problem()
                    .map(|problem| problem.short().into_iter().map(|s| s.sku).collect())
                    .unwrap_or_default();
                moved(stored, Step::ReleaseCart, |order| {
                    order.status = OrderStatus::Failed;
                    order.failure = Some(OrderFailure {
                        skus,
                        ..failure(ProblemCode::OutOfStock, "some items are out of stock")
                    });
                })
            }
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "reservation failed");
                // The hold may exist even though no answer came back: release to be sure.
                moved(stored, Step::Release, |order| {
                    order.status = OrderStatus::Failed;
                    order.failure = Some(failure(
                        ProblemCode::InventoryUnavailable,
                        "stock could not be checked; nothing was charged, try again shortly",
                    ));
                })
            }
        }
    }

    fn authorize(&self, stored: &StoredOrder, card: Option<&ValidCard>) -> StoredOrder {
        let Some(card) = card else {
            return abandon(stored);
        };
        match self.payments.authorize(&stored.order.id, card) {
            // Authorized is confirmed: one write for both, the saga's heaviest cost being its
            // writes (docs/BENCHMARKS.md). `Step::Confirm` remains for orders stored before.
            Decision::Approved { authorization_id } => moved(stored, Step::Commit, |order| {
                order.payment.status = PaymentStatus::Authorized;
                order.payment.authorization_id = Some(authorization_id);
                order.status = OrderStatus::Confirmed;
            }),
            Decision::Declined { code, message } => moved(stored, Step::Release, |order| {
                order.status = OrderStatus::Failed;
                order.payment.status = PaymentStatus::Declined;
                order.failure = Some(OrderFailure {
                    decline_code: Some(code),
                    ..failure(ProblemCode::PaymentDeclined, message)
                });
            }),
        }
    }

    async fn commit(&self, stored: &StoredOrder) -> Option<StoredOrder> {
        match self.inventory.commit(stored.id()).await {
            Ok(_) => Some(moved(stored, Step::ClearCart, |_| {})),
            Err(error)
                if error.is(&ProblemCode::ReservationExpired)
                    || error.is(&ProblemCode::ReservationReleased)
                    || error.is_not_found() =>
            {
                tracing::error!(order_id = stored.id(), %error, "the stock hold of a confirmed order is gone; cancelling it");
                Some(moved(stored, Step::ReleaseCart, |order| {
                    order.status = OrderStatus::Cancelled;
                    order.payment.status = PaymentStatus::Voided;
                    order.failure = Some(failure(
                        ProblemCode::StockLost,
                        "the stock hold expired before the order was completed; nothing was charged",
                    ));
                }))
            }
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "commit deferred");
                None
            }
        }
    }

    /// Takes the units this order bought out of its cart and ends its claim.
    async fn clear_cart(&self, stored: &StoredOrder) -> Option<StoredOrder> {
        match self
            .carts
            .complete_checkout(&stored.cart_id, stored.id())
            .await
        {
            Ok(_) => Some(moved(stored, Step::Done, |_| {})),
            Err(error) if error.is_not_found() => Some(moved(stored, Step::Done, |_| {})),
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "clearing the cart deferred");
                None
            }
        }
    }

    /// Gives back held stock and, at the same time, ends the cart claim: the order will never
    /// charge, so its cart is free for the next try even while the inventory cannot be reached.
    async fn release(&self, stored: &StoredOrder) -> Option<StoredOrder> {
        let (stock, cart) = tokio::join!(
            self.inventory.release(stored.id()),
            self.unclaim_cart(stored)
        );
        let after = if cart { Step::Done } else { Step::ReleaseCart };
        match stock {
            Ok(_) => Some(moved(stored, after, |_| {})),
            Err(error)
                if error.is_not_found()
                    || error.is(&ProblemCode::ReservationReleased)
                    || error.is(&ProblemCode::ReservationExpired) =>
            {
                Some(moved(stored, after, |_| {}))
            }
            Err(error) if error.is(&ProblemCode::ReservationCommitted) => {
                Some(moved(stored, Step::Return, |_| {}))
            }
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "release deferred");
                None
            }
        }
    }

    /// Returns sold stock and ends the cart claim, as [`Self::release`] does for held stock. A
    /// confirmed order cancelled before its cart was cleared still holds its claim; the cart
    /// keeps its lines.
    async fn return_stock(&self, stored: &StoredOrder) -> Option<StoredOrder> {
        let (stock, cart) = tokio::join!(
            self.inventory.return_stock(stored.id()),
            self.unclaim_cart(stored)
        );
        let after = if cart { Step::Done } else { Step::ReleaseCart };
        match stock {
            Ok(_) => Some(moved(stored, after, |_| {})),
            Err(error) if error.is_not_found() => Some(moved(stored, after, |_| {})),
            // Cancelled before its stock was sold: the hold is released instead.
            Err(error) if error.is(&ProblemCode::ReservationNotCommitted) => {
                Some(moved(stored, Step::Release, |_| {}))
            }
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "return deferred");
                None
            }
        }
    }

    /// Finishes or undoes checkouts that have not moved for `grace`; returns how many it looked at.
    pub async fn reconcile(&self, grace: Duration) -> Result<usize, OrderError> {
        let open = self.repository.open_orders(RECONCILE_BATCH).await?;
        let cutoff = OffsetDateTime::now_utc() - grace;
        let mut handled = 0;
        for stored in open {
            if stored.order.updated_at > cutoff {
                // Oldest first: the rest are younger still.
                break;
            }
            let id = stored.id().to_owned();
            // One trace per order the reconciler finishes, its steps below.
            let span =
                tracing::info_span!("reconcile", otel.name = "reconcile order", order.id = %id);
            match self.drive(stored, None).instrument(span).await {
                Ok(done) => {
                    handled += 1;
                    self.outcomes
                        .get_or_create(&Outcome::of("reconciler", &done.order))
                        .inc();
                    tracing::info!(order_id = %id, status = ?done.order.status, step = ?done.step, "reconciled");
                }
                Err(error) => {
                    tracing::warn!(order_id = %id, %error, "reconciling failed; will retry")
                }
            }
        }
        Ok(handled)
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
            let next = moved(&stored, Step::Return, |order| {
                order.status = OrderStatus::Cancelled;
                order.payment.status = PaymentStatus::Voided;
                order.failure = Some(failure(
                    ProblemCode::CancelledByCustomer,
                    "the customer cancelled the order",
                ));
            });
            match self.repository.advance(&next, stored.step).await {
                Ok(()) => return Ok(self.drive(next, None).await?.order),
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

/// Whether the move from `from` to `to` stays in memory, written only with the step after it
/// (see the module's notes for why each is safe to redo after a crash).
fn is_carried(from: Step, to: Step) -> bool {
    matches!(
        (from, to),
        (Step::ClaimCart, Step::Reserve)
            | (Step::Reserve, Step::Authorize)
            | (Step::Commit, Step::ClearCart)
    )
}

/// A checkout that stopped before payment: nothing was charged, any held stock goes back.
fn abandon(stored: &StoredOrder) -> StoredOrder {
    moved(stored, Step::Release, |order| {
        order.status = OrderStatus::Cancelled;
        order.failure = Some(failure(
            ProblemCode::CheckoutInterrupted,
            "the checkout stopped before payment; nothing was charged",
        ));
    })
}
