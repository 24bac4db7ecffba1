//! The local-directory blob adapter.
//!
//! An object lives in one file under `<root>/objects/<key>`: a 4-byte big-endian header length,
//! the metadata as JSON, then the body. Writing goes to `<root>/tmp`, is synced, and is renamed
//! into place, so a reader sees the old object or the new one, never half of either, and a crash
//! leaves at worst a stray temporary file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    Blob, BlobEntry, BlobError, BlobKey, BlobMeta, BlobPage, Blobs, MAX_LIST_LIMIT, Result,
    etag_of, validate_content_type,
};

#[derive(Serialize, Deserialize)]
struct Header {
    content_type: String,
    etag: String,
    size: u64,
}

#[derive(Debug, Clone)]
pub struct LocalBlobs {
    objects: PathBuf,
    tmp: PathBuf,
}

fn backend(error: impl Into<anyhow::Error>) -> BlobError {
    BlobError::Backend(error.into())
}

impl LocalBlobs {
    pub fn open(root: &Path) -> Result<Self> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&objects).map_err(backend)?;
        std::fs::create_dir_all(&tmp).map_err(backend)?;
        Ok(Self { objects, tmp })
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        // Safe: BlobKey admits only plain relative segments.
        self.objects.join(key.as_str())
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LocalBlobs) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(backend)?
    }
}

fn read_header(file: &mut std::fs::File) -> Result<Header> {
    let mut length = [0u8; 4];
    file.read_exact(&mut length).map_err(backend)?;
    let length = u32::from_be_bytes(length) as usize;
    if length > 64 * 1024 {
        return Err(backend(anyhow::anyhow!("corrupt blob header")));
    }
    let mut header = vec![0u8; length];
    file.read_exact(&mut header).map_err(backend)?;
    serde_json::from_slice(&header).map_err(backend)
}

fn meta(key: &str, header: Header, file: &std::fs::File) -> BlobMeta {
    let last_modified = file
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    BlobMeta {
        key: key.to_owned(),
        size: header.size,
        content_type: header.content_type,
        etag: header.etag,
        last_modified,
    }
}

fn open_existing(path: &Path) -> Result<Option<std::fs::File>> {
    match std::fs::File::open(path) {
        Ok(file) if file.metadata().map(|m| m.is_file()).unwrap_or(false) => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // A key whose prefix is an object ("a" exists, asking for "a/b") is simply absent.
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(error) => Err(backend(error)),
    }
}

