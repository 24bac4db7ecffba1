//! `/openapi.json`: the inventory's API, generated from the handlers and wire types.

use actix_web::web;
use emporium_api::inventory::{
    NewReservation, Reservation, ReservationLine, ReservationStatus, SetStock, Shortage,
    StockAdjustment, StockLevel, StockPage,
};
use emporium_platform::openapi::AdminKeySecurity;
use emporium_platform::{FieldError, Problem};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Emporium inventory", description = "Stock per SKU and reservations that hold it during checkout."),
    paths(
        super::stock::list_stock,
        super::stock::get_stock,
        super::stock::set_stock,
        super::stock::adjust_stock,
        super::reservations::create_reservation,
        super::reservations::get_reservation,
        super::reservations::commit_reservation,
        super::reservations::release_reservation,
        super::reservations::return_reservation,
    ),
    components(schemas(
        StockLevel, StockPage, SetStock, StockAdjustment, NewReservation, Reservation,
        ReservationLine, ReservationStatus, Shortage, Problem, FieldError
    )),
    modifiers(&AdminKeySecurity)
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    static DOCUMENT: std::sync::OnceLock<web::Bytes> = std::sync::OnceLock::new();
    let document =
        DOCUMENT.get_or_init(|| emporium_platform::openapi::document(&ApiDoc::openapi(), &[]));
    emporium_platform::openapi::configure(cfg, "/openapi.json", document.clone());
}
