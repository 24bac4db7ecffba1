//! Settings of the order service.

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Order service")]
pub struct OrderSettings {
    /// Shipping fee, in minor units of the shop's currency.
    #[arg(
        id = "order-shipping-fee",
        long = "order-shipping-fee",
        env = "EMPORIUM_ORDER_SHIPPING_FEE",
        default_value_t = 499
    )]
    pub shipping_fee: i64,

    /// Subtotal (minor units) from which shipping is free.
    #[arg(
        id = "order-free-shipping-from",
        long = "order-free-shipping-from",
        env = "EMPORIUM_ORDER_FREE_SHIPPING_FROM",
        default_value_t = 5_000
    )]
    pub free_shipping_from: i64,

    /// Sales tax on the subtotal, in basis points (825 is 8.25%).
    #[arg(
        id = "order-tax-rate-bps",
        long = "order-tax-rate-bps",
        env = "EMPORIUM_ORDER_TAX_RATE_BPS",
        default_value_t = 825
    )]
    pub tax_rate_bps: i64,

    /// Seconds the stock of a checkout is held; the saga commits it long before.
    #[arg(
        id = "order-reservation-ttl-secs",
        long = "order-reservation-ttl-secs",
        env = "EMPORIUM_ORDER_RESERVATION_TTL_SECS",
        default_value_t = 600
    )]
    pub reservation_ttl_secs: u64,

    /// How often unfinished checkouts are looked for, in seconds.
    #[arg(
        id = "order-reconcile-interval-secs",
        long = "order-reconcile-interval-secs",
        env = "EMPORIUM_ORDER_RECONCILE_INTERVAL_SECS",
        default_value_t = 5
    )]
    pub reconcile_interval_secs: u64,

    /// Seconds a checkout may go without progress before the reconciler takes it over. Longer
    /// than any checkout takes, so the reconciler never races a live one.
    #[arg(
        id = "order-reconcile-grace-secs",
        long = "order-reconcile-grace-secs",
        env = "EMPORIUM_ORDER_RECONCILE_GRACE_SECS",
        default_value_t = 30
    )]
    pub reconcile_grace_secs: u64,
}
