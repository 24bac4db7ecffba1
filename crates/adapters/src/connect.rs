//! Choosing adapters from configuration: one URI per port.
//!
//! | port    | URI                                   | adapter                                        |
//! |---------|---------------------------------------|------------------------------------------------|
//! | storage | `embedded:///<dir>`                   | one redb file per service in `<dir>`           |
//! | storage | `dynamodb://<prefix>`                 | DynamoDB tables `<prefix>-<table>`             |
//! | cache   | `memory://[?capacity_mb=N]`           | in-process moka cache, N MiB (default 8)       |
//! | cache   | `redis://host:port[/db][?prefix=..&pool_size=..&timeout_ms=..]` (or `rediss://`) | Redis / ElastiCache |
//! | blobs   | `file:///<dir>`                       | files under `<dir>`                            |
//! | blobs   | `s3://<bucket>[/<prefix>]`            | objects in an S3 bucket                        |
//! | events  | `embedded:///<dir>`                   | `events.redb` in `<dir>`, woken in-process     |
//! | events  | `sns://<prefix>`                      | SNS topics `<prefix>-<aggregate>`, SQS queues `<prefix>-<group>` (and `-dlq`) |
//!
//! The AWS adapters take region, credentials and endpoint from the standard AWS configuration
//! (see `aws`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use emporium_ports::blob::Blobs;
use emporium_ports::blob::local::LocalBlobs;
use emporium_ports::cache::Cache;
use emporium_ports::cache::memory::MemoryCache;
use emporium_ports::events::stored::StoredEvents;
use emporium_ports::events::{Events, GroupDef};
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{Storage, TableDef};
use emporium_ports::traced::{TracedBlobs, TracedCache, TracedStorage};

use crate::dynamodb::DynamoStorage;
use crate::redis::{RedisCache, RedisOptions};
use crate::s3::S3Blobs;
use crate::sqs::{Names, SnsSqsEvents, ensure_bus};

/// Scheme, the part after `://`, and the query of a URI.
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

fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn directory(uri: &str, rest: &str) -> anyhow::Result<PathBuf> {
    if rest.is_empty() {
        bail!("{uri:?} names no directory");
    }
    Ok(PathBuf::from(rest))
}

fn table_prefix(uri: &str, rest: &str) -> anyhow::Result<String> {
    let prefix = rest.trim_matches('/');
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        bail!("{uri:?}: a table prefix holds only letters, digits, '-', '_' and '.'");
    }
    Ok(prefix.to_owned())
}

fn bucket(uri: &str, rest: &str) -> anyhow::Result<(String, String)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3 || bucket.len() > 63 {
        bail!("{uri:?} names no valid bucket (3 to 63 characters)");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// The `endpoint=` option of a `dynamodb://` or `s3://` URI, the only option they take.
fn endpoint<'a>(uri: &str, query: Option<&'a str>) -> anyhow::Result<Option<&'a str>> {
    let mut endpoint = None;
    for (name, value) in pairs(query) {
        match name {
            "endpoint" if value.starts_with("http://") || value.starts_with("https://") => {
                endpoint = Some(value);
            }
            "endpoint" => bail!("the endpoint in {uri:?} is not an http:// or https:// URL"),
            _ => bail!("unknown option {name:?} in {uri:?} (expected endpoint=<url>)"),
        }
    }
    Ok(endpoint)
}

/// Opens the storage for `service`, holding `tables`.
pub async fn storage(
    uri: &str,
    service: &str,
    tables: &[TableDef],
) -> anyhow::Result<Arc<dyn Storage>> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "embedded" => {
            let path = directory(uri, rest)?.join(format!("{service}.redb"));
            let storage = EmbeddedStorage::open(&path, tables)
                .with_context(|| format!("opening embedded storage {}", path.display()))?;
            Ok(Arc::new(TracedStorage::new(Arc::new(storage), "redb")))
        }
        "dynamodb" => {
            let prefix = table_prefix(uri, rest)?;
            let storage = DynamoStorage::new(
                crate::aws::dynamodb_at(endpoint(uri, query)?).await,
                &prefix,
                tables,
            );
            Ok(Arc::new(TracedStorage::new(Arc::new(storage), "dynamodb")))
        }
        other => bail!(
            "unknown storage scheme {other:?} in {uri:?} (expected embedded:// or dynamodb://)"
        ),
    }
}

