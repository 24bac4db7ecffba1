//! The Redis adapter of the cache port (ElastiCache in AWS), pooled with deadpool.
//!
//! Every command runs under a short timeout: a cache that answers slowly is worse than none,
//! since the service can always read the store. After a failure the adapter stops trying for a
//! moment (`COOLDOWN`) and fails at once, so an outage costs each request nothing instead of a
//! timeout per cache call; the first call after the pause tries again, so caching comes back by
//! itself when Redis does. Readiness pings always try, to report the truth.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use emporium_ports::cache::{Cache, CacheError, PoolUse, Result, generation_origin, validate_key};

/// How long the adapter fails fast after Redis failed.
const COOLDOWN: Duration = Duration::from_secs(1);

/// Options of a `redis://` URI that are the adapter's, not Redis's.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prepended to every key, so several deployments can share one Redis.
    pub prefix: String,
    pub pool_size: usize,
    pub timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "emporium:".into(),
            pool_size: 16,
            timeout: Duration::from_millis(250),
        }
    }
}

pub struct RedisCache {
    pool: Pool,
    options: RedisOptions,
    down_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

fn unavailable(error: impl Into<anyhow::Error>) -> CacheError {
    CacheError::Unavailable(error.into())
}

impl RedisCache {
    /// A pool for the Redis at `url` (`redis://` or `rediss://`). Connects lazily: a Redis that
    /// is down at start only makes the cache degraded.
    pub fn new(url: &str, options: RedisOptions) -> anyhow::Result<Self> {
        let mut config = Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: options.pool_size,
            timeouts: Timeouts {
                wait: Some(options.timeout),
                create: Some(options.timeout),
                recycle: Some(options.timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            pool,
            options,
            down_until: Mutex::new(None),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.options.prefix)
    }

    fn generation_key(&self, group: &str) -> String {
        format!("{}gen:{group}", self.options.prefix)
    }

    fn cooling_down(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    fn mark(&self, healthy: bool) {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        *down = if healthy {
            None
        } else {
            Some(Instant::now() + COOLDOWN)
        };
    }

    /// Runs `command` on a pooled connection within the timeout, unless Redis just failed.
    async fn run<T, F, Fut>(&self, respect_cooldown: bool, command: F) -> Result<T>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if respect_cooldown && self.cooling_down() {
            return Err(unavailable(anyhow::anyhow!(
                "redis failed recently; not trying yet"
            )));
        }
        let attempt = async {
            let connection = self.pool.get().await.map_err(unavailable)?;
            command(connection).await.map_err(unavailable)
        };
        let outcome = match tokio::time::timeout(self.options.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(unavailable(anyhow::anyhow!(
                "redis did not answer within {} ms",
                self.options.timeout.as_millis()
            ))),
        };
        self.mark(outcome.is_ok());
        outcome
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        validate_key(key)?;
        let key = self.key(key);
        let value: Option<Vec<u8>> = self
            .run(
                true,
                |mut connection| async move { connection.get(key).await },
            )
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        validate_key(key)?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Err(CacheError::Invalid("a TTL must be positive".into()));
        }
        let key = self.key(key);
        self.run(true, |mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(millis)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let key = self.key(key);
        self.run(true, |mut connection| async move {
            connection.del::<_, ()>(key).await
        })
        .await
    }

    async fn generation(&self, group: &str) -> Result<u64> {
        validate_key(group)?;
        let key = self.generation_key(group);
        let origin = generation_origin();
        let (value,): (u64,) = self
            .run(true, |mut connection| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(origin)
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(value)
    }

    async fn bump_generation(&self, group: &str) -> Result<u64> {
        validate_key(group)?;
        let key = self.generation_key(group);
        let origin = generation_origin();
        let (value,): (u64,) = self
            .run(true, |mut connection| async move {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(origin)
                    .arg("NX")
                    .ignore()
                    .cmd("INCR")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(value)
    }

    async fn ping(&self) -> Result<()> {
        self.run(false, |mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }

    fn pool(&self) -> Option<PoolUse> {
        let status = self.pool.status();
        Some(PoolUse {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        })
    }
}
