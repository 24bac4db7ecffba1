//! The AWS SDK configuration shared by the DynamoDB, S3, SNS and SQS adapters.
//!
//! It follows the standard AWS configuration: region, credentials chain (environment, profile,
//! web identity for IAM roles for service accounts, instance metadata), and `AWS_ENDPOINT_URL`
//! (or `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_S3`) for LocalStack or moto. The region
//! falls back to us-east-1 so a laptop without AWS configuration still works against LocalStack.
//! A storage or blob URI may also name its own endpoint (`?endpoint=`), which wins over the
//! environment for that adapter alone.
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
    dynamodb_at(None).await
}

/// A DynamoDB client, at `endpoint` when one is given.
pub async fn dynamodb_at(endpoint: Option<&str>) -> aws_sdk_dynamodb::Client {
    let config = sdk_config().await;
    match endpoint {
        None => aws_sdk_dynamodb::Client::new(config),
        Some(url) => aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .endpoint_url(url)
                .build(),
        ),
    }
}

pub async fn s3() -> aws_sdk_s3::Client {
    s3_at(None).await
}

/// An S3 client, at `endpoint` when one is given.
pub async fn s3_at(endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let config = sdk_config().await;
    let custom_endpoint = endpoint.is_some()
        || config.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let mut s3 = aws_sdk_s3::config::Builder::from(config);
    if let Some(url) = endpoint {
        s3 = s3.endpoint_url(url);
    }
    // Local stand-ins do not resolve bucket subdomains.
    aws_sdk_s3::Client::from_conf(s3.force_path_style(custom_endpoint).build())
}

/// An SNS client, at `endpoint` when one is given.
pub async fn sns_at(endpoint: Option<&str>) -> aws_sdk_sns::Client {
    let config = sdk_config().await;
    match endpoint {
        None => aws_sdk_sns::Client::new(config),
        Some(url) => aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(config)
                .endpoint_url(url)
                .build(),
        ),
    }
}

/// An SQS client, at `endpoint` when one is given. Its operation timeout outlasts the longest
/// receive (20 s of long polling), which the shared configuration's would cut short.
pub async fn sqs_at(endpoint: Option<&str>) -> aws_sdk_sqs::Client {
    let config = sdk_config().await;
    let mut sqs = aws_sdk_sqs::config::Builder::from(config).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_attempt_timeout(Duration::from_secs(25))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if let Some(url) = endpoint {
        sqs = sqs.endpoint_url(url);
    }
    aws_sdk_sqs::Client::from_conf(sqs.build())
}
