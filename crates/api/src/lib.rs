//! Wire types of Emporium's HTTP APIs and typed clients for them: what services send each other
//! and what clients receive. Services depend on this crate and never on each other, so each can
//! change its insides freely while the shapes here stay stable. Every type carries its OpenAPI
//! schema.

pub mod cart;
pub mod catalog;
pub mod client;
pub mod events;
pub mod inventory;
pub mod money;
pub mod order;
pub mod problem;
pub mod sku;

pub use money::Money;
pub use problem::{Problem, ProblemCode, ProblemMembers};
