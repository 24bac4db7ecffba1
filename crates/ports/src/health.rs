//! Readiness checks of the ports: each answers whether its backend does, in the shape the
//! platform's `Readiness` takes.

use std::sync::Arc;

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
