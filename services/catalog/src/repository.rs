//! The catalog's table and how products and categories live in it.
//!
//! One table, DynamoDB single-table style:
//!
//! | item            | pk                | sk        | notes                                   |
//! |-----------------|-------------------|-----------|-----------------------------------------|
//! | product         | `product#<id>`    | `product` | plus the index attributes below          |
//! | SKU claim       | `sku#<SKU>`       | `sku`     | makes SKUs unique; holds `product_id`   |
//! | category        | `category`        | `<slug>`  | `product_count` kept by transactions    |
//!
//! Listing uses six secondary indexes: by category or over all products (`cat` or `lst`), each
//! sorted by name, price or creation time (`s_name`, `s_price`, `s_new`). Sort keys end with
//! `\u{1}` and the id, so equal names or prices still have one order, and `\u{1}` sorts before
//! any character a name may hold (names have no control characters), so "Lamp" precedes
//! "Lamp 2".
//!
//! Every write that touches more than one item is one transaction: creating a product claims its
//! SKU and counts it in its category (which must exist); so nothing can leave a product without
//! its claim or a count that is off. Every write also records its events (docs/EVENTS.md) in
//! the same transaction, in the outbox's items of this table (`outbox`, `outbox-lease`), so a
//! change is published exactly when it commits.

use std::sync::Arc;

use emporium_api::catalog::{Category, Product, ProductSort};
use emporium_ports::events::outbox::Pending;
use emporium_ports::storage::{
    Condition, Cursor, IndexDef, Item, Key, Query, Storage, StorageError, TableDef, TxOp, Update,
    from_item, to_item,
};
use serde_json::Value;

const fn index(name: &'static str, pk: &'static str, sk: &'static str) -> IndexDef {
    IndexDef { name, pk, sk }
}

/// The catalog's only table.
pub const TABLE: TableDef = TableDef {
    name: "catalog",
    indexes: &[
        index("cat_name", "cat", "s_name"),
        index("cat_price", "cat", "s_price"),
        index("cat_new", "cat", "s_new"),
        index("all_name", "lst", "s_name"),
        index("all_price", "lst", "s_price"),
        index("all_new", "lst", "s_new"),
    ],
    ttl_attribute: None,
};

/// Every table the catalog owns, for opening the store and for `emporium init`.
pub const TABLES: &[TableDef] = &[TABLE];

const PRODUCT_SK: &str = "product";
const SKU_SK: &str = "sku";
const CATEGORY_PK: &str = "category";
const ALL_PRODUCTS: &str = "all";

fn product_key(id: &str) -> Key {
    Key::new(format!("product#{id}"), PRODUCT_SK)
}

fn sku_key(sku: &str) -> Key {
    Key::new(format!("sku#{sku}"), SKU_SK)
}

fn category_key(slug: &str) -> Key {
    Key::new(CATEGORY_PK, slug)
}

/// Which index serves a listing, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub index: &'static str,
    pub descending: bool,
}

