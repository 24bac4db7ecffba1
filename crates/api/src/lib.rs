//! Wire types of Emporium's HTTP APIs: what services send each other and what clients receive.
//! Services depend on this crate and never on each other, so each can change its insides freely
//! while the shapes here stay stable. Every type carries its OpenAPI schema.

pub mod catalog;
pub mod money;

pub use money::Money;
