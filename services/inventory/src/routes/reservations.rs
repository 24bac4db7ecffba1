//! `/v1/reservations`: holding stock for a checkout. Called by the order service, and only by
//! the shop's services (the gateway key): a reservation id is an order's id, no secret, and a
//! stranger's hold could keep stock from everyone for a day.

use actix_web::{HttpResponse, web};
use emporium_api::inventory::{NewReservation, Reservation};
use emporium_platform::Problem;
use emporium_platform::auth::Gateway;

use crate::error::InventoryError;
use crate::service::Inventory;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/reservations").route(web::post().to(create_reservation)))
        .service(web::resource("/v1/reservations/{id}").route(web::get().to(get_reservation)))
        .service(
            web::resource("/v1/reservations/{id}/commit").route(web::post().to(commit_reservation)),
        )
        .service(
            web::resource("/v1/reservations/{id}/release")
                .route(web::post().to(release_reservation)),
        )
        .service(
            web::resource("/v1/reservations/{id}/return").route(web::post().to(return_reservation)),
        );
}

/// Hold every line's units, or none. Repeating the call with the same id and lines returns the
/// same reservation (200); the same id with other lines is a conflict.
#[utoipa::path(
    post, path = "/v1/reservations", tag = "reservations",
    request_body = NewReservation,
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Held", body = Reservation),
        (status = 200, description = "Already held by an identical request", body = Reservation),
        (status = 409, description = "Not enough stock (`out_of_stock`, with `short`), id reused, or id released before it was reserved (`reservation_released`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid lines", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_reservation(
    _gateway: Gateway,
    inventory: web::Data<Inventory>,
    body: web::Json<NewReservation>,
) -> Result<HttpResponse, InventoryError> {
    let (reservation, created) = inventory.reserve(&body).await?;
    Ok(if created {
        HttpResponse::Created().json(reservation)
    } else {
        HttpResponse::Ok().json(reservation)
    })
}

/// One reservation.
#[utoipa::path(
    get, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The reservation", body = Reservation),
        (status = 404, description = "No such reservation", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_reservation(
    _gateway: Gateway,
    inventory: web::Data<Inventory>,
    id: web::Path<String>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.reservation(&id).await?))
}

/// Sell the held units. Idempotent.
#[utoipa::path(
    post, path = "/v1/reservations/{id}/commit", tag = "reservations",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Committed", body = Reservation),
        (status = 404, description = "No such reservation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Expired or released", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn commit_reservation(
    _gateway: Gateway,
    inventory: web::Data<Inventory>,
    id: web::Path<String>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.commit(&id).await?))
}

/// Give the held units back. Idempotent. Releasing an id that holds nothing yet fences it: a
/// reservation with that id arriving later is refused with `reservation_released`, so a hold
/// that was slower than its release (a caller that gave up on it) cannot strand stock.
#[utoipa::path(
    post, path = "/v1/reservations/{id}/release", tag = "reservations",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Released (with no lines if it was never held: fenced)", body = Reservation),
        (status = 404, description = "Not a reservation id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already committed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release_reservation(
    _gateway: Gateway,
    inventory: web::Data<Inventory>,
    id: web::Path<String>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.release(&id).await?))
}

/// Return sold units to available stock (a cancelled order). Idempotent.
#[utoipa::path(
    post, path = "/v1/reservations/{id}/return", tag = "reservations",
    params(("id" = String, Path)),
    responses(
        (status = 401, description = "Not called by one of the shop's services (`gateway_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Returned", body = Reservation),
        (status = 404, description = "No such reservation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not committed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn return_reservation(
    _gateway: Gateway,
    inventory: web::Data<Inventory>,
    id: web::Path<String>,
) -> Result<HttpResponse, InventoryError> {
    Ok(HttpResponse::Ok().json(inventory.return_stock(&id).await?))
}
