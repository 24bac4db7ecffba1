//! Spans around every storage, cache and blob operation, whatever the adapter: one decorator per
//! port, put around each adapter where ports are chosen, so traces show each call a request
//! made to its state with its outcome, and adapters stay free of tracing code.
//!
//! Each span is a client span named `<port> <operation>` (`storage get`, `cache set`) with the
//! adapter (`emporium.adapter`), the table for storage, and `emporium.outcome`: `ok`, or what
//! went wrong. Outcomes that are part of normal work (a condition that did not hold, a missing
//! item) do not mark the span as failed; backend failures do, with their message. A call made
//! outside any span gets none of its own.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{Instrument, Span, field::Empty};

use crate::blob::{Blob, BlobError, BlobKey, BlobMeta, BlobPage, Blobs};
use crate::cache::{Cache, CacheError, PoolUse};
use crate::storage::{Condition, Item, Key, Page, Query, Storage, StorageError, TxOp, Update};

/// The target of a request's span when the request is not traced: the log shows it, the
/// OpenTelemetry layer skips it, and no span is built below it.
pub const UNTRACED_TARGET: &str = "emporium_platform::untraced";

fn span(port: &'static str, operation: &'static str, adapter: &'static str) -> Span {
    // A call outside any span, such as a sweeper's poll that finds nothing to do, would be a
    // trace of one span every few seconds, crowding out the traces worth reading; work worth
    // seeing runs in a span (a request, a reconciled order, a sweep that releases). Below a
    // request that is not traced, building a span would cost more than many of the calls it
    // measures.
    if Span::current()
        .metadata()
        .is_none_or(|meta| meta.target() == UNTRACED_TARGET)
    {
        return Span::none();
    }
    tracing::info_span!(
        "port call",
        otel.name = %format!("{port} {operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        error.message = Empty,
        emporium.adapter = adapter,
        db.collection.name = Empty,
        emporium.outcome = Empty,
    )
}

/// Runs `work` in `span` and records how it ended; `expected` names failures that are part of
/// normal work (they leave the span's status alone).
async fn traced<T, E: Display>(
    span: Span,
    work: impl Future<Output = Result<T, E>>,
    expected: impl Fn(&E) -> Option<&'static str>,
) -> Result<T, E> {
    let outcome = work.instrument(span.clone()).await;
    if !span.is_disabled() {
        match &outcome {
            Ok(_) => {
                span.record("emporium.outcome", "ok");
            }
            Err(error) => match expected(error) {
                Some(name) => {
                    span.record("emporium.outcome", name);
                }
                None => {
                    span.record("emporium.outcome", "error");
                    span.record("otel.status_code", "ERROR");
                    span.record("error.message", error.to_string().as_str());
                }
            },
        }
    }
    outcome
}

fn storage_expected(error: &StorageError) -> Option<&'static str> {
    match error {
        StorageError::ConditionFailed | StorageError::TransactionCanceled { .. } => {
            Some("condition_failed")
        }
        StorageError::InvalidCursor => Some("invalid_cursor"),
        _ => None,
    }
}

/// A storage whose every operation is a span.
pub struct TracedStorage {
    inner: Arc<dyn Storage>,
    adapter: &'static str,
}

impl TracedStorage {
    /// Wraps `inner`, an adapter called `adapter` (`redb`, `dynamodb`) in the spans.
    pub fn new(inner: Arc<dyn Storage>, adapter: &'static str) -> Self {
        Self { inner, adapter }
    }

    fn span(&self, operation: &'static str, table: &'static str) -> Span {
        let span = span("storage", operation, self.adapter);
        span.record("db.collection.name", table);
        span
    }
}

#[async_trait]
impl Storage for TracedStorage {
    async fn get(&self, table: &'static str, key: &Key) -> crate::storage::Result<Option<Item>> {
        traced(
            self.span("get", table),
            self.inner.get(table, key),
            storage_expected,
        )
        .await
    }

