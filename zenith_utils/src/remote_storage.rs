//! Object storage: the system of record for what the daemons must never
//! lose (docs/remote_storage.md).
//!
//! One async API over the `object_store` crate with two backends, a local
//! directory (the laptop default, the same upload path as in production)
//! and S3 (any S3-compatible service), chosen by [`RemoteStorageConfig`]:
//!
//! - [`RemoteStorage::put_new`] writes an object once: a second write of the
//!   same key with other content is refused ([`RemoteStorageError::AlreadyExists`]),
//!   the same content again is a success (a retried or repeated upload);
//! - [`RemoteStorage::get`] and [`RemoteStorage::get_range`] read;
//! - [`RemoteStorage::list`] lists the objects under a prefix;
//! - [`RemoteStorage::delete_many`] deletes (a missing object counts as
//!   deleted).
//!
//! Every request takes one of `max_concurrency` permits per attempt, each
//! attempt is bounded by `timeout`, and errors that may pass (5xx,
//! connection failures, timeouts) are retried `max_retries` times with
//! exponential backoff and jitter; the others (not found, refused
//! credentials, a missing bucket) fail at once. Metrics: [`metrics`].
//! Keys are [`RemotePath`]s: relative, `/`-separated, a small character set,
//! so that every backend stores them verbatim. The local backend makes a
//! written object durable (the file and its directories fsynced) before
//! `put_new` returns.

mod config;
pub mod metrics;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};
use rand::Rng;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

pub use config::{RemoteStorageConfig, RemoteStorageKind};
use metrics::Operation;

/// The longest key accepted (S3 allows 1024 bytes).
pub const MAX_KEY_LEN: usize = 1024;
/// Backoff before the first retry; it doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A request that failed, or a configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RemoteStorageError {
    #[error("remote storage configuration: {0}")]
    Config(String),
    #[error("invalid object key {key:?}: {why}")]
    InvalidKey { key: String, why: &'static str },
    #[error("object {0} not found")]
    NotFound(RemotePath),
    #[error("object {0} exists with other content (objects are never overwritten)")]
    AlreadyExists(RemotePath),
    /// An error that will not pass by trying again: refused credentials, a
    /// missing bucket, an unsupported operation.
    #[error("object storage refused to {op} {key}: {source}")]
    Refused {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
    #[error("object storage failed to {op} {key} after {attempts} attempts: {source}")]
    Failed {
        op: &'static str,
        key: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("object storage timed out on {op} {key}: {attempts} attempts of {timeout:?} each")]
    TimedOut {
        op: &'static str,
        key: String,
        attempts: u32,
        timeout: Duration,
    },
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The key of an object, relative to the storage's root (the local
/// directory, or the bucket and its prefix): `/`-separated segments of
/// ASCII letters, digits and `._-=`, none empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn new(key: impl Into<String>) -> Result<RemotePath, RemoteStorageError> {
        let key = key.into();
        let bad = |why| {
            Err(RemoteStorageError::InvalidKey {
                key: key.clone(),
                why,
            })
        };
        if key.is_empty() {
            return bad("empty");
        }
        if key.len() > MAX_KEY_LEN {
            return bad("longer than 1024 bytes");
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return bad("an empty segment (a leading, trailing or double '/')");
            }
            if segment == "." || segment == ".." {
                return bad("a '.' or '..' segment");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-=".contains(&b))
            {
                return bad("a character other than ASCII letters, digits and ._-=");
            }
        }
        Ok(RemotePath(key))
    }

    /// `self/segment` (a segment may hold `/` itself).
    pub fn join(&self, segment: &str) -> Result<RemotePath, RemoteStorageError> {
        RemotePath::new(format!("{}/{segment}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object found by [`RemoteStorage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    pub path: RemotePath,
    pub size: u64,
}

/// A handle on one object store; cheap to clone, shared by every caller of
/// a daemon so that `max_concurrency` bounds them all.
#[derive(Clone)]
pub struct RemoteStorage {
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket (S3); none for a local directory.
    prefix: Option<ObjectPath>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    max_retries: u32,
    /// For messages: the directory or `s3://bucket/prefix`.
    name: Arc<str>,
}

impl fmt::Debug for RemoteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteStorage({})", self.name)
    }
}

impl fmt::Display for RemoteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How an error is handled: given up on at once, or tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    NotFound,
    Exists,
    Refused,
    Transient,
}

fn classify(e: &object_store::Error) -> ErrorClass {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorClass::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorClass::Exists,
        E::Generic { .. } | E::JoinError { .. } => ErrorClass::Transient,
        _ => ErrorClass::Refused,
    }
}

