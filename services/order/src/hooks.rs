//! Where a checkout can be told to go wrong, for practising failures: the saga asks its hooks
//! before it reserves stock and after each step. A service runs with [`NoFaults`]; tests and the
//! chaos runs give it [`Faults`], switches they set while the shop runs.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::repository::Step;

/// What a fault does when the saga reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The step fails; the saga compensates as for any failure.
    Fail,
    /// The process "dies": the saga stops where it is, leaving the order to the reconciler.
    Crash,
}

/// What the saga asks before and after its steps.
pub trait CheckoutHooks: Send + Sync + Debug {
    /// Latency to add before a checkout asks for its stock.
    fn before_reserve(&self) -> Option<Duration>;
    /// What happens once `step` has succeeded.
    fn after(&self, step: Step) -> Option<FaultAction>;
}

/// No faults: what a service runs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFaults;

impl CheckoutHooks for NoFaults {
    fn before_reserve(&self) -> Option<Duration> {
        None
    }

    fn after(&self, _step: Step) -> Option<FaultAction> {
        None
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct FaultPlan {
    delay_before_reserve: Option<Duration>,
    after_reserve: Option<FaultAction>,
    after_authorize: Option<FaultAction>,
}

/// Fault switches, off until set; clones share them.
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

impl CheckoutHooks for Faults {
    fn before_reserve(&self) -> Option<Duration> {
        self.get().delay_before_reserve
    }

    fn after(&self, step: Step) -> Option<FaultAction> {
        match step {
            Step::Reserve => self.get().after_reserve,
            Step::Authorize => self.get().after_authorize,
            _ => None,
        }
    }
}
