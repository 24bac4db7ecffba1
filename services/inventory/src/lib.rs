//! The inventory service: stock per SKU (available, reserved, sold) and reservations that hold
//! stock for a checkout, all-or-nothing across lines, idempotent by id, and returned by
//! themselves when they expire. Every invariant is a storage condition, so it holds on any
//! adapter under any concurrency.

pub mod domain;
pub mod error;
pub mod events;
pub mod repository;
pub mod routes;
pub mod service;
pub mod settings;
pub mod startup;

pub use events::GROUPS;
pub use repository::TABLES;
pub use service::Inventory;
pub use settings::InventorySettings;
pub use startup::InventoryConfig;
