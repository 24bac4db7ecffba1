//! The checkout saga's transitions, as a pure function: from the step an order is at and what
//! came of running it, the next step and what changes on the order. No I/O happens here; the
//! driver (`checkout.rs`) runs each step against the other services, names what came of it
//! and applies the transition this module gives, so every path through the saga is one row of
//! [`next`] and is tested as such.
//!
//! ```text
//! ClaimCart ──► Reserve ──► Authorize ──► Done                      (CONFIRMED, order.confirmed)
//!    │             │            │          └─ cancelled ──► Done    (CANCELLED, order.cancelled)
//!    │             │ short      └─ declined ──► Release ──► ReleaseCart ──► Done (FAILED)
//!    │             └──────────────────────────────────────► ReleaseCart ──► Done (FAILED)
//!    └─ held by another order, or the cart changed ───────────────────────► Done (FAILED)
//! ```
//!
//! A paid checkout ends with one write: the order confirmed and its `order.confirmed` event,
//! in the same transaction (the outbox). Selling the held stock and clearing the bought units
//! from the cart are the inventory's and the cart's consumers of that event
//! (docs/EVENTS.md, "Consumers"), and a cancellation's stock and cart claim go back through
//! `order.cancelled` the same way. A checkout that fails before payment still gives its hold
//! and its claim back itself, at once, so the shopper can try again straight away.
//!
//! Orders stored at `Commit` or `ClearCart` by a version before the events (where the order
//! service sold the stock and cleared the cart itself) are handed to the consumers: the move
//! to `Done` records their `order.confirmed` again.

use emporium_api::ProblemCode;
use emporium_api::order::{DeclineCode, Order, OrderFailure, OrderStatus, PaymentStatus};
use time::OffsetDateTime;

use crate::repository::{Step, StoredOrder};

/// Why the cart service refused a claim it did not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// Another order holds the cart.
    HeldByAnother,
    /// The cart is no longer at the version this order priced.
    Changed,
    /// The cart kept changing under the claim.
    Busy,
    /// The cart does not exist (or expired).
    Gone,
}

/// What came of running a step (a step whose dependency did not answer has no outcome: the
/// order waits at its step for a later run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// ClaimCart: the cart is this order's until the order ends.
    Claimed,
    /// ClaimCart: refused, and nothing was claimed.
    ClaimRefused(ClaimRefusal),
    /// ClaimCart: no answer came back, so the claim may exist.
    ClaimUnknown,
    /// ClaimCart, run without the card (by the reconciler or a cancel): the order can never be
    /// paid.
    NoCard,
    /// Reserve: the stock is held for the order.
    Held,
    /// Reserve: the reservation exists but holds nothing any more.
    HoldEnded,
    /// Reserve: not enough stock of these SKUs; nothing is held.
    Short(Vec<String>),
    /// Reserve: no answer came back, so a hold may exist.
    ReserveUnknown,
    /// Authorize: the provider approved the payment.
    Approved { authorization_id: String },
    /// Authorize: the provider declined it.
    Declined { code: DeclineCode, message: String },
    /// A fault switch failed the step that had just succeeded (after Reserve or Authorize).
    Injected,
    /// Commit or ClearCart (stored by an earlier version): the rest is the consumers' of
    /// `order.confirmed`.
    HandedOver,
    /// Release: no stock is held any more; `cart_freed` when the claim on the cart ended too.
    Released { cart_freed: bool },
    /// Release: the stock was sold already.
    AlreadySold,
    /// Return: the sold stock is back; `cart_freed` as for [`Self::Released`].
    Returned { cart_freed: bool },
    /// Return: the stock was never sold, only held.
    NotSold,
    /// ReleaseCart: the claim on the cart is ended.
    CartFreed,
    /// The customer cancels the confirmed order.
    CancelledByCustomer,
}

/// What a transition changes on the order besides its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// The checkout failed before payment, for this reason.
    Fail(Failure),
    /// The checkout stopped before payment and will never be paid.
    Abandon,
    /// Paid: the order is confirmed in the same write.
    Confirm {
        authorization_id: String,
    },
    /// The payment was declined.
    Decline {
        code: DeclineCode,
        message: String,
    },
    /// A fault switch failed the checkout; an authorised payment is voided.
    InjectFault,
    /// The customer cancelled: the payment is voided.
    CancelByCustomer,
}

