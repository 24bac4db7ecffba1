//! The AWS-API adapters against the ports' conformance suites, on the local stand-ins that
//! `scripts/test.sh` starts (moto server for DynamoDB, S3, SNS and SQS, redis-server for Redis), plus
//! what only these adapters have: table and bucket creation, and Redis outages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use emporium_adapters::dynamodb::DynamoStorage;
use emporium_adapters::redis::{RedisCache, RedisOptions};
use emporium_adapters::s3::S3Blobs;
use emporium_adapters::{aws, connect, testing};
use emporium_ports::blob::BlobKey;
use emporium_ports::cache::{Cache, CacheError};
use emporium_ports::storage::{Condition, IndexDef, Key, Storage, TableDef, conformance};
use serde_json::json;

async fn dynamodb_storage(tables: &[TableDef]) -> conformance::Fixture {
    testing::aws_stand_in();
    let storage = DynamoStorage::new(aws::dynamodb().await, &testing::unique("conf"), tables);
    storage.ensure_tables().await.expect("create tables");
    // moto's state goes with its process at the end of the run; nothing to clean up.
    conformance::Fixture {
        storage: Arc::new(storage),
        guard: Box::new(()),
    }
}

async fn s3_blobs_at(prefix: &str) -> emporium_ports::blob::conformance::Fixture {
    testing::aws_stand_in();
    let blobs = S3Blobs::new(aws::s3().await, &testing::unique("conf"), prefix);
    blobs.ensure_bucket().await.expect("create bucket");
    emporium_ports::blob::conformance::Fixture {
        blobs: Arc::new(blobs),
        guard: Box::new(()),
    }
}

async fn s3_blobs() -> emporium_ports::blob::conformance::Fixture {
    s3_blobs_at("").await
}

/// Objects under a key prefix inside a shared bucket, as `s3://bucket/prefix` configures.
async fn s3_blobs_under_a_prefix() -> emporium_ports::blob::conformance::Fixture {
    s3_blobs_at("assets/v1").await
}

async fn redis_cache() -> emporium_ports::cache::conformance::Fixture {
    let options = RedisOptions {
        prefix: format!("{}:", testing::unique("conf")),
        ..RedisOptions::default()
    };
    let cache = RedisCache::new(&testing::redis_url(), options).expect("redis pool");
    emporium_ports::cache::conformance::Fixture {
        cache: Arc::new(cache),
        namespace: "n".into(),
        guard: Box::new(()),
    }
}

async fn sns_sqs_events(
    groups: &'static [emporium_ports::events::GroupDef],
) -> emporium_ports::events::conformance::Fixture {
    use emporium_adapters::sqs::{Names, SnsSqsEvents, ensure_bus};
    testing::aws_stand_in();
    let names = Names::new(&testing::unique("conf"));
    let (sns, sqs) = (aws::sns_at(None).await, aws::sqs_at(None).await);
    ensure_bus(&sns, &sqs, &names, groups)
        .await
        .expect("create topics and queues");
    let events = SnsSqsEvents::open(sns, sqs, &names, groups)
        .await
        .expect("open");
    emporium_ports::events::conformance::Fixture {
        events: Arc::new(events),
        guard: Box::new(()),
    }
}

mod sns_sqs_suite {
    use super::*;
    emporium_ports::events_conformance!(sns_sqs_events);
}

mod dynamodb_suite {
    use super::*;
    emporium_ports::storage_conformance!(dynamodb_storage);
}

mod s3_suite {
    use super::*;
    emporium_ports::blob_conformance!(s3_blobs);
}

mod s3_prefixed_suite {
    use super::*;
    emporium_ports::blob_conformance!(s3_blobs_under_a_prefix);
}

mod redis_suite {
    use super::*;
    emporium_ports::cache_conformance!(redis_cache);
}

