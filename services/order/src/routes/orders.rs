//! `/v1/orders`: a customer places, reads, lists and cancels their own orders. The customer is
//! named by the `X-Customer-Id` header, which the storefront sets from its session.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use emporium_api::order::{
    CUSTOMER_HEADER, IDEMPOTENCY_HEADER, Order, OrderPage, OrderQuery, OrderStatus, PlaceOrder,
    REPLAY_ONLY_HEADER,
};
use emporium_platform::Problem;

use crate::error::OrderError;
use crate::service::Orders;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/orders")
            .route(web::post().to(place_order))
            .route(web::get().to(list_orders)),
    )
    .service(web::resource("/v1/orders/{id}").route(web::get().to(get_order)))
    .service(web::resource("/v1/orders/{id}/cancel").route(web::post().to(cancel_order)));
}

/// The customer a request speaks for, if it comes from one of the shop's services: anyone else
/// could name any customer.
fn customer(request: &HttpRequest) -> Result<Option<&str>, OrderError> {
    if !emporium_platform::auth::from_gateway(request) {
        return Err(OrderError::GatewayRequired);
    }
    Ok(header(request, CUSTOMER_HEADER))
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// Check out a cart. Needs `Idempotency-Key`: repeating a request with the same key returns the
/// same order instead of placing another.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrder,
    params(
        ("x-customer-id" = String, Header, description = "The customer's id"),
        ("idempotency-key" = String, Header, description = "1 to 128 visible ASCII characters (no spaces), unique per checkout attempt; repeat it to retry safely", min_length = 1, max_length = 128, pattern = "^[!-~]+$"),
        ("x-replay-only" = Option<bool>, Header, description = "`true`: only answer what the key's first request got (409 `idempotency_key_reused` when the key has no record of this request); never start a checkout"),
    ),
    responses(
        (status = 201, description = "Placed and confirmed", body = Order),
        (status = 200, description = "A repeat of a placed order", body = Order),
        (status = 202, description = "A repeat whose checkout is still running", body = Order),
        (status = 400, description = "Missing or malformed Idempotency-Key, or malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No customer", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Payment declined (`decline_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Out of stock (`skus`), or key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid details, unknown or empty cart, product gone", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down, or the checkout was interrupted", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    // First, so a caller without the key learns nothing of the body's rules either.
    _gateway: emporium_platform::auth::Gateway,
    orders: web::Data<Orders>,
    request: HttpRequest,
    body: web::Json<PlaceOrder>,
) -> Result<HttpResponse, OrderError> {
    let customer = customer(&request)?;
    // A key that is there but not text is a bad key, not a missing one.
    let key = match request.headers().get(IDEMPOTENCY_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| OrderError::InvalidIdempotencyKey)?,
        ),
        None => None,
    };
    let replay_only = header(&request, REPLAY_ONLY_HEADER) == Some("true");
    let placement = orders.place(customer, key, &body, replay_only).await?;
    let order = placement.order;
    match order.status {
        OrderStatus::Confirmed if placement.replayed => Ok(HttpResponse::Ok().json(order)),
        OrderStatus::Confirmed => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/orders/{}", order.id)))
            .json(order)),
        OrderStatus::Pending => Ok(HttpResponse::Accepted().json(order)),
        OrderStatus::Failed | OrderStatus::Cancelled => {
            Err(OrderError::CheckoutFailed(Box::new(order)))
        }
    }
}

/// The customer's placed orders, newest first.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(OrderQuery, ("x-customer-id" = String, Header, description = "The customer's id")),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Invalid query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No customer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    orders: web::Data<Orders>,
    request: HttpRequest,
    query: web::Query<OrderQuery>,
) -> Result<HttpResponse, OrderError> {
    let page = orders
        .orders(customer(&request)?, query.limit, query.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One of the customer's orders. Another customer's order is `order_not_found`.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path), ("x-customer-id" = String, Header, description = "The customer's id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 401, description = "No customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this customer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    orders: web::Data<Orders>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, OrderError> {
    Ok(HttpResponse::Ok().json(orders.order(customer(&request)?, &id).await?))
}

/// Cancel a confirmed order: its stock returns and its payment is voided. Idempotent.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path), ("x-customer-id" = String, Header, description = "The customer's id")),
    responses(
        (status = 200, description = "Cancelled", body = Order),
        (status = 401, description = "No customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order for this customer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not cancellable (failed, or still checking out)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    orders: web::Data<Orders>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, OrderError> {
    Ok(HttpResponse::Ok().json(orders.cancel(customer(&request)?, &id).await?))
}
