//! `/api/v1`: the public JSON API for the same journey as the pages (browse, search, cart,
//! checkout, orders), used by the load generator and mobile clients. It keeps the visitor in the
//! same signed session cookie as the pages, so a client only has to keep cookies. Bodies are
//! JSON only: a cross-site page cannot send JSON without the browser asking first (CORS), and
//! requests a browser marks as cross-site are refused outright.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use emporium_api::cart::{AddCartLine, Cart, CartLine, SetQuantity};
use emporium_api::catalog::{Category, Product, ProductPage, ProductQuery, ProductSort};
use emporium_api::order::{
    Address, CustomerDetails, IDEMPOTENCY_HEADER, Order, OrderFailure, OrderLine, OrderPage,
    OrderQuery, OrderStatus, PaymentCard, PaymentStatus, PaymentSummary, Totals,
};
use emporium_api::{Money, ProblemCode, ProblemMembers};
use emporium_platform::{FieldError, Problem, id};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::session::{self, Visitor};
use crate::shop::Shop;
use crate::view::Availability;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, so a method a path does not take is 405, as on the other services.
    cfg.service(web::resource("/categories").route(web::get().to(categories)))
        .service(web::resource("/products").route(web::get().to(products)))
        .service(web::resource("/products/{id}").route(web::get().to(product)))
        .service(web::resource("/cart").route(web::get().to(cart)))
        .service(web::resource("/cart/lines").route(web::post().to(add_line)))
        .service(
            web::resource("/cart/lines/{product_id}")
                .route(web::put().to(set_quantity))
                .route(web::delete().to(remove_line)),
        )
        .service(web::resource("/checkout").route(web::post().to(checkout)))
        .service(web::resource("/orders").route(web::get().to(orders)))
        .service(web::resource("/orders/{id}").route(web::get().to(order)));
    static DOCUMENT: std::sync::OnceLock<web::Bytes> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        emporium_platform::openapi::document(
            &ApiDoc::openapi(),
            // The edge's own answers: the per-client rate limit.
            &[(
                "429",
                "Too many requests from this client (`rate_limited`, with `Retry-After`)",
            )],
        )
    });
    emporium_platform::openapi::configure(cfg, "/openapi.json", document.clone());
}

/// A product's availability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stock {
    /// `in_stock`, `low_stock` (at most 5 left), `out_of_stock`, or `unknown` when the
    /// inventory did not answer.
    pub state: String,
    /// Units available now; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// Most units that can be added to a cart now.
    pub purchasable: i64,
}

/// A product with its availability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub product: Product,
    pub stock: Stock,
}

/// The visitor's cart; empty (and without an id) until something is added.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CartView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub lines: Vec<CartLine>,
    pub item_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtotal: Option<Money>,
}

impl From<Option<Cart>> for CartView {
    fn from(cart: Option<Cart>) -> Self {
        match cart {
            Some(cart) => Self {
                id: Some(cart.id),
                lines: cart.lines,
                item_count: cart.item_count,
                subtotal: Some(cart.subtotal),
            },
            None => Self {
                id: None,
                lines: Vec::new(),
                item_count: 0,
                subtotal: None,
            },
        }
    }
}

/// Body of `POST /api/v1/checkout`: who is buying and how they pay; the cart is the session's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    pub customer: CustomerDetails,
    pub payment: PaymentCard,
}

fn stock_view(availability: &Availability, available: Option<i64>) -> Stock {
    let state = match availability.tone {
        "out" => "out_of_stock",
        "low" => "low_stock",
        "in" => "in_stock",
        _ => "unknown",
    };
    Stock {
        state: state.to_owned(),
        available,
        purchasable: availability.purchasable,
    }
}

/// Refuses a state change a browser marks as coming from another site.
fn same_site(request: &HttpRequest) -> Result<(), Problem> {
    if session::same_origin(request) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            ProblemCode::CrossSiteRequest,
            "Cross-site requests cannot change the cart or place orders",
        ))
    }
}

/// Categories in display order.
#[utoipa::path(get, path = "/api/v1/categories", tag = "browse",
    responses((status = 200, body = Vec<Category>)))]
