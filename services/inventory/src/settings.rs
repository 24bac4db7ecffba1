//! Settings of the inventory service.

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Inventory service")]
pub struct InventorySettings {
    /// Seconds a reservation holds stock unless the caller asks for another duration.
    #[arg(
        id = "inventory-reservation-ttl-secs",
        long = "inventory-reservation-ttl-secs",
        env = "EMPORIUM_INVENTORY_RESERVATION_TTL_SECS",
        default_value_t = 900
    )]
    pub reservation_ttl_secs: u64,

    /// How often expired reservations are looked for and their stock returned, in milliseconds.
    #[arg(
        id = "inventory-sweep-interval-ms",
        long = "inventory-sweep-interval-ms",
        env = "EMPORIUM_INVENTORY_SWEEP_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub sweep_interval_ms: u64,
}
