//! Settings of the catalog service.

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Catalog service")]
pub struct CatalogSettings {
    /// Largest product image accepted by `POST /v1/images`, in bytes.
    #[arg(
        id = "catalog-image-limit-bytes",
        long = "catalog-image-limit-bytes",
        env = "EMPORIUM_CATALOG_IMAGE_LIMIT_BYTES",
        default_value_t = 5 * 1024 * 1024
    )]
    pub image_limit_bytes: usize,
}
