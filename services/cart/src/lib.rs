//! The cart service: carts under unguessable ids (128 random bits), lines checked against the
//! catalog and the stock when they are added, limits on quantities and lines, expiry after
//! inactivity, and cached reads.

pub mod error;
pub mod events;
pub mod repository;
pub mod routes;
pub mod service;
pub mod settings;
pub mod startup;

pub use events::GROUPS;
pub use repository::TABLES;
pub use service::{CartLimits, Carts};
pub use settings::CartSettings;
pub use startup::{CartConfig, CartPorts};
