//! Settings of the cart service.

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Cart service")]
pub struct CartSettings {
    /// Seconds without a change after which a cart expires.
    #[arg(
        id = "cart-ttl-secs",
        long = "cart-ttl-secs",
        env = "EMPORIUM_CART_TTL_SECS",
        default_value_t = 7 * 86_400
    )]
    pub ttl_secs: u64,

    /// Most distinct products in one cart.
    #[arg(
        id = "cart-max-lines",
        long = "cart-max-lines",
        env = "EMPORIUM_CART_MAX_LINES",
        default_value_t = 50
    )]
    pub max_lines: usize,

    /// Most units of one product in a cart.
    #[arg(
        id = "cart-max-quantity",
        long = "cart-max-quantity",
        env = "EMPORIUM_CART_MAX_QUANTITY",
        default_value_t = 10
    )]
    pub max_quantity: i64,
}
