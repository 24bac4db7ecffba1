//! The in-process cache adapter (moka): bounded by bytes, per-entry TTL, for the embedded mode
//! and for tests.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;

use super::{Cache, CacheError, Result, generation_origin, validate_key};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
    /// Generation counters, apart from the entries so a full cache does not evict them first.
    /// Bounded, because a group per cart would otherwise grow without end (it did: a cart
    /// service under load grew by 0.5 MB/s). Losing a counter is safe: it restarts from the
    /// current time in microseconds, above any value it had.
    generations: moka::future::Cache<String, u64>,
}

/// Most generation counters kept (about 250 bytes each with the cache's own bookkeeping). A
/// counter matters only while entries under it live; one forgotten early costs a miss.
const MAX_GENERATIONS: u64 = 20_000;

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl MemoryCache {
    /// A cache holding at most about `capacity_bytes` of keys and values.
    pub fn new(capacity_bytes: u64) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        Self {
            entries,
            generations: moka::future::Cache::new(MAX_GENERATIONS),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        validate_key(key)?;
        Ok(self.entries.get(key).await.map(|entry| entry.value))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        validate_key(key)?;
        if ttl.is_zero() {
            return Err(CacheError::Invalid("a TTL must be positive".into()));
        }
        self.entries
            .insert(key.to_owned(), Entry { value, ttl })
            .await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.entries.invalidate(key).await;
        Ok(())
    }

    async fn generation(&self, group: &str) -> Result<u64> {
        validate_key(group)?;
        Ok(self
            .generations
            .get_with_by_ref(group, async { generation_origin() })
            .await)
    }

    async fn bump_generation(&self, group: &str) -> Result<u64> {
        validate_key(group)?;
        // Computed under the key's lock, so concurrent bumps each count.
        let bumped = self
            .generations
            .entry_by_ref(group)
            .and_compute_with(|current| {
                let next = current.map_or_else(generation_origin, |entry| entry.into_value()) + 1;
                std::future::ready(moka::ops::compute::Op::Put(next))
            })
            .await;
        bumped
            .into_entry()
            .map(|entry| entry.into_value())
            .ok_or_else(|| CacheError::Unavailable(anyhow::anyhow!("generation not stored")))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generations_are_bounded_and_a_lost_one_restarts_above_its_old_value() {
        let cache = MemoryCache::new(1024 * 1024);
        let first = cache.bump_generation("cart:1").await.expect("bump");
        for group in 0..MAX_GENERATIONS + 5_000 {
            cache
                .generation(&format!("cart:{group}:x"))
                .await
                .expect("generation");
        }
        cache.generations.run_pending_tasks().await;
        assert!(cache.generations.entry_count() <= MAX_GENERATIONS);

        // Whether or not "cart:1" survived, its generation never goes back.
        cache.generations.invalidate("cart:1").await;
        assert!(cache.generation("cart:1").await.expect("generation") > first);
    }
}
