//! The blob port, modelled on S3: objects under string keys with a content type and an ETag,
//! listed by prefix in key order with a continuation token.
//!
//! Keys are checked by [`BlobKey::parse`] before any adapter sees them: slash-separated
//! segments, none empty, `.` or `..`, no backslashes or control characters. That keeps the
//! local-directory adapter inside its directory whatever a client sends, and keeps every key
//! valid for S3 too.

pub mod local;

#[cfg(feature = "testsuite")]
pub mod conformance;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_SEGMENT_BYTES: usize = 255;
pub const MAX_LIST_LIMIT: usize = 1000;

/// A checked object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn parse(key: &str) -> Result<Self, BlobError> {
        let invalid = |why: &str| BlobError::InvalidKey(format!("{why}: {key:?}"));
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(invalid("keys have 1..=1024 bytes"));
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Err(invalid("keys hold no control characters or backslashes"));
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(invalid("key segments are non-empty and not . or .."));
            }
            if segment.len() > MAX_SEGMENT_BYTES {
                return Err(invalid("key segments have at most 255 bytes"));
            }
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is known about an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub size: u64,
    pub content_type: String,
    /// Quoted, as in an HTTP `ETag` header; changes whenever the content does.
    pub etag: String,
    pub last_modified: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub meta: BlobMeta,
    pub body: Bytes,
}

/// One object in a listing. No content type: S3 does not list it, and a listing should not have
/// to read every object to find out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobPage {
    pub items: Vec<BlobEntry>,
    /// Token for the next page; `None` when the listing is complete.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    #[error("invalid blob request: {0}")]
    Invalid(String),
    #[error("blob store failed")]
    Backend(#[source] anyhow::Error),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// Checks a content type: `type/subtype` with optional parameters, printable ASCII.
pub fn validate_content_type(content_type: &str) -> Result<()> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let valid = content_type.len() <= 255
        && content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty());
    if valid {
        Ok(())
    } else {
        Err(BlobError::Invalid(format!(
            "content type {content_type:?} is not type/subtype"
        )))
    }
}

/// The quoted ETag of `body` as the local adapter computes it.
pub fn etag_of(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Stores the object, replacing any with that key, and returns its metadata.
    async fn put(&self, key: &BlobKey, body: Bytes, content_type: &str) -> Result<BlobMeta>;

    async fn get(&self, key: &BlobKey) -> Result<Option<Blob>>;

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobMeta>>;

    /// Objects whose key starts with `prefix`, in key order, at most `limit` of them, after the
    /// position `token` (from a previous page) if given.
    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> Result<BlobPage>;

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<()>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_or_smuggle() {
        for bad in [
            "", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a\\b", "a\0b", "a\nb",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} must be refused");
        }
        for good in [
            "a",
            "images/ab12.svg",
            "static/css/site.v2.css",
            "ünïcode/ok",
        ] {
            assert!(BlobKey::parse(good).is_ok(), "{good:?} is fine");
        }
        assert!(BlobKey::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn content_types_need_a_type_and_subtype() {
        assert!(validate_content_type("image/svg+xml").is_ok());
        assert!(validate_content_type("text/css; charset=utf-8").is_ok());
        assert!(validate_content_type("svg").is_err());
        assert!(validate_content_type("text/\n").is_err());
    }
}
