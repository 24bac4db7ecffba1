//! The storefront: the shop people see and the public API in front of the services. Pages are
//! rendered on the server from auto-escaping templates and the whole buying journey works
//! without JavaScript. The session lives in a signed cookie (no server state), every form that
//! changes something carries a CSRF token, and product images and static files are served from
//! the blob store with ETags and immutable caching, as a CDN edge fronts S3. The storefront owns
//! no data: everything it shows comes from the catalog, inventory, cart and order services over
//! the same HTTP calls any client makes.

pub mod api;
pub mod assets;
pub mod error;
pub mod limits;
pub mod pages;
pub mod session;
pub mod settings;
pub mod shop;
pub mod startup;
pub mod view;

pub use settings::StorefrontSettings;
pub use startup::{StorefrontConfig, start};
