//! The ports through which Emporium services keep state and tell each other what happened:
//! storage (DynamoDB's item model), cache (Redis-style cache-aside), blobs (S3's object model)
//! and events (SNS topics fanning out to SQS queues), with the adapters that
//! implement them, URI-based selection between adapters, and one conformance suite per port
//! (feature `testsuite`) that every adapter must pass, so services behave the same on a laptop
//! as on AWS. The decorators in `traced` make each call to state a span with its outcome;
//! `emporium-adapters` puts them around every adapter it opens.

pub mod blob;
pub mod cache;
pub mod events;
pub mod faulty;
pub mod health;
pub mod storage;
pub mod traced;
