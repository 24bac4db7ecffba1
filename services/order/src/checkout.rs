//! The saga's driver: runs the step an order is at against the other services, names what came
//! of it ([`StepOutcome`]), moves the order as [`saga::next`] says and writes it.
//!
//! Each step's outcome is written before the next call to another service (see `repository`),
//! so a crash leaves the order at a known step, and the reconciler picks up from there. Three
//! moves are carried in memory instead of written ([`saga::is_carried`]), because their writes
//! were a quarter of a checkout's cost (docs/BENCHMARKS.md) and redoing what follows them is
//! safe; a successful checkout writes twice: ClaimCart with the idempotency key, then Done
//! (confirmed) with its `order.confirmed` event, whose consumers sell the stock and clear the
//! cart. Steps that only tidy up (commit, clear, release, return, releasing the
//! cart) are idempotent, retried until they succeed, and finished even once the caller has
//! stopped waiting.

use emporium_api::ProblemCode;
use emporium_api::ProblemMembers as _;
use emporium_api::inventory::{NewReservation, ReservationLine, ReservationStatus};
use emporium_platform::request_id::past_deadline;
use tracing::Instrument;

use crate::domain::ValidCard;
use crate::error::OrderError;
use crate::hooks::FaultAction;
use crate::payment::Decision;
use crate::repository::{Step, StoredOrder, WriteError};
use crate::saga::{self, ClaimRefusal, StepOutcome};
use crate::service::Orders;
use emporium_api::order::OrderStatus;

/// How a write of the next step went.
enum Persisted {
    /// The order is stored at its new step.
    Written(StoredOrder),
    /// Another actor had moved the order: here it is, as stored now.
    Overtaken(StoredOrder),
}

impl Orders {
    /// Advances `stored` step by step until it is done or a step must wait (a dependency that
    /// does not answer: the reconciler retries later). `card` is known only during the checkout
    /// request; without it, an unpaid order is cancelled.
    pub async fn drive(
        &self,
        mut stored: StoredOrder,
        card: Option<&ValidCard>,
    ) -> Result<StoredOrder, OrderError> {
        // The step and status the store holds; `stored` runs one carried step ahead of it at
        // times.
        let mut written = stored.step;
        let mut written_status = stored.order.status;
        while stored.step != Step::Done {
            let from = stored.step;
            let Some(mut next) = self.run_traced(&stored, card).await? else {
                // A dependency did not answer; the order stays at its written step.
                return Ok(stored);
            };
            let fault = self.fault_after(from, next.step);
            if fault == Some(FaultAction::Fail) {
                // Failed from Authorize, with what the step did (a payment made is voided).
                next.step = Step::Authorize;
                next = moved(&next, &StepOutcome::Injected)?;
            }
            let crash = fault == Some(FaultAction::Crash);
            if saga::is_carried(from, next.step) {
                if crash {
                    return Err(OrderError::Interrupted(stored.id().to_owned()));
                }
                stored = next;
                continue;
            }
            match self.persist(next, written, written_status, card).await? {
                Persisted::Written(now) => stored = now,
                Persisted::Overtaken(now) => {
                    // Carry on from where the other actor left it.
                    written = now.step;
                    written_status = now.order.status;
                    stored = now;
                    continue;
                }
            }
            written = stored.step;
            written_status = stored.order.status;
            if crash {
                return Err(OrderError::Interrupted(stored.id().to_owned()));
            }
        }
        Ok(stored)
    }

    /// The fault switched on for the step that just succeeded (reserving, or paying).
    fn fault_after(&self, from: Step, to: Step) -> Option<FaultAction> {
        let succeeded = matches!(
            (from, to),
            (Step::Reserve, Step::Authorize) | (Step::Authorize, Step::Done)
        );
        succeeded.then(|| self.hooks.after(from)).flatten()
    }

