//! HTTP routes of the catalog, one module per resource.

pub mod categories;
pub mod images;
pub mod openapi;
pub mod products;

use actix_web::web;

/// Registers every catalog route.
pub fn configure(cfg: &mut web::ServiceConfig, image_limit_bytes: usize) {
    products::configure(cfg);
    categories::configure(cfg);
    images::configure(cfg, image_limit_bytes);
    openapi::configure(cfg);
}
