//! Cache-aside reads with single-flight, generation-scoped keys and graceful degradation.
//!
//! `get_or_load` looks in the cache; on a miss, the first caller for a key runs the loader and
//! every concurrent caller for the same key waits for that one load instead of going to the store
//! itself (single-flight). A failing cache never fails a read: the value is loaded from the store,
//! the failure is counted and the service reports itself degraded.
//!
//! Single-flight is a `tokio::sync::OnceCell` per key in flight: it already guarantees that one
//! initialiser runs while the others wait, and that a cancelled or failed initialiser hands over
//! to the next waiter. Errors are deliberately not shared: each waiter then retries with its own
//! loader, so a transient store error is not multiplied into every concurrent response.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::{Cache, jittered};

type Flight = Arc<OnceCell<Option<Bytes>>>;

/// Counters of what the cache did, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Loader runs: fewer than misses when single-flight merged concurrent misses.
    pub loads: AtomicU64,
    /// Cache operations that failed.
    pub errors: AtomicU64,
    degraded: AtomicBool,
}

impl CacheStats {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether the last cache operation failed.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

pub struct CacheAside {
    cache: Arc<dyn Cache>,
    ttl: Duration,
    flights: Mutex<HashMap<String, Flight>>,
    stats: Arc<CacheStats>,
}

impl std::fmt::Debug for CacheAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAside")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl CacheAside {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        Self {
            cache,
            ttl,
            flights: Mutex::new(HashMap::new()),
            stats: Arc::new(CacheStats::default()),
        }
    }

    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    fn record<T, E: std::fmt::Display>(&self, outcome: Result<T, E>, what: &str) -> Option<T> {
        match outcome {
            Ok(value) => {
                // Read before writing: every read passes here, and a write on each would bounce
                // the flag's cache line between cores.
                if self.stats.degraded.load(Ordering::Relaxed)
                    && self.stats.degraded.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(operation = what, "cache answers again");
                }
                Some(value)
            }
            Err(error) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !self.stats.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, operation = what, "cache failed; serving from the store");
                }
                None
            }
        }
    }

    /// The value for `key`, from the cache or else from `load` (then cached). With a `group`,
    /// the key is scoped to the group's generation, so [`CacheAside::retire`] invalidates it.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        key: &str,
        group: Option<&str>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (key, cacheable) = self.scoped(key, group).await;
        if cacheable && let Some(Some(bytes)) = self.record(self.cache.get(&key).await, "get") {
            match serde_json::from_slice(&bytes) {
                Ok(value) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                // An entry written by an older version of the service: treat as a miss.
                Err(error) => tracing::debug!(%error, key, "discarding unreadable cache entry"),
            }
        }
        let (own, shared) = self.load_once(&key, cacheable, &load).await?;
        if let Some(value) = own {
            return Ok(value);
        }
        match shared.as_ref().map(|bytes| serde_json::from_slice(bytes)) {
            Some(Ok(value)) => Ok(value),
            _ => {
                self.stats.loads.fetch_add(1, Ordering::Relaxed);
                load().await
            }
        }
    }

    /// Like [`CacheAside::get_or_load`], but answers the cached JSON of the value as it is
    /// stored, for a handler that sends it on unchanged: a hit then costs no parsing and no
    /// serialising (a third of a catalog read's own CPU time in a profile). The caller owns the
    /// guarantee that the stored JSON is what its clients expect: the key must change when the
    /// value's shape does.
    pub async fn get_or_load_json<T, E, F, Fut>(
        &self,
        key: &str,
        group: Option<&str>,
        load: F,
    ) -> Result<Bytes, E>
    where
        T: Serialize,
        E: From<serde_json::Error>,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (key, cacheable) = self.scoped(key, group).await;
        if cacheable && let Some(Some(bytes)) = self.record(self.cache.get(&key).await, "get") {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(bytes);
        }
        match self.load_once(&key, cacheable, &load).await? {
            (_, Some(bytes)) => Ok(bytes),
            // The value could not be serialised; this says why.
            (Some(value), None) => Ok(Bytes::from(serde_json::to_vec(&value)?)),
            (None, None) => {
                self.stats.loads.fetch_add(1, Ordering::Relaxed);
                Ok(Bytes::from(serde_json::to_vec(&load().await?)?))
            }
        }
    }

    /// A miss of `key`: the first caller runs `load` and stores the value's JSON (when
    /// `cacheable`), concurrent callers wait for it. Answers the value when this caller loaded
    /// it, and the JSON every caller shares (`None` when the value could not be serialised).
    async fn load_once<T, E, F, Fut>(
        &self,
        key: &str,
        cacheable: bool,
        load: &F,
    ) -> Result<(Option<T>, Option<Bytes>), E>
    where
        T: Serialize,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let flight = self.flight(key);
        let mut own: Option<T> = None;
        let shared = flight
            .get_or_try_init(|| async {
                self.stats.loads.fetch_add(1, Ordering::Relaxed);
                let value = load().await?;
                let bytes = serde_json::to_vec(&value).ok().map(Bytes::from);
                if let (true, Some(bytes)) = (cacheable, &bytes) {
                    let stored = self.cache.set(key, bytes.clone(), jittered(self.ttl)).await;
                    self.record(stored, "set");
                }
                own = Some(value);
                Ok::<_, E>(bytes)
            })
            .await;
        self.land(key, &flight);
        Ok((own, shared?.clone()))
    }

    /// The key to use for `key` in `group` (scoped to the group's generation), and whether the
    /// cache can be used for it. Without the generation the cache cannot be trusted for the
    /// group: the value is then loaded directly, still merging concurrent misses.
    async fn scoped(&self, key: &str, group: Option<&str>) -> (String, bool) {
        let Some(group) = group else {
            return (key.to_owned(), true);
        };
        match self.record(self.cache.generation(group).await, "generation") {
            Some(generation) => (format!("{key}@{generation}"), true),
            None => (format!("uncached:{key}"), false),
        }
    }

    fn flight(&self, key: &str) -> Flight {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        flights
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone()
    }

    /// Forgets a finished flight so later misses (after expiry or invalidation) load afresh, and
    /// an abandoned one (its loads failed and nobody waits) so failing keys do not pile up.
    fn land(&self, key: &str, flight: &Flight) {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ours = flights
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, flight));
        // Two holders: the map and this caller; nobody else is waiting on the flight.
        if ours && (flight.initialized() || Arc::strong_count(flight) <= 2) {
            flights.remove(key);
        }
    }

    /// Drops one cached key after its value changed in the store.
    pub async fn invalidate(&self, key: &str) {
        let outcome = self.cache.delete(key).await;
        self.record(outcome, "delete");
    }

    /// Retires every key cached under `group`, after the store changed.
    pub async fn retire(&self, group: &str) {
        let outcome = self.cache.bump_generation(group).await;
        self.record(outcome, "bump_generation");
    }
}
