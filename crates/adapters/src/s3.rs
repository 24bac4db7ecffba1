//! The S3 adapter of the blob port: objects in one bucket, optionally under a key prefix.
//!
//! With a custom endpoint (LocalStack, moto, MinIO) addressing is path-style, since those do not
//! resolve bucket subdomains. Listings use ListObjectsV2 and its continuation token.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use emporium_ports::blob::{
    Blob, BlobEntry, BlobError, BlobKey, BlobMeta, BlobPage, Blobs, MAX_LIST_LIMIT, Result,
    validate_content_type,
};

fn backend(error: impl Into<anyhow::Error>) -> BlobError {
    BlobError::Backend(error.into())
}

fn system_time(value: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    value
        .and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or_else(SystemTime::now)
}

/// What GET and HEAD say of an object, as the port's metadata.
fn object_meta(
    key: &BlobKey,
    size: u64,
    content_type: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> BlobMeta {
    BlobMeta {
        key: key.as_str().to_owned(),
        size,
        content_type: content_type
            .unwrap_or("application/octet-stream")
            .to_owned(),
        etag: etag.unwrap_or_default().to_owned(),
        last_modified: system_time(last_modified),
    }
}

#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    /// Prepended to every key, with its trailing slash; empty for the bucket's root.
    prefix: String,
}

impl S3Blobs {
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            client,
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn object(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Creates the bucket unless it exists; safe to run again.
    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_default();
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default location and must not be named.
        if !region.is_empty() && region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        region.as_str(),
                    ))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
            Err(error)
                if error.as_service_error().is_some_and(|e| {
                    e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(error) => {
                Err(anyhow::Error::from(error).context(format!("creating bucket {}", self.bucket)))
            }
        }
    }
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &BlobKey, body: Bytes, content_type: &str) -> Result<BlobMeta> {
        validate_content_type(content_type)?;
        let size = body.len() as u64;
        let response = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(backend)?;
        Ok(BlobMeta {
            key: key.as_str().to_owned(),
            size,
            content_type: content_type.to_owned(),
            etag: response.e_tag().unwrap_or_default().to_owned(),
            last_modified: SystemTime::now(),
        })
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Blob>> {
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(error) => return Err(backend(error)),
        };
        let content_type = response.content_type().map(str::to_owned);
        let etag = response.e_tag().map(str::to_owned);
        let last_modified = response.last_modified().copied();
        let body = response.body.collect().await.map_err(backend)?.into_bytes();
        let meta = object_meta(
            key,
            body.len() as u64,
            content_type.as_deref(),
            etag.as_deref(),
            last_modified.as_ref(),
        );
        Ok(Some(Blob { meta, body }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .send()
            .await
        {
            Ok(response) => Ok(Some(object_meta(
                key,
                response
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                response.content_type(),
                response.e_tag(),
                response.last_modified(),
            ))),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            // HEAD answers carry no body, so some servers' 404s surface without a code.
            Err(error)
                if error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(None)
            }
            Err(error) => Err(backend(error)),
        }
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> Result<BlobPage> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(BlobError::Invalid(format!(
                "list limit must be 1..={MAX_LIST_LIMIT}"
            )));
        }
        let response = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object(prefix))
            .max_keys(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_continuation_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|error| {
                if error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 400)
                    && token.is_some()
                {
                    BlobError::Invalid("continuation token is not valid".into())
                } else {
                    backend(error)
                }
            })?;
        let items = response
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?.strip_prefix(&self.prefix)?.to_owned();
                Some(BlobEntry {
                    key,
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    etag: object.e_tag().unwrap_or_default().to_owned(),
                    last_modified: system_time(object.last_modified()),
                })
            })
            .collect();
        Ok(BlobPage {
            items,
            next: response.next_continuation_token().map(str::to_owned),
        })
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key.as_str()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
