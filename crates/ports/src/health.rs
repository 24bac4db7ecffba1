//! Readiness checks of the ports: each answers whether its backend does, in the shape the
//! platform's `Readiness` takes.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::blob::Blobs;
use crate::cache::Cache;
use crate::storage::Storage;

/// A check: a call that pings the backend and says why it is down.
pub type Check = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

pub fn storage(storage: &Arc<dyn Storage>) -> Check {
    let storage = storage.clone();
    Box::new(move || {
        let storage = storage.clone();
        Box::pin(async move { storage.ping().await.map_err(|e| e.to_string()) })
    })
}

pub fn cache(cache: &Arc<dyn Cache>) -> Check {
    let cache = cache.clone();
    Box::new(move || {
        let cache = cache.clone();
        Box::pin(async move { cache.ping().await.map_err(|e| e.to_string()) })
    })
}

pub fn blobs(blobs: &Arc<dyn Blobs>) -> Check {
    let blobs = blobs.clone();
    Box::new(move || {
        let blobs = blobs.clone();
        Box::pin(async move { blobs.ping().await.map_err(|e| e.to_string()) })
    })
}

/// How old the oldest unpublished event may get before the relay counts as stuck: far beyond
/// the fast path's milliseconds and the sweeper's 5 s, so only a bus that keeps refusing, or a
/// relay that stopped, trips it.
pub const RELAY_STUCK_AFTER: Duration = Duration::from_secs(60);

/// Whether the outbox's relay keeps up: fails while its oldest unpublished event is older than
/// `stuck_after` ([`RELAY_STUCK_AFTER`] in the services; the service still answers, only its
/// events are late), as the relay's last round saw it.
pub fn relay(outbox: &Arc<crate::events::outbox::Outbox>, stuck_after: Duration) -> Check {
    let outbox = outbox.clone();
    Box::new(move || {
        let age = outbox.stats().oldest_age.get();
        Box::pin(async move {
            if age > stuck_after.as_secs_f64() {
                Err(format!(
                    "the oldest unpublished event is {age:.0} s old: the events relay is stuck"
                ))
            } else {
                Ok(())
            }
        })
    })
}
