//! Starting services on their adapters and stopping them together.

use emporium_platform::auth::{AdminKey, GatewayKey};
use emporium_platform::faults::{Dependency, FaultSwitches};
use emporium_ports::faulty::{FaultyBlobs, FaultyCache, FaultyEvents, FaultyStorage, Outages};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use clap::Args;
use emporium_adapters::connect;
use emporium_api::client::RetryPolicy;
use emporium_cart::CartLimits;
use emporium_cart::startup::{self as cart_startup, CartConfig, CartPorts};
use emporium_catalog::startup::{self as catalog_startup, CatalogConfig, CatalogPorts};
use emporium_inventory::startup::{self as inventory_startup, InventoryConfig};
use emporium_order::domain::Pricing;
use emporium_order::startup::{self as order_startup, OrderConfig};
use emporium_order::{CheckoutHooks, Faults, NoFaults};
use emporium_platform::server::{HttpSettings, RunningServer};
use emporium_platform::settings::CommonSettings;
use emporium_ports::blob::Blobs;
use emporium_ports::cache::Cache;
use emporium_ports::events::{Events, GroupDef};
use emporium_ports::faulty::Port;
use emporium_ports::storage::Storage;
use emporium_storefront::session::SessionKey;
use emporium_storefront::startup::{self as storefront_startup, StorefrontConfig};
use secrecy::{ExposeSecret as _, SecretString};

use crate::demo::{self, SeedReport};
pub use crate::services::{Peers, Service, ServiceSettings};

/// How long stopping waits for services to release their stores.
const STORE_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of every service, as `up` and `serve` take them.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    #[command(flatten)]
    pub common: CommonSettings,
    #[command(flatten)]
    pub peers: Peers,
    #[command(flatten)]
    pub services: ServiceSettings,
}

impl Settings {
    fn port(&self, service: Service) -> u16 {
        self.peers.port(service)
    }
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub services: Vec<Service>,
    /// Load the demo shop into empty stores.
    pub seed_when_empty: bool,
    /// Fault switches of the order service's checkout, for tests and drills (none unless set).
    pub order_faults: Option<Faults>,
    /// Consumer groups beyond the services' own that the bus fans out to: a test's or an
    /// operator's listener (on SNS and SQS, `init` must have made their queues).
    pub listeners: Vec<GroupDef>,
}

