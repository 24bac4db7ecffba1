//! The AWS-API adapters of Emporium's ports: DynamoDB for storage, S3 for blobs, Redis
//! (ElastiCache) for the cache, SNS and SQS for events; and `connect`, which picks an adapter per port from a URI and
//! creates tables and buckets for `emporium init`. The services never depend on this crate: they
//! see only the ports, so the same code runs on embedded stand-ins and on AWS.

pub mod aws;
pub mod connect;
pub mod dynamodb;
pub mod redis;
pub mod s3;
pub mod sqs;
#[cfg(feature = "testsuite")]
pub mod testing;
