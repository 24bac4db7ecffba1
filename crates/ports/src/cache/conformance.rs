//! The cache conformance suite, run against every cache adapter, including the cache-aside
//! helper on top of it. Keys are prefixed per case so adapters sharing a server do not collide.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{Cache, CacheAside};

pub struct Fixture {
    pub cache: Arc<dyn Cache>,
    /// Prefix for every key of this test, so tests can share one server.
    pub namespace: String,
    pub guard: Box<dyn Any + Send>,
}

#[macro_export]
macro_rules! cache_conformance {
    ($factory:path) => {
        $crate::cache_conformance!(@cases $factory;
            get_returns_what_set_stored,
            set_overwrites_and_delete_removes,
            entries_expire_after_their_ttl,
            values_are_binary_safe,
            generations_only_move_forward_per_group,
            concurrent_bumps_each_count,
            cache_aside_serves_hits_without_loading,
            cache_aside_loads_once_for_concurrent_misses,
            cache_aside_retire_makes_readers_load_the_new_value,
            cache_aside_does_not_share_errors,
            cache_aside_json_is_the_stored_json_and_shares_typed_entries,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $factory().await;
                $crate::cache::conformance::$case(fixture.cache.clone(), &fixture.namespace).await;
                drop(fixture);
            }
        )*
    };
}

const TTL: Duration = Duration::from_secs(60);

pub async fn get_returns_what_set_stored(cache: Arc<dyn Cache>, ns: &str) {
    let key = format!("{ns}:a");
    cache
        .set(&key, Bytes::from_static(b"hello"), TTL)
        .await
        .expect("set");
    assert_eq!(
        cache.get(&key).await.expect("get").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        cache.get(&format!("{ns}:missing")).await.expect("get"),
        None
    );
}

pub async fn set_overwrites_and_delete_removes(cache: Arc<dyn Cache>, ns: &str) {
    let key = format!("{ns}:k");
    cache
        .set(&key, Bytes::from_static(b"1"), TTL)
        .await
        .expect("set");
    cache
        .set(&key, Bytes::from_static(b"2"), TTL)
        .await
        .expect("set");
    assert_eq!(
        cache.get(&key).await.expect("get").as_deref(),
        Some(&b"2"[..])
    );
    cache.delete(&key).await.expect("delete");
    assert_eq!(cache.get(&key).await.expect("get"), None);
    cache
        .delete(&key)
        .await
        .expect("deleting a missing key is fine");
}

pub async fn entries_expire_after_their_ttl(cache: Arc<dyn Cache>, ns: &str) {
    let short = format!("{ns}:short");
    let long = format!("{ns}:long");
    cache
        .set(&short, Bytes::from_static(b"x"), Duration::from_millis(300))
        .await
        .expect("set");
    cache
        .set(&long, Bytes::from_static(b"y"), TTL)
        .await
        .expect("set");
    assert!(cache.get(&short).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(cache.get(&short).await.expect("get"), None);
    assert!(cache.get(&long).await.expect("get").is_some());
}

pub async fn values_are_binary_safe(cache: Arc<dyn Cache>, ns: &str) {
    let key = format!("{ns}:bin");
    let value: Bytes = (0..=255u8).chain([0, 0, 255]).collect::<Vec<u8>>().into();
    cache.set(&key, value.clone(), TTL).await.expect("set");
    assert_eq!(cache.get(&key).await.expect("get"), Some(value));
}

pub async fn generations_only_move_forward_per_group(cache: Arc<dyn Cache>, ns: &str) {
    let group = format!("{ns}:products");
    let other = format!("{ns}:categories");
    let first = cache.generation(&group).await.expect("generation");
    assert_eq!(
        cache.generation(&group).await.expect("generation"),
        first,
        "stable when idle"
    );
    let bumped = cache.bump_generation(&group).await.expect("bump");
    assert!(bumped > first);
    assert_eq!(cache.generation(&group).await.expect("generation"), bumped);
    let untouched = cache.generation(&other).await.expect("generation");
    assert_eq!(
        cache.generation(&other).await.expect("generation"),
        untouched
    );
}

pub async fn concurrent_bumps_each_count(cache: Arc<dyn Cache>, ns: &str) {
    let group = format!("{ns}:hot");
    let start = cache.generation(&group).await.expect("generation");
    let bumps = futures::future::join_all((0..50).map(|_| {
        let cache = cache.clone();
        let group = group.clone();
        async move { cache.bump_generation(&group).await.expect("bump") }
    }))
    .await;
    let distinct: BTreeSet<u64> = bumps.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "every bump gets its own generation");
    assert_eq!(
        cache.generation(&group).await.expect("generation"),
        start + 50
    );
}

