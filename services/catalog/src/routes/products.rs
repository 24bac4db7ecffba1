//! `/v1/products`: browse, search and read products; admins create, change and delete them.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use emporium_api::catalog::{
    DeleteQuery, NewProduct, Product, ProductPage, ProductPatch, ProductQuery,
};
use emporium_platform::Problem;
use emporium_platform::auth::Admin;

use crate::error::CatalogError;
use crate::service::Catalog;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/products")
            .route(web::get().to(list_products))
            .route(web::post().to(create_product)),
    )
    .service(
        web::resource("/v1/products/{id}")
            .route(web::get().to(get_product))
            .route(web::patch().to(update_product))
            .route(web::delete().to(delete_product)),
    );
}

/// List products, filtered by category and search words, in a chosen order, a page at a time.
#[utoipa::path(
    get, path = "/v1/products", tag = "products",
    params(ProductQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 400, description = "Invalid query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown category", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_products(
    catalog: web::Data<Catalog>,
    query: web::Query<ProductQuery>,
) -> Result<HttpResponse, CatalogError> {
    let page = catalog.list_products(&query).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One product.
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_product(
    catalog: web::Data<Catalog>,
    id: web::Path<String>,
) -> Result<HttpResponse, CatalogError> {
    let product = catalog.product_json(&id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ContentType::json())
        .body(product))
}

/// Create a product (admin).
#[utoipa::path(
    post, path = "/v1/products", tag = "products",
    request_body = NewProduct,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "SKU in use", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_product(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    input: web::Json<NewProduct>,
) -> Result<HttpResponse, CatalogError> {
    let product = catalog.create_product(&input).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/products/{}", product.id)))
        .json(product))
}

/// Change some fields of a product (admin), based on the version last read.
#[utoipa::path(
    patch, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id")),
    request_body = ProductPatch,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Updated", body = Product),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale version or SKU in use", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_product(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    id: web::Path<String>,
    patch: web::Json<ProductPatch>,
) -> Result<HttpResponse, CatalogError> {
    let product = catalog.update_product(&id, &patch).await?;
    Ok(HttpResponse::Ok().json(product))
}

/// Delete a product (admin).
#[utoipa::path(
    delete, path = "/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "Product id"), DeleteQuery),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_product(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    id: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, CatalogError> {
    catalog.delete_product(&id, query.version).await?;
    Ok(HttpResponse::NoContent().finish())
}