/// Every object key under `dir`, relative to `objects`.
fn walk(objects: &Path, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(backend(error)),
    };
    for entry in entries {
        let entry = entry.map_err(backend)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(backend)?;
        if kind.is_dir() {
            walk(objects, &path, prefix, out)?;
        } else if kind.is_file() {
            let Ok(relative) = path.strip_prefix(objects) else {
                continue;
            };
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if key.starts_with(prefix) {
                out.push(key);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Blobs for LocalBlobs {
    async fn put(&self, key: &BlobKey, body: Bytes, content_type: &str) -> Result<BlobMeta> {
        validate_content_type(content_type)?;
        let key = key.clone();
        let content_type = content_type.to_owned();
        self.blocking(move |this| {
            let header = Header {
                content_type,
                etag: etag_of(&body),
                size: body.len() as u64,
            };
            let header_bytes = serde_json::to_vec(&header).map_err(backend)?;
            let target = this.path(&key);
            let parent = target
                .parent()
                .ok_or_else(|| backend(anyhow::anyhow!("object path has no parent")))?;
            std::fs::create_dir_all(parent).map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotADirectory
                    || error.kind() == std::io::ErrorKind::AlreadyExists
                {
                    BlobError::InvalidKey(format!("a prefix of {key} is itself an object"))
                } else {
                    backend(error)
                }
            })?;
            if target.is_dir() {
                return Err(BlobError::InvalidKey(format!(
                    "{key} is a prefix of other objects"
                )));
            }
            let temporary = this.tmp.join(uuid::Uuid::new_v4().simple().to_string());
            let written = (|| -> std::io::Result<std::fs::File> {
                let mut file = std::fs::File::create(&temporary)?;
                let length = u32::try_from(header_bytes.len()).unwrap_or(u32::MAX);
                file.write_all(&length.to_be_bytes())?;
                file.write_all(&header_bytes)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&temporary, &target)?;
                std::fs::File::open(parent)?.sync_all()?;
                std::fs::File::open(&target)
            })();
            match written {
                Ok(file) => Ok(meta(key.as_str(), header, &file)),
                Err(error) => {
                    let _ = std::fs::remove_file(&temporary);
                    Err(backend(error))
                }
            }
        })
        .await
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Blob>> {
        let key = key.clone();
        self.blocking(move |this| {
            let Some(mut file) = open_existing(&this.path(&key))? else {
                return Ok(None);
            };
            let header = read_header(&mut file)?;
            let mut body = Vec::with_capacity(usize::try_from(header.size).unwrap_or(0));
            file.read_to_end(&mut body).map_err(backend)?;
            if body.len() as u64 != header.size {
                return Err(backend(anyhow::anyhow!("blob {key} is truncated")));
            }
            Ok(Some(Blob {
                meta: meta(key.as_str(), header, &file),
                body: body.into(),
            }))
        })
        .await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobMeta>> {
        let key = key.clone();
        self.blocking(move |this| {
            let Some(mut file) = open_existing(&this.path(&key))? else {
                return Ok(None);
            };
            let header = read_header(&mut file)?;
            Ok(Some(meta(key.as_str(), header, &file)))
        })
        .await
    }

    async fn list(&self, prefix: &str, token: Option<&str>, limit: usize) -> Result<BlobPage> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(BlobError::Invalid(format!(
                "list limit must be 1..={MAX_LIST_LIMIT}"
            )));
        }
        let prefix = prefix.to_owned();
        let after = token.map(str::to_owned);
        if let Some(after) = &after
            && !after.starts_with(&prefix)
        {
            return Err(BlobError::Invalid(
                "continuation token does not fit the prefix".into(),
            ));
        }
        self.blocking(move |this| {
            // Walk only the directory the prefix pins down.
            let directory = match prefix.rfind('/') {
                Some(slash) => this.objects.join(&prefix[..slash]),
                None => this.objects.clone(),
            };
            if !directory.starts_with(&this.objects)
                || prefix.split('/').any(|segment| segment == "..")
            {
                return Err(BlobError::Invalid(
                    "prefix must not climb directories".into(),
                ));
            }
            let mut keys = Vec::new();
            walk(&this.objects, &directory, &prefix, &mut keys)?;
            keys.sort();
            let mut items = Vec::new();
            let mut more = false;
            for key in keys
                .into_iter()
                .filter(|key| after.as_ref().is_none_or(|after| key > after))
            {
                if items.len() == limit {
                    more = true;
                    break;
                }
                let Some(mut file) = open_existing(&this.objects.join(&key))? else {
                    continue;
                };
                let header = read_header(&mut file)?;
                let meta = meta(&key, header, &file);
                items.push(BlobEntry {
                    key: meta.key,
                    size: meta.size,
                    etag: meta.etag,
                    last_modified: meta.last_modified,
                });
            }
            let next = if more {
                items.last().map(|entry: &BlobEntry| entry.key.clone())
            } else {
                None
            };
            Ok(BlobPage { items, next })
        })
        .await
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        let key = key.clone();
        self.blocking(move |this| match std::fs::remove_file(this.path(&key)) {
            Ok(()) => Ok(()),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(())
            }
            Err(error) if this.path(&key).is_dir() => {
                let _ = error;
                Ok(())
            }
            Err(error) => Err(backend(error)),
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.blocking(|this| {
            std::fs::metadata(&this.objects)
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }
}
