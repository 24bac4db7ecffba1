//! HTTP routes of the inventory, one module per resource.

pub mod openapi;
pub mod reservations;
pub mod stock;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    stock::configure(cfg);
    reservations::configure(cfg);
    openapi::configure(cfg);
}
