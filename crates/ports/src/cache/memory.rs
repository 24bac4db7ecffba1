//! The in-process cache adapter (moka): bounded by bytes, per-entry TTL, for the embedded mode
//! and for tests.

use std::collections::HashMap;
use std::sync::Mutex;
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
    // Kept apart from the entries so eviction under memory pressure never loses a counter.
    generations: Mutex<HashMap<String, u64>>,
}

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
            generations: Mutex::new(HashMap::new()),
        }
    }

    fn generations(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, u64>>> {
        self.generations
            .lock()
            .map_err(|_| CacheError::Unavailable(anyhow::anyhow!("generation table poisoned")))
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
        let mut generations = self.generations()?;
        Ok(*generations
            .entry(group.to_owned())
            .or_insert_with(generation_origin))
    }

    async fn bump_generation(&self, group: &str) -> Result<u64> {
        validate_key(group)?;
        let mut generations = self.generations()?;
        let counter = generations
            .entry(group.to_owned())
            .or_insert_with(generation_origin);
        *counter += 1;
        Ok(*counter)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
