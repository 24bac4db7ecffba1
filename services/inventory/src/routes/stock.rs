//! `/v1/stock`: stock levels per SKU; admins set and adjust them.

use actix_web::{HttpResponse, web};
use emporium_api::inventory::{SetStock, StockAdjustment, StockLevel, StockPage, StockQuery};
use emporium_platform::Problem;
use emporium_platform::auth::Admin;

use crate::error::InventoryError;
use crate::service::Inventory;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/stock").route(web::get().to(list_stock)))
        .service(
            web::resource("/v1/stock/{sku}")
                .route(web::get().to(get_stock))
                .route(web::put().to(set_stock)),
        )
        .service(web::resource("/v1/stock/{sku}/adjustments").route(web::post().to(adjust_stock)));
}

/// Stock of the SKUs named in `skus`, or every SKU a page at a time.
#[utoipa::path(
    get, path = "/v1/stock", tag = "stock",
    params(StockQuery),
    responses(
        (status = 200, description = "Stock levels", body = StockPage),
        (status = 400, description = "Invalid query or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_stock(
    inventory: web::Data<Inventory>,
    query: web::Query<StockQuery>,
) -> Result<HttpResponse, InventoryError> {
    let page = match &query.skus {
        Some(skus) => {
            if query.limit.is_some() || query.cursor.is_some() {
                return Err(InventoryError::InvalidQuery(
                    "skus cannot be combined with limit or cursor".into(),
                ));
            }
            StockPage {
                items: inventory.stocks(skus).await?,
                next_cursor: None,
            }
        }
        None => {
            inventory
                .list_stock(query.limit, query.cursor.as_deref())
                .await?
        }
    };
    Ok(HttpResponse::Ok().json(page))
}

/// Stock of one SKU.
#[utoipa::path(
    get, path = "/v1/stock/{sku}", tag = "stock",
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "Stock level", body = StockLevel),
        (status = 404, description = "No stock record", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_stock(
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.stock(&sku).await?))
}

/// Set the available units of a SKU (admin); creates its record if needed.
#[utoipa::path(
    put, path = "/v1/stock/{sku}", tag = "stock",
    params(("sku" = String, Path)),
    request_body = SetStock,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Stock level", body = StockLevel),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid SKU or amount", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_stock(
    _admin: Admin,
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
    body: web::Json<SetStock>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.set_stock(&sku, body.available).await?))
}

/// Add units to (or, with a negative delta, remove units from) a SKU's available stock (admin).
#[utoipa::path(
    post, path = "/v1/stock/{sku}/adjustments", tag = "stock",
    params(("sku" = String, Path)),
    request_body = StockAdjustment,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Stock level", body = StockLevel),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No stock record", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would go below zero", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid delta", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn adjust_stock(
    _admin: Admin,
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
    body: web::Json<StockAdjustment>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.adjust_stock(&sku, body.delta).await?))
}