/// Running services.
pub struct Platform {
    servers: Vec<RunningServer>,
    /// Each service's store, kept to close it once the service has let go of it.
    storages: Vec<(Service, Arc<dyn Storage>)>,
    /// The events bus every service of this process publishes to (one embedded file is opened
    /// once per process).
    events: Arc<dyn Events>,
    /// The admin key in force, and whether it was generated because none was configured.
    pub admin_key: String,
    pub admin_key_generated: bool,
    /// The key the services show each other, when there is one (see `--gateway-key`).
    pub gateway_key: Option<String>,
    /// What seeding created, when it ran.
    pub seeded: Option<SeedReport>,
    /// Each service's fault switches, kept across a restart of the service.
    faults: std::collections::BTreeMap<&'static str, FaultSwitches>,
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
            Some(key) if key.expose_secret().trim().is_empty() => {
                anyhow::bail!("the admin key must not be empty")
            }
            Some(key) => (key.expose_secret().to_owned(), false),
            None => (emporium_platform::auth::generate_admin_key(), true),
        };
        let mut groups = Service::all_groups();
        groups.extend(plan.listeners.iter().copied());
        let events = connect::events(&common.events_uri(), &groups)
            .await
            .context("cannot open the events bus")?;
        let mut platform = Self {
            servers: Vec::new(),
            storages: Vec::new(),
            events,
            admin_key,
            admin_key_generated,
            // One process running several services makes one up for them; a lone service
            // without one configured checks nothing and sends nothing.
            gateway_key: common
                .gateway_key
                .as_ref()
                .map(|key| key.expose_secret().to_owned())
                .or_else(|| {
                    (plan.services.len() > 1).then(emporium_platform::auth::generate_gateway_key)
                }),
            seeded: None,
            faults: std::collections::BTreeMap::new(),
        };
        let order = crate::services::start_order(&plan.services);
        if let Some(stuck) = plan.services.iter().find(|s| !order.contains(s)) {
            anyhow::bail!(
                "the {} service calls services that call it back: the table of services has a cycle",
                stuck.name()
            );
        }
        let mut starter = Starter::new(settings, plan, &mut platform).await?;
        for service in order {
            if let Err(error) = starter.start(service).await {
                let failed = std::mem::take(&mut starter.platform.servers);
                for server in failed {
                    let _ = server.stop(false).await;
                }
                return Err(error);
            }
        }
        Ok(platform)
    }

    /// The fault switches of `service`.
    pub fn faults(&mut self, service: Service) -> FaultSwitches {
        self.faults.entry(service.name()).or_default().clone()
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

    /// Stops one service and closes its store, as if its process ended; the others keep running.
    pub async fn stop_service(&mut self, service: Service) -> anyhow::Result<()> {
        if let Some(position) = self.servers.iter().position(|s| s.name() == service.name()) {
            self.servers.remove(position).stop(true).await?;
        }
        let (closing, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.storages)
            .into_iter()
            .partition(|(owner, _)| *owner == service);
        self.storages = kept;
        close(closing).await
    }

    /// Starts one more service (or a stopped one again) beside those running; it reaches them
    /// where they listen.
    pub async fn start_service(
        &mut self,
        settings: &Settings,
        plan: &Plan,
        service: Service,
    ) -> anyhow::Result<()> {
        Starter::new(settings, plan, self)
            .await?
            .start(service)
            .await
    }

    /// Stops every service (graceful stops let in-flight requests finish), then closes the
    /// stores.
    pub async fn stop(self, graceful: bool) -> anyhow::Result<()> {
        let stops = self.servers.into_iter().map(|server| server.stop(graceful));
        for outcome in futures::future::join_all(stops).await {
            outcome?;
        }
        close(self.storages).await?;
        // The embedded bus's writer thread is joined when its last handle goes.
        let events = self.events;
        tokio::task::spawn_blocking(move || drop(events)).await?;
        Ok(())
    }

    /// The events bus, for a test or an operator's tool to listen on.
    pub fn events(&self) -> Arc<dyn Events> {
        self.events.clone()
    }
}

/// Closes stores once their services have let go of them. Server worker threads drop their
/// state shortly after the server reports it has stopped; waiting for that lets each store
/// close cleanly (an embedded store left open at exit is repaired, slowly, on the next start)
/// and frees its file for a new start.
async fn close(storages: Vec<(Service, Arc<dyn Storage>)>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STORE_RELEASE_TIMEOUT;
    while storages.iter().any(|(_, s)| Arc::strong_count(s) > 1) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("a service still holds its store; closing without waiting");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Dropping the last handle joins the store's writer thread: blocking work.
    tokio::task::spawn_blocking(move || drop(storages)).await?;
    Ok(())
}

/// Starts services one by one, sharing the cache and blob store, and giving each the URLs of
/// the services it calls.
pub(crate) struct Starter<'a> {
    settings: &'a Settings,
    plan: &'a Plan,
    platform: &'a mut Platform,
    cache: Arc<dyn Cache>,
    blobs: Arc<dyn Blobs>,
}

