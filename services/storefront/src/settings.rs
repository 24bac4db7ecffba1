//! Settings of the storefront.

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Storefront")]
pub struct StorefrontSettings {
    /// Secret that signs session cookies: at least 32 bytes, the same on every replica.
    /// Without it a random key is made at start, and sessions end when the process does.
    #[arg(
        long = "session-key",
        env = "EMPORIUM_SESSION_KEY",
        value_name = "SECRET",
        hide_env_values = true,
        value_parser = emporium_platform::settings::secret
    )]
    pub session_key: Option<secrecy::SecretString>,

    /// Seconds a visitor's session lasts from its last use; an older session cookie is refused
    /// and the visitor starts afresh (a new cart and an empty order history).
    #[arg(
        long = "session-lifetime-secs",
        env = "EMPORIUM_SESSION_LIFETIME_SECS",
        default_value_t = 7 * 86_400,
        value_parser = clap::value_parser!(u64).range(1..=400 * 86_400)
    )]
    pub session_lifetime_secs: u64,

    /// Bytes of images and static files the storefront keeps in memory, like an edge cache.
    #[arg(
        long = "asset-cache-bytes",
        env = "EMPORIUM_ASSET_CACHE_BYTES",
        default_value_t = 32 * 1024 * 1024
    )]
    pub asset_cache_bytes: u64,

    /// Products per page on category and search pages.
    #[arg(
        long = "page-size",
        env = "EMPORIUM_PAGE_SIZE",
        default_value_t = 12,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub page_size: u32,

    /// Milliseconds the storefront reuses a product or a listing it read from the catalog
    /// (0: read every time). A change in the catalog shows on pages within this time; prices
    /// charged are always current.
    #[arg(
        long = "product-cache-ms",
        env = "EMPORIUM_PRODUCT_CACHE_MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(0..=600_000)
    )]
    pub product_cache_ms: u64,

    /// Milliseconds the storefront reuses a stock level it read from the inventory (0: read
    /// every time). "Only 3 left" may be this old; checkout always reserves against the
    /// current stock.
    #[arg(
        long = "stock-cache-ms",
        env = "EMPORIUM_STOCK_CACHE_MS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(0..=60_000)
    )]
    pub stock_cache_ms: u64,

    /// Requests a second one client may make, on average (0: no limit). Beyond its burst it gets
    /// 429 with `Retry-After`. Clients on this machine are never limited.
    #[arg(long = "rate-limit", env = "EMPORIUM_RATE_LIMIT", default_value_t = 50)]
    pub rate_limit: u32,

    /// Requests one client may make at once before the limit applies.
    #[arg(
        long = "rate-burst",
        env = "EMPORIUM_RATE_BURST",
        default_value_t = 200
    )]
    pub rate_burst: u32,

    /// Take the client's address from the last `X-Forwarded-For` entry (behind one load
    /// balancer that appends it, such as an ALB), not from the connection: the same as
    /// `--trusted-proxies 1`.
    #[arg(long = "trust-forwarded", env = "EMPORIUM_TRUST_FORWARDED")]
    pub trust_forwarded: bool,

    /// The proxies in front of the shop whose `X-Forwarded-For` entries name the client: how
    /// many there are (`2` for a CDN before a balancer: the client is the second entry from the
    /// right), or their addresses and networks (`10.0.0.0/8,fd00::/8`: only a peer among them
    /// is believed, and the client is the right-most entry outside them).
    #[arg(
        long = "trusted-proxies",
        env = "EMPORIUM_TRUSTED_PROXIES",
        value_name = "COUNT|NETWORKS"
    )]
    pub trusted_proxies: Option<crate::limits::TrustedProxies>,
}

impl StorefrontSettings {
    /// The proxies the rate limit believes, `--trusted-proxies` first.
    pub fn proxies(&self) -> crate::limits::TrustedProxies {
        match &self.trusted_proxies {
            Some(proxies) => proxies.clone(),
            None if self.trust_forwarded => {
                crate::limits::TrustedProxies::Hops(std::num::NonZeroUsize::MIN)
            }
            None => crate::limits::TrustedProxies::None,
        }
    }
}
