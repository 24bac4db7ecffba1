//! `/v1/carts`: a cart is reached by its unguessable id, like a bearer token, and only by the
//! shop's services (the gateway key): the storefront, which keeps the id in the shopper's
//! session, and the order service. Someone who reaches this service some other way (a pod in
//! another namespace, a port-forward) and learns an id still cannot read or change the cart.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use emporium_api::cart::{AddCartLine, Cart, ClaimCart, SetQuantity};
use emporium_platform::Problem;
use emporium_platform::auth::Gateway;

use crate::error::CartError;
use crate::service::Carts;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/carts").route(web::post().to(create_cart)))
        .service(
            web::resource("/v1/carts/{id}")
                .route(web::get().to(get_cart))
                .route(web::put().to(open_cart)),
        )
        .service(
            web::resource("/v1/carts/{id}/lines")
                .route(web::post().to(add_cart_line))
                .route(web::delete().to(clear_cart)),
        )
        .service(
            web::resource("/v1/carts/{id}/lines/{product_id}")
                .route(web::put().to(set_cart_line_quantity))
                .route(web::delete().to(remove_cart_line)),
        )
        .service(web::resource("/v1/carts/{id}/checkout").route(web::put().to(claim_cart)))
        .service(
            web::resource("/v1/carts/{id}/checkout/{order_id}")
                .route(web::delete().to(release_checkout)),
        )
        .service(
            web::resource("/v1/carts/{id}/checkout/{order_id}/complete")
                .route(web::post().to(complete_checkout)),
        );
}

/// Start an empty cart.
#[utoipa::path(
    post, path = "/v1/carts", tag = "carts",
    responses(
        (status = 201, description = "Created", body = Cart),
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_cart(
    _gateway: Gateway,
    carts: web::Data<Carts>,
) -> Result<HttpResponse, CartError> {
    let cart = carts.create().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/carts/{}", cart.id)))
        .json(cart))
}

/// The cart at this id, made empty if there is none (or it expired). For callers that choose the
/// id (the storefront, with the session): any number of them at once get the one cart.
#[utoipa::path(
    put, path = "/v1/carts/{id}", tag = "carts",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Made", body = Cart),
        (status = 200, description = "There already", body = Cart),
        (status = 422, description = "Not a cart id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn open_cart(
    _gateway: Gateway,
    carts: web::Data<Carts>,
    id: web::Path<String>,
) -> Result<HttpResponse, CartError> {
    let (cart, made) = carts.open(&id).await?;
    Ok(if made {
        HttpResponse::Created().json(cart)
    } else {
        HttpResponse::Ok().json(cart)
    })
}

/// The cart with its lines and subtotal.
#[utoipa::path(
    get, path = "/v1/carts/{id}", tag = "carts",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart (or it expired)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_cart(
    _gateway: Gateway,
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
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad quantity, unknown product, or cart full", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_cart_line(
    _gateway: Gateway,
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
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart or line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad quantity", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_cart_line_quantity(
    _gateway: Gateway,
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
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart", body = Cart),
        (status = 404, description = "No such cart or line", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove_cart_line(
    _gateway: Gateway,
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
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The empty cart", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn clear_cart(
    _gateway: Gateway,
    carts: web::Data<Carts>,
    id: web::Path<String>,
) -> Result<HttpResponse, CartError> {
    Ok(HttpResponse::Ok().json(carts.clear(&id).await?))
}

/// Claim the cart for an order's checkout (the shop's services only). Holds only while the cart
/// is at the version the order priced and no other order holds it; the same order claiming
/// again gets the cart it holds.
#[utoipa::path(
    put, path = "/v1/carts/{id}/checkout", tag = "checkout",
    params(("id" = String, Path)),
    request_body = ClaimCart,
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart, claimed by the order", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another order holds the cart (`cart_in_checkout`, its `order_id`), the cart changed (`cart_changed`, `current_version`), or it is busy (`cart_busy`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn claim_cart(
    _gateway: Gateway,
    carts: web::Data<Carts>,
    id: web::Path<String>,
    body: web::Json<ClaimCart>,
) -> Result<HttpResponse, CartError> {
    Ok(HttpResponse::Ok().json(carts.claim(&id, &body.order_id, body.version).await?))
}

/// End an order's checkout: the units it claimed leave the cart, lines added meanwhile stay
/// (the shop's services only). Idempotent.
#[utoipa::path(
    post, path = "/v1/carts/{id}/checkout/{order_id}/complete", tag = "checkout",
    params(("id" = String, Path), ("order_id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart after the order", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The cart is busy (`cart_busy`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete_checkout(
    _gateway: Gateway,
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, CartError> {
    let (id, order_id) = path.into_inner();
    Ok(HttpResponse::Ok().json(carts.complete_checkout(&id, &order_id).await?))
}

/// End an order's claim and keep the lines: its checkout failed or was undone (the shop's
/// services only). Idempotent.
#[utoipa::path(
    delete, path = "/v1/carts/{id}/checkout/{order_id}", tag = "checkout",
    params(("id" = String, Path), ("order_id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The cart, no longer claimed by the order", body = Cart),
        (status = 404, description = "No such cart", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The cart is busy (`cart_busy`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release_checkout(
    _gateway: Gateway,
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, CartError> {
    let (id, order_id) = path.into_inner();
    Ok(HttpResponse::Ok().json(carts.release_checkout(&id, &order_id).await?))
}