#[tokio::test]
async fn ensure_tables_creates_keys_indexes_and_ttl_and_is_idempotent() {
    testing::aws_stand_in();
    let prefix = testing::unique("init");
    let client = aws::dynamodb().await;
    let storage = DynamoStorage::new(client.clone(), &prefix, conformance::TABLES);
    storage.ensure_tables().await.expect("first init");
    storage
        .ensure_tables()
        .await
        .expect("second init changes nothing");

    let described = client
        .describe_table()
        .table_name(storage.physical(conformance::THINGS.name))
        .send()
        .await
        .expect("described");
    let table = described.table().expect("table");
    let keys: Vec<(&str, &str)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(keys, [("pk", "HASH"), ("sk", "RANGE")]);
    let indexes: Vec<&str> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    assert_eq!(indexes, ["by_owner"]);
    let ttl = client
        .describe_time_to_live()
        .table_name(storage.physical(conformance::THINGS.name))
        .send()
        .await
        .expect("ttl");
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
}

#[tokio::test]
async fn ensure_tables_adds_an_index_a_newer_definition_has() {
    testing::aws_stand_in();
    let prefix = testing::unique("grow");
    let client = aws::dynamodb().await;
    const OLD: TableDef = TableDef {
        name: "growing",
        indexes: &[],
        ttl_attribute: None,
    };
    const NEW: TableDef = TableDef {
        name: "growing",
        indexes: &[IndexDef {
            name: "by_colour",
            pk: "colour",
            sk: "name",
        }],
        ttl_attribute: None,
    };
    let old = DynamoStorage::new(client.clone(), &prefix, &[OLD]);
    old.ensure_tables().await.expect("old init");
    old.put(
        "growing",
        json!({"pk": "a", "sk": "1", "colour": "red", "name": "apple"})
            .as_object()
            .cloned()
            .expect("object"),
        None,
    )
    .await
    .expect("put");
    let new = DynamoStorage::new(client, &prefix, &[NEW]);
    new.ensure_tables().await.expect("new init adds the index");
    let page = new
        .query_index(
            "growing",
            "by_colour",
            emporium_ports::storage::Query::partition("red"),
        )
        .await
        .expect("index query");
    assert_eq!(page.items.len(), 1, "the index covers the existing item");
}

