//! Building and starting the order service.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use emporium_api::client::{CartClient, CatalogClient, InventoryClient, RetryPolicy};
use emporium_platform::client::ClientSettings;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{self, HttpSettings, RunningServer};
use emporium_ports::events::Events;
use emporium_ports::health;
use emporium_ports::storage::Storage;

use crate::domain::Pricing;
use crate::hooks::CheckoutHooks;
use crate::routes;
use crate::service::{Dependencies, Orders};

#[derive(Debug, Clone)]
pub struct OrderConfig {
    pub http: HttpSettings,
    pub client: ClientSettings,
    pub retry: RetryPolicy,
    pub catalog_url: String,
    pub inventory_url: String,
    pub cart_url: String,
    pub pricing: Pricing,
    pub currency: String,
    pub reservation_ttl_secs: u64,
    pub reconcile_interval: Duration,
    pub reconcile_grace: Duration,
}

pub fn orders(
    config: &OrderConfig,
    storage: Arc<dyn Storage>,
    events: Arc<dyn Events>,
    hooks: Arc<dyn CheckoutHooks>,
) -> anyhow::Result<Arc<Orders>> {
    let http = emporium_platform::client::build_client(&config.client)?;
    let dependencies = Dependencies {
        catalog: CatalogClient::new(&config.catalog_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        inventory: InventoryClient::new(&config.inventory_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        carts: CartClient::new(&config.cart_url, http, config.retry)
            .with_faults(&config.http.faults),
    };
    Ok(Arc::new(Orders::new(
        storage,
        dependencies,
        config.pricing,
        &config.currency,
        config.reservation_ttl_secs,
        hooks,
        events,
    )))
}

/// Serves `orders` over HTTP and runs the relay of its outbox and the reconciler, which first
/// looks at unfinished checkouts as soon as the service starts (a restart after a crash
/// resolves them) and then periodically.
pub fn start(
    config: &OrderConfig,
    orders: Arc<Orders>,
    storage: Arc<dyn Storage>,
) -> std::io::Result<RunningServer> {
    let outbox = orders.outbox();
    let readiness = Readiness::new()
        .critical("storage", health::storage(&storage))
        .optional(
            "events relay",
            health::relay(&outbox, health::RELAY_STUCK_AFTER),
        );
    let metrics = Metrics::new("order");
    metrics.observe_outbox(outbox.stats());
    metrics.register(
        "checkouts",
        "Checkouts ended by the customer's request or by the reconciler, by status and failure reason",
        orders.outcomes(),
    );
    emporium_api::client::observe_circuits(&metrics, orders.circuits());
    let data = web::Data::from(orders.clone());
    let mut server = server::start("order", &config.http, readiness, metrics, move |cfg| {
        cfg.app_data(data.clone());
        routes::configure(cfg);
    })?;
    // Publishes the events the order's writes record (docs/EVENTS.md, "The outbox").
    server.spawn(outbox.run());
    server.spawn(crate::reconciler::run(
        orders,
        config.reconcile_interval,
        config.reconcile_grace,
    ));
    Ok(server)
}
