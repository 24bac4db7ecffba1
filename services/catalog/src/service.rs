//! What the catalog does, independent of HTTP: reads through the cache, writes through the
//! repository with the cache invalidated after every change, each write with its event
//! (`emporium.product.*`, `emporium.category.changed`) recorded in the same transaction.
//!
//! Cache keys and the generation groups that retire them:
//!
//! | key                                     | group                   | retired when              |
//! |-----------------------------------------|-------------------------|---------------------------|
//! | `catalog:product:v1:<id>`               | `catalog:product:<id>`  | that product changes      |
//! | `catalog:list:<filters>:<limit>:<cur>`  | `catalog:products`      | any product changes       |
//! | `catalog:categories`                    | `catalog:categories`    | any category or its count |
//!
//! Because the generation is part of the key, a reader that loaded an old value while a write
//! happened stores it under the old generation, where no later reader looks.
//!
//! A product is cached as its API JSON and a product read sends those bytes on unparsed, so the
//! key carries the format (`v1`): a release that changes the product's JSON must change it, or
//! a shared cache would serve replicas of the new release the old shape.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use emporium_api::catalog::{
    Category, CategoryPatch, NewCategory, NewProduct, Product, ProductPage, ProductPatch,
    ProductQuery, StoredImage,
};
use emporium_api::events::{
    CategoryChanged, Envelope, EventData, EventType, ProductChanged, ProductDeleted,
};
use emporium_platform::FieldError;
use emporium_ports::blob::{BlobKey, Blobs};
use emporium_ports::cache::{Cache, CacheAside, CacheStats};
use emporium_ports::events::Events;
use emporium_ports::events::outbox::{Outbox, Pending};
use emporium_ports::storage::{Cursor, Storage, cursor_from_token, page_token};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::{CategoryFields, ProductFields, is_slug};
use crate::error::CatalogError;
use crate::repository::{Listing, Repository, WriteError};
use crate::search::SearchTerms;

pub const DEFAULT_PAGE_SIZE: u32 = 24;
pub const MAX_PAGE_SIZE: u32 = 100;
/// Products a single search request reads before it returns what it found so far with a cursor,
/// so one request never walks the whole catalog.
pub const SEARCH_SCAN_BUDGET: usize = 2_000;
/// Items read per storage page while searching.
const SEARCH_PAGE: usize = 100;

const PRODUCTS_GROUP: &str = "catalog:products";
const CATEGORIES_GROUP: &str = "catalog:categories";
const CATEGORIES_KEY: &str = "catalog:categories";

/// Where a product's JSON is cached; `v1` is the format (see the module's notes).
fn product_key(id: &str) -> String {
    format!("catalog:product:v1:{id}")
}

fn product_group(id: &str) -> String {
    format!("catalog:product:{id}")
}

/// The name events give as their source.
const PRODUCER: &str = "catalog";

/// The catalog service.
pub struct Catalog {
    repository: Repository,
    outbox: Arc<Outbox>,
    cache: CacheAside,
    blobs: Arc<dyn Blobs>,
    currency: String,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("currency", &self.currency)
            .finish()
    }
}

impl Catalog {
    pub fn new(
        storage: Arc<dyn Storage>,
        cache: Arc<dyn Cache>,
        blobs: Arc<dyn Blobs>,
        currency: &str,
        cache_ttl: Duration,
        events: Arc<dyn Events>,
    ) -> Self {
        Self {
            outbox: Arc::new(Outbox::new(
                storage.clone(),
                events,
                crate::repository::TABLE.name,
            )),
            repository: Repository::new(storage),
            cache: CacheAside::new(cache, cache_ttl),
            blobs,
            currency: currency.to_owned(),
        }
    }

    /// The outbox the catalog's writes record their events in; its relay runs beside the
    /// server (`Outbox::run`).
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Records `data` as an event of `kind` for the transaction of the change that causes it.
    fn record<T: EventData>(&self, kind: EventType, data: &T) -> Result<Pending, CatalogError> {
        let envelope = Envelope::traced(PRODUCER, kind, data)?;
        self.outbox
            .record(vec![envelope.to_event()])
            .map_err(|error| CatalogError::Unexpected(error.into()))
    }

