//! `emporium init` and `emporium seed`: preparing the configured backends before services run.
//!
//! `init` creates every service's tables (keys, indexes, TTL) and the blob bucket from the
//! table definitions each service exports (`Service::tables`): the single source of truth, which
//! the LocalStack init hook and the Kubernetes job reach through this command instead of a copy
//! of the schema. `seed` loads the demo shop through the catalog and inventory service code,
//! so it writes exactly what the HTTP APIs would, and invalidates the shared cache as they do.
//! Both are idempotent: running them again changes nothing.

use anyhow::Context;
use emporium_adapters::connect;
use emporium_catalog::Catalog;
use emporium_inventory::Inventory;

use crate::demo::{self, SeedReport};
use crate::run::{Service, Settings};

/// What `init` prepared, for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub storage: String,
    pub blobs: String,
    /// Each service with the tables it owns.
    pub tables: Vec<(&'static str, Vec<&'static str>)>,
}

/// Creates what every service needs in the configured storage and blob store.
pub async fn init(settings: &Settings) -> anyhow::Result<InitReport> {
    let storage = settings.common.storage_uri();
    let blobs = settings.common.blobs_uri();
    let mut tables = Vec::new();
    for service in Service::ALL {
        connect::init_storage(&storage, service.name(), service.tables())
            .await
            .with_context(|| format!("creating the {} service's tables", service.name()))?;
        tables.push((
            service.name(),
            service.tables().iter().map(|table| table.name).collect(),
        ));
    }
    connect::init_blobs(&blobs)
        .await
        .context("creating the blob store")?;
    Ok(InitReport {
        storage,
        blobs,
        tables,
    })
}

/// Loads the demo catalog, its images and its stock into the configured backends, reporting
/// each record to `progress`.
pub async fn seed(settings: &Settings, progress: demo::Progress<'_>) -> anyhow::Result<SeedReport> {
    let common = &settings.common;
    let storage_uri = common.storage_uri();
    let cache = connect::cache(&common.cache_uri()).await?;
    let blobs = connect::blobs(&common.blobs_uri()).await?;
    let catalog_storage = connect::storage(
        &storage_uri,
        Service::Catalog.name(),
        Service::Catalog.tables(),
    )
    .await?;
    let inventory_storage = connect::storage(
        &storage_uri,
        Service::Inventory.name(),
        Service::Inventory.tables(),
    )
    .await?;
    let catalog = Catalog::new(
        catalog_storage,
        cache,
        blobs.clone(),
        &common.currency,
        common.cache_ttl(),
    );
    let inventory = Inventory::new(inventory_storage, settings.inventory.reservation_ttl_secs);
    let mut report = demo::seed_catalog(&catalog, blobs.as_ref(), progress)
        .await
        .context("loading the demo catalog")?;
    report.stock = demo::seed_stock(&inventory, progress)
        .await
        .context("stocking the demo catalog")?;
    // Dropping the last handle on an embedded store joins its writer thread and frees the file
    // for the services: blocking work, and done before returning so they can start right after.
    tokio::task::spawn_blocking(move || drop((catalog, inventory))).await?;
    Ok(report)
}
