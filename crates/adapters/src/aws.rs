//! The AWS SDK configuration shared by the DynamoDB and S3 adapters.
//!
//! It follows the standard AWS configuration: region, credentials chain (environment, profile,
//! web identity for IAM roles for service accounts, instance metadata), and `AWS_ENDPOINT_URL`
//! (or `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_S3`) for LocalStack or moto. The region
//! falls back to us-east-1 so a laptop without AWS configuration still works against LocalStack.
//! The SDK retries throttling and transient errors (standard mode, 3 attempts) within bounded
//! timeouts.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

pub async fn sdk_config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| async {
            aws_config::defaults(BehaviorVersion::latest())
                .region(RegionProviderChain::default_provider().or_else(Region::new("us-east-1")))
                .retry_config(RetryConfig::standard().with_max_attempts(3))
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(1))
                        .operation_attempt_timeout(Duration::from_secs(3))
                        .operation_timeout(Duration::from_secs(10))
                        .build(),
                )
                .load()
                .await
        })
        .await
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config().await)
}

pub async fn s3() -> aws_sdk_s3::Client {
    let config = sdk_config().await;
    let custom_endpoint = config.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let s3 = aws_sdk_s3::config::Builder::from(config)
        // Local stand-ins do not resolve bucket subdomains.
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}
