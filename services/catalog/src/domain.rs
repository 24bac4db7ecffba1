//! Parsing requests into values the catalog can trust. Each parser reports every invalid field
//! at once, with the field's path, so a client fixes its request in one round.

use std::collections::BTreeMap;

use emporium_api::Money;
use emporium_api::catalog::{CategoryPatch, NewCategory, NewProduct, ProductPatch};
use emporium_platform::FieldError;
use emporium_platform::validation::{FieldErrors as Errors, has_control, required_text};
use emporium_ports::blob::BlobKey;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_SLUG_CHARS: usize = 50;
pub const MAX_IMAGES: usize = 12;
pub const MAX_ATTRIBUTES: usize = 32;
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 40;
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 200;
/// Highest price accepted: 1,000,000.00 in a two-decimal currency. Anything above is a typo.
pub const MAX_PRICE_MINOR: i64 = 100_000_000;
/// Blob keys of product images start with this.
pub const IMAGE_PREFIX: &str = "images/";

pub fn parse_sku(raw: &str, errors: &mut Errors) -> String {
    match emporium_api::sku::parse(raw) {
        Ok(sku) => sku,
        Err(message) => {
            errors.add("sku", message);
            raw.trim().to_ascii_uppercase()
        }
    }
}

fn parse_name(field: &str, raw: &str, errors: &mut Errors) -> String {
    required_text(errors, field, raw, MAX_NAME_CHARS)
}

fn parse_description(raw: &str, errors: &mut Errors) -> String {
    let description = raw.trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.add(
            "description",
            format!("must have at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    } else if has_control(&description, true) {
        errors.add("description", "must not contain control characters");
    }
    description
}

/// Whether `slug` is a well-formed category slug.
pub fn is_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= MAX_SLUG_CHARS
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

fn parse_slug(field: &str, raw: &str, errors: &mut Errors) -> String {
    if !is_slug(raw) {
        errors.add(
            field,
            format!(
                "must be 1 to {MAX_SLUG_CHARS} lowercase letters, digits or dashes, not starting or ending with a dash"
            ),
        );
    }
    raw.to_owned()
}

fn parse_price(price: &Money, currency: &str, errors: &mut Errors) -> Money {
    if price.amount < 0 {
        errors.add("price.amount", "must not be negative");
    } else if price.amount > MAX_PRICE_MINOR {
        errors.add(
            "price.amount",
            format!("must be at most {MAX_PRICE_MINOR} minor units"),
        );
    }
    if price.currency != currency {
        errors.add(
            "price.currency",
            format!("must be the shop's currency, {currency}"),
        );
    }
    price.clone()
}

fn parse_images(images: &[String], errors: &mut Errors) -> Vec<String> {
    if images.len() > MAX_IMAGES {
        errors.add("images", format!("at most {MAX_IMAGES} images"));
        return images.to_vec();
    }
    let mut seen = std::collections::HashSet::new();
    for (position, key) in images.iter().enumerate() {
        let field = format!("images[{position}]");
        if BlobKey::parse(key).is_err() || !key.starts_with(IMAGE_PREFIX) {
            errors.add(
                field,
                format!("must be an image key starting with {IMAGE_PREFIX}"),
            );
        } else if !seen.insert(key) {
            errors.add(field, "is listed twice");
        }
    }
    images.to_vec()
}

fn parse_attributes(
    attributes: &BTreeMap<String, String>,
    errors: &mut Errors,
) -> BTreeMap<String, String> {
    if attributes.len() > MAX_ATTRIBUTES {
        errors.add("attributes", format!("at most {MAX_ATTRIBUTES} attributes"));
        return attributes.clone();
    }
    let mut parsed = BTreeMap::new();
    for (key, value) in attributes {
        let name = key.trim();
        let field = format!("attributes.{key}");
        if name.is_empty()
            || name.chars().count() > MAX_ATTRIBUTE_KEY_CHARS
            || has_control(name, false)
        {
            errors.add(
                field,
                format!("names have 1 to {MAX_ATTRIBUTE_KEY_CHARS} printable characters"),
            );
        } else if value.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS || has_control(value, false) {
            errors.add(
                field,
                format!("values have at most {MAX_ATTRIBUTE_VALUE_CHARS} printable characters"),
            );
        } else {
            parsed.insert(name.to_owned(), value.trim().to_owned());
        }
    }
    parsed
}

/// A product's editable fields, all valid.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductFields {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: Money,
    pub images: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl ProductFields {
    pub fn parse(input: &NewProduct, currency: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let fields = Self {
            sku: parse_sku(&input.sku, &mut errors),
            name: parse_name("name", &input.name, &mut errors),
            description: parse_description(&input.description, &mut errors),
            category: parse_slug("category", &input.category, &mut errors),
            price: parse_price(&input.price, currency, &mut errors),
            images: parse_images(&input.images, &mut errors),
            attributes: parse_attributes(&input.attributes, &mut errors),
        };
        errors.finish(fields)
    }

    /// `self` with the patch's fields applied, all checked.
    pub fn patched(&self, patch: &ProductPatch, currency: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let mut next = self.clone();
        if let Some(sku) = &patch.sku {
            next.sku = parse_sku(sku, &mut errors);
        }
        if let Some(name) = &patch.name {
            next.name = parse_name("name", name, &mut errors);
        }
        if let Some(description) = &patch.description {
            next.description = parse_description(description, &mut errors);
        }
        if let Some(category) = &patch.category {
            next.category = parse_slug("category", category, &mut errors);
        }
        if let Some(price) = &patch.price {
            next.price = parse_price(price, currency, &mut errors);
        }
        if let Some(images) = &patch.images {
            next.images = parse_images(images, &mut errors);
        }
        if let Some(attributes) = &patch.attributes {
            next.attributes = parse_attributes(attributes, &mut errors);
        }
        errors.finish(next)
    }
}

/// A category's editable fields, all valid.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryFields {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub position: i32,
}

