//! Building and starting the cart service.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use emporium_api::client::{CatalogClient, InventoryClient, RetryPolicy};
use emporium_platform::client::ClientSettings;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{self, HttpSettings, RunningServer};
use emporium_ports::cache::Cache;
use emporium_ports::events::Events;
use emporium_ports::health;
use emporium_ports::storage::Storage;

use crate::routes;
use crate::service::{CartLimits, Carts};

#[derive(Debug, Clone)]
pub struct CartConfig {
    pub http: HttpSettings,
    pub client: ClientSettings,
    pub retry: RetryPolicy,
    pub catalog_url: String,
    pub inventory_url: String,
    pub limits: CartLimits,
    pub currency: String,
    pub cache_ttl: Duration,
}

#[derive(Clone)]
pub struct CartPorts {
    pub storage: Arc<dyn Storage>,
    pub cache: Arc<dyn Cache>,
    /// The bus its consumer of order events receives from.
    pub events: Arc<dyn Events>,
}

pub fn carts(config: &CartConfig, ports: &CartPorts) -> anyhow::Result<Arc<Carts>> {
    let http = emporium_platform::client::build_client(&config.client)?;
    Ok(Arc::new(Carts::new(
        ports.storage.clone(),
        ports.cache.clone(),
        config.cache_ttl,
        CatalogClient::new(&config.catalog_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        InventoryClient::new(&config.inventory_url, http, config.retry)
            .with_faults(&config.http.faults),
        config.limits,
        &config.currency,
    )))
}

pub fn start(
    config: &CartConfig,
    carts: Arc<Carts>,
    ports: &CartPorts,
) -> std::io::Result<RunningServer> {
    let readiness = Readiness::new()
        .critical("storage", health::storage(&ports.storage))
        .optional("cache", health::cache(&ports.cache));
    let consumer = Arc::new(crate::events::order_consumer(
        carts.clone(),
        ports.events.clone(),
    ));
    let metrics = Metrics::new("cart");
    metrics.observe_consumer(consumer.stats());
    metrics.observe_cache(carts.cache_stats());
    metrics.observe_cache_pool(&ports.cache);
    emporium_api::client::observe_circuits(&metrics, carts.circuits());
    let data = web::Data::from(carts);
    let mut server = server::start("cart", &config.http, readiness, metrics, move |cfg| {
        cfg.app_data(data.clone());
        routes::configure(cfg);
    })?;
    // Clears the carts of confirmed orders and frees those of cancelled ones (`events.rs`).
    server.spawn_until_stopped(|stopping| consumer.run_until(stopping.wait()));
    Ok(server)
}
