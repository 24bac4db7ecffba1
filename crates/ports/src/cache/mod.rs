//! The cache port, modelled on what ElastiCache (Redis) offers a cache-aside reader: get, set
//! with a TTL, delete, and counters. The cache is never the source of truth; every service must
//! answer correctly, if more slowly, when it fails.
//!
//! Generation counters retire groups of keys without finding them: a reader puts the group's
//! generation into its keys, and a writer bumps the generation after changing the store, so
//! every key built from an older generation stops being read and expires by itself. A counter
//! that is missing (evicted, or the cache restarted) starts again from the current time in
//! microseconds, so it never returns to a value whose entries may still be cached.

pub mod aside;
pub mod memory;

#[cfg(feature = "testsuite")]
pub mod conformance;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

pub use aside::{CacheAside, CacheStats};

/// Longest key accepted, so a key built from user input cannot grow without bound.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid cache request: {0}")]
    Invalid(String),
    #[error("cache unavailable")]
    Unavailable(#[source] anyhow::Error),
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Stores `value` until `ttl` passes (or the cache evicts it sooner).
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()>;

    async fn delete(&self, key: &str) -> Result<()>;

    /// The current generation of `group`.
    async fn generation(&self, group: &str) -> Result<u64>;

    /// Moves `group` to a new generation and returns it; concurrent bumps each count.
    async fn bump_generation(&self, group: &str) -> Result<u64>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// The use of the cache's connection pool, for metrics; `None` for a cache without one
    /// (the in-process cache).
    fn pool(&self) -> Option<PoolUse> {
        None
    }
}

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Most connections the pool opens.
    pub max: usize,
    /// Connections open now, busy or idle.
    pub open: usize,
    /// Open connections waiting for work.
    pub idle: usize,
    /// Calls waiting for a connection.
    pub waiting: usize,
}

pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(CacheError::Invalid(format!(
            "cache keys have 1..={MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Where a missing generation counter starts.
pub fn generation_origin() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX / 2)
        })
}

/// `ttl` stretched by up to 10% at random, so entries written together do not all expire in the
/// same instant and send their readers to the store at once.
pub fn jittered(ttl: Duration) -> Duration {
    use rand::Rng;
    let extra = rand::rng().random_range(0.0..0.1);
    ttl.mul_f64(1.0 + extra)
}