pub async fn cache_aside_serves_hits_without_loading(cache: Arc<dyn Cache>, ns: &str) {
    let aside = CacheAside::new(cache, TTL);
    let loads = AtomicUsize::new(0);
    let key = format!("{ns}:product:1");
    for _ in 0..3 {
        let value: String = aside
            .get_or_load(&key, None, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>("lamp".to_owned())
            })
            .await
            .expect("load");
        assert_eq!(value, "lamp");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(aside.stats().hits(), 2);
    assert_eq!(aside.stats().misses(), 1);
}

pub async fn cache_aside_loads_once_for_concurrent_misses(cache: Arc<dyn Cache>, ns: &str) {
    let aside = Arc::new(CacheAside::new(cache, TTL));
    let loads = Arc::new(AtomicUsize::new(0));
    let key = format!("{ns}:hot-product");
    let readers = futures::future::join_all((0..64).map(|_| {
        let aside = aside.clone();
        let loads = loads.clone();
        let key = key.clone();
        tokio::spawn(async move {
            aside
                .get_or_load(&key, Some(&format!("{key}:group")), || {
                    let loads = loads.clone();
                    async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::convert::Infallible>(vec![1u32, 2, 3])
                    }
                })
                .await
        })
    }))
    .await;
    for reader in readers {
        assert_eq!(reader.expect("join").expect("value"), vec![1, 2, 3]);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "64 concurrent misses, one load"
    );
}

pub async fn cache_aside_retire_makes_readers_load_the_new_value(cache: Arc<dyn Cache>, ns: &str) {
    let aside = CacheAside::new(cache, TTL);
    let group = format!("{ns}:product:9");
    let key = format!("{ns}:product:9:body");
    let version = AtomicUsize::new(1);
    let read = || async {
        aside
            .get_or_load(&key, Some(&group), || async {
                Ok::<_, std::convert::Infallible>(version.load(Ordering::SeqCst))
            })
            .await
            .expect("load")
    };
    assert_eq!(read().await, 1);
    version.store(2, Ordering::SeqCst);
    assert_eq!(read().await, 1, "cached until retired");
    aside.retire(&group).await;
    assert_eq!(read().await, 2);
}

pub async fn cache_aside_does_not_share_errors(cache: Arc<dyn Cache>, ns: &str) {
    let aside = CacheAside::new(cache, TTL);
    let key = format!("{ns}:flaky");
    let calls = AtomicUsize::new(0);
    let first: Result<String, &str> = aside
        .get_or_load(&key, None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err("store down")
        })
        .await;
    assert_eq!(first, Err("store down"));
    let second: Result<String, &str> = aside
        .get_or_load(&key, None, || async { Ok("recovered".to_owned()) })
        .await;
    assert_eq!(
        second.as_deref(),
        Ok("recovered"),
        "a failed load is not cached"
    );
}

pub async fn cache_aside_json_is_the_stored_json_and_shares_typed_entries(
    cache: Arc<dyn Cache>,
    ns: &str,
) {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Lamp {
        name: String,
        watts: u32,
    }
    #[derive(Debug)]
    struct Failed;
    impl From<serde_json::Error> for Failed {
        fn from(_: serde_json::Error) -> Self {
            Failed
        }
    }
    let aside = CacheAside::new(cache, TTL);
    let group = format!("{ns}:lamp:group");
    let key = format!("{ns}:lamp");
    let loads = AtomicUsize::new(0);
    let watts = AtomicUsize::new(40);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Failed>(Lamp {
            name: "desk \"lamp\"".into(),
            watts: u32::try_from(watts.load(Ordering::SeqCst)).expect("small"),
        })
    };
    let json = |bytes: Bytes| serde_json::from_slice::<Lamp>(&bytes).expect("the value's JSON");

    // A miss loads and answers the value's JSON; a hit answers the same bytes without loading.
    let first = aside
        .get_or_load_json(&key, Some(&group), load)
        .await
        .expect("load");
    let second = aside
        .get_or_load_json(&key, Some(&group), load)
        .await
        .expect("hit");
    assert_eq!(first, second);
    assert_eq!(json(first).watts, 40);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!((aside.stats().hits(), aside.stats().misses()), (1, 1));

    // The typed reader of the same key shares the entry.
    let typed: Lamp = aside
        .get_or_load(&key, Some(&group), load)
        .await
        .expect("typed");
    assert_eq!(typed.name, "desk \"lamp\"");
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Retiring the group makes the next read load the new value.
    watts.store(60, Ordering::SeqCst);
    aside.retire(&group).await;
    let third = aside
        .get_or_load_json(&key, Some(&group), load)
        .await
        .expect("reload");
    assert_eq!(json(third).watts, 60);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}
