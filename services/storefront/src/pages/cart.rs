//! The cart page and its forms: add, change quantity, remove.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use emporium_api::ProblemCode;
use emporium_api::cart::Cart;
use emporium_api::client::ClientError;
use serde::Deserialize;

use super::browse::product_page;
use super::{Layout, Notice, check_form, render, see_other};
use crate::assets;
use crate::error::PageError;
use crate::session::Visitor;
use crate::shop::Shop;
use crate::view::{self, Estimate};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cart", web::get().to(cart))
        .route("/cart/add", web::post().to(add))
        .route("/cart/update", web::post().to(update))
        .route("/cart/remove", web::post().to(remove));
}

#[derive(Debug, Clone)]
pub struct LineView {
    pub product_id: String,
    pub url: String,
    pub name: String,
    pub sku: String,
    pub image: Option<String>,
    pub unit_price: String,
    pub quantity: i64,
    pub line_total: String,
}

impl LineView {
    pub fn of(cart: &Cart) -> Vec<Self> {
        cart.lines
            .iter()
            .map(|line| Self {
                product_id: line.product_id.clone(),
                url: view::product_url(&line.product_id),
                name: line.name.clone(),
                sku: line.sku.clone(),
                image: line.image.as_deref().map(assets::url),
                unit_price: view::price(&line.unit_price),
                quantity: line.quantity,
                line_total: view::price(&line.line_total),
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage {
    layout: Layout,
    csrf: String,
    lines: Vec<LineView>,
    item_count: i64,
    estimate: Option<Estimate>,
    max_quantity: i64,
}

#[derive(Debug, Deserialize)]
struct CartQuery {
    #[serde(default)]
    notice: String,
}

/// Messages a redirect may ask the cart page to show; a fixed list, so a link cannot make the
/// shop say anything else.
fn notice_for(code: &str) -> Option<Notice> {
    match code {
        "added" => Some(Notice::ok("Added to your cart.")),
        "updated" => Some(Notice::ok("Your cart was updated.")),
        "removed" => Some(Notice::ok("The item was removed from your cart.")),
        "empty" => Some(Notice::error(
            "Your cart is empty; add something before checking out.",
        )),
        _ => None,
    }
}

async fn cart(
    shop: web::Data<Shop>,
    visitor: Visitor,
    query: web::Query<CartQuery>,
) -> Result<HttpResponse, PageError> {
    cart_page(&shop, &visitor, notice_for(&query.notice), StatusCode::OK).await
}

async fn cart_page(
    shop: &Shop,
    visitor: &Visitor,
    notice: Option<Notice>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let (categories, cart) = futures::join!(shop.categories_or_none(), shop.cart(visitor));
    let cart = cart?;
    let (lines, item_count, estimate) = match &cart {
        Some(cart) => (
            LineView::of(cart),
            cart.item_count,
            Some(Estimate::of(cart, &shop.pricing)),
        ),
        None => (Vec::new(), 0, None),
    };
    let page = CartPage {
        layout: Layout::new("Your cart · Emporium", &categories, item_count, "")
            .with_notice(notice),
        csrf: visitor.csrf(),
        lines,
        item_count,
        estimate,
        max_quantity: shop.max_quantity,
    };
    Ok(render(status, &page))
}

#[derive(Debug, Deserialize)]
struct LineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    quantity: Option<String>,
}

impl LineForm {
    fn quantity(&self) -> Result<i64, PageError> {
        let text = self.quantity.as_deref().unwrap_or("1").trim();
        text.parse::<i64>()
            .map_err(|_| PageError::BadRequest(format!("{text:?} is not a quantity")))
    }
}

/// A failed cart change as a message on the page the shopper came from.
fn cart_problem(error: ClientError) -> Result<(StatusCode, Notice), PageError> {
    match &error {
        ClientError::Problem { problem, .. } if problem.status < 500 => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            let text = match problem.code {
                ProblemCode::OutOfStock => format!(
                    "Sorry, we don’t have that many: {}.",
                    problem.detail.as_deref().unwrap_or("not enough stock")
                ),
                ProblemCode::CartInCheckout => "Your order is being placed with these items; they can be changed once it is through.".to_owned(),
                ProblemCode::CartBusy => "Your cart is busy with another change; please try again.".to_owned(),
                ProblemCode::ValidationFailed => problem.errors.first().map_or_else(
                    || problem.title.clone(),
                    |e| format!("Quantity {}.", e.message),
                ),
                _ => problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.title.clone()),
            };
            Ok((status, Notice::error(text)))
        }
        _ => Err(error.into()),
    }
}

async fn add(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    check_form(&request, &visitor, &form.csrf)?;
    let quantity = form.quantity()?;
    match shop.add(&visitor, &form.product_id, quantity).await {
        Ok(_) => Ok(see_other("/cart?notice=added")),
        Err(error) if error.is(&ProblemCode::UnknownProduct) => Err(PageError::NotFound),
        Err(error) => {
            let (status, notice) = cart_problem(error)?;
            product_page(&shop, &visitor, &form.product_id, Some(notice), status).await
        }
    }
}

async fn update(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    check_form(&request, &visitor, &form.csrf)?;
    let quantity = form.quantity()?;
    match shop
        .set_quantity(&visitor, &form.product_id, quantity)
        .await
    {
        Ok(_) if quantity == 0 => Ok(see_other("/cart?notice=removed")),
        Ok(_) => Ok(see_other("/cart?notice=updated")),
        Err(error) => {
            let (status, notice) = cart_problem(error)?;
            cart_page(&shop, &visitor, Some(notice), status).await
        }
    }
}

async fn remove(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    check_form(&request, &visitor, &form.csrf)?;
    match shop.remove(&visitor, &form.product_id).await {
        Ok(_) => Ok(see_other("/cart?notice=removed")),
        Err(error) => {
            let (status, notice) = cart_problem(error)?;
            cart_page(&shop, &visitor, Some(notice), status).await
        }
    }
}
