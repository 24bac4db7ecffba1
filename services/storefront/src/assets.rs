//! Product images and static files, served from the blob store the way a CDN edge serves S3:
//! an ETag on every answer and 304 when the browser already has it, a year of immutable caching
//! for content-addressed keys (the key changes whenever the bytes do), and a small in-memory
//! cache weighed in bytes so hot images do not go to the store on every request.
//!
//! The stylesheet is compiled into the binary and published to the blob store at start under a
//! key derived from its bytes, so every replica links the same URL and a new release never
//! meets a stale copy in a browser.

use std::sync::{Arc, LazyLock};

use actix_web::http::header::{self, EntityTag, HeaderValue, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use emporium_platform::Problem;
use emporium_ports::blob::{BlobKey, Blobs};
use sha2::{Digest, Sha256};

/// Only these key prefixes are public; anything else in the bucket is not served.
const PUBLIC_PREFIXES: &[&str] = &["images/", "static/"];

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "public, max-age=300";

const STYLESHEET: &str = include_str!("../static/shop.css");

/// The blob key of this build's stylesheet: `static/shop.<16 hex digits of its hash>.css`.
pub static STYLESHEET_KEY: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(STYLESHEET.as_bytes());
    format!("static/shop.{}.css", hex::encode(&digest[..8]))
});

/// The URL of a blob key.
pub fn url(key: &str) -> String {
    format!("/assets/{key}")
}

pub fn stylesheet_url() -> String {
    url(&STYLESHEET_KEY)
}

/// Whether the key names its content: the last dot-separated part of the file stem is a hash of
/// at least 16 hex digits (`images/<32 hex>.png`, `static/shop.<16 hex>.css`).
pub fn is_content_addressed(key: &str) -> bool {
    let file = key.rsplit('/').next().unwrap_or(key);
    let Some((stem, _extension)) = file.rsplit_once('.') else {
        return false;
    };
    let hash = stem.rsplit('.').next().unwrap_or(stem);
    hash.len() >= 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug)]
pub struct Asset {
    pub body: Bytes,
    pub content_type: String,
    /// The blob's ETag, parsed once when the asset enters the cache.
    pub etag: Option<EntityTag>,
}

/// The store's ETag as a header value: stores give it quoted (`"3f2a..."`), but a bare one is
/// accepted too; one that is not a valid tag is left out rather than sent malformed.
fn entity_tag(raw: &str) -> Option<EntityTag> {
    raw.parse().or_else(|_| format!("\"{raw}\"").parse()).ok()
}

#[derive(Debug, thiserror::Error)]
enum Fetch {
    #[error("no such asset")]
    Missing,
    #[error("{0}")]
    Failed(String),
}

/// The blob store behind `/assets`, with its in-memory cache.
#[derive(Clone)]
pub struct Assets {
    blobs: Arc<dyn Blobs>,
    cache: moka::future::Cache<String, Arc<Asset>>,
}

impl Assets {
    pub fn new(blobs: Arc<dyn Blobs>, cache_bytes: u64) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|key: &String, asset: &Arc<Asset>| {
                u32::try_from(asset.body.len() + key.len()).unwrap_or(u32::MAX)
            })
            .build();
        Self { blobs, cache }
    }

    /// Puts the compiled-in static files into the blob store unless they are there already.
    pub async fn publish(&self) -> anyhow::Result<()> {
        let key = BlobKey::parse(&STYLESHEET_KEY)?;
        if self.blobs.head(&key).await?.is_none() {
            self.blobs
                .put(
                    &key,
                    Bytes::from_static(STYLESHEET.as_bytes()),
                    "text/css; charset=utf-8",
                )
                .await?;
        }
        Ok(())
    }

    async fn fetch(&self, key: &BlobKey) -> Result<Arc<Asset>, Arc<Fetch>> {
        let blobs = self.blobs.clone();
        let lookup = key.clone();
        self.cache
            .try_get_with(key.as_str().to_owned(), async move {
                match blobs.get(&lookup).await {
                    Ok(Some(blob)) => Ok(Arc::new(Asset {
                        body: blob.body,
                        content_type: blob.meta.content_type,
                        etag: entity_tag(&blob.meta.etag),
                    })),
                    Ok(None) => Err(Fetch::Missing),
                    Err(error) => Err(Fetch::Failed(format!("{error:#}"))),
                }
            })
            .await
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/assets/{key:.+}")
            .route(web::get().to(serve))
            .route(web::head().to(serve)),
    );
}

async fn serve(
    request: HttpRequest,
    key: web::Path<String>,
    assets: web::Data<Assets>,
) -> Result<HttpResponse, Problem> {
    let key = key.into_inner();
    let not_found = || {
        Problem::new(
            actix_web::http::StatusCode::NOT_FOUND,
            emporium_platform::ProblemCode::AssetNotFound,
            "No such asset",
        )
    };
    if !PUBLIC_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Err(not_found());
    }
    let key = BlobKey::parse(&key).map_err(|_| not_found())?;
    let asset = match assets.fetch(&key).await {
        Ok(asset) => asset,
        Err(error) => match error.as_ref() {
            Fetch::Missing => return Err(not_found()),
            Fetch::Failed(why) => {
                tracing::warn!(key = key.as_str(), error = %why, "blob store failed");
                return Err(Problem::unavailable(
                    "images are temporarily unavailable; try again shortly",
                ));
            }
        },
    };
    let cache_control = if is_content_addressed(key.as_str()) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let fresh = match (request.get_header::<IfNoneMatch>(), &asset.etag) {
        (Some(IfNoneMatch::Any), _) => true,
        (Some(IfNoneMatch::Items(tags)), Some(etag)) => tags.iter().any(|t| t.weak_eq(etag)),
        _ => false,
    };
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if let Some(etag) = &asset.etag {
        response.insert_header(header::ETag(etag.clone()));
    }
    if asset.content_type.starts_with("image/svg") {
        // An SVG opened directly could run script in the shop's origin; sandbox it.
        response.insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        ));
    }
    if fresh {
        return Ok(response.finish());
    }
    let content_type = HeaderValue::from_str(&asset.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    Ok(response
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(asset.body.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_etags_become_strong_tags() {
        let quoted = entity_tag("\"3f2a9c\"").expect("tag");
        assert_eq!((quoted.tag(), quoted.weak), ("3f2a9c", false));
        assert_eq!(entity_tag("3f2a9c"), Some(quoted));
        assert_eq!(entity_tag("bad\"tag"), None);
    }

    #[test]
    fn content_addressed_keys_are_recognised() {
        assert!(is_content_addressed(
            "images/3f2a9c0d1b7e4a6f8c2d5e1f0a9b8c7d.svg"
        ));
        assert!(is_content_addressed(&STYLESHEET_KEY));
        assert!(!is_content_addressed("static/shop.css"));
        assert!(!is_content_addressed("images/logo.png"));
        assert!(!is_content_addressed("images/abc"));
    }
}