/// Why a checkout failed before payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused(ClaimRefusal),
    CartUnavailable,
    HoldEnded,
    Short(Vec<String>),
    InventoryUnavailable,
}

/// The step to go to and what changes on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: Step,
    pub change: Change,
}

/// A step and an outcome that cannot meet: the step does not produce it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the checkout saga has no move from {step:?} on {outcome:?}")]
pub struct Impossible {
    pub step: Step,
    pub outcome: StepOutcome,
}

/// The saga: where an order at `step` goes on `outcome`.
pub fn next(step: Step, outcome: &StepOutcome) -> Result<Transition, Impossible> {
    use StepOutcome as O;
    let (to, change) = match (step, outcome) {
        (Step::ClaimCart, O::Claimed) => (Step::Reserve, Change::Nothing),
        // Nothing was claimed, so nothing is left to give back.
        (Step::ClaimCart, O::ClaimRefused(why)) => {
            (Step::Done, Change::Fail(Failure::Refused(*why)))
        }
        // The claim may have been made although no answer came back: end it to be sure.
        (Step::ClaimCart, O::ClaimUnknown) => {
            (Step::ReleaseCart, Change::Fail(Failure::CartUnavailable))
        }
        // A hold and a claim may exist (a crash after either): give both back.
        (Step::ClaimCart, O::NoCard) => (Step::Release, Change::Abandon),
        (Step::Reserve, O::Held) => (Step::Authorize, Change::Nothing),
        (Step::Reserve, O::HoldEnded) => (Step::Release, Change::Fail(Failure::HoldEnded)),
        (Step::Reserve, O::Short(skus)) => (
            Step::ReleaseCart,
            Change::Fail(Failure::Short(skus.clone())),
        ),
        // The hold may exist even though no answer came back: release to be sure.
        (Step::Reserve, O::ReserveUnknown) => {
            (Step::Release, Change::Fail(Failure::InventoryUnavailable))
        }
        (Step::Authorize, O::Approved { authorization_id }) => (
            Step::Done,
            Change::Confirm {
                authorization_id: authorization_id.clone(),
            },
        ),
        (Step::Authorize, O::Declined { code, message }) => (
            Step::Release,
            Change::Decline {
                code: code.clone(),
                message: message.clone(),
            },
        ),
        // After a hold and a payment a fault stands for a failure.
        (Step::Authorize, O::Injected) => (Step::Release, Change::InjectFault),
        (Step::Commit | Step::ClearCart, O::HandedOver) => (Step::Done, Change::Nothing),
        // A confirmed order is stored at Done (or, by an earlier version, at Commit); its
        // `order.cancelled` returns the stock and ends the claim on the cart.
        (Step::Commit | Step::Done, O::CancelledByCustomer) => {
            (Step::Done, Change::CancelByCustomer)
        }
        (Step::Release, O::Released { cart_freed }) => (after_stock(*cart_freed), Change::Nothing),
        (Step::Release, O::AlreadySold) => (Step::Return, Change::Nothing),
        (Step::Return, O::Returned { cart_freed }) => (after_stock(*cart_freed), Change::Nothing),
        (Step::Return, O::NotSold) => (Step::Release, Change::Nothing),
        (Step::ReleaseCart, O::CartFreed) => (Step::Done, Change::Nothing),
        _ => {
            return Err(Impossible {
                step,
                outcome: outcome.clone(),
            });
        }
    };
    Ok(Transition { to, change })
}

/// Once the stock is given back, the cart's claim is what is left, unless it ended too.
fn after_stock(cart_freed: bool) -> Step {
    if cart_freed {
        Step::Done
    } else {
        Step::ReleaseCart
    }
}