pub async fn categories(shop: web::Data<Shop>) -> Result<HttpResponse, ApiError> {
    let mut categories = shop.catalog.categories().await?;
    categories.sort_by_key(|c| (c.position, c.name.clone()));
    Ok(HttpResponse::Ok().json(categories))
}

/// Browse or search products.
#[utoipa::path(get, path = "/api/v1/products", tag = "browse", params(ProductQuery),
    responses((status = 200, body = ProductPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category (`category_not_found`)", body = Problem, content_type = "application/problem+json")))]
pub async fn products(
    shop: web::Data<Shop>,
    query: web::Query<ProductQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = shop.products(&query).await?;
    Ok(HttpResponse::Ok().json(&*page))
}

fn product_not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        ProblemCode::ProductNotFound,
        "No such product",
    )
}

/// A product and whether it can be bought.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "browse", params(("id" = String, Path)),
    responses((status = 200, body = ProductView),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn product(
    shop: web::Data<Shop>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !id::is_valid(&id) {
        return Err(product_not_found().into());
    }
    let product = shop.product(&id).await?;
    let level = shop.stock_of(&[&product.sku]).await.remove(&product.sku);
    let availability = Availability::of(level.as_ref(), shop.max_quantity);
    Ok(HttpResponse::Ok().json(ProductView {
        stock: stock_view(&availability, level.map(|l| l.available.max(0))),
        product: Product::clone(&product),
    }))
}

/// The session's cart.
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart",
    responses((status = 200, body = CartView)))]
pub async fn cart(shop: web::Data<Shop>, visitor: Visitor) -> Result<HttpResponse, ApiError> {
    let cart = shop.cart(&visitor).await?;
    Ok(HttpResponse::Ok().json(CartView::from(cart)))
}

/// Add units of a product; starts a cart on the first add.
#[utoipa::path(post, path = "/api/v1/cart/lines", tag = "cart", request_body = AddCartLine,
    responses((status = 200, body = CartView),
        (status = 403, description = "A browser marked the request cross-site (`cross_site_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock (`out_of_stock`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_product`, `validation_failed`, `cart_full`", body = Problem, content_type = "application/problem+json")))]
pub async fn add_line(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    line: web::Json<AddCartLine>,
) -> Result<HttpResponse, ApiError> {
    same_site(&request)?;
    let cart = shop.add(&visitor, &line.product_id, line.quantity).await?;
    Ok(HttpResponse::Ok().json(CartView::from(Some(cart))))
}

/// Set a line's quantity (0 removes it).
#[utoipa::path(put, path = "/api/v1/cart/lines/{product_id}", tag = "cart",
    params(("product_id" = String, Path)), request_body = SetQuantity,
    responses((status = 200, body = CartView),
        (status = 403, description = "A browser marked the request cross-site (`cross_site_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`line_not_found`", body = Problem, content_type = "application/problem+json")))]
pub async fn set_quantity(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    product_id: web::Path<String>,
    body: web::Json<SetQuantity>,
) -> Result<HttpResponse, ApiError> {
    valid_product_id(&product_id)?;
    same_site(&request)?;
    let cart = shop
        .set_quantity(&visitor, &product_id, body.quantity)
        .await?;
    Ok(HttpResponse::Ok().json(CartView::from(cart)))
}