    /// Runs the step in a span of its own, so a checkout's trace shows where its time went and
    /// how each step ended; the order moved, or `None` when a dependency did not answer.
    async fn run_traced(
        &self,
        stored: &StoredOrder,
        card: Option<&ValidCard>,
    ) -> Result<Option<StoredOrder>, OrderError> {
        let from = stored.step;
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
        let outcome = self.run(stored, card).instrument(span.clone()).await;
        let next = outcome.map(|outcome| moved(stored, &outcome)).transpose()?;
        if !span.is_disabled() {
            let result = next
                .as_ref()
                .map_or_else(|| "deferred".to_owned(), |n| format!("{:?}", n.step));
            span.record("saga.result", result.as_str());
        }
        Ok(next)
    }

    /// Runs the step `stored` is at; `None` when a dependency did not answer.
    async fn run(&self, stored: &StoredOrder, card: Option<&ValidCard>) -> Option<StepOutcome> {
        match (stored.step, card) {
            // The saga stops before a done order; nothing to run.
            (Step::Done, _) => None,
            // Only the checkout request has the card; without it the order cannot be paid
            // (only ClaimCart is ever stored before payment: the saga says so).
            (Step::ClaimCart | Step::Reserve | Step::Authorize, None) => Some(StepOutcome::NoCard),
            (Step::ClaimCart, Some(_)) => Some(self.claim_cart(stored).await),
            (Step::Reserve, Some(_)) => {
                if let Some(delay) = self.hooks.before_reserve() {
                    tokio::time::sleep(delay).await;
                }
                Some(self.reserve(stored).await)
            }
            (Step::Authorize, Some(card)) => Some(self.authorize(stored, card)),
            // Stored by an earlier version: `order.confirmed`'s consumers do the rest.
            (Step::Commit | Step::ClearCart, _) => Some(StepOutcome::HandedOver),
            // Once the outcome is decided, the rest is owed whether or not the caller still
            // waits: finished now, a failed checkout's stock and cart are free at once, rather
            // than after the reconciler's grace.
            (Step::Release, _) => past_deadline(self.release(stored)).await,
            (Step::Return, _) => past_deadline(self.return_stock(stored)).await,
            (Step::ReleaseCart, _) => past_deadline(self.release_cart(stored)).await,
        }
    }

    /// Writes `next` over the order stored at `written` with status `written_status`, with the
    /// event of its new status when it has one.
    async fn persist(
        &self,
        next: StoredOrder,
        written: Step,
        written_status: OrderStatus,
        card: Option<&ValidCard>,
    ) -> Result<Persisted, OrderError> {
        // An order handed over from an earlier version's steps announces its confirmation,
        // which nothing had told the consumers.
        let before = (!matches!(written, Step::Commit | Step::ClearCart)).then_some(written_status);
        let events = self.status_events(before, &next)?;
        match self
            .repository
            .advance(&next, written, written_status, &events)
            .await
        {
            Ok(()) => {
                self.outbox.committed(events);
                tracing::info!(order_id = next.id(), from = ?written, to = ?next.step, status = ?next.order.status, "checkout step");
                Ok(Persisted::Written(next))
            }
            Err(WriteError::Changed) => {
                // Only the checkout itself (it has the card) reserves, and it holds stock when
                // it got as far as committing or releasing it.
                let may_hold = matches!(written, Step::ClaimCart | Step::Reserve)
                    && card.is_some()
                    && (next.order.status == OrderStatus::Confirmed || next.step == Step::Release);
                let now = self
                    .repository
                    .order(next.id())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
                if may_hold && matches!(now.step, Step::ReleaseCart | Step::Done) {
                    // The order was closed (by the reconciler) while this checkout's
                    // reservation was on its way: nothing will ever use that stock, so give it
                    // back now rather than when the reservation expires.
                    if let Err(error) = self.inventory.release(now.id()).await {
                        tracing::warn!(order_id = now.id(), %error, "releasing a late reservation failed; it expires by itself");
                    }
                }
                Ok(Persisted::Overtaken(now))
            }
            Err(WriteError::KeyTaken) => Err(anyhow::anyhow!("unexpected key claim").into()),
            Err(WriteError::Storage(error)) => Err(error.into()),
        }
    }

