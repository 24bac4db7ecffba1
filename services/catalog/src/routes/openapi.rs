//! `/openapi.json`: the catalog's API, generated from the handlers and wire types.

use actix_web::web;
use emporium_api::Money;
use emporium_api::catalog::{
    Category, CategoryPatch, NewCategory, NewProduct, Product, ProductPage, ProductPatch,
    ProductSort, StoredImage,
};
use emporium_platform::openapi::AdminKeySecurity;
use emporium_platform::{FieldError, Problem};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Emporium catalog", description = "Products, categories and product images."),
    paths(
        super::products::list_products,
        super::products::get_product,
        super::products::create_product,
        super::products::update_product,
        super::products::delete_product,
        super::categories::list_categories,
        super::categories::get_category,
        super::categories::create_category,
        super::categories::update_category,
        super::categories::delete_category,
        super::images::upload_image,
    ),
    components(schemas(
        Product, NewProduct, ProductPatch, ProductPage, ProductSort, Money, Category,
        NewCategory, CategoryPatch, StoredImage, Problem, FieldError
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
