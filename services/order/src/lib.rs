//! The order service: checkout as a saga over the cart, catalog, inventory and a simulated
//! payment provider, exactly once per idempotency key, never losing an order (every step is
//! recorded and a reconciler finishes or undoes checkouts interrupted by a crash), with order
//! history per customer and cancellation that returns the stock.

mod checkout;
pub mod domain;
pub mod error;
pub mod hooks;
pub mod metrics;
pub mod payment;
pub mod reconciler;
pub mod repository;
pub mod routes;
pub mod saga;
pub mod service;
pub mod settings;
pub mod startup;

pub use hooks::{CheckoutHooks, FaultAction, Faults, NoFaults};
pub use repository::TABLES;
pub use service::Orders;
pub use settings::OrderSettings;
pub use startup::OrderConfig;