impl CategoryFields {
    pub fn parse(input: &NewCategory) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let fields = Self {
            slug: parse_slug("slug", &input.slug, &mut errors),
            name: parse_name("name", &input.name, &mut errors),
            description: parse_description(&input.description, &mut errors),
            position: input.position,
        };
        errors.finish(fields)
    }

    pub fn patched(&self, patch: &CategoryPatch) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let mut next = self.clone();
        if let Some(name) = &patch.name {
            next.name = parse_name("name", name, &mut errors);
        }
        if let Some(description) = &patch.description {
            next.description = parse_description(description, &mut errors);
        }
        if let Some(position) = patch.position {
            next.position = position;
        }
        errors.finish(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> NewProduct {
        NewProduct {
            sku: " kit-001 ".into(),
            name: " Pour-over kettle ".into(),
            description: "Gooseneck.\nHolds 1 l.".into(),
            category: "kitchen".into(),
            price: Money::new(4_500, "USD"),
            images: vec!["images/abc.svg".into()],
            attributes: BTreeMap::from([("colour".into(), "black".into())]),
        }
    }

    #[test]
    fn valid_input_is_normalised() {
        let fields = ProductFields::parse(&product(), "USD").expect("valid");
        assert_eq!(fields.sku, "KIT-001");
        assert_eq!(fields.name, "Pour-over kettle");
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let mut input = product();
        input.sku = "no spaces!".into();
        input.name = "   ".into();
        input.category = "Kitchen".into();
        input.price = Money::new(-1, "EUR");
        input.images = vec!["../etc/passwd".into(), "images/a".into(), "images/a".into()];
        let errors = ProductFields::parse(&input, "USD").expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sku",
                "name",
                "category",
                "price.amount",
                "price.currency",
                "images[0]",
                "images[2]"
            ]
        );
    }

    #[test]
    fn absurd_prices_and_sizes_are_refused() {
        let mut input = product();
        input.price = Money::new(MAX_PRICE_MINOR + 1, "USD");
        input.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        input.attributes = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let errors = ProductFields::parse(&input, "USD").expect_err("invalid");
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn patches_change_only_what_they_name() {
        let fields = ProductFields::parse(&product(), "USD").expect("valid");
        let patch = ProductPatch {
            version: 1,
            price: Some(Money::new(3_900, "USD")),
            ..ProductPatch::default()
        };
        let next = fields.patched(&patch, "USD").expect("valid patch");
        assert_eq!(next.price.amount, 3_900);
        assert_eq!(next.name, fields.name);
        let bad = ProductPatch {
            version: 1,
            name: Some(String::new()),
            ..ProductPatch::default()
        };
        assert!(fields.patched(&bad, "USD").is_err());
    }

    #[test]
    fn slugs_are_lowercase_words_with_dashes() {
        assert!(is_slug("home-office"));
        assert!(is_slug("audio2"));
        assert!(!is_slug("-edge"));
        assert!(!is_slug("Upper"));
        assert!(!is_slug("with space"));
        assert!(!is_slug(""));
    }
}
