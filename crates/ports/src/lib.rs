//! The ports through which Emporium services keep state: storage (DynamoDB's item model),
//! cache (Redis-style cache-aside) and blobs (S3's object model), with the adapters that
//! implement them, URI-based selection between adapters, and one conformance suite per port
//! (feature `testsuite`) that every adapter must pass, so services behave the same on a laptop
//! as on AWS.

pub mod blob;
pub mod cache;
pub mod health;
pub mod storage;
pub mod traced;
