//! `[remote_storage]`: where the objects live and how hard to try.
//!
//! ```toml
//! [remote_storage]
//! local_path = "/home/me/.zenith/remote_storage"   # a local directory, or
//! # bucket = "zenith"                               # an S3-compatible bucket
//! # prefix = "pageserver-1"                         # optional key prefix in it
//! # region = "eu-central-1"
//! # endpoint = "http://127.0.0.1:5000"              # any S3-compatible service
//! # access_key_id = "..."                           # else AWS_ACCESS_KEY_ID
//! # secret_access_key = "..."                       # else AWS_SECRET_ACCESS_KEY
//! max_concurrency = 64                              # requests in flight
//! timeout = "60s"                                   # one attempt
//! max_retries = 5                                   # attempts after the first
//! ```
//!
//! S3 credentials not given here come from the standard AWS environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`); the secret is never
//! printed (`Debug` redacts it).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RemoteStorageError;

/// The `[remote_storage]` section, as written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStorageConfig {
    /// A local directory as the object store (the laptop default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<PathBuf>,
    /// An S3 bucket as the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (no leading or trailing `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible service (plain `http://` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Requests in flight at once, over every caller.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// The limit of one attempt of one request.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Attempts after the first one, for errors that may pass (5xx,
    /// timeouts, connection failures), with exponential backoff and jitter.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_max_concurrency() -> usize {
    64
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_retries() -> u32 {
    5
}

/// The backend a configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStorageKind {
    LocalFs {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        prefix: Option<String>,
        region: Option<String>,
        endpoint: Option<String>,
    },
}

impl RemoteStorageConfig {
    /// A local directory as the object store, with the default limits.
    pub fn local(path: impl Into<PathBuf>) -> RemoteStorageConfig {
        RemoteStorageConfig {
            local_path: Some(path.into()),
            bucket: None,
            prefix: None,
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            max_concurrency: default_max_concurrency(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
        }
    }

    /// An S3 bucket as the object store, with the default limits.
    pub fn s3(bucket: impl Into<String>) -> RemoteStorageConfig {
        RemoteStorageConfig {
            local_path: None,
            bucket: Some(bucket.into()),
            ..RemoteStorageConfig::local("")
        }
    }

    /// Which backend this is; an error names what is inconsistent.
    pub fn kind(&self) -> Result<RemoteStorageKind, RemoteStorageError> {
        let bad = |why: &str| Err(RemoteStorageError::Config(why.to_string()));
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1");
        }
        if self.timeout.is_zero() {
            return bad("timeout must be above 0");
        }
        match (&self.local_path, &self.bucket) {
            (Some(_), Some(_)) => bad("set either local_path or bucket, not both"),
            (None, None) => bad("set local_path (a directory) or bucket (S3)"),
            (Some(path), None) => {
                let s3_only = [
                    ("prefix", self.prefix.is_some()),
                    ("region", self.region.is_some()),
                    ("endpoint", self.endpoint.is_some()),
                    ("access_key_id", self.access_key_id.is_some()),
                    ("secret_access_key", self.secret_access_key.is_some()),
                ];
                if let Some((name, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return Err(RemoteStorageError::Config(format!(
                        "{name} is an S3 setting; local_path takes none"
                    )));
                }
                if path.as_os_str().is_empty() {
                    return bad("local_path is empty");
                }
                Ok(RemoteStorageKind::LocalFs { path: path.clone() })
            }
            (None, Some(bucket)) => {
                if bucket.is_empty() {
                    return bad("bucket is empty");
                }
                if self.access_key_id.is_some() != self.secret_access_key.is_some() {
                    return bad("access_key_id and secret_access_key go together");
                }
                let prefix = match self.prefix.as_deref() {
                    None | Some("") => None,
                    Some(p) if p.starts_with('/') || p.ends_with('/') || p.contains("//") => {
                        return bad("prefix must not start or end with '/' nor hold '//'");
                    }
                    Some(p) => Some(p.to_string()),
                };
                Ok(RemoteStorageKind::S3 {
                    bucket: bucket.clone(),
                    prefix,
                    region: self.region.clone(),
                    endpoint: self.endpoint.clone(),
                })
            }
        }
    }
}

impl fmt::Debug for RemoteStorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStorageConfig")
            .field("local_path", &self.local_path)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// `timeout = "60s"` (humantime), as the daemons' other durations.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RemoteStorageConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn local_and_s3_sections_parse_with_defaults() {
        let c = parse("local_path = '/tmp/rs'").unwrap();
        assert_eq!(
            c.kind().unwrap(),
            RemoteStorageKind::LocalFs {
                path: "/tmp/rs".into()
            }
        );
        assert_eq!(c.max_concurrency, 64);
        assert_eq!(c.timeout, Duration::from_secs(60));
        let c = parse(
            "bucket = 'b'\nprefix = 'ps/1'\nregion = 'us-east-1'\n\
             endpoint = 'http://127.0.0.1:5000'\ntimeout = '5s'\nmax_retries = 2",
        )
        .unwrap();
        assert_eq!(
            c.kind().unwrap(),
            RemoteStorageKind::S3 {
                bucket: "b".into(),
                prefix: Some("ps/1".into()),
                region: Some("us-east-1".into()),
                endpoint: Some("http://127.0.0.1:5000".into()),
            }
        );
        assert_eq!((c.timeout, c.max_retries), (Duration::from_secs(5), 2));
        // Round trip.
        assert_eq!(parse(&toml::to_string(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn inconsistent_sections_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "set local_path"),
            ("local_path = '/x'\nbucket = 'b'", "not both"),
            ("local_path = '/x'\nregion = 'r'", "region is an S3 setting"),
            ("bucket = ''", "bucket is empty"),
            ("bucket = 'b'\naccess_key_id = 'k'", "go together"),
            ("bucket = 'b'\nprefix = '/p'", "prefix must not"),
            ("local_path = '/x'\nmax_concurrency = 0", "max_concurrency"),
            ("local_path = '/x'\ntimeout = '0s'", "timeout"),
        ] {
            let err = parse(text).unwrap().kind().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        assert!(parse("bucket = 'b'\nsecret = 'x'").is_err(), "unknown key");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let mut c = RemoteStorageConfig::s3("b");
        c.access_key_id = Some("AKIDEXAMPLE".into());
        c.secret_access_key = Some("wJalrXUtnFEMI".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
