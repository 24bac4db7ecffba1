//! What tests need to run against the local stand-ins that `scripts/test.sh` starts (moto
//! server for DynamoDB and S3, redis-server). Tests fail, loudly, when a stand-in is not
//! configured instead of skipping; and they refuse an endpoint that is not on this machine, so
//! a stray AWS configuration can never point a test at a real account.

/// The moto (or LocalStack) endpoint the AWS SDK will use; panics unless one on this machine is
/// configured.
pub fn aws_stand_in() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let local = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|start| endpoint.starts_with(start));
    assert!(
        local,
        "AWS_ENDPOINT_URL={endpoint:?}: these tests need a local DynamoDB/S3 stand-in; \
         run them with scripts/test.sh, which starts moto server"
    );
    endpoint
}

/// The shared Redis of the test run; panics unless configured.
pub fn redis_url() -> String {
    match std::env::var("EMPORIUM_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "EMPORIUM_TEST_REDIS_URL is not set: run the tests with scripts/test.sh, which starts redis-server"
        ),
    }
}

/// The redis-server binary, for tests that run (and kill) a Redis of their own.
pub fn redis_server() -> String {
    match std::env::var("EMPORIUM_TEST_REDIS_SERVER") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "EMPORIUM_TEST_REDIS_SERVER is not set: run the tests with scripts/test.sh, which installs redis-server"
        ),
    }
}

/// A name no other test uses (lower case, so it is also a valid bucket name).
pub fn unique(label: &str) -> String {
    format!("t-{label}-{:08x}", rand::random::<u32>())
}
