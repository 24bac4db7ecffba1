//! `/v1/carts`: a cart is reached by its unguessable id alone, like a bearer token.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use emporium_api::cart::{AddCartLine, Cart, SetQuantity};
use emporium_platform::Problem;

use crate::error::CartError;
use crate::service::Carts;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/carts").route(web::post().to(create_cart)))
        .service(web::resource("/v1/carts/{id}").route(web::get().to(get_cart)))
        .service(
            web::resource("/v1/carts/{id}/lines")
                .route(web::post().to(add_cart_line))
                .route(web::delete().to(clear_cart)),
        )
        .service(
            web::resource("/v1/carts/{id}/lines/{product_id}")
                .route(web::put().to(set_cart_line_quantity))
                .route(web::delete().to(remove_cart_line)),
        );
}

/// Start an empty cart.
#[utoipa::path(
    post, path = "/v1/carts", tag = "carts",
    responses((status = 201, description = "Created", body = Cart))
)]
pub async fn create_cart(carts: web::Data<Carts>) -> Result<HttpResponse, CartError> {
    let cart = carts.create().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/carts/{}", cart.id)))
        .json(cart))
}

/// The cart with its lines and subtotal.
#[utoipa::path(
    get, path = "/v1/carts/{id}", tag = "carts",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart (or it expired)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_cart(
    carts: web::Data<Carts>,
    id: web::Path<String>,
) -> Result<HttpResponse, CartError> {
    Ok(HttpResponse::Ok().json(carts.cart(&id).await?))
}

/// Add units of a product (merged with its line if present), checked against the catalog and
/// the stock.
#[utoipa::path(
    post, path = "/v1/carts/{id}/lines", tag = "carts",
    params(("id" = String, Path)),
    request_body = AddCartLine,
    responses(
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad quantity, unknown product, or cart full", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_cart_line(
    carts: web::Data<Carts>,
    id: web::Path<String>,
    body: web::Json<AddCartLine>,
) -> Result<HttpResponse, CartError> {
    Ok(HttpResponse::Ok().json(carts.add_line(&id, &body.product_id, body.quantity).await?))
}

/// Set a line's quantity.
#[utoipa::path(
    put, path = "/v1/carts/{id}/lines/{product_id}", tag = "carts",
    params(("id" = String, Path), ("product_id" = String, Path)),
    request_body = SetQuantity,
    responses(
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart or line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad quantity", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_cart_line_quantity(
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
    body: web::Json<SetQuantity>,
) -> Result<HttpResponse, CartError> {
    let (id, product_id) = path.into_inner();
    Ok(HttpResponse::Ok().json(carts.set_quantity(&id, &product_id, body.quantity).await?))
}

/// Remove a line.
#[utoipa::path(
    delete, path = "/v1/carts/{id}/lines/{product_id}", tag = "carts",
    params(("id" = String, Path), ("product_id" = String, Path)),
    responses(
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart or line", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove_cart_line(
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, CartError> {
    let (id, product_id) = path.into_inner();
    Ok(HttpResponse::Ok().json(carts.remove_line(&id, &product_id).await?))
}

/// Remove every line. Idempotent.
#[utoipa::path(
    delete, path = "/v1/carts/{id}/lines", tag = "carts",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The empty cart", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn clear_cart(
    carts: web::Data<Carts>,
    id: web::Path<String>,
) -> Result<HttpResponse, CartError> {
    Ok(HttpResponse::Ok().json(carts.clear(&id).await?))
}
