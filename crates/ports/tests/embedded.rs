//! The embedded adapters against their ports' conformance suites (events in the embedded store
//! among them), plus what only a local file can show: durability across reopen and across a
//! killed process.

use std::sync::Arc;

use emporium_ports::blob::local::LocalBlobs;
use emporium_ports::cache::memory::MemoryCache;
use emporium_ports::storage::embedded::EmbeddedStorage;
use emporium_ports::storage::{Condition, Key, Storage, TableDef, Update, conformance};
use serde_json::json;

async fn embedded_storage(tables: &[TableDef]) -> conformance::Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = EmbeddedStorage::open(&dir.path().join("store.redb"), tables).expect("open");
    conformance::Fixture {
        storage: Arc::new(storage),
        guard: Box::new(dir),
    }
}

async fn memory_cache() -> emporium_ports::cache::conformance::Fixture {
    emporium_ports::cache::conformance::Fixture {
        cache: Arc::new(MemoryCache::new(16 * 1024 * 1024)),
        namespace: "t".into(),
        guard: Box::new(()),
    }
}

async fn local_blobs() -> emporium_ports::blob::conformance::Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    emporium_ports::blob::conformance::Fixture {
        blobs: Arc::new(LocalBlobs::open(dir.path()).expect("open")),
        guard: Box::new(dir),
    }
}

async fn embedded_events(
    groups: &'static [emporium_ports::events::GroupDef],
) -> emporium_ports::events::conformance::Fixture {
    use emporium_ports::events::stored::{StoredEvents, TABLE};
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = EmbeddedStorage::open(&dir.path().join("events.redb"), &[TABLE]).expect("open");
    let events = StoredEvents::new(Arc::new(storage), groups).expect("groups");
    emporium_ports::events::conformance::Fixture {
        events: Arc::new(events),
        guard: Box::new(dir),
    }
}

mod events_suite {
    use super::*;
    emporium_ports::events_conformance!(embedded_events);
}

mod storage_suite {
    use super::*;
    emporium_ports::storage_conformance!(embedded_storage);
}

mod cache_suite {
    use super::*;
    emporium_ports::cache_conformance!(memory_cache);
}

mod blob_suite {
    use super::*;
    emporium_ports::blob_conformance!(local_blobs);
}

fn item(value: serde_json::Value) -> emporium_ports::storage::Item {
    value.as_object().cloned().expect("object")
}

#[tokio::test]
async fn writes_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    {
        let storage = EmbeddedStorage::open(&path, conformance::TABLES).expect("open");
        storage
            .put(
                conformance::THINGS.name,
                item(json!({"pk": "p", "sk": "s", "owner": "o", "created": "1"})),
                None,
            )
            .await
            .expect("put");
        storage
            .update(
                conformance::THINGS.name,
                &Key::new("p", "s"),
                Update::new().add("n", 7),
                None,
            )
            .await
            .expect("update");
    }
    let reopened = EmbeddedStorage::open(&path, conformance::TABLES).expect("reopen");
    let stored = reopened
        .get(conformance::THINGS.name, &Key::new("p", "s"))
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(stored["n"], 7);
    let indexed = reopened
        .query_index(
            conformance::THINGS.name,
            "by_owner",
            emporium_ports::storage::Query::partition("o"),
        )
        .await
        .expect("index");
    assert_eq!(indexed.items.len(), 1, "the index survives too");
}

#[tokio::test]
async fn the_sweep_deletes_expired_items_and_their_index_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage =
        EmbeddedStorage::open(&dir.path().join("s.redb"), conformance::TABLES).expect("open");
    let past = emporium_ports::storage::now_epoch_seconds() - 10;
    storage
        .put(
            conformance::THINGS.name,
            item(json!({"pk": "x", "sk": "1", "owner": "o", "created": "1", "expires_at": past})),
            None,
        )
        .await
        .expect("put");
    storage
        .put(
            conformance::THINGS.name,
            item(json!({"pk": "x", "sk": "2", "owner": "o", "created": "2"})),
            None,
        )
        .await
        .expect("put");
    assert_eq!(storage.sweep_expired().await.expect("sweep"), 1);
    assert_eq!(storage.sweep_expired().await.expect("sweep"), 0);
}

const CRASH_PATH_ENV: &str = "EMPORIUM_CRASH_TEST_PATH";

/// Child half of the crash test: writes acknowledged counters forever and prints each
/// acknowledged value, until the parent kills it. Does nothing when run as a normal test.
#[tokio::test]
async fn crash_writer_child() {
    let Ok(path) = std::env::var(CRASH_PATH_ENV) else {
        return;
    };
    let storage =
        EmbeddedStorage::open(std::path::Path::new(&path), conformance::TABLES).expect("open");
    let storage = Arc::new(storage);
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for n in 1.. {
                storage
                    .put(
                        conformance::LEDGER.name,
                        item(json!({"pk": format!("w{writer}"), "sk": format!("{n:08}")})),
                        Some(Condition::NotExists),
                    )
                    .await
                    .expect("put");
                println!("acked w{writer} {n}");
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_killed_process() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.redb");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_PATH_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = std::collections::HashMap::<String, u64>::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut total = 0;
    while total < 400 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("acked ") {
            let (writer, n) = rest.split_once(' ').expect("writer and number");
            acked.insert(writer.to_owned(), n.parse().expect("number"));
            total += 1;
        }
    }
    // SIGKILL: no destructors, no flush; only what was committed before the ack may count.
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(
        total >= 400,
        "the child acknowledged {total} writes before dying early"
    );

    let storage = EmbeddedStorage::open(&path, conformance::TABLES).expect("reopen after crash");
    for (writer, last) in acked {
        let page = storage
            .query(
                conformance::LEDGER.name,
                emporium_ports::storage::Query::partition(writer.clone()).limit(1000),
            )
            .await
            .expect("query");
        let stored: Vec<u64> = page
            .items
            .iter()
            .map(|i| i["sk"].as_str().expect("sk").parse().expect("number"))
            .collect();
        assert!(
            stored.len() as u64 >= last,
            "{writer}: acknowledged {last} writes, found {}",
            stored.len()
        );
        let expected: Vec<u64> = (1..=stored.len() as u64).collect();
        assert_eq!(stored, expected, "{writer}: no gaps, no torn writes");
    }
}