    /// Retires every listing and the categories in the cache, and says whether the cache took
    /// it. A write's own retiring shrugs off a cache outage (the entry expires by its TTL);
    /// `seed` must not, or a catalog that cached an empty listing before the seed keeps
    /// serving it.
    pub async fn retire_listings(&self) -> Result<(), emporium_ports::cache::CacheError> {
        let cache = self.cache.cache();
        cache.bump_generation(PRODUCTS_GROUP).await?;
        cache.bump_generation(CATEGORIES_GROUP).await?;
        Ok(())
    }

    pub fn cache_stats(&self) -> &Arc<CacheStats> {
        self.cache.stats()
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    // === Products ===

    pub async fn product(&self, id: &str) -> Result<Product, CatalogError> {
        if !emporium_platform::id::is_valid(id) {
            return Err(CatalogError::ProductNotFound);
        }
        let found: Option<Product> = self
            .cache
            .get_or_load(&product_key(id), Some(&product_group(id)), || {
                self.repository.product(id)
            })
            .await?;
        found.ok_or(CatalogError::ProductNotFound)
    }

    /// The product's API JSON, as [`Catalog::product`] would serialise it, straight from the
    /// cache on a hit.
    pub async fn product_json(&self, id: &str) -> Result<Bytes, CatalogError> {
        if !emporium_platform::id::is_valid(id) {
            return Err(CatalogError::ProductNotFound);
        }
        let found = self
            .cache
            .get_or_load_json(&product_key(id), Some(&product_group(id)), || async {
                Ok::<_, CatalogError>(self.repository.product(id).await?)
            })
            .await?;
        // An absent product is cached too, as JSON null.
        if found.as_ref() == b"null" {
            return Err(CatalogError::ProductNotFound);
        }
        Ok(found)
    }

    pub async fn list_products(&self, query: &ProductQuery) -> Result<ProductPage, CatalogError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(CatalogError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let terms = SearchTerms::parse(query.q.as_deref().unwrap_or_default())
            .map_err(CatalogError::InvalidQuery)?;
        let category = query.category.as_deref().filter(|c| !c.is_empty());
        if let Some(slug) = category {
            if !is_slug(slug) {
                return Err(CatalogError::InvalidQuery(
                    "category must be a category slug".into(),
                ));
            }
            self.category(slug).await?;
        }
        let sort = query.sort.unwrap_or_default();
        let scope = format!(
            "{}\u{0}{}\u{0}{}",
            category.unwrap_or_default(),
            terms.canonical(),
            sort.as_str()
        );
        let after = match query.cursor.as_deref() {
            None | Some("") => None,
            Some(token) => Some(cursor_from_token(token, &scope)?),
        };
        let key = format!(
            "catalog:list:{}:{limit}:{}",
            hex::encode(&Sha256::digest(scope.as_bytes())[..8]),
            after.as_ref().map_or("-", Cursor::as_str)
        );
        let listing = Listing::new(category.is_some(), sort);
        let partition = Repository::listing_partition(category).to_owned();
        let limit = limit as usize;
        self.cache
            .get_or_load(&key, Some(PRODUCTS_GROUP), || {
                self.load_page(&partition, listing, &terms, after.clone(), limit, &scope)
            })
            .await
    }

    /// Reads the listing from the store, filtering by the search terms, until a page is full,
    /// the listing ends, or the scan budget is spent. One product more than the page is looked
    /// for, so the last page never carries a cursor to an empty page.
    async fn load_page(
        &self,
        partition: &str,
        listing: Listing,
        terms: &SearchTerms,
        mut after: Option<Cursor>,
        limit: usize,
        scope: &str,
    ) -> Result<ProductPage, CatalogError> {
        let mut found: Vec<Product> = Vec::with_capacity(limit + 1);
        let mut scanned = 0;
        let resume_at = loop {
            let batch = if terms.is_empty() {
                limit + 1 - found.len()
            } else {
                SEARCH_PAGE
            };
            let (products, next) = self
                .repository
                .list_products(partition, listing, after.clone(), batch)
                .await?;
            scanned += products.len();
            for product in products {
                if terms.matches(&product) {
                    found.push(product);
                    if found.len() > limit {
                        break;
                    }
                }
            }
            if found.len() > limit {
                found.truncate(limit);
                let last = found
                    .last()
                    .ok_or_else(|| anyhow::anyhow!("empty full page"))?;
                break Some(Repository::cursor_after(listing, last)?);
            }
            match next {
                None => break None,
                Some(next) if scanned >= SEARCH_SCAN_BUDGET => break Some(next),
                Some(next) => after = Some(next),
            }
        };
        let next_cursor = resume_at.map(|cursor| page_token(&cursor, scope));
        Ok(ProductPage {
            items: found,
            next_cursor,
        })
    }

    pub async fn create_product(&self, input: &NewProduct) -> Result<Product, CatalogError> {
        self.create_product_with_id(emporium_platform::id::new_id(), input)
            .await
    }

    /// Creates a product under a chosen id (demo data keeps stable ids across seeding).
    pub async fn create_product_with_id(
        &self,
        id: String,
        input: &NewProduct,
    ) -> Result<Product, CatalogError> {
        let fields =
            ProductFields::parse(input, &self.currency).map_err(CatalogError::Validation)?;
        self.check_images(&fields.images).await?;
        let now = OffsetDateTime::now_utc();
        let product = build_product(id, fields, now, now, 1);
        let events = self.record(
            EventType::ProductCreated,
            &ProductChanged {
                product: product.clone(),
            },
        )?;
        match self.repository.insert_product(&product, &events).await {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::SkuTaken) => return Err(CatalogError::SkuTaken(product.sku)),
            Err(WriteError::UnknownCategory) => return Err(unknown_category()),
            Err(other) => return Err(other.into()),
        }
        self.product_changed(&product.id).await;
        Ok(product)
    }