/// Remove a line.
#[utoipa::path(delete, path = "/api/v1/cart/lines/{product_id}", tag = "cart",
    params(("product_id" = String, Path)), responses((status = 200, body = CartView),
        (status = 403, description = "A browser marked the request cross-site (`cross_site_request`)", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_line(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    product_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    same_site(&request)?;
    valid_product_id(&product_id)?;
    let cart = shop.remove(&visitor, &product_id).await?;
    Ok(HttpResponse::Ok().json(CartView::from(cart)))
}

/// A product id is 26 characters of base32; anything else names no product, and saying so
/// beats passing it on.
fn valid_product_id(id: &str) -> Result<(), Problem> {
    if emporium_platform::id::is_valid(id) {
        Ok(())
    } else {
        Err(Problem::invalid_path(
            "product_id is not a product id (26 characters, 0-9 and a-z)",
        ))
    }
}

/// Place an order for the session's cart. Send an `Idempotency-Key` (a fresh random value per
/// checkout): repeating the request with it returns the same order instead of a second one.
#[utoipa::path(post, path = "/api/v1/checkout", tag = "orders", request_body = Checkout,
    params(("Idempotency-Key" = String, Header, description = "1 to 128 visible ASCII characters (no spaces), unique per checkout attempt; repeat it to retry safely", min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses(
        (status = 201, description = "Placed and confirmed", body = Order),
        (status = 200, description = "A repeat of an earlier request", body = Order),
        (status = 202, description = "Still being processed; poll the order", body = Order),
        (status = 403, description = "A browser marked the request cross-site (`cross_site_request`)", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`payment_declined` (with `decline_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`out_of_stock` (with `skus`), `cart_empty`, `cart_in_checkout` (another checkout of the cart is under way), `cart_changed`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Checkout is temporarily unavailable", body = Problem, content_type = "application/problem+json")))]
pub async fn checkout(
    request: HttpRequest,
    shop: web::Data<Shop>,
    visitor: Visitor,
    body: web::Json<Checkout>,
) -> Result<HttpResponse, ApiError> {
    same_site(&request)?;
    let key = request
        .headers()
        .get(IDEMPOTENCY_HEADER)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::IdempotencyKeyMissing,
                "The Idempotency-Key header is required",
            )
            .with_detail("send a fresh random key with each checkout; repeat it to retry safely")
        })?
        .to_str()
        .ok()
        .filter(|key| emporium_api::order::is_idempotency_key(key))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidIdempotencyKey,
                "The Idempotency-Key header is not valid",
            )
            .with_detail("use 1 to 128 visible ASCII characters")
        })?
        .to_owned();
    // The order service reads the cart itself; reading it here too cost a service call per
    // checkout, and answered a retry of a placed order (its cart now empty) with `cart_empty`
    // instead of the order its key promises.
    let cart_empty = || {
        Problem::new(
            StatusCode::CONFLICT,
            ProblemCode::CartEmpty,
            "The cart is empty",
        )
        .with_detail("add products to the cart before checking out")
    };
    let body = body.into_inner();
    let placed = shop
        .check_out(&visitor, &key, body.customer, body.payment)
        .await;
    match placed {
        Ok((status, order)) => {
            shop.forget_stock(order.lines.iter().map(|l| l.sku.as_str()))
                .await;
            Ok(HttpResponse::build(status).json(order))
        }
        Err(error) => {
            if let Some(ProblemCode::CartNotFound | ProblemCode::CartEmpty) = error.code() {
                return Err(cart_empty().into());
            }
            // A refused checkout leaves the stock as it was (a hold it made is given back); the
            // levels it found short are worth reading again.
            if let Some(problem) = error.problem() {
                let skus = problem.skus();
                shop.forget_stock(skus.iter().map(String::as_str)).await;
            }
            Err(error.into())
        }
    }
}

/// The session's orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(OrderQuery),
    responses((status = 200, body = OrderPage)))]
pub async fn orders(
    shop: web::Data<Shop>,
    visitor: Visitor,
    query: web::Query<OrderQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = shop
        .orders
        .orders(&visitor.customer_id(), query.limit, query.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One of the session's orders.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, body = Order),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn order(
    shop: web::Data<Shop>,
    visitor: Visitor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = shop.orders.order(&visitor.customer_id(), &id).await?;
    Ok(HttpResponse::Ok().json(order))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Emporium storefront API",
        description = "The public API of the shop: browse, search, cart, checkout and orders. \
The visitor is kept in the `emporium_session` cookie the first answer sets; send it back on \
every request. Test cards: 4242 4242 4242 4242 approves; 4000 0000 0000 0002 is declined \
(card_declined); 4000 0000 0000 9995 (insufficient_funds); 4000 0000 0000 0119 \
(processing_error)."
    ),
    paths(
        categories,
        products,
        product,
        cart,
        add_line,
        set_quantity,
        remove_line,
        checkout,
        orders,
        order
    ),
    components(schemas(
        Category,
        Product,
        ProductPage,
        ProductSort,
        ProductView,
        Stock,
        CartView,
        CartLine,
        AddCartLine,
        SetQuantity,
        Checkout,
        CustomerDetails,
        Address,
        PaymentCard,
        Order,
        OrderLine,
        OrderStatus,
        OrderFailure,
        OrderPage,
        PaymentSummary,
        PaymentStatus,
        Totals,
        Money,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;
