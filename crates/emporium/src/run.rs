//! Starting services on their adapters and stopping them together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use emporium_catalog::CatalogSettings;
use emporium_catalog::startup::{self as catalog_startup, CatalogConfig, CatalogPorts};
use emporium_platform::server::{HttpSettings, RunningServer};
use emporium_platform::settings::CommonSettings;
use emporium_ports::blob::Blobs;
use emporium_ports::cache::Cache;
use emporium_ports::connect;
use emporium_ports::storage::Storage;

/// How long stopping waits for services to release their stores.
const STORE_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

use crate::demo::{self, SeedReport};

/// The services this binary can run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Catalog,
}

impl Service {
    pub const ALL: &'static [Service] = &[Service::Catalog];

    pub fn name(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
        }
    }
}

/// Settings of every service, as `up` and `serve` take them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub catalog: CatalogSettings,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Plan {
    pub services: Vec<Service>,
    /// Load the demo catalog when the catalog is empty.
    pub seed_when_empty: bool,
}

/// Running services.
pub struct Platform {
    servers: Vec<RunningServer>,
    /// Each service's store, kept to close it once the service has let go of it.
    storages: Vec<Arc<dyn Storage>>,
    /// The admin key in force, and whether it was generated because none was configured.
    pub admin_key: String,
    pub admin_key_generated: bool,
    /// What seeding created, when it ran.
    pub seeded: Option<SeedReport>,
}

impl Platform {
    /// Starts the planned services. Each binds its configured port (0 picks a free one).
    pub async fn start(settings: &Settings, plan: &Plan) -> anyhow::Result<Self> {
        let common = &settings.common;
        if emporium_api::money::minor_unit_digits(&common.currency).is_none() {
            anyhow::bail!(
                "currency {:?} is not one Emporium knows; use an upper-case ISO 4217 code such as USD, EUR, GBP or JPY",
                common.currency
            );
        }
        let (admin_key, admin_key_generated) = match &common.admin_key {
            Some(key) if key.trim().is_empty() => anyhow::bail!("the admin key must not be empty"),
            Some(key) => (key.clone(), false),
            None => (emporium_platform::auth::generate_admin_key(), true),
        };
        let cache: Arc<dyn Cache> = connect::cache(&common.cache)?;
        let blobs: Arc<dyn Blobs> = connect::blobs(&common.blobs_uri())?;
        let mut platform = Self {
            servers: Vec::new(),
            storages: Vec::new(),
            admin_key,
            admin_key_generated,
            seeded: None,
        };
        for service in &plan.services {
            match service {
                Service::Catalog => {
                    let ports = CatalogPorts {
                        storage: connect::storage(
                            &common.storage_uri(),
                            "catalog",
                            emporium_catalog::TABLES,
                        )
                        .context("cannot open the catalog's storage (is another emporium using this data directory?)")?,
                        cache: cache.clone(),
                        blobs: blobs.clone(),
                    };
                    let config = CatalogConfig {
                        http: http_settings(common, settings.catalog.port),
                        currency: common.currency.clone(),
                        admin_key: platform.admin_key.clone(),
                        cache_ttl: common.cache_ttl(),
                        image_limit_bytes: settings.catalog.image_limit_bytes,
                    };
                    platform.storages.push(ports.storage.clone());
                    let catalog = catalog_startup::catalog(&config, &ports);
                    if plan.seed_when_empty && catalog.categories().await?.is_empty() {
                        tracing::info!("empty catalog: loading the demo shop");
                        let report = demo::seed_catalog(&catalog, blobs.as_ref()).await?;
                        tracing::info!(
                            categories = report.categories,
                            products = report.products,
                            "demo shop loaded"
                        );
                        platform.seeded = Some(report);
                    }
                    let server = catalog_startup::start(&config, catalog, &ports).with_context(|| {
                        format!(
                            "cannot listen on {}:{} for the catalog (set --catalog-port or EMPORIUM_CATALOG_PORT)",
                            common.host, settings.catalog.port
                        )
                    })?;
                    platform.servers.push(server);
                }
            }
        }
        Ok(platform)
    }

    /// Each running service's name and base URL.
    pub fn endpoints(&self) -> Vec<(&'static str, String)> {
        self.servers.iter().map(|s| (s.name(), s.url())).collect()
    }

    pub fn url(&self, service: Service) -> Option<String> {
        self.servers
            .iter()
            .find(|s| s.name() == service.name())
            .map(RunningServer::url)
    }

    /// Stops every service (graceful stops let in-flight requests finish), then closes the
    /// stores. Server worker threads drop their state shortly after the server reports it has
    /// stopped; waiting for that lets each store close cleanly (an embedded store left open at
    /// exit is repaired, slowly, on the next start) and frees its file for a new start.
    pub async fn stop(self, graceful: bool) -> anyhow::Result<()> {
        let stops = self.servers.into_iter().map(|server| server.stop(graceful));
        for outcome in futures::future::join_all(stops).await {
            outcome?;
        }
        let deadline = tokio::time::Instant::now() + STORE_RELEASE_TIMEOUT;
        while self.storages.iter().any(|s| Arc::strong_count(s) > 1) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("a service still holds its store; closing without waiting");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let storages = self.storages;
        // Dropping the last handle joins the store's writer thread: blocking work.
        tokio::task::spawn_blocking(move || drop(storages)).await?;
        Ok(())
    }
}

fn http_settings(common: &CommonSettings, port: u16) -> HttpSettings {
    HttpSettings {
        host: common.host.clone(),
        port,
        workers: common.workers,
        body_limit_bytes: common.body_limit_bytes,
        shutdown_timeout: Duration::from_secs(common.shutdown_timeout_secs),
    }
}