impl<'a> Starter<'a> {
    async fn new(
        settings: &'a Settings,
        plan: &'a Plan,
        platform: &'a mut Platform,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            cache: connect::cache(&settings.common.cache_uri()).await?,
            blobs: connect::blobs(&settings.common.blobs_uri()).await?,
            settings,
            plan,
            platform,
        })
    }

    fn common(&self) -> &CommonSettings {
        &self.settings.common
    }

    fn http(&mut self, service: Service) -> HttpSettings {
        let common = self.common();
        HttpSettings {
            host: common.host.clone(),
            port: self.settings.port(service),
            workers: common.workers,
            body_limit_bytes: common.body_limit_bytes,
            body_timeout: Duration::from_millis(common.body_timeout_ms),
            shutdown_timeout: Duration::from_secs(common.shutdown_timeout_secs),
            max_in_flight: common.max_in_flight,
            faults: self.platform.faults(service),
            admin_key: Some(AdminKey::new(&self.platform.admin_key)),
            gateway_key: self.platform.gateway_key.as_deref().map(GatewayKey::new),
            trust_trace_context: self.settings.common.trust_trace_context,
        }
    }

    /// The order service's checkout hooks: the plan's switches, or none.
    fn checkout_hooks(&self) -> Arc<dyn CheckoutHooks> {
        match &self.plan.order_faults {
            Some(faults) => Arc::new(faults.clone()),
            None => Arc::new(NoFaults),
        }
    }

    /// The order service's pricing rules; the storefront shows them before checkout.
    fn pricing(&self) -> Pricing {
        let order = &self.settings.services.order;
        Pricing {
            shipping_fee: order.shipping_fee,
            free_shipping_from: order.free_shipping_from,
            tax_rate_bps: order.tax_rate_bps,
        }
    }

    fn retry(&self) -> RetryPolicy {
        let common = self.common();
        RetryPolicy {
            attempt_timeout: Duration::from_millis(common.http_timeout_ms),
            retries: common.http_retries,
            deadline: Duration::from_millis(common.http_deadline_ms),
            breaker_failures: common.http_breaker_failures,
            breaker_open: Duration::from_millis(common.http_breaker_open_ms),
            ..RetryPolicy::default()
        }
    }

    /// Where `service` is reached: where it listens if this process runs it, else the
    /// configured URL, else its default port on this host.
    fn url(&self, service: Service) -> String {
        self.platform
            .url(service)
            .or_else(|| self.settings.peers.url(service).cloned())
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.settings.port(service)))
    }

    /// Where `caller` reaches `callee`, one of the services the table says it calls.
    fn peer(&self, caller: Service, callee: Service) -> anyhow::Result<String> {
        anyhow::ensure!(
            caller.calls().contains(&callee),
            "the {} service calls the {} service, which the table of services does not say",
            caller.name(),
            callee.name()
        );
        Ok(self.url(callee))
    }

    async fn storage(&mut self, service: Service) -> anyhow::Result<Arc<dyn Storage>> {
        Self::declared(service, Port::Storage)?;
        let storage = connect::storage(&self.common().storage_uri(), service.name(), service.tables())
            .await
            .with_context(|| {
                format!(
                    "cannot open the {} service's storage (is another emporium using this data directory?)",
                    service.name()
                )
            })?;
        self.platform.storages.push((service, storage.clone()));
        Ok(FaultyStorage::wrap(
            storage,
            self.outages(service, Dependency::Storage),
        ))
    }

    /// Timeouts of calls between services, and the gateway key they carry.
    fn client_settings(&self) -> emporium_platform::client::ClientSettings {
        emporium_platform::client::ClientSettings {
            gateway_key: self.platform.gateway_key.as_deref().map(SecretString::from),
            ..self.common().client_settings()
        }
    }

    /// The switches that can take `service`'s ports away, told it has `port`.
    fn outages(&mut self, service: Service, port: Dependency) -> Arc<dyn Outages> {
        let faults = self.platform.faults(service);
        faults.uses(port);
        Arc::new(faults)
    }

    /// Refuses to wire `service` with a port the table does not give it: the table is what
    /// the fault switches, the deployment's network policies and its tests read.
    fn declared(service: Service, port: Port) -> anyhow::Result<()> {
        anyhow::ensure!(
            service.spec().ports.contains(&port),
            "the {} service is wired with {port:?}, which the table of services does not give it",
            service.name()
        );
        Ok(())
    }

    /// The cache and blob store as `service` sees them: shared, but switched off for it alone.
    fn cache_for(&mut self, service: Service) -> anyhow::Result<Arc<dyn Cache>> {
        Self::declared(service, Port::Cache)?;
        Ok(FaultyCache::wrap(
            self.cache.clone(),
            self.outages(service, Dependency::Cache),
        ))
    }

    /// The events bus as `service` sees it: one bus, switched off for it alone.
    fn events_for(&mut self, service: Service) -> anyhow::Result<Arc<dyn Events>> {
        Self::declared(service, Port::Events)?;
        Ok(FaultyEvents::wrap(
            self.platform.events.clone(),
            self.outages(service, Dependency::Events),
        ))
    }

    fn blobs_for(&mut self, service: Service) -> anyhow::Result<Arc<dyn Blobs>> {
        Self::declared(service, Port::Blobs)?;
        Ok(FaultyBlobs::wrap(
            self.blobs.clone(),
            self.outages(service, Dependency::Blobs),
        ))
    }

    fn listening(
        &mut self,
        service: Service,
        server: std::io::Result<RunningServer>,
    ) -> anyhow::Result<()> {
        let server = server.with_context(|| {
            format!(
                "cannot listen on {}:{} for the {name} service (set --{name}-port or EMPORIUM_{upper}_PORT)",
                self.common().host,
                self.settings.port(service),
                name = service.name(),
                upper = service.name().to_ascii_uppercase(),
            )
        })?;
        self.platform.servers.push(server);
        Ok(())
    }

    async fn start(&mut self, service: Service) -> anyhow::Result<()> {
        // The start-up's spans (opening the store, creating tables) are the service's own.
        let faults = self.platform.faults(service);
        faults.knows(Service::ALL.iter().map(|s| s.name()));
        for callee in service.calls() {
            faults.uses(Dependency::service(callee.name()));
        }
        emporium_platform::telemetry::in_service(service.name(), self.wire(service)).await?;
        self.configured_faults(service)
    }

    /// Switches on the faults the settings ask for. Only now, with the service wired, are its
    /// dependencies known, and so whether the outages named are ones it can have.
    fn configured_faults(&mut self, service: Service) -> anyhow::Result<()> {
        let configured = self.common().faults();
        if !configured.is_active() {
            return Ok(());
        }
        self.platform
            .faults(service)
            .set_checked(configured)
            .map_err(|problem| {
                let mut why: Vec<String> = problem
                    .errors
                    .iter()
                    .map(|error| format!("{}: {}", error.field, error.message))
                    .collect();
                if why.is_empty() {
                    why.extend(problem.detail.clone());
                }
                anyhow::anyhow!(
                    "the {} service cannot start with these fault settings ({})",
                    service.name(),
                    why.join("; ")
                )
            })
    }

    pub(crate) async fn catalog(&mut self) -> anyhow::Result<()> {
        let ports = CatalogPorts {
            storage: self.storage(Service::Catalog).await?,
            cache: self.cache_for(Service::Catalog)?,
            blobs: self.blobs_for(Service::Catalog)?,
            events: self.events_for(Service::Catalog)?,
        };
        let config = CatalogConfig {
            http: self.http(Service::Catalog),
            currency: self.common().currency.clone(),
            admin_key: AdminKey::new(&self.platform.admin_key),
            cache_ttl: self.common().cache_ttl(),
            image_limit_bytes: self.settings.services.catalog.image_limit_bytes,
        };
        let catalog = catalog_startup::catalog(&config, &ports);
        if self.plan.seed_when_empty && catalog.categories().await?.is_empty() {
            tracing::info!("empty catalog: loading the demo shop");
            let report = demo::seed_catalog(&catalog, self.blobs.as_ref(), &demo::quiet)
                .instrument(tracing::info_span!(
                    "seed",
                    otel.name = "seed the demo catalog"
                ))
                .await?;
            let seeded = self.platform.seeded.get_or_insert_with(SeedReport::default);
            seeded.categories += report.categories;
            seeded.products += report.products;
        }
        let server = catalog_startup::start(&config, catalog, &ports);
        self.listening(Service::Catalog, server)
    }

    pub(crate) async fn inventory(&mut self) -> anyhow::Result<()> {
        let storage = self.storage(Service::Inventory).await?;
        let config = InventoryConfig {
            http: self.http(Service::Inventory),
            admin_key: AdminKey::new(&self.platform.admin_key),
            reservation_ttl_secs: self.settings.services.inventory.reservation_ttl_secs,
            sweep_interval: Duration::from_millis(
                self.settings.services.inventory.sweep_interval_ms.max(10),
            ),
        };
        let events = self.events_for(Service::Inventory)?;
        let inventory = inventory_startup::inventory(&config, storage.clone(), events.clone());
        if self.plan.seed_when_empty && inventory.list_stock(Some(1), None).await?.items.is_empty()
        {
            tracing::info!("empty inventory: stocking the demo shop");
            let stocked = demo::seed_stock(&inventory, &demo::quiet)
                .instrument(tracing::info_span!(
                    "seed",
                    otel.name = "stock the demo shop"
                ))
                .await?;
            self.platform
                .seeded
                .get_or_insert_with(SeedReport::default)
                .stock += stocked;
        }
        let server = inventory_startup::start(&config, inventory, storage, events);
        self.listening(Service::Inventory, server)
    }

    pub(crate) async fn cart(&mut self) -> anyhow::Result<()> {
        let ports = CartPorts {
            storage: self.storage(Service::Cart).await?,
            cache: self.cache_for(Service::Cart)?,
            events: self.events_for(Service::Cart)?,
        };
        let cart = &self.settings.services.cart;
        let config = CartConfig {
            http: self.http(Service::Cart),
            client: self.client_settings(),
            retry: self.retry(),
            catalog_url: self.peer(Service::Cart, Service::Catalog)?,
            inventory_url: self.peer(Service::Cart, Service::Inventory)?,
            limits: CartLimits {
                ttl: Duration::from_secs(cart.ttl_secs),
                max_lines: cart.max_lines,
                max_quantity: cart.max_quantity,
            },
            currency: self.common().currency.clone(),
            cache_ttl: self.common().cache_ttl(),
        };
        let carts = cart_startup::carts(&config, &ports)?;
        let server = cart_startup::start(&config, carts, &ports);
        self.listening(Service::Cart, server)
    }

    pub(crate) async fn order(&mut self) -> anyhow::Result<()> {
        let storage = self.storage(Service::Order).await?;
        let order = &self.settings.services.order;
        let config = OrderConfig {
            http: self.http(Service::Order),
            client: self.client_settings(),
            retry: self.retry(),
            catalog_url: self.peer(Service::Order, Service::Catalog)?,
            inventory_url: self.peer(Service::Order, Service::Inventory)?,
            cart_url: self.peer(Service::Order, Service::Cart)?,
            pricing: self.pricing(),
            currency: self.common().currency.clone(),
            reservation_ttl_secs: order.reservation_ttl_secs,
            reconcile_interval: Duration::from_secs(order.reconcile_interval_secs.max(1)),
            reconcile_grace: Duration::from_secs(order.reconcile_grace_secs),
        };
        let orders = order_startup::orders(
            &config,
            storage.clone(),
            self.events_for(Service::Order)?,
            self.checkout_hooks(),
        )?;
        let server = order_startup::start(&config, orders, storage);
        self.listening(Service::Order, server)
    }

    pub(crate) async fn storefront(&mut self) -> anyhow::Result<()> {
        let settings = &self.settings.services.storefront;
        let session_key = match &settings.session_key {
            Some(secret) => SessionKey::from_secret(secret.expose_secret().as_bytes())?,
            None => {
                tracing::warn!(
                    "no session key configured (EMPORIUM_SESSION_KEY): sessions end when this process stops, and replicas cannot share them"
                );
                SessionKey::generate()
            }
        }
        .with_lifetime(std::time::Duration::from_secs(
            settings.session_lifetime_secs,
        ));
        let config = StorefrontConfig {
            http: self.http(Service::Storefront),
            client: self.client_settings(),
            retry: self.retry(),
            catalog_url: self.peer(Service::Storefront, Service::Catalog)?,
            inventory_url: self.peer(Service::Storefront, Service::Inventory)?,
            cart_url: self.peer(Service::Storefront, Service::Cart)?,
            order_url: self.peer(Service::Storefront, Service::Order)?,
            session_key,
            asset_cache_bytes: settings.asset_cache_bytes,
            page_size: settings.page_size,
            product_cache_ttl: std::time::Duration::from_millis(settings.product_cache_ms),
            stock_cache_ttl: std::time::Duration::from_millis(settings.stock_cache_ms),
            max_quantity: self.settings.services.cart.max_quantity,
            pricing: self.pricing(),
            rate_limit: settings.rate_limit,
            rate_burst: settings.rate_burst,
            proxies: settings.proxies(),
        };
        let shop = storefront_startup::shop(&config)?;
        let blobs = self.blobs_for(Service::Storefront)?;
        let server = storefront_startup::start(&config, shop, blobs).await;
        self.listening(Service::Storefront, server)
    }
}
