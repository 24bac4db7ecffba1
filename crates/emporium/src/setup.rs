//! `emporium init` and `emporium seed`: preparing the configured backends before services run.
//!
//! `init` creates every service's tables (keys, indexes, TTL) and the blob bucket from the
//! table definitions each service exports (`Service::tables`): the single source of truth, which
//! the LocalStack init hook and the Kubernetes job reach through this command instead of a copy
//! of the schema. `seed` loads the demo shop through the catalog and inventory service code,
//! so it writes exactly what the HTTP APIs would, and invalidates the shared cache as they do.
//! Both are idempotent: running them again changes nothing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_adapters::connect;
use emporium_catalog::Catalog;
use emporium_inventory::Inventory;
use emporium_ports::blob::Blobs;
use emporium_ports::cache::Cache;

use crate::demo::{self, SeedReport};
use crate::run::{Service, Settings};

/// What `init` prepared, for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub storage: String,
    pub blobs: String,
    pub events: String,
    /// Each service with the tables it owns.
    pub tables: Vec<(&'static str, Vec<&'static str>)>,
}

/// How long `init` keeps trying to reach the backends unless told otherwise: long enough for a
/// LocalStack or DynamoDB Local started beside it to come up, so a deployment's setup job does
/// not fail into the kubelet's back-off.
pub const DEFAULT_SETUP_WAIT: Duration = Duration::from_secs(60);

/// How long `seed` keeps trying to tell the cache that the catalog changed.
const SEED_CACHE_WAIT: Duration = Duration::from_secs(5);

/// Creates what every service needs in the configured storage and blob store.
pub async fn init(settings: &Settings) -> anyhow::Result<InitReport> {
    init_within(settings, DEFAULT_SETUP_WAIT).await
}

/// [`init`], trying again for up to `wait` while a backend does not answer (or refuses).
pub async fn init_within(settings: &Settings, wait: Duration) -> anyhow::Result<InitReport> {
    let storage = settings.common.storage_uri();
    let blobs = settings.common.blobs_uri();
    let mut tables = Vec::new();
    for service in Service::ALL {
        patiently(
            wait,
            &format!("the {} service's tables", service.name()),
            || connect::init_storage(&storage, service.name(), service.tables()),
        )
        .await
        .with_context(|| format!("creating the {} service's tables", service.name()))?;
        tables.push((
            service.name(),
            service.tables().iter().map(|table| table.name).collect(),
        ));
    }
    patiently(wait, "the blob store", || connect::init_blobs(&blobs))
        .await
        .context("creating the blob store")?;
    let events = settings.common.events_uri();
    let groups = Service::all_groups();
    patiently(wait, "the events bus", || {
        connect::init_events(&events, &groups)
    })
    .await
    .context("creating the events bus")?;
    Ok(InitReport {
        storage,
        blobs,
        events,
        tables,
    })
}

/// Runs `work` (idempotent) until it succeeds or `wait` has passed, saying what it waits for.
async fn patiently<F, Fut>(wait: Duration, what: &str, work: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use backon::{ExponentialBuilder, Retryable as _};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(wait))
        .without_max_times();
    work.retry(backoff)
        .when(|_| !wait.is_zero())
        .notify(|error, next| {
            tracing::warn!(error = %format!("{error:#}"), retry_in = ?next, "waiting for {what}");
        })
        .await
}

/// Loads the demo catalog, its images and its stock into the configured backends, reporting
/// each record to `progress`.
pub async fn seed(settings: &Settings, progress: demo::Progress<'_>) -> anyhow::Result<SeedReport> {
    let common = &settings.common;
    let cache = connect::cache(&common.cache_uri()).await?;
    let shop = DemoShop::open(settings, cache).await?;
    let (catalog, inventory, blobs) = (&shop.catalog, &shop.inventory, &shop.blobs);
    let mut report = demo::seed_catalog(catalog, blobs.as_ref(), progress)
        .await
        .context("loading the demo catalog")?;
    report.stock = demo::seed_stock(inventory, progress)
        .await
        .context("stocking the demo catalog")?;
    retire_cached_listings(catalog).await?;
    shop.close().await?;
    Ok(report)
}

/// Tells the shared cache that the catalog changed, retrying a while (a cache that is still
/// starting), and fails when it cannot: a running catalog would otherwise serve listings it
/// cached before the seed until they expire.
async fn retire_cached_listings(catalog: &Catalog) -> anyhow::Result<()> {
    patiently(SEED_CACHE_WAIT, "the cache to take the seed's invalidation", || async {
        catalog.retire_listings().await.map_err(anyhow::Error::from)
    })
    .await
    .context("the demo shop is seeded, but the cache could not be told: running catalogs may serve listings cached before the seed until they expire (is the cache reachable?)")
}

/// The catalog and inventory services over the configured storage and blobs, outside any
/// server: what `seed` writes through, and what tests read the seeded state through.
pub struct DemoShop {
    pub catalog: Catalog,
    pub inventory: Inventory,
    pub blobs: Arc<dyn Blobs>,
    /// Publish the events of what is written (the catalog's and the inventory's outbox relays).
    relays: Vec<tokio::task::JoinHandle<()>>,
}

/// How long closing the demo shop waits for the events of what it wrote to be published; what
/// is left is published by the services' relays once they run.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

impl DemoShop {
    /// Opens both services' stores and the blob store; `cache` is the catalog's cache.
    pub async fn open(settings: &Settings, cache: Arc<dyn Cache>) -> anyhow::Result<Self> {
        let common = &settings.common;
        let storage = |service: Service| {
            let uri = common.storage_uri();
            async move { connect::storage(&uri, service.name(), service.tables()).await }
        };
        let blobs = connect::blobs(&common.blobs_uri()).await?;
        let events = connect::events(&common.events_uri(), &Service::all_groups()).await?;
        let catalog = Catalog::new(
            storage(Service::Catalog).await?,
            cache,
            blobs.clone(),
            &common.currency,
            common.cache_ttl(),
            events.clone(),
        );
        let inventory = Inventory::new(
            storage(Service::Inventory).await?,
            settings.services.inventory.reservation_ttl_secs,
            events,
        );
        let relays = vec![
            tokio::spawn(catalog.outbox().run()),
            tokio::spawn(inventory.outbox().run()),
        ];
        Ok(Self {
            catalog,
            inventory,
            blobs,
            relays,
        })
    }

    /// Closes the stores. Dropping the last handle on an embedded store joins its writer thread
    /// and frees the file for the services: blocking work, done before returning so they can
    /// start right after.
    pub async fn close(self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        for outbox in [self.catalog.outbox(), self.inventory.outbox()] {
            while tokio::time::Instant::now() < deadline {
                match outbox.backlog().await {
                    Ok((0, _)) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(error) => {
                        tracing::warn!(%error, "cannot see what is left to publish");
                        break;
                    }
                }
            }
        }
        let Self {
            catalog,
            inventory,
            blobs,
            relays,
        } = self;
        for relay in relays {
            relay.abort();
            // An aborted task reports its cancellation: the expected outcome.
            let _ = relay.await;
        }
        tokio::task::spawn_blocking(move || drop((catalog, inventory, blobs))).await?;
        Ok(())
    }
}
