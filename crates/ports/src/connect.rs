//! Choosing adapters from configuration: one URI per port.
//!
//! | port    | URI                         | adapter                                   |
//! |---------|-----------------------------|-------------------------------------------|
//! | storage | `embedded:///<dir>`         | one redb file per service in `<dir>`      |
//! | cache   | `memory://[?capacity_mb=N]` | in-process moka cache, N MiB (default 64) |
//! | blobs   | `file:///<dir>`             | files under `<dir>`                       |

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::blob::Blobs;
use crate::blob::local::LocalBlobs;
use crate::cache::Cache;
use crate::cache::memory::MemoryCache;
use crate::storage::embedded::EmbeddedStorage;
use crate::storage::{Storage, TableDef};

/// Scheme, path (or authority and path) and query of a URI such as `embedded:///var/data`.
fn split(uri: &str) -> anyhow::Result<(&str, &str, Option<&str>)> {
    let (scheme, rest) = uri
        .split_once("://")
        .with_context(|| format!("{uri:?} is not a URI like scheme://..."))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    Ok((scheme, rest, query))
}

fn directory(uri: &str, rest: &str) -> anyhow::Result<PathBuf> {
    if rest.is_empty() {
        bail!("{uri:?} names no directory");
    }
    Ok(PathBuf::from(rest))
}

/// Opens the storage for `service`, holding `tables`.
pub fn storage(uri: &str, service: &str, tables: &[TableDef]) -> anyhow::Result<Arc<dyn Storage>> {
    let (scheme, rest, _) = split(uri)?;
    match scheme {
        "embedded" => {
            let path = directory(uri, rest)?.join(format!("{service}.redb"));
            let storage = EmbeddedStorage::open(&path, tables)
                .with_context(|| format!("opening embedded storage {}", path.display()))?;
            Ok(Arc::new(storage))
        }
        other => bail!("unknown storage scheme {other:?} in {uri:?} (expected embedded://)"),
    }
}

/// Connects the cache.
pub fn cache(uri: &str) -> anyhow::Result<Arc<dyn Cache>> {
    let (scheme, _, query) = split(uri)?;
    match scheme {
        "memory" => {
            let mut capacity_mb: u64 = 64;
            for pair in query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
            {
                match pair.split_once('=') {
                    Some(("capacity_mb", value)) => {
                        capacity_mb = value
                            .parse()
                            .with_context(|| format!("capacity_mb in {uri:?} is not a number"))?;
                    }
                    _ => bail!("unknown option {pair:?} in {uri:?}"),
                }
            }
            Ok(Arc::new(MemoryCache::new(capacity_mb * 1024 * 1024)))
        }
        other => bail!("unknown cache scheme {other:?} in {uri:?} (expected memory://)"),
    }
}

/// Opens the blob store.
pub fn blobs(uri: &str) -> anyhow::Result<Arc<dyn Blobs>> {
    let (scheme, rest, _) = split(uri)?;
    match scheme {
        "file" => {
            let root = directory(uri, rest)?;
            let blobs = LocalBlobs::open(&root)
                .with_context(|| format!("opening blob directory {}", root.display()))?;
            Ok(Arc::new(blobs))
        }
        other => bail!("unknown blob scheme {other:?} in {uri:?} (expected file://)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_pick_adapters_and_reject_the_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = format!("embedded://{}", dir.path().display());
        assert!(storage(&uri, "catalog", &[]).is_ok());
        assert!(dir.path().join("catalog.redb").exists());
        assert!(cache("memory://?capacity_mb=8").is_ok());
        assert!(cache("memory://?size=8").is_err());
        assert!(blobs(&format!("file://{}", dir.path().join("b").display())).is_ok());
        assert!(storage("postgres://x", "catalog", &[]).is_err());
        assert!(blobs("no-scheme").is_err());
        assert!(blobs("file://").is_err());
    }
}
