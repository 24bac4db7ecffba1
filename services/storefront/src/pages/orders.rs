//! Order history, order detail (which is also the confirmation page after checkout), and
//! cancelling an order.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use emporium_api::ProblemCode;
use emporium_api::order::{Order, OrderStatus, PaymentStatus};
use emporium_platform::id;
use serde::Deserialize;

use super::{Layout, Notice, check_form, frame, render, see_other};
use crate::error::PageError;
use crate::session::Visitor;
use crate::shop::Shop;
use crate::view;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/orders", web::get().to(history))
        .route("/orders/{id}", web::get().to(detail))
        .route("/orders/{id}/cancel", web::post().to(cancel));
}

const HISTORY_PAGE: u32 = 20;

#[derive(Debug, Clone)]
struct Status {
    label: &'static str,
    tone: &'static str,
}

fn status_of(status: OrderStatus) -> Status {
    match status {
        OrderStatus::Pending => Status {
            label: "Processing",
            tone: "low",
        },
        OrderStatus::Confirmed => Status {
            label: "Confirmed",
            tone: "in",
        },
        OrderStatus::Failed => Status {
            label: "Not placed",
            tone: "out",
        },
        OrderStatus::Cancelled => Status {
            label: "Cancelled",
            tone: "unknown",
        },
    }
}

fn payment_label(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::NotAuthorized => "not charged",
        PaymentStatus::Authorized => "authorized",
        PaymentStatus::Declined => "declined",
        PaymentStatus::Voided => "voided, nothing charged",
    }
}

/// The short reference shoppers quote: the id's first 8 characters, upper case.
fn reference(id: &str) -> String {
    id.chars().take(8).collect::<String>().to_ascii_uppercase()
}

#[derive(Debug, Clone)]
struct OrderRow {
    url: String,
    reference: String,
    placed: String,
    status: Status,
    item_count: i64,
    total: String,
}

#[derive(Template)]
#[template(path = "orders.html")]
struct HistoryPage {
    layout: Layout,
    orders: Vec<OrderRow>,
    next_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    cursor: Option<String>,
}

async fn history(
    shop: web::Data<Shop>,
    visitor: Visitor,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, PageError> {
    let cursor = query.cursor.as_deref().filter(|c| !c.is_empty());
    let customer = visitor.customer_id();
    let ((categories, cart_count), page) = futures::join!(
        frame(&shop, &visitor),
        shop.orders.orders(&customer, Some(HISTORY_PAGE), cursor)
    );
    let page = match page {
        Ok(page) => page,
        Err(error) if error.is(&ProblemCode::InvalidCursor) => return Ok(see_other("/orders")),
        Err(error) => return Err(error.into()),
    };
    let body = HistoryPage {
        layout: Layout::new("Your orders · Emporium", &categories, cart_count, ""),
        orders: page
            .items
            .iter()
            .map(|order| OrderRow {
                url: format!("/orders/{}", order.id),
                reference: reference(&order.id),
                placed: view::timestamp(order.created_at),
                status: status_of(order.status),
                item_count: order.lines.iter().map(|l| l.quantity).sum(),
                total: view::price(&order.totals.total),
            })
            .collect(),
        next_url: page
            .next_cursor
            .and_then(|c| serde_urlencoded::to_string([("cursor", c)]).ok())
            .map(|query| format!("/orders?{query}")),
    };
    Ok(render(StatusCode::OK, &body))
}

/// `visa` → `Visa`.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
struct OrderLineView {
    url: String,
    name: String,
    sku: String,
    quantity: i64,
    unit_price: String,
    line_total: String,
}

#[derive(Template)]
#[template(path = "order.html")]
struct DetailPage {
    layout: Layout,
    csrf: String,
    id: String,
    reference: String,
    /// Just placed: the page thanks the shopper.
    placed: bool,
    pending: bool,
    confirmed: bool,
    cancellable: bool,
    status: Status,
    failure: String,
    placed_at: String,
    lines: Vec<OrderLineView>,
    subtotal: String,
    shipping: String,
    tax: String,
    total: String,
    name: String,
    email: String,
    address: Vec<String>,
    payment: String,
}

#[derive(Debug, Deserialize)]
struct DetailQuery {
    #[serde(default)]
    placed: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

async fn detail(
    shop: web::Data<Shop>,
    visitor: Visitor,
    id: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, PageError> {
    if !id::is_valid(&id) {
        return Err(PageError::NotFound);
    }
    let customer = visitor.customer_id();
    let ((categories, cart_count), order) =
        futures::join!(frame(&shop, &visitor), shop.orders.order(&customer, &id));
    let order: Order = order?;
    let notice = match query.notice.as_deref() {
        Some("cancelled") => Some(Notice::ok(
            "Your order was cancelled. The authorization was voided; nothing is charged.",
        )),
        _ => None,
    };
    let address = &order.customer.address;
    let address_lines: Vec<String> = [
        Some(address.line1.clone()),
        address.line2.clone(),
        Some(format!(
            "{} {}{}",
            address.postal_code,
            address.city,
            address
                .region
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        )),
        Some(super::checkout::country_name(&address.country).to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let page = DetailPage {
        layout: Layout::new(
            &format!("Order {} · Emporium", reference(&order.id)),
            &categories,
            cart_count,
            "",
        )
        .with_notice(notice),
        csrf: visitor.csrf(),
        reference: reference(&order.id),
        placed: query.placed.is_some(),
        pending: order.status == OrderStatus::Pending,
        confirmed: order.status == OrderStatus::Confirmed,
        cancellable: order.status == OrderStatus::Confirmed,
        status: status_of(order.status),
        failure: order
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default(),
        placed_at: view::timestamp(order.created_at),
        lines: order
            .lines
            .iter()
            .map(|l| OrderLineView {
                url: view::product_url(&l.product_id),
                name: l.name.clone(),
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: view::price(&l.unit_price),
                line_total: view::price(&l.line_total),
            })
            .collect(),
        subtotal: view::price(&order.totals.subtotal),
        shipping: view::price(&order.totals.shipping),
        tax: view::price(&order.totals.tax),
        total: view::price(&order.totals.total),
        name: order.customer.name.clone(),
        email: order.customer.email.clone(),
        address: address_lines,
        payment: format!(
            "{} ending in {} ({})",
            capitalized(&order.payment.brand),
            order.payment.last4,
            payment_label(order.payment.status)
        ),
        id: order.id,
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
struct CancelForm {
    #[serde(default)]
    csrf: String,
}

async fn cancel(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    id: web::Path<String>,
    form: web::Form<CancelForm>,
) -> Result<HttpResponse, PageError> {
    check_form(&request, &visitor, &form.csrf)?;
    if !id::is_valid(&id) {
        return Err(PageError::NotFound);
    }
    shop.orders.cancel(&visitor.customer_id(), &id).await?;
    Ok(see_other(&format!("/orders/{id}?notice=cancelled")))
}
