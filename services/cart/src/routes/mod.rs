//! HTTP routes of the cart service.

pub mod carts;
pub mod openapi;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    carts::configure(cfg);
    openapi::configure(cfg);
}