#[tokio::test]
async fn a_missing_table_says_to_run_init() {
    testing::aws_stand_in();
    let storage = DynamoStorage::new(
        aws::dynamodb().await,
        &testing::unique("absent"),
        conformance::TABLES,
    );
    let error = storage
        .get(conformance::THINGS.name, &Key::new("p", "s"))
        .await
        .expect_err("no table");
    assert!(format!("{error:?}").contains("emporium init"), "{error:?}");
    let error = storage
        .put(
            conformance::THINGS.name,
            json!({"pk": "p", "sk": "s"})
                .as_object()
                .cloned()
                .expect("object"),
            Some(Condition::NotExists),
        )
        .await
        .expect_err("no table");
    assert!(
        matches!(error, emporium_ports::storage::StorageError::Backend(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn init_through_uris_is_idempotent() {
    testing::aws_stand_in();
    let storage_uri = format!("dynamodb://{}", testing::unique("uri"));
    let blobs_uri = format!("s3://{}/images", testing::unique("uri"));
    for _ in 0..2 {
        connect::init_storage(&storage_uri, "things", conformance::TABLES)
            .await
            .expect("tables");
        connect::init_blobs(&blobs_uri).await.expect("bucket");
    }
    let blobs = connect::blobs(&blobs_uri).await.expect("blobs");
    blobs.ping().await.expect("bucket reachable");
    let key = BlobKey::parse("a/b.txt").expect("key");
    blobs
        .put(&key, Bytes::from_static(b"hi"), "text/plain")
        .await
        .expect("put");
    let storage = connect::storage(&storage_uri, "things", conformance::TABLES)
        .await
        .expect("storage");
    storage.ping().await.expect("tables reachable");
}

/// Publishes `published`; what the `billing` group then receives (acknowledged).
async fn billed(
    events: &dyn emporium_ports::events::Events,
    published: &[emporium_ports::events::Event],
) -> Vec<emporium_ports::events::Event> {
    events.publish(published).await.expect("publish");
    let got = events
        .receive("billing", 10, Duration::from_secs(2))
        .await
        .expect("receive");
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    events.ack("billing", &receipts).await.expect("ack");
    got.into_iter().map(|d| d.event).collect()
}

/// `init` makes the bus from the groups' declarations, twice without harm, and a changed
/// declaration (a new type, a new attempt limit) changes the subscription and queue it made.
#[tokio::test]
async fn init_events_makes_the_bus_and_follows_a_changed_declaration() {
    use emporium_ports::events::{Event, GroupDef};
    testing::aws_stand_in();
    let prefix = testing::unique("bus");
    let uri = format!("sns://{prefix}");
    const BEFORE: &[GroupDef] = &[GroupDef {
        name: "billing",
        types: &["emporium.order.confirmed.v1"],
        visibility: Duration::from_secs(30),
        max_attempts: 5,
    }];
    const AFTER: &[GroupDef] = &[GroupDef {
        name: "billing",
        types: &["emporium.order.confirmed.v1", "emporium.stock.changed.v1"],
        visibility: Duration::from_secs(45),
        max_attempts: 2,
    }];
    for _ in 0..2 {
        connect::init_events(&uri, BEFORE).await.expect("bus");
    }
    let event = |kind: &str| Event {
        id: testing::unique("e"),
        kind: kind.into(),
        body: "{}".into(),
    };
    let events = connect::events(&uri, BEFORE).await.expect("events");
    let (confirmed, stock) = (
        event("emporium.order.confirmed.v1"),
        event("emporium.stock.changed.v1"),
    );
    assert_eq!(
        billed(&*events, &[confirmed.clone(), stock]).await,
        vec![confirmed]
    );

    connect::init_events(&uri, AFTER)
        .await
        .expect("bus changed");
    let events = connect::events(&uri, AFTER).await.expect("events");
    let stock = event("emporium.stock.changed.v1");
    assert_eq!(
        billed(&*events, std::slice::from_ref(&stock)).await,
        vec![stock]
    );
    let sqs = aws::sqs_at(None).await;
    let url = sqs
        .get_queue_url()
        .queue_name(format!("{prefix}-billing"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    let attributes = attributes.attributes().expect("attributes");
    let get = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes.get(&name).cloned().unwrap_or_default()
    };
    use aws_sdk_sqs::types::QueueAttributeName as A;
    assert_eq!(get(A::VisibilityTimeout), "45");
    let redrive: serde_json::Value = serde_json::from_str(&get(A::RedrivePolicy)).expect("json");
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "2"
    );
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!("{prefix}-billing-dlq")))
    );
    let policy: serde_json::Value = serde_json::from_str(&get(A::Policy)).expect("json");
    let sources = policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"].to_string();
    assert!(
        sources.contains(&format!("{prefix}-order"))
            && sources.contains(&format!("{prefix}-stock")),
        "{policy}"
    );
}

/// A port nothing listens on: Redis "down".
fn dead_redis() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_is_retried_after_a_pause() {
    let cache = RedisCache::new(
        &dead_redis(),
        RedisOptions {
            timeout: Duration::from_millis(200),
            ..RedisOptions::default()
        },
    )
    .expect("pool");
    let started = Instant::now();
    let error = cache.get("k").await.expect_err("down");
    assert!(matches!(error, CacheError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "bounded by the timeout"
    );
    // While cooling down, calls fail without trying.
    let started = Instant::now();
    for _ in 0..100 {
        assert!(cache.get("k").await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    // Readiness always tries, to tell the truth.
    assert!(cache.ping().await.is_err());
}

#[tokio::test]
async fn a_redis_prefix_keeps_deployments_apart() {
    let url = testing::redis_url();
    let first = RedisCache::new(
        &url,
        RedisOptions {
            prefix: format!("{}:", testing::unique("a")),
            ..RedisOptions::default()
        },
    )
    .expect("pool");
    let second = RedisCache::new(
        &url,
        RedisOptions {
            prefix: format!("{}:", testing::unique("b")),
            ..RedisOptions::default()
        },
    )
    .expect("pool");
    first
        .set("shared", Bytes::from_static(b"1"), Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(second.get("shared").await.expect("get"), None);
    assert_eq!(
        first.get("shared").await.expect("get"),
        Some(Bytes::from_static(b"1"))
    );
}

/// A proxy in front of the DynamoDB stand-in that counts the operations it sees and can answer
/// the first `fail_first` of them itself, before they reach DynamoDB: throttling first, then
/// server errors.
struct CountingProxy {
    url: String,
    operations: Arc<std::sync::Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

impl CountingProxy {
    async fn start(upstream: String, fail_first: usize) -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let operations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = operations.clone();
        let http = reqwest::Client::new();
        let server = HttpServer::new(move || {
            let seen = seen.clone();
            let http = http.clone();
            let upstream = upstream.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let seen = seen.clone();
                let http = http.clone();
                let upstream = upstream.clone();
                async move {
                    let operation = request
                        .headers()
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned();
                    let position = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(operation);
                        seen.len()
                    };
                    // The first failure is throttling, the others server errors.
                    if position == 1 && fail_first > 0 {
                        return HttpResponse::BadRequest()
                            .content_type("application/x-amz-json-1.0")
                            .body(r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"injected"}"#);
                    }
                    if position <= fail_first {
                        return HttpResponse::InternalServerError()
                            .content_type("application/x-amz-json-1.0")
                            .body(r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#);
                    }
                    let mut forward = http.post(format!("{upstream}{}", request.uri()));
                    for (name, value) in request.headers() {
                        if name != "host" && name != "content-length" {
                            forward = forward.header(name.as_str(), value.as_bytes());
                        }
                    }
                    let answer = forward.body(body.to_vec()).send().await.expect("upstream");
                    let status = answer.status().as_u16();
                    let content_type = answer
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/x-amz-json-1.0")
                        .to_owned();
                    let body = answer.bytes().await.expect("upstream body");
                    HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status).expect("status"),
                    )
                    .content_type(content_type)
                    .body(body)
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            operations,
            server: handle,
        }
    }

    fn writes(&self) -> usize {
        self.operations
            .lock()
            .expect("lock")
            .iter()
            .filter(|op| op.ends_with("TransactWriteItems"))
            .count()
    }
}

async fn storage_through(proxy: &CountingProxy, prefix: &str) -> DynamoStorage {
    let config = aws_sdk_dynamodb::config::Builder::from(aws::sdk_config().await)
        .endpoint_url(&proxy.url)
        .build();
    DynamoStorage::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        prefix,
        conformance::TABLES,
    )
}

fn thing(pk: &str) -> emporium_ports::storage::Item {
    json!({"pk": pk, "sk": "s", "owner": "o", "created": "1"})
        .as_object()
        .cloned()
        .expect("object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_failed_conditions_never() {
    let upstream = testing::aws_stand_in();
    let prefix = testing::unique("retry");
    DynamoStorage::new(aws::dynamodb().await, &prefix, conformance::TABLES)
        .ensure_tables()
        .await
        .expect("tables");

    // Throttled, then a 500, then the write gets through: the SDK's retries (3 attempts) carry
    // it.
    let flaky = CountingProxy::start(upstream.clone(), 2).await;
    let storage = storage_through(&flaky, &prefix).await;
    storage
        .put(
            conformance::THINGS.name,
            thing("a"),
            Some(Condition::NotExists),
        )
        .await
        .expect("written after throttling and a server error");
    assert_eq!(flaky.writes(), 3, "two failed attempts and one that worked");
    flaky.server.stop(true).await;

    // A failed condition is an answer, not a fault: sent once, never again.
    let counting = CountingProxy::start(upstream, 0).await;
    let storage = storage_through(&counting, &prefix).await;
    let error = storage
        .put(
            conformance::THINGS.name,
            thing("a"),
            Some(Condition::NotExists),
        )
        .await
        .expect_err("exists");
    assert!(
        matches!(
            error,
            emporium_ports::storage::StorageError::ConditionFailed
        ),
        "{error:?}"
    );
    assert_eq!(counting.writes(), 1, "the failed condition was not retried");
    counting.server.stop(true).await;
}
