//! Decorators that make a port fail on demand, for practising outages (a service's store, cache,
//! blob store or events bus going away, or slowing down) on a running shop: while its port is
//! switched off, every call fails the way a lost backend fails (`StorageError::Backend`,
//! `CacheError::Unavailable`, `BlobError::Backend`, `EventsError::Backend`), pings included, so
//! readiness, degradation and error paths run for real; while it is slowed, every call waits
//! first. Who switches them is the caller's business (the platform's fault switches, see
//! `emporium_platform::faults`); this module only asks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::blob::{Blob, BlobError, BlobKey, BlobMeta, BlobPage, Blobs};
use crate::cache::{Cache, CacheError, PoolUse};
use crate::events::{Delivery, Event, Events, EventsError, Receipt};
use crate::storage::{Condition, Item, Key, Page, Query, Storage, StorageError, TxOp, Update};

/// A port a service depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Port {
    Storage,
    Cache,
    Blobs,
    Events,
}

/// Says whether a port is switched off, or slowed, right now.
pub trait Outages: Send + Sync + 'static {
    fn is_down(&self, port: Port) -> bool;

    /// How long each call to `port` waits before it goes ahead (or fails), if it is slowed.
    fn delay(&self, _port: Port) -> Option<Duration> {
        None
    }
}

/// Waits out `port`'s delay, if it has one: a slow backend (practised, or a handler caught
/// mid-work by a test that kills its process).
async fn wait_for(outages: &dyn Outages, port: Port) {
    if let Some(delay) = outages.delay(port) {
        tokio::time::sleep(delay).await;
    }
}

const WHY: &str = "outage injected by the service's fault switches (/admin/faults)";

/// A store that fails while its port is switched off.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    outages: Arc<dyn Outages>,
}

impl FaultyStorage {
    pub fn wrap(inner: Arc<dyn Storage>, outages: Arc<dyn Outages>) -> Arc<dyn Storage> {
        Arc::new(Self { inner, outages })
    }

