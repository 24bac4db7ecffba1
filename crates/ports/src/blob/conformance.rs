//! The blob conformance suite, run against every blob adapter.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use super::{BlobError, BlobKey, Blobs};

pub struct Fixture {
    pub blobs: Arc<dyn Blobs>,
    pub guard: Box<dyn Any + Send>,
}

#[macro_export]
macro_rules! blob_conformance {
    ($factory:path) => {
        $crate::blob_conformance!(@cases $factory;
            get_returns_body_type_and_etag_of_put,
            head_agrees_with_get_without_the_body,
            etag_follows_the_content,
            missing_objects_are_none,
            delete_removes_and_is_idempotent,
            list_filters_by_prefix_in_key_order,
            list_pages_cover_every_object_once,
            bad_requests_are_refused,
            large_and_binary_bodies_round_trip,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $factory().await;
                $crate::blob::conformance::$case(fixture.blobs.as_ref()).await;
                drop(fixture);
            }
        )*
    };
}

fn key(text: &str) -> BlobKey {
    BlobKey::parse(text).expect("valid test key")
}

pub async fn get_returns_body_type_and_etag_of_put(blobs: &dyn Blobs) {
    let stored = blobs
        .put(
            &key("images/a.svg"),
            Bytes::from_static(b"<svg/>"),
            "image/svg+xml",
        )
        .await
        .expect("put");
    assert_eq!(stored.key, "images/a.svg");
    assert_eq!(stored.size, 6);
    assert!(
        stored.etag.starts_with('"') && stored.etag.ends_with('"'),
        "{}",
        stored.etag
    );
    let blob = blobs
        .get(&key("images/a.svg"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(blob.body, Bytes::from_static(b"<svg/>"));
    assert_eq!(blob.meta.content_type, "image/svg+xml");
    assert_eq!(blob.meta.etag, stored.etag);
    assert_eq!(blob.meta.size, 6);
}

pub async fn head_agrees_with_get_without_the_body(blobs: &dyn Blobs) {
    blobs
        .put(
            &key("static/site.css"),
            Bytes::from_static(b"body{}"),
            "text/css; charset=utf-8",
        )
        .await
        .expect("put");
    let head = blobs
        .head(&key("static/site.css"))
        .await
        .expect("head")
        .expect("exists");
    let get = blobs
        .get(&key("static/site.css"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(head.etag, get.meta.etag);
    assert_eq!(head.size, get.meta.size);
    assert_eq!(head.content_type, "text/css; charset=utf-8");
}

pub async fn etag_follows_the_content(blobs: &dyn Blobs) {
    let first = blobs
        .put(&key("x/one"), Bytes::from_static(b"one"), "text/plain")
        .await
        .expect("put");
    let same = blobs
        .put(&key("x/two"), Bytes::from_static(b"one"), "text/plain")
        .await
        .expect("put");
    let changed = blobs
        .put(&key("x/one"), Bytes::from_static(b"uno"), "text/plain")
        .await
        .expect("overwrite");
    assert_eq!(first.etag, same.etag, "same content, same etag");
    assert_ne!(first.etag, changed.etag, "new content, new etag");
    let now = blobs
        .get(&key("x/one"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(now.body, Bytes::from_static(b"uno"));
}

pub async fn missing_objects_are_none(blobs: &dyn Blobs) {
    assert!(
        blobs
            .get(&key("nope/missing"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        blobs
            .head(&key("nope/missing"))
            .await
            .expect("head")
            .is_none()
    );
}

pub async fn delete_removes_and_is_idempotent(blobs: &dyn Blobs) {
    blobs
        .put(&key("d/file"), Bytes::from_static(b"x"), "text/plain")
        .await
        .expect("put");
    blobs.delete(&key("d/file")).await.expect("delete");
    assert!(blobs.get(&key("d/file")).await.expect("get").is_none());
    blobs.delete(&key("d/file")).await.expect("delete again");
}

pub async fn list_filters_by_prefix_in_key_order(blobs: &dyn Blobs) {
    for name in [
        "images/b.svg",
        "images/a.svg",
        "images/sub/c.svg",
        "imagesque",
        "static/x",
    ] {
        blobs
            .put(&key(name), Bytes::from_static(b"x"), "text/plain")
            .await
            .expect("put");
    }
    let keys = |page: super::BlobPage| page.items.into_iter().map(|m| m.key).collect::<Vec<_>>();
    let images = blobs.list("images/", None, 100).await.expect("list");
    assert_eq!(
        keys(images),
        ["images/a.svg", "images/b.svg", "images/sub/c.svg"]
    );
    let loose = blobs.list("images", None, 100).await.expect("list");
    assert_eq!(
        keys(loose),
        [
            "images/a.svg",
            "images/b.svg",
            "images/sub/c.svg",
            "imagesque"
        ]
    );
    let everything = blobs.list("", None, 100).await.expect("list");
    assert_eq!(everything.items.len(), 5);
    assert!(
        blobs
            .list("zzz/", None, 10)
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

pub async fn list_pages_cover_every_object_once(blobs: &dyn Blobs) {
    let mut expected = Vec::new();
    for i in 0..13 {
        let name = format!("p/{i:02}");
        blobs
            .put(&key(&name), Bytes::from(name.clone()), "text/plain")
            .await
            .expect("put");
        expected.push(name);
    }
    for limit in [1, 5, 13, 50] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let page = blobs
                .list("p/", token.as_deref(), limit)
                .await
                .expect("list");
            assert!(page.items.len() <= limit);
            seen.extend(page.items.into_iter().map(|m| m.key));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
    }
}

pub async fn bad_requests_are_refused(blobs: &dyn Blobs) {
    let bad_type = blobs
        .put(&key("t/x"), Bytes::from_static(b"x"), "not a type")
        .await;
    assert!(
        matches!(bad_type, Err(BlobError::Invalid(_))),
        "{bad_type:?}"
    );
    assert!(
        blobs.get(&key("t/x")).await.expect("get").is_none(),
        "nothing written"
    );
    assert!(matches!(
        blobs.list("", None, 0).await,
        Err(BlobError::Invalid(_))
    ));
    assert!(BlobKey::parse("../../etc/passwd").is_err());
}

pub async fn large_and_binary_bodies_round_trip(blobs: &dyn Blobs) {
    let body: Bytes = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    blobs
        .put(
            &key("big/blob.bin"),
            body.clone(),
            "application/octet-stream",
        )
        .await
        .expect("put");
    let got = blobs
        .get(&key("big/blob.bin"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body);
}
