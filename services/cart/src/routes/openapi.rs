//! `/openapi.json`: the cart's API, generated from the handlers and wire types.

use actix_web::web;
use emporium_api::Money;
use emporium_api::cart::{AddCartLine, Cart, CartLine, ClaimCart, SetQuantity};
use emporium_platform::{FieldError, Problem};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Emporium cart", description = "Carts under unguessable ids."),
    paths(
        super::carts::create_cart,
        super::carts::open_cart,
        super::carts::get_cart,
        super::carts::add_cart_line,
        super::carts::set_cart_line_quantity,
        super::carts::remove_cart_line,
        super::carts::clear_cart,
        super::carts::claim_cart,
        super::carts::complete_checkout,
        super::carts::release_checkout,
    ),
    components(schemas(
        Cart,
        CartLine,
        AddCartLine,
        SetQuantity,
        ClaimCart,
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
