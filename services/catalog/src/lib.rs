//! The catalog service: products and categories, browsing with category filters, text search,
//! sorting and cursor pagination, admin writes with optimistic concurrency, and product image
//! uploads. Reads go through the cache (cache-aside, single-flight) and every write retires
//! what it changed.

pub mod domain;
pub mod error;
pub mod repository;
pub mod routes;
pub mod search;
pub mod service;
pub mod settings;
pub mod startup;

pub use repository::TABLES;
pub use service::Catalog;
pub use settings::CatalogSettings;
pub use startup::{CatalogConfig, CatalogPorts};
