//! Building and starting the storefront.

use std::sync::Arc;

use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::web;
use emporium_api::client::{CartClient, CatalogClient, InventoryClient, OrderClient, RetryPolicy};
use emporium_api::order::Pricing;
use emporium_platform::client::ClientSettings;
use emporium_platform::health::Readiness;
use emporium_platform::metrics::Metrics;
use emporium_platform::server::{self, HttpSettings, RunningServer};
use emporium_ports::blob::Blobs;
use emporium_ports::health;

use crate::assets::{self, Assets};
use crate::error::PageError;
use crate::session::{self, SessionKey};
use crate::shop::{Recent, Shop};
use crate::{api, limits, pages};

#[derive(Debug, Clone)]
pub struct StorefrontConfig {
    pub http: HttpSettings,
    pub client: ClientSettings,
    pub retry: RetryPolicy,
    pub catalog_url: String,
    pub inventory_url: String,
    pub cart_url: String,
    pub order_url: String,
    pub session_key: SessionKey,
    pub asset_cache_bytes: u64,
    pub page_size: u32,
    /// How long products and listings read from the catalog are reused.
    pub product_cache_ttl: std::time::Duration,
    /// How long stock levels read from the inventory are reused.
    pub stock_cache_ttl: std::time::Duration,
    /// The cart service's most units of one product, so pages offer no more.
    pub max_quantity: i64,
    /// The order service's pricing rules, to show shipping and tax before checkout.
    pub pricing: Pricing,
    /// Requests a second per client (0: none), the burst, and the proxies whose
    /// `X-Forwarded-For` entries name the client.
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub proxies: limits::TrustedProxies,
}

const PUBLISH_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(500);
const PUBLISH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest form the shop takes (the checkout form is well under 2 KiB).
const FORM_LIMIT_BYTES: usize = 16 * 1024;

/// What every page answers with: no framing by other sites, no sniffing, no referrer leaking
/// ids, and only this origin's styles, images and forms.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Most products, listings and stock levels kept (a few hundred bytes to a few KiB each).
const RECENT_PRODUCTS: u64 = 10_000;
const RECENT_LISTINGS: u64 = 2_000;
const RECENT_STOCK_LEVELS: u64 = 20_000;

/// The storefront's clients of the four services, as the other services build theirs.
pub fn shop(config: &StorefrontConfig) -> anyhow::Result<Shop> {
    let http = emporium_platform::client::build_client(&config.client)?;
    Ok(Shop {
        catalog: CatalogClient::new(&config.catalog_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        inventory: InventoryClient::new(&config.inventory_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        carts: CartClient::new(&config.cart_url, http.clone(), config.retry)
            .with_faults(&config.http.faults),
        orders: OrderClient::new(&config.order_url, http, config.retry)
            .with_faults(&config.http.faults),
        page_size: config.page_size,
        max_quantity: config.max_quantity,
        pricing: config.pricing,
        navigation: Recent::new(crate::shop::NAVIGATION_TTL, 1),
        products: Recent::new(config.product_cache_ttl, RECENT_PRODUCTS),
        listings: Recent::new(config.product_cache_ttl, RECENT_LISTINGS),
        stock: Recent::new(config.stock_cache_ttl, RECENT_STOCK_LEVELS),
    })
}

/// Publishes the static files to the blob store and starts serving.
pub async fn start(
    config: &StorefrontConfig,
    shop: Shop,
    blobs: Arc<dyn Blobs>,
) -> std::io::Result<RunningServer> {
    let shop = web::Data::new(shop);
    let assets = Assets::new(blobs.clone(), config.asset_cache_bytes);
    // On Kubernetes the storefront may start before the setup job has made the bucket: keep
    // trying in the background (readiness stays down meanwhile) instead of crash-looping.
    let pending = match assets.publish().await {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot publish static files yet; retrying");
            Some(assets.clone())
        }
    };
    let assets = web::Data::new(assets);
    let key = web::Data::new(config.session_key.clone());
    let rate_limit =
        limits::RateLimit::new(config.rate_limit, config.rate_burst, config.proxies.clone())
            .map(web::Data::new);
    let limiter = rate_limit.clone();
    // The shop can show pages without the services (it says what is unavailable), so only
    // the blob store, which it serves itself, decides readiness.
    let readiness = Readiness::new().critical("blobs", health::blobs(&blobs));
    let metrics = Metrics::new("storefront");
    emporium_api::client::observe_circuits(
        &metrics,
        vec![
            Box::new(shop.catalog.clone()),
            Box::new(shop.inventory.clone()),
            Box::new(shop.carts.clone()),
            Box::new(shop.orders.clone()),
        ],
    );
    let mut server = server::start("storefront", &config.http, readiness, metrics, move |cfg| {
        if let Some(limit) = &rate_limit {
            cfg.app_data(limit.clone());
        }
        // Static files are cheap and cached; pages and the API are what a client can
        // overdo, so they are limited (outermost, before any work).
        cfg.app_data(shop.clone())
            .app_data(assets.clone())
            .app_data(key.clone())
            .configure(assets::configure)
            .service(
                web::scope("/api/v1")
                    .wrap(api_security_headers())
                    .wrap(from_fn(session::middleware))
                    .wrap(from_fn(limits::middleware))
                    .configure(api::configure),
            )
            .service(
                web::scope("")
                    .app_data(form_config())
                    .wrap(security_headers())
                    .wrap(from_fn(session::middleware))
                    .wrap(from_fn(limits::middleware))
                    .configure(pages::configure)
                    .default_service(web::to(pages::not_found)),
            );
    })?;
    if let Some(limit) = limiter {
        // The table of clients holds only those seen lately.
        server.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                limit.forget_idle();
            }
        });
    }
    if let Some(assets) = pending {
        server.spawn(async move {
            let mut delay = PUBLISH_RETRY_MIN;
            while let Err(error) = assets.publish().await {
                tracing::warn!(error = %format!("{error:#}"), "cannot publish static files yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PUBLISH_RETRY_MAX);
            }
            tracing::info!("static files published");
        });
    }
    Ok(server)
}

/// Forms are small; one that is too big or not a form gets the error page, not a JSON problem.
fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(FORM_LIMIT_BYTES)
        .error_handler(|error, _| {
            let why = match error {
                actix_web::error::UrlencodedError::Overflow { .. }
                | actix_web::error::UrlencodedError::UnknownLength => {
                    "The form was too large.".to_owned()
                }
                actix_web::error::UrlencodedError::ContentType => {
                    "The form was not sent as a form.".to_owned()
                }
                _ => "The form could not be read.".to_owned(),
            };
            PageError::BadRequest(why).into()
        })
}

/// The API's answers are data, never a page to render or frame.
fn api_security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
}

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("X-Frame-Options", "DENY"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
}
