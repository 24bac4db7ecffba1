//! `/v1/categories`: the shop's departments.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use emporium_api::catalog::{Category, CategoryPatch, DeleteQuery, NewCategory};
use emporium_platform::Problem;
use emporium_platform::auth::Admin;

use crate::error::CatalogError;
use crate::service::Catalog;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/categories")
            .route(web::get().to(list_categories))
            .route(web::post().to(create_category)),
    )
    .service(
        web::resource("/v1/categories/{slug}")
            .route(web::get().to(get_category))
            .route(web::patch().to(update_category))
            .route(web::delete().to(delete_category)),
    );
}

/// Every category, in display order.
#[utoipa::path(
    get, path = "/v1/categories", tag = "categories",
    responses((status = 200, description = "All categories", body = Vec<Category>))
)]
pub async fn list_categories(catalog: web::Data<Catalog>) -> Result<HttpResponse, CatalogError> {
    Ok(HttpResponse::Ok().json(catalog.categories().await?))
}

/// One category.
#[utoipa::path(
    get, path = "/v1/categories/{slug}", tag = "categories",
    params(("slug" = String, Path, description = "Category slug")),
    responses(
        (status = 200, description = "The category", body = Category),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_category(
    catalog: web::Data<Catalog>,
    slug: web::Path<String>,
) -> Result<HttpResponse, CatalogError> {
    Ok(HttpResponse::Ok().json(catalog.category(&slug).await?))
}

/// Create a category (admin).
#[utoipa::path(
    post, path = "/v1/categories", tag = "categories",
    request_body = NewCategory,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created", body = Category),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug in use", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_category(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    input: web::Json<NewCategory>,
) -> Result<HttpResponse, CatalogError> {
    let category = catalog.create_category(&input).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/categories/{}", category.slug),
        ))
        .json(category))
}

/// Change a category (admin).
#[utoipa::path(
    patch, path = "/v1/categories/{slug}", tag = "categories",
    params(("slug" = String, Path, description = "Category slug")),
    request_body = CategoryPatch,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Updated", body = Category),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_category(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    slug: web::Path<String>,
    patch: web::Json<CategoryPatch>,
) -> Result<HttpResponse, CatalogError> {
    Ok(HttpResponse::Ok().json(catalog.update_category(&slug, &patch).await?))
}

/// Delete an empty category (admin).
#[utoipa::path(
    delete, path = "/v1/categories/{slug}", tag = "categories",
    params(("slug" = String, Path, description = "Category slug"), DeleteQuery),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale version or products remain", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_category(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    slug: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, CatalogError> {
    catalog.delete_category(&slug, query.version).await?;
    Ok(HttpResponse::NoContent().finish())
}