/// Creates what the storage needs for `tables`: DynamoDB tables, or the embedded file.
pub async fn init_storage(uri: &str, service: &str, tables: &[TableDef]) -> anyhow::Result<()> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "dynamodb" => {
            let prefix = table_prefix(uri, rest)?;
            DynamoStorage::new(
                crate::aws::dynamodb_at(endpoint(uri, query)?).await,
                &prefix,
                tables,
            )
            .ensure_tables()
            .await
        }
        _ => storage(uri, service, tables).await.map(drop),
    }
}

/// Size of the in-process cache when the URI does not say: with every service of `emporium up`
/// sharing it, this is most of what the process can grow by under load. 8 MiB holds the
/// products and tens of thousands of carts; at 16 the process levelled off at 101 MB in a 120 s
/// load, at 8 it stays near 85 MB with the same throughput (docs/BENCHMARKS.md).
pub const DEFAULT_MEMORY_CACHE_MB: u64 = 8;

/// Connects the cache.
pub async fn cache(uri: &str) -> anyhow::Result<Arc<dyn Cache>> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "memory" => {
            let mut capacity_mb: u64 = DEFAULT_MEMORY_CACHE_MB;
            for (name, value) in pairs(query) {
                match name {
                    "capacity_mb" => {
                        capacity_mb = value
                            .parse()
                            .with_context(|| format!("capacity_mb in {uri:?} is not a number"))?;
                    }
                    _ => bail!("unknown option {name:?} in {uri:?}"),
                }
            }
            let cache = MemoryCache::new(capacity_mb * 1024 * 1024);
            Ok(Arc::new(TracedCache::new(Arc::new(cache), "memory")))
        }
        "redis" | "rediss" => {
            let mut options = RedisOptions::default();
            let mut passed = Vec::new();
            for (name, value) in pairs(query) {
                match name {
                    "prefix" => options.prefix = value.to_owned(),
                    "pool_size" => {
                        options.pool_size = value
                            .parse()
                            .with_context(|| format!("pool_size in {uri:?} is not a number"))?;
                    }
                    "timeout_ms" => {
                        options.timeout =
                            Duration::from_millis(value.parse().with_context(|| {
                                format!("timeout_ms in {uri:?} is not a number")
                            })?);
                    }
                    // Redis's own options (protocol, ...) pass through.
                    _ => passed.push(format!("{name}={value}")),
                }
            }
            let url = if passed.is_empty() {
                format!("{scheme}://{rest}")
            } else {
                format!("{scheme}://{rest}?{}", passed.join("&"))
            };
            let cache = RedisCache::new(&url, options)
                .with_context(|| format!("configuring redis {uri:?}"))?;
            Ok(Arc::new(TracedCache::new(Arc::new(cache), "redis")))
        }
        other => {
            bail!("unknown cache scheme {other:?} in {uri:?} (expected memory:// or redis://)")
        }
    }
}

/// Opens the blob store.
pub async fn blobs(uri: &str) -> anyhow::Result<Arc<dyn Blobs>> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "file" => {
            let root = directory(uri, rest)?;
            let blobs = LocalBlobs::open(&root)
                .with_context(|| format!("opening blob directory {}", root.display()))?;
            Ok(Arc::new(TracedBlobs::new(Arc::new(blobs), "file")))
        }
        "s3" => {
            let (bucket, prefix) = bucket(uri, rest)?;
            let blobs = S3Blobs::new(
                crate::aws::s3_at(endpoint(uri, query)?).await,
                &bucket,
                &prefix,
            );
            Ok(Arc::new(TracedBlobs::new(Arc::new(blobs), "s3")))
        }
        other => bail!("unknown blob scheme {other:?} in {uri:?} (expected file:// or s3://)"),
    }
}

/// Creates what the blob store needs: the bucket, or the directory.
pub async fn init_blobs(uri: &str) -> anyhow::Result<()> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "s3" => {
            let (bucket, prefix) = bucket(uri, rest)?;
            S3Blobs::new(
                crate::aws::s3_at(endpoint(uri, query)?).await,
                &bucket,
                &prefix,
            )
            .ensure_bucket()
            .await
        }
        _ => blobs(uri).await.map(drop),
    }
}

