//! The catalog service's API: products, categories and images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::Money;

/// A product as the catalog serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// Unguessable id, 26 lowercase base32 characters.
    #[schema(example = "0k8w3hx2m7q4c9r5t1v6z0b2dy")]
    pub id: String,
    /// Stock keeping unit, unique in the catalog, upper case.
    #[schema(example = "KIT-0001")]
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Slug of the product's category.
    pub category: String,
    pub price: Money,
    /// Blob keys of the product's images, first one is the main image.
    pub images: Vec<String>,
    /// Free-form facts shown on the product page (`colour`, `material`, ...).
    pub attributes: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Increases with every change; send it back to update or delete.
    pub version: u64,
}

/// Body of `POST /v1/products`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    pub price: Money,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Body of `PATCH /v1/products/{id}`: the version the change is based on, and the fields to
/// change. Absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// The `version` of the product this change was made against.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Orders of the product list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductSort {
    /// Alphabetical by name.
    #[default]
    Name,
    /// Cheapest first.
    PriceAsc,
    /// Most expensive first.
    PriceDesc,
    /// Most recently added first.
    Newest,
}

impl ProductSort {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Newest => "newest",
        }
    }
}

/// Most characters of a search (`q`) the catalog takes.
pub const MAX_QUERY_CHARS: usize = 100;
/// Most distinct words of a search the catalog takes.
pub const MAX_QUERY_WORDS: usize = 8;

/// Query of `GET /v1/products`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// Only products of this category (slug).
    pub category: Option<String>,
    /// Words that must all appear in the name, SKU, description, category or attributes: at
    /// most 8 distinct words and 100 characters, no control characters.
    pub q: Option<String>,
    pub sort: Option<ProductSort>,
    /// Page size, 1 to 100 (default 24).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    pub cursor: Option<String>,
}

/// One page of products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A category of products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Category {
    /// Lowercase letters, digits and dashes; the category's id.
    #[schema(example = "kitchen")]
    pub slug: String,
    pub name: String,
    pub description: String,
    /// Display order, smallest first.
    pub position: i32,
    /// Number of products in the category.
    pub product_count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

/// Body of `POST /v1/categories`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub position: i32,
}

/// Body of `PATCH /v1/categories/{slug}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i32>,
}

/// Answer to an image upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredImage {
    /// Blob key to put in a product's `images`; derived from the content.
    #[schema(example = "images/3f2a9c0d1b7e4a6f8c2d5e1f0a9b8c7d.png")]
    pub key: String,
    pub content_type: String,
    pub size: u64,
    pub etag: String,
}

/// Query of `DELETE /v1/products/{id}` and `DELETE /v1/categories/{slug}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete only if this is still the current version.
    pub version: Option<u64>,
}
