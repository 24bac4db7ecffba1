//! What pages show, already formatted: prices, stock badges, product cards. Templates only
//! print these fields, so every rule about how a thing looks lives here and is unit-tested.

use emporium_api::Money;
use emporium_api::catalog::Product;
use emporium_api::inventory::StockLevel;

use crate::assets;

/// At or below this many units a product shows "only N left".
pub const LOW_STOCK: i64 = 5;

/// A price as shoppers read it: `$19.99`, `€5.00`, `¥1200`, else `12.50 CHF`.
pub fn price(money: &Money) -> String {
    let symbol = match money.currency.as_str() {
        "USD" => Some("$"),
        "EUR" => Some("€"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    };
    let plain = money.to_string();
    let number = plain
        .strip_suffix(money.currency.as_str())
        .map_or(plain.as_str(), str::trim_end);
    match symbol {
        Some(symbol) => match number.strip_prefix('-') {
            Some(magnitude) => format!("-{symbol}{magnitude}"),
            None => format!("{symbol}{number}"),
        },
        None => plain.clone(),
    }
}

/// A product's availability as the shop shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub label: String,
    /// CSS modifier: `in`, `low`, `out` or `unknown`.
    pub tone: &'static str,
    /// Units that may be added now (capped by `max_quantity`); 0 when sold out.
    pub purchasable: i64,
}

impl Availability {
    /// `stock` is `None` when the inventory did not answer: the product may still be bought,
    /// and the cart checks stock when it is added.
    pub fn of(stock: Option<&StockLevel>, max_quantity: i64) -> Self {
        match stock {
            None => Self {
                label: "Availability unknown".into(),
                tone: "unknown",
                purchasable: max_quantity,
            },
            Some(level) if level.available <= 0 => Self {
                label: "Out of stock".into(),
                tone: "out",
                purchasable: 0,
            },
            Some(level) if level.available <= LOW_STOCK => Self {
                label: format!("Only {} left", level.available),
                tone: "low",
                purchasable: level.available.min(max_quantity),
            },
            Some(level) => Self {
                label: "In stock".into(),
                tone: "in",
                purchasable: level.available.min(max_quantity),
            },
        }
    }

    pub fn sold_out(&self) -> bool {
        self.purchasable == 0
    }
}

/// A product in a grid of products.
#[derive(Debug, Clone)]
pub struct ProductCard {
    pub id: String,
    pub url: String,
    pub name: String,
    pub price: String,
    pub image: Option<String>,
    pub availability: Availability,
}

impl ProductCard {
    pub fn new(product: &Product, stock: Option<&StockLevel>, max_quantity: i64) -> Self {
        Self {
            id: product.id.clone(),
            url: product_url(&product.id),
            name: product.name.clone(),
            price: price(&product.price),
            image: product.images.first().map(|key| assets::url(key)),
            availability: Availability::of(stock, max_quantity),
        }
    }
}

pub fn product_url(id: &str) -> String {
    format!("/p/{id}")
}

pub fn category_url(slug: &str) -> String {
    format!("/c/{slug}")
}

/// What a cart will cost, by the order service's rules, at the prices in the cart (the order
/// takes the catalog's prices when it is placed, so this is an estimate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub subtotal: String,
    /// `Free` once the subtotal reaches the threshold.
    pub shipping: String,
    pub tax: String,
    pub total: String,
    /// "Add $12.00 more for free shipping", while it is within reach.
    pub free_shipping_hint: String,
}