/// The names of an `sns://<prefix>` bus: the prefix is the first part of every topic and queue.
fn bus_names(uri: &str, rest: &str) -> anyhow::Result<Names> {
    let prefix = table_prefix(uri, rest)?;
    if prefix.is_empty() || prefix.len() > 30 {
        bail!("{uri:?} names no prefix for its topics and queues (1 to 30 characters)");
    }
    Ok(Names::new(&prefix))
}

/// Opens the events bus for `groups` (every consumer group of the platform: publishing fans out
/// to each of them). An embedded bus is one file that one process opens at a time.
pub async fn events(uri: &str, groups: &[GroupDef]) -> anyhow::Result<Arc<dyn Events>> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "embedded" => {
            let path = directory(uri, rest)?.join("events.redb");
            let events =
                StoredEvents::embedded(&path, groups).map_err(|e| anyhow::anyhow!("{e:#}"))?;
            Ok(Arc::new(events))
        }
        "sns" => {
            let names = bus_names(uri, rest)?;
            let at = endpoint(uri, query)?;
            let (sns, sqs) = (crate::aws::sns_at(at).await, crate::aws::sqs_at(at).await);
            let events = SnsSqsEvents::open(sns, sqs, &names, groups).await?;
            Ok(Arc::new(events))
        }
        other => {
            bail!("unknown events scheme {other:?} in {uri:?} (expected embedded:// or sns://)")
        }
    }
}

/// Creates what the bus needs for `groups`: topics, queues, dead-letter queues, queue policies
/// and subscriptions, or the embedded file.
pub async fn init_events(uri: &str, groups: &[GroupDef]) -> anyhow::Result<()> {
    let (scheme, rest, query) = split(uri)?;
    match scheme {
        "sns" => {
            let names = bus_names(uri, rest)?;
            let at = endpoint(uri, query)?;
            let (sns, sqs) = (crate::aws::sns_at(at).await, crate::aws::sqs_at(at).await);
            ensure_bus(&sns, &sqs, &names, groups).await
        }
        _ => events(uri, groups).await.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uris_pick_adapters_and_reject_the_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = format!("embedded://{}", dir.path().display());
        assert!(storage(&uri, "catalog", &[]).await.is_ok());
        assert!(dir.path().join("catalog.redb").exists());
        assert!(cache("memory://?capacity_mb=8").await.is_ok());
        assert!(cache("memory://?size=8").await.is_err());
        assert!(
            cache("redis://127.0.0.1:1/0?prefix=t:&timeout_ms=50")
                .await
                .is_ok(),
            "connects lazily"
        );
        assert!(cache("redis://127.0.0.1:1?timeout_ms=soon").await.is_err());
        assert!(
            blobs(&format!("file://{}", dir.path().join("b").display()))
                .await
                .is_ok()
        );
        assert!(storage("postgres://x", "catalog", &[]).await.is_err());
        assert!(
            storage("dynamodb://bad prefix", "catalog", &[])
                .await
                .is_err()
        );
        assert!(blobs("no-scheme").await.is_err());
        assert!(blobs("file://").await.is_err());
        assert!(blobs("s3://x").await.is_err());
        assert!(events(&uri, &[]).await.is_ok());
        assert!(dir.path().join("events.redb").exists());
        assert!(events("kafka://x", &[]).await.is_err());
        assert!(events("sns://", &[]).await.is_err());
        assert!(events("sns://bad prefix", &[]).await.is_err());
        assert!(events("sns://p?endpoint=ftp://x", &[]).await.is_err());
        assert!(
            storage(
                "dynamodb://p?endpoint=http://127.0.0.1:4566",
                "catalog",
                &[]
            )
            .await
            .is_ok()
        );
        assert!(
            storage("dynamodb://p?endpoint=ftp://x", "catalog", &[])
                .await
                .is_err()
        );
        assert!(
            storage("dynamodb://p?region=x", "catalog", &[])
                .await
                .is_err()
        );
        assert!(
            blobs("s3://bucket?endpoint=http://127.0.0.1:4566")
                .await
                .is_ok()
        );
        assert!(blobs("s3://bucket?tls=no").await.is_err());
    }
}