    async fn check(&self) -> Result<(), StorageError> {
        wait_for(self.outages.as_ref(), Port::Storage).await;
        if self.outages.is_down(Port::Storage) {
            return Err(StorageError::Backend(anyhow::anyhow!(WHY)));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn get(&self, table: &'static str, key: &Key) -> Result<Option<Item>, StorageError> {
        self.check().await?;
        self.inner.get(table, key).await
    }

    async fn put(
        &self,
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> Result<(), StorageError> {
        self.check().await?;
        self.inner.put(table, item, condition).await
    }

    async fn update(
        &self,
        table: &'static str,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item, StorageError> {
        self.check().await?;
        self.inner.update(table, key, update, condition).await
    }

    async fn delete(
        &self,
        table: &'static str,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>, StorageError> {
        self.check().await?;
        self.inner.delete(table, key, condition).await
    }

    async fn query(&self, table: &'static str, query: Query) -> Result<Page, StorageError> {
        self.check().await?;
        self.inner.query(table, query).await
    }

    async fn query_index(
        &self,
        table: &'static str,
        index: &'static str,
        query: Query,
    ) -> Result<Page, StorageError> {
        self.check().await?;
        self.inner.query_index(table, index, query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StorageError> {
        self.check().await?;
        self.inner.transact(ops).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.check().await?;
        self.inner.ping().await
    }
}

/// A cache that fails while its port is switched off.
pub struct FaultyCache {
    inner: Arc<dyn Cache>,
    outages: Arc<dyn Outages>,
}

impl FaultyCache {
    pub fn wrap(inner: Arc<dyn Cache>, outages: Arc<dyn Outages>) -> Arc<dyn Cache> {
        Arc::new(Self { inner, outages })
    }

    async fn check(&self) -> Result<(), CacheError> {
        wait_for(self.outages.as_ref(), Port::Cache).await;
        if self.outages.is_down(Port::Cache) {
            return Err(CacheError::Unavailable(anyhow::anyhow!(WHY)));
        }
        Ok(())
    }
}

#[async_trait]
impl Cache for FaultyCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.check().await?;
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.check().await?;
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.check().await?;
        self.inner.delete(key).await
    }

    async fn generation(&self, group: &str) -> Result<u64, CacheError> {
        self.check().await?;
        self.inner.generation(group).await
    }

    async fn bump_generation(&self, group: &str) -> Result<u64, CacheError> {
        self.check().await?;
        self.inner.bump_generation(group).await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.check().await?;
        self.inner.ping().await
    }

    fn pool(&self) -> Option<PoolUse> {
        self.inner.pool()
    }
}

/// A blob store that fails while its port is switched off.
pub struct FaultyBlobs {
    inner: Arc<dyn Blobs>,
    outages: Arc<dyn Outages>,
}

impl FaultyBlobs {
    pub fn wrap(inner: Arc<dyn Blobs>, outages: Arc<dyn Outages>) -> Arc<dyn Blobs> {
        Arc::new(Self { inner, outages })
    }

    async fn check(&self) -> Result<(), BlobError> {
        wait_for(self.outages.as_ref(), Port::Blobs).await;
        if self.outages.is_down(Port::Blobs) {
            return Err(BlobError::Backend(anyhow::anyhow!(WHY)));
        }
        Ok(())
    }
}

#[async_trait]
impl Blobs for FaultyBlobs {
    async fn put(
        &self,
        key: &BlobKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<BlobMeta, BlobError> {
        self.check().await?;
        self.inner.put(key, body, content_type).await
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Blob>, BlobError> {
        self.check().await?;
        self.inner.get(key).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobMeta>, BlobError> {
        self.check().await?;
        self.inner.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        limit: usize,
    ) -> Result<BlobPage, BlobError> {
        self.check().await?;
        self.inner.list(prefix, token, limit).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        self.check().await?;
        self.inner.delete(key).await
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.check().await?;
        self.inner.ping().await
    }
}

/// The events bus as a service sees it, switched off with its `events` outage: its relay
/// cannot publish (what it records waits in its outbox) and its consumers cannot receive.
pub struct FaultyEvents {
    inner: Arc<dyn Events>,
    outages: Arc<dyn Outages>,
}

impl FaultyEvents {
    pub fn wrap(inner: Arc<dyn Events>, outages: Arc<dyn Outages>) -> Arc<dyn Events> {
        Arc::new(Self { inner, outages })
    }

    async fn check(&self) -> Result<(), EventsError> {
        wait_for(self.outages.as_ref(), Port::Events).await;
        if self.outages.is_down(Port::Events) {
            return Err(EventsError::Backend(anyhow::anyhow!(WHY)));
        }
        Ok(())
    }
}

#[async_trait]
impl Events for FaultyEvents {
    async fn publish(&self, events: &[Event]) -> Result<(), EventsError> {
        self.check().await?;
        self.inner.publish(events).await
    }

    async fn receive(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        if self.outages.is_down(Port::Events) {
            // A receiver of a lost bus waits as a long poll would, rather than spin.
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
        self.check().await?;
        self.inner.receive(group, max, wait).await
    }

    async fn ack(&self, group: &str, receipts: &[Receipt]) -> Result<(), EventsError> {
        self.check().await?;
        self.inner.ack(group, receipts).await
    }

    async fn extend(
        &self,
        group: &str,
        receipt: &Receipt,
        hidden_for: Duration,
    ) -> Result<(), EventsError> {
        self.check().await?;
        self.inner.extend(group, receipt, hidden_for).await
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<Event>, EventsError> {
        self.check().await?;
        self.inner.dead_letters(group, max).await
    }

    async fn redrive(&self, group: &str) -> Result<usize, EventsError> {
        self.check().await?;
        self.inner.redrive(group).await
    }

    async fn ping(&self) -> Result<(), EventsError> {
        self.check().await?;
        self.inner.ping().await
    }
}
