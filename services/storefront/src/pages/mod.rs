//! The shop's pages: rendered on the server from askama templates (compiled with the binary,
//! auto-escaped), plain HTML forms for every action, so the whole journey works with JavaScript
//! off. Actions answer with a redirect (post/redirect/get) so a reload never repeats them.

mod browse;
mod cart;
mod checkout;
mod orders;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use emporium_api::catalog::Category;
use emporium_platform::server::KeepBody;

use crate::assets;
use crate::error::PageError;
use crate::session::{self, Visitor};
use crate::shop::Shop;
use crate::view;

pub fn configure(cfg: &mut web::ServiceConfig) {
    browse::configure(cfg);
    cart::configure(cfg);
    checkout::configure(cfg);
    orders::configure(cfg);
}

/// The frame around every page: title, navigation, search box, cart badge.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub stylesheet: String,
    pub nav: Vec<NavLink>,
    pub cart_count: i64,
    pub query: String,
    pub notice: Option<Notice>,
}

#[derive(Debug, Clone)]
pub struct NavLink {
    pub url: String,
    pub name: String,
    pub current: bool,
}

/// A message at the top of a page.
#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    /// `ok` or `error`.
    pub tone: &'static str,
}

impl Notice {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tone: "ok",
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tone: "error",
        }
    }
}

impl Layout {
    /// A frame without navigation, for error pages (which must render even when the catalog
    /// is down).
    pub fn bare(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            stylesheet: assets::stylesheet_url(),
            nav: Vec::new(),
            cart_count: 0,
            query: String::new(),
            notice: None,
        }
    }

    pub fn new(title: &str, categories: &[Category], cart_count: i64, current: &str) -> Self {
        Self {
            nav: categories
                .iter()
                .map(|c| NavLink {
                    url: view::category_url(&c.slug),
                    name: c.name.clone(),
                    current: c.slug == current,
                })
                .collect(),
            cart_count,
            ..Self::bare(title)
        }
    }

    pub fn with_notice(mut self, notice: Option<Notice>) -> Self {
        self.notice = notice;
        self
    }

    pub fn with_query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }
}

/// Categories and the cart badge, fetched together for a page's frame.
pub async fn frame(shop: &Shop, visitor: &Visitor) -> (std::sync::Arc<Vec<Category>>, i64) {
    futures::join!(shop.categories_or_none(), shop.cart_count(visitor))
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
}

impl ErrorPage {
    pub fn new(heading: &str, message: &str) -> Self {
        Self {
            layout: Layout::bare(heading),
            heading: heading.to_owned(),
            message: message.to_owned(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            "We couldn’t find that page",
            "The product may have been removed, or the link may be mistyped. Try searching, or start again from the home page.",
        )
    }
}

/// An HTML answer. Marked so the server's problem fallback keeps the body of error pages.
pub fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => {
            let mut response = HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(html);
            response.extensions_mut().insert(KeepBody);
            response
        }
        Err(error) => {
            tracing::error!(%error, "a page failed to render");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// `303 See Other` to `location`: the answer to a form post.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Refuses a state-changing form that came from another site or lacks the session's token.
pub fn check_form(request: &HttpRequest, visitor: &Visitor, token: &str) -> Result<(), PageError> {
    if session::same_origin(request) && visitor.csrf_matches(token) {
        Ok(())
    } else {
        Err(PageError::Forbidden)
    }
}

/// The 404 page for any path no route takes.
pub async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}