impl Estimate {
    pub fn of(cart: &emporium_api::cart::Cart, pricing: &emporium_api::order::Pricing) -> Self {
        let lines: Vec<(i64, i64)> = cart
            .lines
            .iter()
            .map(|l| (l.unit_price.amount, l.quantity))
            .collect();
        let currency = cart.subtotal.currency.as_str();
        match emporium_api::order::totals(&lines, currency, pricing) {
            Some(totals) => {
                let missing = pricing.free_shipping_from - totals.subtotal.amount;
                Self {
                    subtotal: price(&totals.subtotal),
                    shipping: if totals.shipping.amount == 0 {
                        "Free".to_owned()
                    } else {
                        price(&totals.shipping)
                    },
                    tax: price(&totals.tax),
                    total: price(&totals.total),
                    free_shipping_hint: if missing > 0 && totals.shipping.amount > 0 {
                        format!(
                            "Add {} more for free shipping.",
                            price(&Money::new(missing, currency))
                        )
                    } else {
                        String::new()
                    },
                }
            }
            None => Self {
                subtotal: price(&cart.subtotal),
                shipping: String::new(),
                tax: String::new(),
                total: price(&cart.subtotal),
                free_shipping_hint: String::new(),
            },
        }
    }
}

/// A date as `30 Nov 2026, 18:05 UTC`.
pub fn timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[day padding:none] [month repr:short] [year], [hour]:[minute] UTC"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(available: i64) -> StockLevel {
        StockLevel {
            sku: "KIT-1".into(),
            available,
            reserved: 0,
            sold: 0,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn prices_read_like_a_shop() {
        assert_eq!(price(&Money::new(1999, "USD")), "$19.99");
        assert_eq!(price(&Money::new(-150, "EUR")), "-€1.50");
        assert_eq!(price(&Money::new(1200, "JPY")), "¥1200");
        assert_eq!(price(&Money::new(1250, "CHF")), "12.50 CHF");
    }

    #[test]
    fn stock_states() {
        assert_eq!(Availability::of(Some(&level(0)), 10).label, "Out of stock");
        assert!(Availability::of(Some(&level(0)), 10).sold_out());
        let low = Availability::of(Some(&level(3)), 10);
        assert_eq!((low.label.as_str(), low.purchasable), ("Only 3 left", 3));
        let plenty = Availability::of(Some(&level(80)), 10);
        assert_eq!((plenty.tone, plenty.purchasable), ("in", 10));
        assert_eq!(Availability::of(None, 10).tone, "unknown");
    }

    #[test]
    fn estimates_follow_the_order_rules() {
        let pricing = emporium_api::order::Pricing {
            shipping_fee: 500,
            free_shipping_from: 5000,
            tax_rate_bps: 825,
        };
        let line = |amount: i64, quantity: i64| emporium_api::cart::CartLine {
            product_id: "p".into(),
            sku: "KIT-1".into(),
            name: "Mug".into(),
            image: None,
            unit_price: Money::new(amount, "USD"),
            quantity,
            line_total: Money::new(amount * quantity, "USD"),
        };
        let cart = |lines: Vec<emporium_api::cart::CartLine>| emporium_api::cart::Cart {
            id: "c".into(),
            item_count: lines.iter().map(|l| l.quantity).sum(),
            subtotal: Money::new(lines.iter().map(|l| l.line_total.amount).sum(), "USD"),
            lines,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
            expires_at: time::OffsetDateTime::UNIX_EPOCH,
            version: 1,
            checkout_order_id: None,
        };
        let small = Estimate::of(&cart(vec![line(1999, 1)]), &pricing);
        assert_eq!(
            (
                small.shipping.as_str(),
                small.tax.as_str(),
                small.total.as_str()
            ),
            ("$5.00", "$1.65", "$26.64")
        );
        assert_eq!(
            small.free_shipping_hint,
            "Add $30.01 more for free shipping."
        );
        let large = Estimate::of(&cart(vec![line(2500, 2)]), &pricing);
        assert_eq!(
            (large.shipping.as_str(), large.free_shipping_hint.as_str()),
            ("Free", "")
        );
    }

    #[test]
    fn timestamps_are_short_and_in_utc() {
        let at = time::macros::datetime!(2026-11-30 18:05 UTC);
        assert_eq!(timestamp(at), "30 Nov 2026, 18:05 UTC");
    }
}
