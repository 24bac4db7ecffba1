//! Checkout: the details form (with the simulated provider's test cards shown), placing the
//! order, and what a decline, a stock shortage or an unavailable service looks like.
//!
//! The form carries an idempotency key made when it was shown, so sending it twice (a double
//! click, a reload of the post) places one order.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use emporium_api::cart::Cart;
use emporium_api::client::ClientError;
use emporium_api::order::{Address, CustomerDetails, DeclineCode, PaymentCard};
use emporium_api::{ProblemCode, ProblemMembers};
use emporium_platform::id;
use serde::Deserialize;

use super::cart::LineView;
use super::{Layout, Notice, check_form, render, see_other};
use crate::error::{PageError, RETRY_AFTER_SECS};
use crate::session::Visitor;
use crate::shop::Shop;
use crate::view::Estimate;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/checkout", web::get().to(show))
        .route("/checkout", web::post().to(place));
}

/// The simulated provider's documented test cards.
pub const TEST_CARDS: &[(&str, &str)] = &[
    ("4242 4242 4242 4242", "approved (Visa)"),
    ("5555 5555 5555 4444", "approved (Mastercard)"),
    ("4000 0000 0000 0002", "declined: card declined"),
    ("4000 0000 0000 9995", "declined: insufficient funds"),
    ("4000 0000 0000 0119", "declined: processing error"),
];

const COUNTRIES: &[(&str, &str)] = &[
    ("US", "United States"),
    ("CA", "Canada"),
    ("GB", "United Kingdom"),
    ("IE", "Ireland"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("NL", "Netherlands"),
    ("ES", "Spain"),
    ("IT", "Italy"),
    ("SE", "Sweden"),
    ("AU", "Australia"),
    ("NZ", "New Zealand"),
    ("JP", "Japan"),
];

/// A country's name for an address, or its code when the shop does not list it.
pub fn country_name(code: &str) -> &str {
    COUNTRIES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(code, |(_, name)| name)
}

/// The checkout form as sent; every field is text so a bad value becomes a message beside its
/// field, not a rejected request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CheckoutForm {
    pub csrf: String,
    pub idempotency_key: String,
    pub name: String,
    pub email: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub card_number: String,
    pub exp_month: String,
    pub exp_year: String,
    pub cvc: String,
}

/// Messages by form field.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(HashMap<String, String>);

impl FieldErrors {
    /// The message for `field`, empty when it is fine.
    pub fn of(&self, field: &str) -> &str {
        self.0.get(field).map_or("", String::as_str)
    }

    fn add(&mut self, field: &str, message: &str) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.to_owned());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The form field an order-service error names (`customer.address.city` → `city`).