    /// Claims the cart at the version this order priced, so no other checkout of it runs.
    async fn claim_cart(&self, stored: &StoredOrder) -> StepOutcome {
        let refused = StepOutcome::ClaimRefused;
        match self
            .carts
            .claim(&stored.cart_id, stored.id(), stored.cart_version)
            .await
        {
            Ok(_) => StepOutcome::Claimed,
            Err(error) if error.is(&ProblemCode::CartInCheckout) => {
                refused(ClaimRefusal::HeldByAnother)
            }
            Err(error) if error.is(&ProblemCode::CartChanged) => refused(ClaimRefusal::Changed),
            Err(error) if error.is(&ProblemCode::CartBusy) => refused(ClaimRefusal::Busy),
            Err(error) if error.is_not_found() => refused(ClaimRefusal::Gone),
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "claiming the cart failed");
                StepOutcome::ClaimUnknown
            }
        }
    }

    async fn reserve(&self, stored: &StoredOrder) -> StepOutcome {
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
            Ok(reservation) if reservation.status == ReservationStatus::Held => StepOutcome::Held,
            Ok(_) => StepOutcome::HoldEnded,
            Err(error) if error.is(&ProblemCode::OutOfStock) => StepOutcome::Short(
                error
                    .problem()
                    .map(|problem| problem.short().into_iter().map(|s| s.sku).collect())
                    .unwrap_or_default(),
            ),
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "reservation failed");
                StepOutcome::ReserveUnknown
            }
        }
    }

    fn authorize(&self, stored: &StoredOrder, card: &ValidCard) -> StepOutcome {
        match self.payments.authorize(&stored.order.id, card) {
            Decision::Approved { authorization_id } => StepOutcome::Approved { authorization_id },
            Decision::Declined { code, message } => StepOutcome::Declined {
                code,
                message: message.to_owned(),
            },
        }
    }

    /// Gives back held stock and, at the same time, ends the cart claim: the order will never
    /// charge, so its cart is free for the next try even while the inventory cannot be reached.
    async fn release(&self, stored: &StoredOrder) -> Option<StepOutcome> {
        let (stock, cart_freed) = tokio::join!(
            self.inventory.release(stored.id()),
            self.unclaim_cart(stored)
        );
        match stock {
            Ok(_) => Some(StepOutcome::Released { cart_freed }),
            Err(error)
                if error.is_not_found()
                    || error.is(&ProblemCode::ReservationReleased)
                    || error.is(&ProblemCode::ReservationExpired) =>
            {
                Some(StepOutcome::Released { cart_freed })
            }
            Err(error) if error.is(&ProblemCode::ReservationCommitted) => {
                Some(StepOutcome::AlreadySold)
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
    async fn return_stock(&self, stored: &StoredOrder) -> Option<StepOutcome> {
        let (stock, cart_freed) = tokio::join!(
            self.inventory.return_stock(stored.id()),
            self.unclaim_cart(stored)
        );
        match stock {
            Ok(_) => Some(StepOutcome::Returned { cart_freed }),
            Err(error) if error.is_not_found() => Some(StepOutcome::Returned { cart_freed }),
            // Cancelled before its stock was sold: the hold is released instead.
            Err(error) if error.is(&ProblemCode::ReservationNotCommitted) => {
                Some(StepOutcome::NotSold)
            }
            Err(error) => {
                tracing::warn!(order_id = stored.id(), %error, "return deferred");
                None
            }
        }
    }

    /// Ends the order's claim on its cart; the lines stay.
    async fn release_cart(&self, stored: &StoredOrder) -> Option<StepOutcome> {
        self.unclaim_cart(stored)
            .await
            .then_some(StepOutcome::CartFreed)
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
}

/// `stored` moved on `outcome` as the saga says.
pub(crate) fn moved(
    stored: &StoredOrder,
    outcome: &StepOutcome,
) -> Result<StoredOrder, OrderError> {
    let transition = saga::next(stored.step, outcome).map_err(anyhow::Error::from)?;
    Ok(saga::apply(stored, transition))
}
