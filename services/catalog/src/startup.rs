//! Building and starting the catalog service.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use emporium_platform::auth::AdminKey;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{self, HttpSettings, RunningServer};
use emporium_ports::blob::Blobs;
use emporium_ports::cache::Cache;
use emporium_ports::events::Events;
use emporium_ports::health;
use emporium_ports::storage::Storage;

use crate::routes;
use crate::service::Catalog;

/// The adapters the catalog runs on.
#[derive(Clone)]
pub struct CatalogPorts {
    pub storage: Arc<dyn Storage>,
    pub cache: Arc<dyn Cache>,
    pub blobs: Arc<dyn Blobs>,
    /// The bus the catalog's events go to, through its outbox.
    pub events: Arc<dyn Events>,
}

/// Everything the catalog needs besides its ports.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub http: HttpSettings,
    pub currency: String,
    /// Kept as its digest: a dump of the configuration shows nothing of it.
    pub admin_key: AdminKey,
    pub cache_ttl: Duration,
    pub image_limit_bytes: usize,
}

/// The catalog's domain service over these ports (also used in-process to seed demo data).
pub fn catalog(config: &CatalogConfig, ports: &CatalogPorts) -> Arc<Catalog> {
    Arc::new(Catalog::new(
        ports.storage.clone(),
        ports.cache.clone(),
        ports.blobs.clone(),
        &config.currency,
        config.cache_ttl,
        ports.events.clone(),
    ))
}

/// Serves `catalog` over HTTP, with the relay of its outbox beside it.
pub fn start(
    config: &CatalogConfig,
    catalog: Arc<Catalog>,
    ports: &CatalogPorts,
) -> std::io::Result<RunningServer> {
    let outbox = catalog.outbox();
    let readiness = readiness(ports).optional(
        "events relay",
        health::relay(&outbox, health::RELAY_STUCK_AFTER),
    );
    let metrics = Metrics::new("catalog");
    metrics.observe_outbox(outbox.stats());
    metrics.observe_cache(catalog.cache_stats());
    metrics.observe_cache_pool(&ports.cache);
    let catalog = web::Data::from(catalog);
    let admin_key = web::Data::new(config.admin_key.clone());
    let image_limit = config.image_limit_bytes;
    let mut server = server::start("catalog", &config.http, readiness, metrics, move |cfg| {
        cfg.app_data(catalog.clone()).app_data(admin_key.clone());
        routes::configure(cfg, image_limit);
    })?;
    // Publishes the events the catalog's writes record (docs/EVENTS.md, "The outbox").
    server.spawn(outbox.run());
    Ok(server)
}

fn readiness(ports: &CatalogPorts) -> Readiness {
    Readiness::new()
        .critical("storage", health::storage(&ports.storage))
        .critical("blobs", health::blobs(&ports.blobs))
        .optional("cache", health::cache(&ports.cache))
}