fn form_field(path: &str) -> &str {
    match path {
        "payment.number" => "card_number",
        "payment.expiry_month" => "exp_month",
        "payment.expiry_year" => "exp_year",
        "payment.cvc" => "cvc",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

#[derive(Debug, Clone)]
struct Country {
    code: &'static str,
    name: &'static str,
    selected: bool,
}

#[derive(Debug, Clone)]
struct TestCard {
    number: &'static str,
    outcome: &'static str,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    layout: Layout,
    csrf: String,
    form: CheckoutForm,
    errors: FieldErrors,
    countries: Vec<Country>,
    cards: Vec<TestCard>,
    lines: Vec<LineView>,
    item_count: i64,
    estimate: Estimate,
}

fn checkout_page(
    shop: &Shop,
    visitor: &Visitor,
    cart: &Cart,
    form: CheckoutForm,
    errors: FieldErrors,
    notice: Option<Notice>,
) -> CheckoutPage {
    let country = if form.country.is_empty() {
        "US"
    } else {
        form.country.as_str()
    };
    CheckoutPage {
        layout: Layout::new("Checkout · Emporium", &[], cart.item_count, "").with_notice(notice),
        csrf: visitor.csrf(),
        countries: COUNTRIES
            .iter()
            .map(|(code, name)| Country {
                code,
                name,
                selected: *code == country,
            })
            .collect(),
        cards: TEST_CARDS
            .iter()
            .map(|(number, outcome)| TestCard { number, outcome })
            .collect(),
        lines: LineView::of(cart),
        item_count: cart.item_count,
        estimate: Estimate::of(cart, &shop.pricing),
        form,
        errors,
    }
}

/// The visitor's cart when it has something to check out.
async fn filled_cart(shop: &Shop, visitor: &Visitor) -> Result<Option<Cart>, PageError> {
    Ok(shop.cart(visitor).await?.filter(|c| !c.lines.is_empty()))
}

async fn show(shop: web::Data<Shop>, visitor: Visitor) -> Result<HttpResponse, PageError> {
    let Some(cart) = filled_cart(&shop, &visitor).await? else {
        return Ok(see_other("/cart?notice=empty"));
    };
    let form = CheckoutForm {
        idempotency_key: id::new_id(),
        country: "US".into(),
        ..CheckoutForm::default()
    };
    let page = checkout_page(&shop, &visitor, &cart, form, FieldErrors::default(), None);
    Ok(render(StatusCode::OK, &page))
}

fn parse_number(text: &str, field: &str, errors: &mut FieldErrors, message: &str) -> u32 {
    text.trim().parse().unwrap_or_else(|_| {
        errors.add(field, message);
        0
    })
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

async fn place(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    form: web::Form<CheckoutForm>,
) -> Result<HttpResponse, PageError> {
    check_form(&request, &visitor, &form.csrf)?;
    let mut form = form.into_inner();
    let cart = filled_cart(&shop, &visitor).await?;
    if !id::is_valid(&form.idempotency_key) {
        form.idempotency_key = id::new_id();
    }
    let mut errors = FieldErrors::default();
    let expiry_month = parse_number(
        &form.exp_month,
        "exp_month",
        &mut errors,
        "enter the month as a number, 1 to 12",
    );
    let expiry_year = parse_number(
        &form.exp_year,
        "exp_year",
        &mut errors,
        "enter the year with four digits",
    );
    let Some(cart) = cart else {
        // Sent again after it went through (a reload, the form's second tab): its key names
        // the order it placed, which the order service answers with; a new key finds nothing
        // to buy and writes nothing.
        if errors.is_empty()
            && let Ok((_, order)) = shop
                .check_out(
                    &visitor,
                    &form.idempotency_key,
                    customer_of(&form),
                    payment_of(&form, expiry_month, expiry_year),
                )
                .await
        {
            return Ok(see_other(&format!("/orders/{}?placed=1", order.id)));
        }
        return Ok(see_other("/cart?notice=empty"));
    };
    if !errors.is_empty() {
        let page = checkout_page(
            &shop,
            &visitor,
            &cart,
            form,
            errors,
            Some(Notice::error("Please check the highlighted fields.")),
        );
        return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let outcome = shop
        .check_out(
            &visitor,
            &form.idempotency_key,
            customer_of(&form),
            payment_of(&form, expiry_month, expiry_year),
        )
        .await;
    // Whatever the outcome, the stock of these products may have changed.
    shop.forget_stock(cart.lines.iter().map(|l| l.sku.as_str()))
        .await;
    let (status, notice, errors) = match outcome {
        Ok((_, order)) => return Ok(see_other(&format!("/orders/{}?placed=1", order.id))),
        Err(error) => match failure(error, &cart) {
            Failure::Retry(status, notice, errors) => (status, notice, errors),
            Failure::EmptyCart => return Ok(see_other("/cart?notice=empty")),
        },
    };
    // A different body under the same key is refused, so a new attempt gets a new key; the
    // card number is not shown again.
    form.idempotency_key = id::new_id();
    if !errors.of("card_number").is_empty() || status == StatusCode::PAYMENT_REQUIRED {
        form.card_number.clear();
        form.cvc.clear();
    }
    let page = checkout_page(&shop, &visitor, &cart, form, errors, Some(notice));
    let mut response = render(status, &page);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(RETRY_AFTER_SECS),
        );
    }
    Ok(response)
}

/// Who the checkout form says is buying, and where it goes.
fn customer_of(form: &CheckoutForm) -> CustomerDetails {
    CustomerDetails {
        name: form.name.trim().to_owned(),
        email: form.email.trim().to_owned(),
        address: Address {
            line1: form.line1.trim().to_owned(),
            line2: optional(&form.line2),
            city: form.city.trim().to_owned(),
            region: optional(&form.region),
            postal_code: form.postal_code.trim().to_owned(),
            country: form.country.trim().to_ascii_uppercase(),
        },
    }
}

/// The card the checkout form pays with, its expiry as read from the form.
fn payment_of(form: &CheckoutForm, expiry_month: u32, expiry_year: u32) -> PaymentCard {
    PaymentCard {
        number: form.card_number.trim().to_owned(),
        expiry_month,
        expiry_year,
        cvc: form.cvc.trim().to_owned(),
    }
}

enum Failure {
    /// Show the form again with this message.
    Retry(StatusCode, Notice, FieldErrors),
    EmptyCart,
}

/// What the shopper is told when placing the order failed. The cart is kept in every case.
fn failure(error: ClientError, cart: &Cart) -> Failure {
    let problem = match &error {
        ClientError::Problem { problem, .. } if problem.status < 500 => problem,
        _ => {
            tracing::warn!(%error, "checkout failed");
            return Failure::Retry(
                StatusCode::SERVICE_UNAVAILABLE,
                Notice::error(
                    "Checkout is temporarily unavailable. Your cart is safe; please try again in a few seconds.",
                ),
                FieldErrors::default(),
            );
        }
    };
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut errors = FieldErrors::default();
    let text = match problem.code {
        ProblemCode::CartEmpty | ProblemCode::CartNotFound => return Failure::EmptyCart,
        ProblemCode::PaymentDeclined => {
            let reason = problem.decline_code().unwrap_or(DeclineCode::CardDeclined);
            let why = match reason {
                DeclineCode::InsufficientFunds => "the card has insufficient funds",
                DeclineCode::ProcessingError => "the card could not be processed",
                _ => "the card was declined",
            };
            errors.add("card_number", "try another card");
            format!(
                "Your payment was declined: {why} ({reason}). Nothing was charged and your cart is unchanged; try another card."
            )
        }
        ProblemCode::OutOfStock => {
            let skus = problem.skus();
            let names: Vec<&str> = cart
                .lines
                .iter()
                .filter(|l| skus.contains(&l.sku))
                .map(|l| l.name.as_str())
                .collect();
            if names.is_empty() {
                "Some items in your cart are no longer in stock in that quantity. Please review your cart.".to_owned()
            } else {
                format!(
                    "Sorry, we no longer have enough of: {}. Please change the quantity in your cart.",
                    names.join(", ")
                )
            }
        }
        ProblemCode::ValidationFailed => {
            for field in &problem.errors {
                errors.add(form_field(&field.field), &field.message);
            }
            "Please check the highlighted fields.".to_owned()
        }
        ProblemCode::CartInCheckout => "This cart is already being checked out, perhaps in another window. Nothing was charged twice; look at your orders in a moment.".to_owned(),
        ProblemCode::CartChanged | ProblemCode::CartBusy => {
            "Your cart changed while the order was being placed. Nothing was charged; please check it and place the order again.".to_owned()
        }
        ProblemCode::ProductUnavailable => {
            "An item in your cart is no longer sold. Please remove it from your cart.".to_owned()
        }
        _ => problem
            .detail
            .clone()
            .unwrap_or_else(|| problem.title.clone()),
    };
    Failure::Retry(status, Notice::error(text), errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_fields_map_to_form_fields() {
        assert_eq!(form_field("customer.email"), "email");
        assert_eq!(form_field("customer.address.postal_code"), "postal_code");
        assert_eq!(form_field("payment.number"), "card_number");
        assert_eq!(form_field("payment.expiry_year"), "exp_year");
    }
}
