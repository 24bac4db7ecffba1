//! `/v1/images`: admins upload product images; the storefront serves them.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use emporium_api::catalog::StoredImage;
use emporium_platform::Problem;
use emporium_platform::auth::Admin;

use crate::error::CatalogError;
use crate::service::Catalog;

pub fn configure(cfg: &mut web::ServiceConfig, limit_bytes: usize) {
    cfg.service(
        web::resource("/v1/images")
            // Images are far larger than JSON bodies; only this route takes them.
            .app_data(web::PayloadConfig::new(limit_bytes))
            .route(web::post().to(upload_image)),
    );
}

/// Upload a product image (admin). The body is the image; its key is derived from its content,
/// so uploading the same image twice gives the same key.
#[utoipa::path(
    post, path = "/v1/images", tag = "images",
    request_body(content = Vec<u8>, content_type = "image/png", description = "PNG, JPEG, WebP, GIF or AVIF bytes"),
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Stored", body = StoredImage),
        (status = 401, description = "Missing or wrong admin key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Image too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not an accepted image type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bytes do not match the type", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_image(
    _admin: Admin,
    catalog: web::Data<Catalog>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, CatalogError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let stored = catalog.store_image(body, content_type).await?;
    Ok(HttpResponse::Created().json(stored))
}
