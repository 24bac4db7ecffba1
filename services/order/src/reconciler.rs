//! The reconciler: finishes or undoes checkouts that stopped part-way (a crash, a dependency
//! that did not answer). Every replica runs it; each order's moves are conditional writes on
//! the step it was read at (`repository::advance`), so two replicas driving one order at once
//! make each move once, and the loser carries on from where the winner left it.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::Instrument;

use crate::error::OrderError;
use crate::metrics::Outcome;
use crate::service::Orders;

/// Open orders the reconciler looks at per round.
const RECONCILE_BATCH: usize = 100;

impl Orders {
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
}

/// Runs the reconciler at once (a restart after a crash resolves what it left) and then every
/// `interval`, for as long as the service runs.
pub async fn run(orders: Arc<Orders>, interval: Duration, grace: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = orders.reconcile(grace).await {
            tracing::warn!(%error, "reconciling unfinished checkouts failed");
        }
    }
}