    pub async fn update_product(
        &self,
        id: &str,
        patch: &ProductPatch,
    ) -> Result<Product, CatalogError> {
        let current = self.current_product(id).await?;
        if patch.version != current.version {
            return Err(CatalogError::VersionConflict {
                given: patch.version,
                current: current.version,
            });
        }
        let fields = product_fields(&current)
            .patched(patch, &self.currency)
            .map_err(CatalogError::Validation)?;
        if patch.images.is_some() {
            self.check_images(&fields.images).await?;
        }
        let next = build_product(
            current.id.clone(),
            fields,
            current.created_at,
            OffsetDateTime::now_utc(),
            current.version + 1,
        );
        let events = self.record(
            EventType::ProductUpdated,
            &ProductChanged {
                product: next.clone(),
            },
        )?;
        match self
            .repository
            .replace_product(&current, &next, &events)
            .await
        {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::SkuTaken) => return Err(CatalogError::SkuTaken(next.sku)),
            Err(WriteError::UnknownCategory) => return Err(unknown_category()),
            Err(WriteError::Conflict) => return Err(self.conflict(id, patch.version).await),
            Err(other) => return Err(other.into()),
        }
        self.product_changed(id).await;
        Ok(next)
    }

    pub async fn delete_product(&self, id: &str, version: Option<u64>) -> Result<(), CatalogError> {
        let current = self.current_product(id).await?;
        if let Some(version) = version
            && version != current.version
        {
            return Err(CatalogError::VersionConflict {
                given: version,
                current: current.version,
            });
        }
        let events = self.record(
            EventType::ProductDeleted,
            &ProductDeleted {
                id: current.id.clone(),
                sku: current.sku.clone(),
                category: current.category.clone(),
                version: current.version,
            },
        )?;
        match self.repository.remove_product(&current, &events).await {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::Conflict) => {
                return Err(self.conflict(id, version.unwrap_or(current.version)).await);
            }
            Err(other) => return Err(other.into()),
        }
        self.product_changed(id).await;
        Ok(())
    }

    /// The stored product, bypassing the cache: writes decide on the truth.
    async fn current_product(&self, id: &str) -> Result<Product, CatalogError> {
        if !emporium_platform::id::is_valid(id) {
            return Err(CatalogError::ProductNotFound);
        }
        self.repository
            .product(id)
            .await?
            .ok_or(CatalogError::ProductNotFound)
    }

    /// What a write that lost a race tells its caller: the product is gone, or has moved on.
    async fn conflict(&self, id: &str, given: u64) -> CatalogError {
        match self.repository.product(id).await {
            Ok(Some(now)) => CatalogError::VersionConflict {
                given,
                current: now.version,
            },
            Ok(None) => CatalogError::ProductNotFound,
            Err(error) => error.into(),
        }
    }

    async fn product_changed(&self, id: &str) {
        self.cache.retire(&product_group(id)).await;
        self.cache.retire(PRODUCTS_GROUP).await;
        // Product counts per category changed too.
        self.cache.retire(CATEGORIES_GROUP).await;
    }

    async fn check_images(&self, images: &[String]) -> Result<(), CatalogError> {
        let checks = images.iter().map(|key| async move {
            let parsed = BlobKey::parse(key).map_err(|e| CatalogError::Unexpected(e.into()))?;
            self.blobs
                .head(&parsed)
                .await
                .map_err(|e| CatalogError::Unexpected(e.into()))
        });
        let found = futures::future::join_all(checks).await;
        let mut errors = Vec::new();
        for (position, outcome) in found.into_iter().enumerate() {
            if outcome?.is_none() {
                errors.push(FieldError::new(
                    format!("images[{position}]"),
                    "no such image; upload it to /v1/images first",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CatalogError::Validation(errors))
        }
    }

    // === Categories ===

    pub async fn categories(&self) -> Result<Vec<Category>, CatalogError> {
        Ok(self
            .cache
            .get_or_load(CATEGORIES_KEY, Some(CATEGORIES_GROUP), || {
                self.repository.categories()
            })
            .await?)
    }

    pub async fn category(&self, slug: &str) -> Result<Category, CatalogError> {
        self.categories()
            .await?
            .into_iter()
            .find(|category| category.slug == slug)
            .ok_or_else(|| CatalogError::CategoryNotFound(slug.to_owned()))
    }

    pub async fn create_category(&self, input: &NewCategory) -> Result<Category, CatalogError> {
        let fields = CategoryFields::parse(input).map_err(CatalogError::Validation)?;
        let now = OffsetDateTime::now_utc();
        let category = Category {
            slug: fields.slug,
            name: fields.name,
            description: fields.description,
            position: fields.position,
            product_count: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let events = self.record(
            EventType::CategoryChanged,
            &CategoryChanged {
                category: category.clone(),
                deleted: false,
            },
        )?;
        match self.repository.insert_category(&category, &events).await {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::CategoryExists) => {
                return Err(CatalogError::CategoryExists(category.slug));
            }
            Err(other) => return Err(other.into()),
        }
        self.cache.retire(CATEGORIES_GROUP).await;
        Ok(category)
    }

    pub async fn update_category(
        &self,
        slug: &str,
        patch: &CategoryPatch,
    ) -> Result<Category, CatalogError> {
        let current = self.current_category(slug).await?;
        if patch.version != current.version {
            return Err(CatalogError::VersionConflict {
                given: patch.version,
                current: current.version,
            });
        }
        let fields = CategoryFields {
            slug: current.slug.clone(),
            name: current.name.clone(),
            description: current.description.clone(),
            position: current.position,
        }
        .patched(patch)
        .map_err(CatalogError::Validation)?;
        let next = Category {
            name: fields.name,
            description: fields.description,
            position: fields.position,
            updated_at: OffsetDateTime::now_utc(),
            ..current.clone()
        };
        // The version moves by one under the condition that it is still the current one; the
        // product count is as read (product writes change it, and tell of it by their events).
        let stored = Category {
            version: current.version + 1,
            ..next.clone()
        };
        let events = self.record(
            EventType::CategoryChanged,
            &CategoryChanged {
                category: stored.clone(),
                deleted: false,
            },
        )?;
        match self
            .repository
            .update_category(&current, &next, &events)
            .await
        {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::Conflict) => {
                let now = self.current_category(slug).await?;
                return Err(CatalogError::VersionConflict {
                    given: patch.version,
                    current: now.version,
                });
            }
            Err(other) => return Err(other.into()),
        };
        self.cache.retire(CATEGORIES_GROUP).await;
        Ok(stored)
    }

    pub async fn delete_category(
        &self,
        slug: &str,
        version: Option<u64>,
    ) -> Result<(), CatalogError> {
        let current = self.current_category(slug).await?;
        let expected = version.unwrap_or(current.version);
        if expected != current.version {
            return Err(CatalogError::VersionConflict {
                given: expected,
                current: current.version,
            });
        }
        if current.product_count > 0 {
            return Err(CatalogError::CategoryNotEmpty(current.product_count));
        }
        let events = self.record(
            EventType::CategoryChanged,
            &CategoryChanged {
                category: current.clone(),
                deleted: true,
            },
        )?;
        match self
            .repository
            .remove_category(slug, expected, &events)
            .await
        {
            Ok(()) => self.outbox.committed(events),
            Err(WriteError::Conflict) => {
                // Lost a race: a product arrived or the category changed.
                let now = self.current_category(slug).await?;
                if now.product_count > 0 {
                    return Err(CatalogError::CategoryNotEmpty(now.product_count));
                }
                return Err(CatalogError::VersionConflict {
                    given: expected,
                    current: now.version,
                });
            }
            Err(other) => return Err(other.into()),
        }
        self.cache.retire(CATEGORIES_GROUP).await;
        Ok(())
    }

    async fn current_category(&self, slug: &str) -> Result<Category, CatalogError> {
        if !is_slug(slug) {
            return Err(CatalogError::CategoryNotFound(slug.to_owned()));
        }
        self.repository
            .category(slug)
            .await?
            .ok_or_else(|| CatalogError::CategoryNotFound(slug.to_owned()))
    }

    // === Images ===

    /// Stores an uploaded image under a key derived from its content, after checking that the
    /// bytes are what the content type says.
    pub async fn store_image(
        &self,
        body: Bytes,
        content_type: &str,
    ) -> Result<StoredImage, CatalogError> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let extension = match essence.as_str() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            "image/avif" => "avif",
            _ => return Err(CatalogError::UnsupportedImage),
        };
        if body.is_empty() {
            return Err(CatalogError::field("body", "the image is empty"));
        }
        if !looks_like(&essence, &body) {
            return Err(CatalogError::field(
                "body",
                &format!("the bytes are not a {essence} image"),
            ));
        }
        let digest = Sha256::digest(&body);
        let key = format!("images/{}.{extension}", hex::encode(&digest[..16]));
        let parsed = BlobKey::parse(&key).map_err(|e| CatalogError::Unexpected(e.into()))?;
        let meta = self
            .blobs
            .put(&parsed, body, &essence)
            .await
            .map_err(|e| CatalogError::Unexpected(e.into()))?;
        Ok(StoredImage {
            key,
            content_type: meta.content_type,
            size: meta.size,
            etag: meta.etag,
        })
    }
}

