//! `/openapi.json`: the order service's API, generated from the handlers and wire types.

use actix_web::web;
use emporium_api::Money;
use emporium_api::order::{
    Address, CustomerDetails, Order, OrderFailure, OrderLine, OrderPage, OrderStatus, PaymentCard,
    PaymentStatus, PaymentSummary, PlaceOrder, Totals,
};
use emporium_platform::{FieldError, Problem};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Emporium orders",
        description = "Checkout and order history. Test cards: 4242 4242 4242 4242 approves; \
4000 0000 0000 0002 is declined (card_declined); 4000 0000 0000 9995 fails with \
insufficient_funds; 4000 0000 0000 0119 fails with processing_error. Totals: tax is the rate \
applied once to the subtotal, rounded half up to the minor unit."
    ),
    paths(
        super::orders::place_order,
        super::orders::list_orders,
        super::orders::get_order,
        super::orders::cancel_order,
    ),
    components(schemas(
        PlaceOrder,
        PaymentCard,
        CustomerDetails,
        Address,
        Order,
        OrderLine,
        OrderStatus,
        OrderFailure,
        OrderPage,
        PaymentSummary,
        PaymentStatus,
        Totals,
        Money,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    static DOCUMENT: std::sync::OnceLock<web::Bytes> = std::sync::OnceLock::new();
    let document =
        DOCUMENT.get_or_init(|| emporium_platform::openapi::document(&ApiDoc::openapi(), &[]));
    emporium_platform::openapi::configure(cfg, "/openapi.json", document.clone());
}