impl ErrorClass {
    fn label(self) -> &'static str {
        match self {
            ErrorClass::NotFound => "not_found",
            ErrorClass::Exists => "exists",
            ErrorClass::Refused => "refused",
            ErrorClass::Transient => "error",
        }
    }
}

impl RemoteStorage {
    /// Opens the store a configuration names (a local directory is created
    /// if missing). No request is made: a wrong bucket or refused
    /// credentials show in the first request's error.
    pub fn new(conf: &RemoteStorageConfig) -> Result<RemoteStorage, RemoteStorageError> {
        metrics::register();
        let (store, prefix, name): (Arc<dyn ObjectStore>, _, String) = match conf.kind()? {
            RemoteStorageKind::LocalFs { path } => {
                std::fs::create_dir_all(&path).map_err(|source| RemoteStorageError::CreateDir {
                    path: path.clone(),
                    source,
                })?;
                // Written files and the directories they land in are fsynced
                // before a put returns.
                let fs = LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| {
                        RemoteStorageError::Config(format!("local_path {}: {e}", path.display()))
                    })?
                    .with_fsync(true);
                (Arc::new(fs), None, path.display().to_string())
            }
            RemoteStorageKind::S3 {
                bucket,
                prefix,
                region,
                endpoint,
            } => {
                // Signing and TLS use ring, like every other TLS in the workspace.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(region) = &region {
                    b = b.with_region(region);
                }
                let mut client = ClientOptions::new().with_timeout(conf.timeout);
                if let Some(endpoint) = &endpoint {
                    b = b.with_endpoint(endpoint);
                    client = client.with_allow_http(endpoint.starts_with("http://"));
                }
                if let (Some(id), Some(secret)) = (&conf.access_key_id, &conf.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                // Retries and timeouts are ours (one policy for every backend).
                b = b
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        ..RetryConfig::default()
                    })
                    .with_client_options(client);
                let s3 = b
                    .build()
                    .map_err(|e| RemoteStorageError::Config(format!("S3 bucket {bucket}: {e}")))?;
                let name = match &prefix {
                    Some(p) => format!("s3://{bucket}/{p}"),
                    None => format!("s3://{bucket}"),
                };
                let prefix = prefix
                    .map(|p| ObjectPath::parse(&p))
                    .transpose()
                    .map_err(|e| RemoteStorageError::Config(format!("prefix: {e}")))?;
                (Arc::new(s3), prefix, name)
            }
        };
        Ok(RemoteStorage {
            store,
            prefix,
            permits: Arc::new(Semaphore::new(conf.max_concurrency)),
            timeout: conf.timeout,
            max_retries: conf.max_retries,
            name: name.into(),
        })
    }

    fn object_path(&self, path: &RemotePath) -> ObjectPath {
        // RemotePath's character set needs no encoding.
        match &self.prefix {
            Some(p) => ObjectPath::from(format!("{p}/{}", path.as_str())),
            None => ObjectPath::from(path.as_str()),
        }
    }

    fn remote_path(&self, location: &ObjectPath) -> Option<RemotePath> {
        let s = location.as_ref();
        let rel = match &self.prefix {
            Some(p) => s.strip_prefix(p.as_ref())?.strip_prefix('/')?,
            None => s,
        };
        RemotePath::new(rel).ok()
    }

    /// Runs `f` until it succeeds, fails for good, or runs out of attempts.
    async fn retry<T, F, Fut>(
        &self,
        op: Operation,
        what: &'static str,
        key: &str,
        f: F,
    ) -> Result<T, RemoteStorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let permit = self.permits.acquire().await;
            let started = Instant::now();
            let r = tokio::time::timeout(self.timeout, f()).await;
            drop(permit);
            let secs = started.elapsed().as_secs_f64();
            let last = attempts > self.max_retries;
            match r {
                Ok(Ok(v)) => {
                    metrics::attempt(op, "ok", secs);
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    let class = classify(&e);
                    metrics::attempt(op, class.label(), secs);
                    if class != ErrorClass::Transient {
                        return Err(self.permanent(class, what, key, e));
                    }
                    if last {
                        return Err(RemoteStorageError::Failed {
                            op: what,
                            key: key.to_string(),
                            attempts,
                            source: e,
                        });
                    }
                    warn!(storage = %self.name, "{what} {key}: {e}; trying again");
                }
                Err(_) => {
                    metrics::attempt(op, "timeout", secs);
                    if last {
                        return Err(RemoteStorageError::TimedOut {
                            op: what,
                            key: key.to_string(),
                            attempts,
                            timeout: self.timeout,
                        });
                    }
                    warn!(storage = %self.name, "{what} {key}: no answer in {:?}; trying again", self.timeout);
                }
            }
            metrics::retry(op);
            tokio::time::sleep(backoff(attempts)).await;
        }
    }

    fn permanent(
        &self,
        class: ErrorClass,
        what: &'static str,
        key: &str,
        e: object_store::Error,
    ) -> RemoteStorageError {
        let path = || RemotePath(key.to_string());
        match class {
            ErrorClass::NotFound => RemoteStorageError::NotFound(path()),
            ErrorClass::Exists => RemoteStorageError::AlreadyExists(path()),
            _ => RemoteStorageError::Refused {
                op: what,
                key: key.to_string(),
                source: e,
            },
        }
    }

    /// Writes `data` as a new object. If the key exists already with the
    /// same bytes (an earlier attempt of this write went through) it is a
    /// success; with other bytes, [`RemoteStorageError::AlreadyExists`].
    pub async fn put_new(&self, path: &RemotePath, data: Bytes) -> Result<(), RemoteStorageError> {
        let location = self.object_path(path);
        let r = self
            .retry(Operation::Put, "put", path.as_str(), || {
                let opts = PutOptions::from(PutMode::Create);
                self.store.put_opts(&location, data.clone().into(), opts)
            })
            .await;
        match r {
            Ok(_) => metrics::bytes(Operation::Put, data.len()),
            Err(RemoteStorageError::AlreadyExists(_)) => {
                let existing = self.get(path).await?;
                if existing != data {
                    return Err(RemoteStorageError::AlreadyExists(path.clone()));
                }
                debug!(storage = %self.name, "{path} was there already with the same content");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The whole object.
    pub async fn get(&self, path: &RemotePath) -> Result<Bytes, RemoteStorageError> {
        let location = self.object_path(path);
        let data = self
            .retry(Operation::Get, "get", path.as_str(), || async {
                self.store.get(&location).await?.bytes().await
            })
            .await?;
        metrics::bytes(Operation::Get, data.len());
        Ok(data)
    }

    /// Bytes `range` of the object (an error if the object is shorter).
    pub async fn get_range(
        &self,
        path: &RemotePath,
        range: Range<u64>,
    ) -> Result<Bytes, RemoteStorageError> {
        let location = self.object_path(path);
        let data = self
            .retry(Operation::Get, "get", path.as_str(), || {
                self.store.get_range(&location, range.clone())
            })
            .await?;
        metrics::bytes(Operation::Get, data.len());
        Ok(data)
    }

    /// Every object under `prefix` (the whole store if `None`), sorted by
    /// key. A prefix matches whole segments: `a/b` lists `a/b/c`, not `a/bc`.
    pub async fn list(
        &self,
        prefix: Option<&RemotePath>,
    ) -> Result<Vec<RemoteObject>, RemoteStorageError> {
        let location = match prefix {
            Some(p) => Some(self.object_path(p)),
            None => self.prefix.clone(),
        };
        let key = prefix.map_or("/", |p| p.as_str());
        let metas = self
            .retry(Operation::List, "list", key, || async {
                let mut out = Vec::new();
                let mut stream = self.store.list(location.as_ref());
                while let Some(meta) = stream.next().await {
                    out.push(meta?);
                }
                Ok(out)
            })
            .await?;
        let mut objects: Vec<RemoteObject> = metas
            .into_iter()
            .filter_map(|m| {
                let path = self.remote_path(&m.location);
                if path.is_none() {
                    warn!(storage = %self.name, "ignoring object {} (not a key of ours)", m.location);
                }
                Some(RemoteObject {
                    path: path?,
                    size: m.size,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(objects)
    }

    /// Deletes the objects; one that does not exist counts as deleted.
    pub async fn delete_many(&self, paths: &[RemotePath]) -> Result<(), RemoteStorageError> {
        for path in paths {
            let location = self.object_path(path);
            let r = self
                .retry(Operation::Delete, "delete", path.as_str(), || {
                    self.store.delete(&location)
                })
                .await;
            match r {
                Ok(()) | Err(RemoteStorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The wait before retry `attempt`: between half and all of
/// `BASE_BACKOFF * 2^(attempt-1)`, capped at [`MAX_BACKOFF`] (random, so
/// that callers that failed together do not retry together).
fn backoff(attempt: u32) -> Duration {
    let cap = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}