fn unknown_category() -> CatalogError {
    CatalogError::field("category", "no such category")
}

fn build_product(
    id: String,
    fields: ProductFields,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: u64,
) -> Product {
    Product {
        id,
        sku: fields.sku,
        name: fields.name,
        description: fields.description,
        category: fields.category,
        price: fields.price,
        images: fields.images,
        attributes: fields.attributes,
        created_at,
        updated_at,
        version,
    }
}

fn product_fields(product: &Product) -> ProductFields {
    ProductFields {
        sku: product.sku.clone(),
        name: product.name.clone(),
        description: product.description.clone(),
        category: product.category.clone(),
        price: product.price.clone(),
        images: product.images.clone(),
        attributes: product.attributes.clone(),
    }
}

/// Magic numbers of the accepted image formats.
fn looks_like(essence: &str, body: &[u8]) -> bool {
    match essence {
        "image/png" => body.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => body.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/gif" => body.starts_with(b"GIF87a") || body.starts_with(b"GIF89a"),
        "image/webp" => body.len() >= 12 && &body[..4] == b"RIFF" && &body[8..12] == b"WEBP",
        "image/avif" => body.len() >= 12 && &body[4..8] == b"ftyp" && &body[8..12] == b"avif",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_bytes_must_match_their_type() {
        assert!(looks_like("image/png", b"\x89PNG\r\n\x1a\nrest"));
        assert!(!looks_like("image/png", b"<svg onload=alert(1)>"));
        assert!(looks_like("image/webp", b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!looks_like("image/jpeg", b"GIF89a"));
    }
}
