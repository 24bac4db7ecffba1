//! HTTP routes of the order service.

pub mod openapi;
pub mod orders;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    orders::configure(cfg);
    openapi::configure(cfg);
}