/// `stored` after `transition`, stamped now.
pub fn apply(stored: &StoredOrder, transition: Transition) -> StoredOrder {
    let mut next = stored.clone();
    next.step = transition.to;
    change(&mut next.order, transition.change);
    next.order.updated_at = OffsetDateTime::now_utc();
    next
}

fn change(order: &mut Order, change: Change) {
    match change {
        Change::Nothing => {}
        Change::Fail(why) => {
            order.status = OrderStatus::Failed;
            order.failure = Some(failed(why));
        }
        Change::Abandon => {
            order.status = OrderStatus::Cancelled;
            order.failure = Some(failure(
                ProblemCode::CheckoutInterrupted,
                "the checkout stopped before payment; nothing was charged",
            ));
        }
        Change::Confirm { authorization_id } => {
            order.payment.status = PaymentStatus::Authorized;
            order.payment.authorization_id = Some(authorization_id);
            order.status = OrderStatus::Confirmed;
        }
        Change::Decline { code, message } => {
            order.status = OrderStatus::Failed;
            order.payment.status = PaymentStatus::Declined;
            order.failure = Some(OrderFailure {
                decline_code: Some(code),
                ..failure(ProblemCode::PaymentDeclined, &message)
            });
        }
        Change::InjectFault => {
            order.status = OrderStatus::Failed;
            if order.payment.status == PaymentStatus::Authorized {
                order.payment.status = PaymentStatus::Voided;
            }
            order.failure = Some(failure(
                ProblemCode::InjectedFault,
                "a fault was injected into the checkout",
            ));
        }
        Change::CancelByCustomer => cancel_paid(
            order,
            ProblemCode::CancelledByCustomer,
            "the customer cancelled the order",
        ),
    }
}

/// A confirmed order cancelled: its payment is voided.
fn cancel_paid(order: &mut Order, code: ProblemCode, message: &str) {
    order.status = OrderStatus::Cancelled;
    order.payment.status = PaymentStatus::Voided;
    order.failure = Some(failure(code, message));
}

fn failed(why: Failure) -> OrderFailure {
    match why {
        Failure::Refused(ClaimRefusal::HeldByAnother) => failure(
            ProblemCode::CartInCheckout,
            "this cart is already being checked out; nothing was charged, see your orders",
        ),
        Failure::Refused(ClaimRefusal::Changed) => failure(
            ProblemCode::CartChanged,
            "the cart changed during checkout; nothing was charged, review it and try again",
        ),
        Failure::Refused(ClaimRefusal::Busy) => failure(
            ProblemCode::CartBusy,
            "the cart was changing during checkout; nothing was charged, try again",
        ),
        Failure::Refused(ClaimRefusal::Gone) => failure(
            ProblemCode::CartNotFound,
            "the cart does not exist or expired; nothing was charged",
        ),
        Failure::CartUnavailable => failure(
            ProblemCode::CartUnavailable,
            "the cart could not be read; nothing was charged, try again shortly",
        ),
        Failure::HoldEnded => failure(
            ProblemCode::InventoryUnavailable,
            "the stock hold ended before payment",
        ),
        Failure::Short(skus) => OrderFailure {
            skus,
            ..failure(ProblemCode::OutOfStock, "some items are out of stock")
        },
        Failure::InventoryUnavailable => failure(
            ProblemCode::InventoryUnavailable,
            "stock could not be checked; nothing was charged, try again shortly",
        ),
    }
}

fn failure(code: ProblemCode, message: &str) -> OrderFailure {
    OrderFailure {
        code,
        message: message.to_owned(),
        skus: Vec::new(),
        decline_code: None,
    }
}

/// Whether a checkout that ended for `code` charged nothing and failed for a reason that may
/// pass (a dependency that did not answer, a cart that kept changing, a fault, a crash before
/// payment), so that repeating its request may go through.
pub fn may_pass(code: &ProblemCode) -> bool {
    matches!(
        code,
        ProblemCode::InventoryUnavailable
            | ProblemCode::CartUnavailable
            | ProblemCode::CartBusy
            | ProblemCode::InjectedFault
            | ProblemCode::CheckoutInterrupted
    )
}