impl Listing {
    pub fn new(by_category: bool, sort: ProductSort) -> Self {
        let (index, descending) = match (by_category, sort) {
            (true, ProductSort::Name) => ("cat_name", false),
            (true, ProductSort::PriceAsc) => ("cat_price", false),
            (true, ProductSort::PriceDesc) => ("cat_price", true),
            (true, ProductSort::Newest) => ("cat_new", true),
            (false, ProductSort::Name) => ("all_name", false),
            (false, ProductSort::PriceAsc) => ("all_price", false),
            (false, ProductSort::PriceDesc) => ("all_price", true),
            (false, ProductSort::Newest) => ("all_new", true),
        };
        Self { index, descending }
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the item changed or vanished since it was read")]
    Conflict,
    #[error("the SKU belongs to another product")]
    SkuTaken,
    #[error("the category does not exist")]
    UnknownCategory,
    #[error("a category with this slug exists")]
    CategoryExists,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A product as stored: its fields plus key and index attributes.
pub fn product_item(product: &Product) -> Result<Item, StorageError> {
    let mut item = product_key(&product.id).stamp(to_item(product)?);
    let id = &product.id;
    let created = product.created_at.unix_timestamp_nanos().max(0);
    let entries = [
        ("cat", product.category.clone()),
        ("lst", ALL_PRODUCTS.to_owned()),
        (
            "s_name",
            format!("{}\u{1}{id}", product.name.to_lowercase()),
        ),
        (
            "s_price",
            format!("{:012}\u{1}{id}", product.price.amount.max(0)),
        ),
        ("s_new", format!("{created:024}\u{1}{id}")),
    ];
    for (name, value) in entries {
        item.insert(name.to_owned(), Value::String(value));
    }
    Ok(item)
}

fn category_item(category: &Category) -> Result<Item, StorageError> {
    Ok(category_key(&category.slug).stamp(to_item(category)?))
}

fn canceled_at(error: &StorageError, position: usize) -> bool {
    matches!(error, StorageError::TransactionCanceled { failed } if failed.contains(&position))
}

#[derive(Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
}

impl Repository {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub async fn product(&self, id: &str) -> Result<Option<Product>, StorageError> {
        match self.storage.get(TABLE.name, &product_key(id)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    /// One page of a listing, in the listing's order.
    pub async fn list_products(
        &self,
        partition: &str,
        listing: Listing,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Product>, Option<Cursor>), StorageError> {
        let mut query = Query::partition(partition).limit(limit).after(cursor);
        if listing.descending {
            query = query.descending();
        }
        let page = self
            .storage
            .query_index(TABLE.name, listing.index, query)
            .await?;
        let products = page
            .items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<Product>, _>>()?;
        Ok((products, page.next))
    }

    /// The partition of a listing: a category slug, or every product.
    pub fn listing_partition(category: Option<&str>) -> &str {
        category.unwrap_or(ALL_PRODUCTS)
    }

    /// A cursor continuing a listing right after `product`.
    pub fn cursor_after(listing: Listing, product: &Product) -> Result<Cursor, StorageError> {
        Cursor::after(&TABLE, Some(listing.index), &product_item(product)?)
    }

    pub async fn insert_product(
        &self,
        product: &Product,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let mut ops = vec![
            TxOp::Put {
                table: TABLE.name,
                item: product_item(product)?,
                condition: Some(Condition::NotExists),
            },
            TxOp::Put {
                table: TABLE.name,
                item: sku_key(&product.sku).stamp(sku_claim(&product.id)),
                condition: Some(Condition::NotExists),
            },
            TxOp::Update {
                table: TABLE.name,
                key: category_key(&product.category),
                update: Update::new().add("product_count", 1),
                condition: Some(Condition::Exists),
            },
        ];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(error) if canceled_at(&error, 1) => Err(WriteError::SkuTaken),
            Err(error) if canceled_at(&error, 2) => Err(WriteError::UnknownCategory),
            Err(error) if canceled_at(&error, 0) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces `old` by `new`, only if `old` is still what is stored.
    pub async fn replace_product(
        &self,
        old: &Product,
        new: &Product,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let version = i64::try_from(old.version).unwrap_or(i64::MAX);
        let mut ops = vec![TxOp::Put {
            table: TABLE.name,
            item: product_item(new)?,
            condition: Some(Condition::equals("version", version)),
        }];
        let mut new_claim = None;
        if old.sku != new.sku {
            ops.push(TxOp::Delete {
                table: TABLE.name,
                key: sku_key(&old.sku),
                condition: Some(Condition::equals("product_id", old.id.as_str())),
            });
            new_claim = Some(ops.len());
            ops.push(TxOp::Put {
                table: TABLE.name,
                item: sku_key(&new.sku).stamp(sku_claim(&new.id)),
                condition: Some(Condition::NotExists),
            });
        }
        let mut new_category = None;
        if old.category != new.category {
            ops.push(TxOp::Update {
                table: TABLE.name,
                key: category_key(&old.category),
                update: Update::new().add("product_count", -1),
                condition: Some(Condition::Exists),
            });
            new_category = Some(ops.len());
            ops.push(TxOp::Update {
                table: TABLE.name,
                key: category_key(&new.category),
                update: Update::new().add("product_count", 1),
                condition: Some(Condition::Exists),
            });
        }
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(error) if canceled_at(&error, 0) => Err(WriteError::Conflict),
            Err(error) if new_claim.is_some_and(|at| canceled_at(&error, at)) => {
                Err(WriteError::SkuTaken)
            }
            Err(error) if new_category.is_some_and(|at| canceled_at(&error, at)) => {
                Err(WriteError::UnknownCategory)
            }
            Err(StorageError::TransactionCanceled { .. }) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes `product`, only if it is still what is stored.
    pub async fn remove_product(
        &self,
        product: &Product,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let version = i64::try_from(product.version).unwrap_or(i64::MAX);
        let mut ops = vec![
            TxOp::Delete {
                table: TABLE.name,
                key: product_key(&product.id),
                condition: Some(Condition::equals("version", version)),
            },
            TxOp::Delete {
                table: TABLE.name,
                key: sku_key(&product.sku),
                condition: None,
            },
            TxOp::Update {
                table: TABLE.name,
                key: category_key(&product.category),
                update: Update::new().add("product_count", -1),
                condition: Some(Condition::Exists),
            },
        ];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StorageError::TransactionCanceled { .. }) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn categories(&self) -> Result<Vec<Category>, StorageError> {
        let mut categories = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .storage
                .query(
                    TABLE.name,
                    Query::partition(CATEGORY_PK).limit(1000).after(cursor),
                )
                .await?;
            for item in page.items {
                categories.push(from_item::<Category>(item)?);
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        categories.sort_by(|a, b| a.position.cmp(&b.position).then(a.name.cmp(&b.name)));
        Ok(categories)
    }

    pub async fn category(&self, slug: &str) -> Result<Option<Category>, StorageError> {
        match self.storage.get(TABLE.name, &category_key(slug)).await? {
            Some(item) => Ok(Some(from_item(item)?)),
            None => Ok(None),
        }
    }

    pub async fn insert_category(
        &self,
        category: &Category,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let mut ops = vec![TxOp::Put {
            table: TABLE.name,
            item: category_item(category)?,
            condition: Some(Condition::NotExists),
        }];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(error) if canceled_at(&error, 0) => Err(WriteError::CategoryExists),
            Err(error) => Err(error.into()),
        }
    }

    /// Changes a category's own fields if its version is still `old.version`. An update rather
    /// than a put, so a product count changed meanwhile by a product write is kept.
    pub async fn update_category(
        &self,
        old: &Category,
        new: &Category,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let version = i64::try_from(old.version).unwrap_or(i64::MAX);
        let updated_at = serde_json::to_value(new)
            .ok()
            .and_then(|value| value.get("updated_at").cloned())
            .unwrap_or(Value::Null);
        let update = Update::new()
            .set("name", new.name.as_str())
            .set("description", new.description.as_str())
            .set("position", new.position)
            .set("updated_at", updated_at)
            .add("version", 1);
        let mut ops = vec![TxOp::Update {
            table: TABLE.name,
            key: category_key(&old.slug),
            update,
            condition: Some(Condition::equals("version", version)),
        }];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(error) if canceled_at(&error, 0) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes a category that still has version `version` and no products.
    pub async fn remove_category(
        &self,
        slug: &str,
        version: u64,
        events: &Pending,
    ) -> Result<(), WriteError> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let condition =
            Condition::equals("version", version).and(Condition::equals("product_count", 0));
        let mut ops = vec![TxOp::Delete {
            table: TABLE.name,
            key: category_key(slug),
            condition: Some(condition),
        }];
        ops.extend(events.ops());
        match self.storage.transact(ops).await {
            Ok(()) => Ok(()),
            Err(error) if canceled_at(&error, 0) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }
}

fn sku_claim(product_id: &str) -> Item {
    let mut item = Item::new();
    item.insert("product_id".into(), Value::String(product_id.to_owned()));
    item
}