    async fn put(
        &self,
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> crate::storage::Result<()> {
        traced(
            self.span("put", table),
            self.inner.put(table, item, condition),
            storage_expected,
        )
        .await
    }

    async fn update(
        &self,
        table: &'static str,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> crate::storage::Result<Item> {
        traced(
            self.span("update", table),
            self.inner.update(table, key, update, condition),
            storage_expected,
        )
        .await
    }

    async fn delete(
        &self,
        table: &'static str,
        key: &Key,
        condition: Option<Condition>,
    ) -> crate::storage::Result<Option<Item>> {
        traced(
            self.span("delete", table),
            self.inner.delete(table, key, condition),
            storage_expected,
        )
        .await
    }

    async fn query(&self, table: &'static str, query: Query) -> crate::storage::Result<Page> {
        traced(
            self.span("query", table),
            self.inner.query(table, query),
            storage_expected,
        )
        .await
    }

    async fn query_index(
        &self,
        table: &'static str,
        index: &'static str,
        query: Query,
    ) -> crate::storage::Result<Page> {
        traced(
            self.span("query_index", table),
            self.inner.query_index(table, index, query),
            storage_expected,
        )
        .await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> crate::storage::Result<()> {
        let span = span("storage", "transact", self.adapter);
        // A transaction on one table (a service's own) is named by it, as other writes are.
        if let Some(first) = ops.first()
            && ops.iter().all(|op| op.table() == first.table())
        {
            span.record("db.collection.name", first.table());
        }
        traced(span, self.inner.transact(ops), storage_expected).await
    }

    async fn ping(&self) -> crate::storage::Result<()> {
        // Readiness probes every few seconds: not worth a span each.
        self.inner.ping().await
    }
}

fn cache_expected(error: &CacheError) -> Option<&'static str> {
    match error {
        CacheError::Invalid(_) => Some("invalid"),
        _ => None,
    }
}

/// A cache whose every operation is a span.
pub struct TracedCache {
    inner: Arc<dyn Cache>,
    adapter: &'static str,
}

impl TracedCache {
    /// Wraps `inner`, an adapter called `adapter` (`memory`, `redis`) in the spans.
    pub fn new(inner: Arc<dyn Cache>, adapter: &'static str) -> Self {
        Self { inner, adapter }
    }

    fn span(&self, operation: &'static str) -> Span {
        span("cache", operation, self.adapter)
    }
}

#[async_trait]
impl Cache for TracedCache {
    async fn get(&self, key: &str) -> crate::cache::Result<Option<Bytes>> {
        let span = self.span("get");
        let found = traced(span.clone(), self.inner.get(key), cache_expected).await;
        if let Ok(None) = &found {
            span.record("emporium.outcome", "miss");
        }
        found
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> crate::cache::Result<()> {
        traced(
            self.span("set"),
            self.inner.set(key, value, ttl),
            cache_expected,
        )
        .await
    }

    async fn delete(&self, key: &str) -> crate::cache::Result<()> {
        traced(self.span("delete"), self.inner.delete(key), cache_expected).await
    }

    async fn generation(&self, group: &str) -> crate::cache::Result<u64> {
        traced(
            self.span("generation"),
            self.inner.generation(group),
            cache_expected,
        )
        .await
    }

    async fn bump_generation(&self, group: &str) -> crate::cache::Result<u64> {
        traced(
            self.span("bump_generation"),
            self.inner.bump_generation(group),
            cache_expected,
        )
        .await
    }

    async fn ping(&self) -> crate::cache::Result<()> {
        self.inner.ping().await
    }

    fn pool(&self) -> Option<PoolUse> {
        self.inner.pool()
    }
}

fn blob_expected(error: &BlobError) -> Option<&'static str> {
    match error {
        BlobError::InvalidKey(_) | BlobError::Invalid(_) => Some("invalid"),
        BlobError::Backend(_) => None,
    }
}

/// A blob store whose every operation is a span.
pub struct TracedBlobs {
    inner: Arc<dyn Blobs>,
    adapter: &'static str,
}

impl TracedBlobs {
    /// Wraps `inner`, an adapter called `adapter` (`file`, `s3`) in the spans.
    pub fn new(inner: Arc<dyn Blobs>, adapter: &'static str) -> Self {
        Self { inner, adapter }
    }

    fn span(&self, operation: &'static str) -> Span {
        span("blobs", operation, self.adapter)
    }
}

#[async_trait]
impl Blobs for TracedBlobs {
    async fn put(
        &self,
        key: &BlobKey,
        body: Bytes,
        content_type: &str,
    ) -> crate::blob::Result<BlobMeta> {
        traced(
            self.span("put"),
            self.inner.put(key, body, content_type),
            blob_expected,
        )
        .await
    }

    async fn get(&self, key: &BlobKey) -> crate::blob::Result<Option<Blob>> {
        traced(self.span("get"), self.inner.get(key), blob_expected).await
    }

    async fn head(&self, key: &BlobKey) -> crate::blob::Result<Option<BlobMeta>> {
        traced(self.span("head"), self.inner.head(key), blob_expected).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        limit: usize,
    ) -> crate::blob::Result<BlobPage> {
        traced(
            self.span("list"),
            self.inner.list(prefix, token, limit),
            blob_expected,
        )
        .await
    }

    async fn delete(&self, key: &BlobKey) -> crate::blob::Result<()> {
        traced(self.span("delete"), self.inner.delete(key), blob_expected).await
    }

    async fn ping(&self) -> crate::blob::Result<()> {
        self.inner.ping().await
    }
}