/// Whether the move from `from` to `to` stays in memory, written only with the step after it.
/// Each is safe to redo after a crash: a crash before the next write leaves the order at
/// ClaimCart, which the reconciler cancels, releasing a hold and a claim that may exist.
pub fn is_carried(from: Step, to: Step) -> bool {
    matches!(
        (from, to),
        (Step::ClaimCart, Step::Reserve) | (Step::Reserve, Step::Authorize)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: [Step; 9] = [
        Step::ClaimCart,
        Step::Reserve,
        Step::Authorize,
        Step::Commit,
        Step::ClearCart,
        Step::Release,
        Step::Return,
        Step::ReleaseCart,
        Step::Done,
    ];

    fn outcomes() -> Vec<StepOutcome> {
        use StepOutcome as O;
        vec![
            O::Claimed,
            O::ClaimRefused(ClaimRefusal::HeldByAnother),
            O::ClaimRefused(ClaimRefusal::Changed),
            O::ClaimRefused(ClaimRefusal::Busy),
            O::ClaimRefused(ClaimRefusal::Gone),
            O::ClaimUnknown,
            O::NoCard,
            O::Held,
            O::HoldEnded,
            O::Short(vec!["MUG-1".into()]),
            O::ReserveUnknown,
            O::Approved {
                authorization_id: "auth_1".into(),
            },
            O::Declined {
                code: DeclineCode::CardDeclined,
                message: "the card was declined".into(),
            },
            O::Injected,
            O::HandedOver,
            O::Released { cart_freed: true },
            O::Released { cart_freed: false },
            O::AlreadySold,
            O::Returned { cart_freed: true },
            O::Returned { cart_freed: false },
            O::NotSold,
            O::CartFreed,
            O::CancelledByCustomer,
        ]
    }

    /// The moves the saga makes, and nothing else: every other pair is impossible.
    fn expected(step: Step, outcome: &StepOutcome) -> Option<Step> {
        use StepOutcome as O;
        Some(match (step, outcome) {
            (Step::ClaimCart, O::Claimed) => Step::Reserve,
            (Step::ClaimCart, O::ClaimRefused(_)) => Step::Done,
            (Step::ClaimCart, O::ClaimUnknown) => Step::ReleaseCart,
            (Step::ClaimCart, O::NoCard) => Step::Release,
            (Step::Reserve, O::Held) => Step::Authorize,
            (Step::Reserve, O::HoldEnded | O::ReserveUnknown) => Step::Release,
            (Step::Reserve, O::Short(_)) => Step::ReleaseCart,
            (Step::Authorize, O::Approved { .. }) => Step::Done,
            (Step::Authorize, O::Declined { .. } | O::Injected) => Step::Release,
            (Step::Commit | Step::ClearCart, O::HandedOver) => Step::Done,
            (Step::Commit | Step::Done, O::CancelledByCustomer) => Step::Done,
            (Step::Release, O::Released { cart_freed: true }) => Step::Done,
            (Step::Release, O::Released { cart_freed: false }) => Step::ReleaseCart,
            (Step::Release, O::AlreadySold) => Step::Return,
            (Step::Return, O::Returned { cart_freed: true }) => Step::Done,
            (Step::Return, O::Returned { cart_freed: false }) => Step::ReleaseCart,
            (Step::Return, O::NotSold) => Step::Release,
            (Step::ReleaseCart, O::CartFreed) => Step::Done,
            _ => return None,
        })
    }

    #[test]
    fn every_step_and_outcome_pair_moves_as_the_saga_says_or_is_impossible() {
        let mut moves = 0;
        for step in STEPS {
            for outcome in outcomes() {
                match (next(step, &outcome), expected(step, &outcome)) {
                    (Ok(transition), Some(to)) => {
                        assert_eq!(transition.to, to, "{step:?} on {outcome:?}");
                        moves += 1;
                    }
                    (Err(impossible), None) => {
                        assert_eq!(impossible.step, step);
                        assert_eq!(impossible.outcome, outcome);
                    }
                    (got, want) => panic!("{step:?} on {outcome:?}: {got:?}, expected {want:?}"),
                }
            }
        }
        assert_eq!(moves, 25, "every move of the saga is listed");
    }

    fn pending() -> StoredOrder {
        serde_json::from_value(serde_json::json!({
            "order": {
                "id": "01J0000000000000000000000A",
                "customer_id": "01J0000000000000000000000B",
                "status": "pending",
                "lines": [],
                "totals": {
                    "subtotal": {"amount": 0, "currency": "USD"},
                    "shipping": {"amount": 0, "currency": "USD"},
                    "tax": {"amount": 0, "currency": "USD"},
                    "total": {"amount": 0, "currency": "USD"}
                },
                "customer": {
                    "name": "Grace Hopper",
                    "email": "grace@example.com",
                    "address": {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
                },
                "payment": {"brand": "visa", "last4": "4242", "status": "not_authorized"},
                "created_at": "2026-12-03T00:00:00Z",
                "updated_at": "2026-12-03T00:00:00Z"
            },
            "step": "authorize",
            "cart_id": "01J0000000000000000000000C",
            "cart_version": 1
        }))
        .expect("a stored order")
    }

    fn after(stored: &StoredOrder, outcome: StepOutcome) -> StoredOrder {
        apply(stored, next(stored.step, &outcome).expect("a move"))
    }

    #[test]
    fn a_payment_confirms_and_a_fault_after_it_voids_it() {
        let paid = after(
            &pending(),
            StepOutcome::Approved {
                authorization_id: "auth_1".into(),
            },
        );
        assert_eq!(paid.step, Step::Done);
        assert_eq!(paid.order.status, OrderStatus::Confirmed);
        assert_eq!(paid.order.payment.status, PaymentStatus::Authorized);
        assert!(paid.order.failure.is_none());
        // The driver fails a paid checkout from its Authorize step, with the payment made.
        let failed = after(
            &StoredOrder {
                step: Step::Authorize,
                ..paid
            },
            StepOutcome::Injected,
        );
        assert_eq!(failed.step, Step::Release);
        assert_eq!(failed.order.status, OrderStatus::Failed);
        assert_eq!(failed.order.payment.status, PaymentStatus::Voided);
        let failure = failed.order.failure.expect("a failure");
        assert_eq!(failure.code, ProblemCode::InjectedFault);
    }

    #[test]
    fn failures_say_why_in_codes_the_clients_know() {
        let mut at_reserve = pending();
        at_reserve.step = Step::Reserve;
        let short = after(&at_reserve, StepOutcome::Short(vec!["MUG-1".into()]));
        let failure = short.order.failure.expect("a failure");
        assert_eq!(failure.code, ProblemCode::OutOfStock);
        assert_eq!(failure.skus, ["MUG-1"]);
        let declined = after(
            &pending(),
            StepOutcome::Declined {
                code: DeclineCode::InsufficientFunds,
                message: "the card has insufficient funds".into(),
            },
        );
        assert_eq!(declined.order.payment.status, PaymentStatus::Declined);
        let failure = declined.order.failure.expect("a failure");
        assert_eq!(failure.code, ProblemCode::PaymentDeclined);
        assert_eq!(failure.decline_code, Some(DeclineCode::InsufficientFunds));
        let mut claiming = pending();
        claiming.step = Step::ClaimCart;
        for (why, code) in [
            (ClaimRefusal::HeldByAnother, ProblemCode::CartInCheckout),
            (ClaimRefusal::Changed, ProblemCode::CartChanged),
            (ClaimRefusal::Busy, ProblemCode::CartBusy),
            (ClaimRefusal::Gone, ProblemCode::CartNotFound),
        ] {
            let refused = after(&claiming, StepOutcome::ClaimRefused(why));
            assert_eq!(refused.order.status, OrderStatus::Failed);
            assert_eq!(refused.order.failure.expect("a failure").code, code);
        }
        let abandoned = after(&claiming, StepOutcome::NoCard);
        assert_eq!(abandoned.order.status, OrderStatus::Cancelled);
        assert_eq!(
            abandoned.order.failure.expect("a failure").code,
            ProblemCode::CheckoutInterrupted
        );
    }
}
