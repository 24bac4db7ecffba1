//! Building and starting the inventory service.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use emporium_platform::auth::AdminKey;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{self, HttpSettings, RunningServer};
use emporium_ports::events::Events;
use emporium_ports::health;
use emporium_ports::storage::Storage;

use crate::routes;
use crate::service::Inventory;

#[derive(Debug, Clone)]
pub struct InventoryConfig {
    pub http: HttpSettings,
    /// Kept as its digest: a dump of the configuration shows nothing of it.
    pub admin_key: AdminKey,
    pub reservation_ttl_secs: u64,
    pub sweep_interval: Duration,
}

pub fn inventory(
    config: &InventoryConfig,
    storage: Arc<dyn Storage>,
    events: Arc<dyn Events>,
) -> Arc<Inventory> {
    Arc::new(Inventory::new(storage, config.reservation_ttl_secs, events))
}

/// Serves `inventory` over HTTP and runs beside it the sweeper that returns the stock of
/// expired reservations, the relay of its stock events and its consumer of order events; all
/// stop with the returned server.
pub fn start(
    config: &InventoryConfig,
    inventory: Arc<Inventory>,
    storage: Arc<dyn Storage>,
    events: Arc<dyn Events>,
) -> std::io::Result<RunningServer> {
    let outbox = inventory.outbox();
    let consumer = Arc::new(inventory.order_consumer(events));
    let readiness = Readiness::new()
        .critical("storage", health::storage(&storage))
        .optional(
            "events relay",
            health::relay(&outbox, health::RELAY_STUCK_AFTER),
        );
    let admin_key = web::Data::new(config.admin_key.clone());
    let metrics = Metrics::new("inventory");
    metrics.observe_outbox(outbox.stats());
    metrics.observe_consumer(consumer.stats());
    metrics.register(
        "reservations",
        "Reservation requests by outcome",
        inventory.reservation_outcomes(),
    );
    metrics.register(
        "reservation_conflicts",
        "Reservation moves that lost a race with another and were decided again",
        inventory.reservation_conflicts(),
    );
    let data = web::Data::from(inventory.clone());
    let mut server = server::start("inventory", &config.http, readiness, metrics, move |cfg| {
        cfg.app_data(data.clone()).app_data(admin_key.clone());
        routes::configure(cfg);
    })?;
    server.spawn(outbox.run());
    server.spawn_until_stopped(|stopping| consumer.run_until(stopping.wait()));
    server.spawn(sweep(inventory, config.sweep_interval));
    Ok(server)
}

async fn sweep(inventory: Arc<Inventory>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match inventory.release_expired().await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "returned the stock of expired reservations"),
            Err(error) => tracing::warn!(%error, "sweeping expired reservations failed"),
        }
    }
}
