//! `pageserver.toml`: the pageserver's configuration.
//!
//! Every setting has a default; the file and `-c key=value` command-line
//! overrides (TOML values, applied after the file) may change any of them.
//! Durations are written like `"10s"`, `"500ms"`, `"1h"`; sizes in bytes.
//! Unknown keys and invalid values are errors that name the key.
//!
//! ```toml
//! listen_pg_addr = "127.0.0.1:64000"
//! listen_http_addr = "127.0.0.1:9898"
//! pg_distrib_dir = "/path/to/tmp_install"
//! wait_lsn_timeout = "60s"
//! wal_redo_timeout = "60s"
//! page_cache_size = 8192          # pages
//! max_open_layer_files = 256      # layer files (fds + indexes) kept open
//! pg_max_connections = 512        # page service connections served at once
//! pg_startup_timeout = "60s"      # from accept to the first ReadyForQuery
//! pg_idle_timeout = "10m"         # a session idle between queries is closed
//! pg_send_timeout = "60s"         # a client that reads nothing this long is dropped
//! auth_type = "Trust"             # or "ZenithJWT": tokens on every connection and request
//! auth_validation_public_key_path = "auth_public_key.pem"
//! import_pgdata_dirs = ["/srv/import"]     # unset: any dir with Trust, none with ZenithJWT
//! wal_source_allowed_hosts = ["127.0.0.1"] # unset: any host with Trust, none with ZenithJWT
//!
//! [tenant_config]                 # defaults for every tenant
//! checkpoint_distance = 268435456 # bytes of WAL in the in-memory layer
//! checkpoint_timeout = "10m"
//! compaction_threshold = 10       # L0 delta layers before compaction
//! image_creation_threshold = 3    # deltas above an image before a new image
//! gc_horizon = 67108864           # bytes of WAL history kept
//! gc_period = "100s"
//! pitr_interval = "7d"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use zenith_utils::api::pageserver::CONFIG_FILE_NAME;
use zenith_utils::auth::{AuthError, AuthType, JwtAuth};
pub use zenith_utils::daemon::ConfigError;
use zenith_utils::daemon::{parse_config, read_config_text};

/// Default `max_open_layer_files`: layer files the reader cache keeps open.
pub const DEFAULT_MAX_OPEN_LAYER_FILES: usize = 256;

/// Serde adapter for durations as human-readable strings.
mod human_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration ({e}); write e.g. \"10s\""))
        })
    }
}

/// Per-tenant storage settings (defaults for every tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConf {
    /// Freeze and flush the in-memory layer after this many bytes of WAL.
    pub checkpoint_distance: u64,
    /// ... or after it has been open this long.
    #[serde(with = "human_duration")]
    pub checkpoint_timeout: Duration,
    /// Number of L0 delta layers that triggers compaction.
    pub compaction_threshold: usize,
    /// Delta layers above the last image of a range that trigger a new image.
    pub image_creation_threshold: usize,
    /// Bytes of WAL history below the last record kept readable.
    pub gc_horizon: u64,
    /// How often GC runs (0s: never automatically).
    #[serde(with = "human_duration")]
    pub gc_period: Duration,
    /// History kept by age, in addition to `gc_horizon`.
    #[serde(with = "human_duration")]
    pub pitr_interval: Duration,
}

impl Default for TenantConf {
    fn default() -> TenantConf {
        TenantConf {
            checkpoint_distance: 256 * 1024 * 1024,
            checkpoint_timeout: Duration::from_secs(600),
            compaction_threshold: 10,
            image_creation_threshold: 3,
            gc_horizon: 64 * 1024 * 1024,
            gc_period: Duration::from_secs(100),
            pitr_interval: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The pageserver's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageServerConf {
    /// Address of the page service (PostgreSQL protocol).
    pub listen_pg_addr: String,
    /// Address of the HTTP management API.
    pub listen_http_addr: String,
    /// PostgreSQL installation (bin/, lib/) used for initdb and WAL redo.
    pub pg_distrib_dir: PathBuf,
    /// How long a request waits for WAL to arrive.
    #[serde(with = "human_duration")]
    pub wait_lsn_timeout: Duration,
    /// How long one WAL redo request may take.
    #[serde(with = "human_duration")]
    pub wal_redo_timeout: Duration,
    /// Reconstructed pages kept in memory.
    pub page_cache_size: usize,
    /// Layer files kept open, with their index in memory, across all
    /// timelines (the least recently used is closed to open another).
    pub max_open_layer_files: usize,
    /// Page service connections served at once; one more is refused with
    /// SQLSTATE 53300.
    pub pg_max_connections: usize,
    /// Time a page service client has from connecting to being ready.
    #[serde(with = "human_duration")]
    pub pg_startup_timeout: Duration,
    /// A page service session idle between queries this long is closed
    /// (pagestream and basebackup streams are not idle).
    #[serde(with = "human_duration")]
    pub pg_idle_timeout: Duration,
    /// A page service client that accepts no data for this long (a
    /// basebackup it stopped reading) is disconnected.
    #[serde(with = "human_duration")]
    pub pg_send_timeout: Duration,
    /// `"Trust"` (anyone who reaches the ports) or `"ZenithJWT"` (every
    /// page service connection and API request carries a token).
    pub auth_type: AuthType,
    /// The public key (PEM) that checks tokens; needed with `ZenithJWT`.
    /// Relative to the working directory.
    pub auth_validation_public_key_path: Option<PathBuf>,
    /// Directories `import_pgdata` may read below. Unset: any directory
    /// with `Trust`, none with `ZenithJWT`.
    pub import_pgdata_dirs: Option<Vec<PathBuf>>,
    /// Hosts a timeline's WAL source may name. Unset: any host with
    /// `Trust`, none with `ZenithJWT`.
    pub wal_source_allowed_hosts: Option<Vec<String>>,
    /// Object storage for layer files and indexes (docs/remote_storage.md);
    /// unset: layers live on local disk only.
    pub remote_storage: Option<zenith_utils::remote_storage::RemoteStorageConfig>,
    /// Defaults for every tenant.
    pub tenant_config: TenantConf,
}

impl Default for PageServerConf {
    fn default() -> PageServerConf {
        PageServerConf {
            listen_pg_addr: "127.0.0.1:64000".into(),
            listen_http_addr: "127.0.0.1:9898".into(),
            pg_distrib_dir: PathBuf::from("tmp_install"),
            wait_lsn_timeout: Duration::from_secs(60),
            wal_redo_timeout: Duration::from_secs(60),
            page_cache_size: 8192,
            max_open_layer_files: DEFAULT_MAX_OPEN_LAYER_FILES,
            pg_max_connections: 512,
            pg_startup_timeout: Duration::from_secs(60),
            pg_idle_timeout: Duration::from_secs(600),
            pg_send_timeout: Duration::from_secs(60),
            auth_type: AuthType::Trust,
            auth_validation_public_key_path: None,
            import_pgdata_dirs: None,
            wal_source_allowed_hosts: None,
            remote_storage: None,
            tenant_config: TenantConf::default(),
        }
    }
}

impl PageServerConf {
    /// Parse a configuration file's text, apply `key=value` overrides, validate.
    pub fn parse(text: &str, overrides: &[String]) -> Result<PageServerConf, ConfigError> {
        let conf: PageServerConf = parse_config(text, overrides)?;
        conf.validate()?;
        Ok(conf)
    }

    /// Read `<workdir>/pageserver.toml` (missing file = defaults) and apply overrides.
    pub fn load(workdir: &Path, overrides: &[String]) -> Result<PageServerConf, ConfigError> {
        Self::parse(
            &read_config_text(&workdir.join(CONFIG_FILE_NAME))?,
            overrides,
        )
    }

    /// `pageserver --init`: creates `workdir` and writes its configuration:
    /// the defaults (`POSTGRES_INSTALL_DIR` as `pg_distrib_dir` if set),
    /// then `overrides`; a relative `pg_distrib_dir` is made absolute from
    /// the current directory. Refuses to write over an existing one.
    pub fn init_workdir(workdir: &Path, overrides: &[String]) -> anyhow::Result<PageServerConf> {
        use anyhow::Context;
        let config_path = workdir.join(CONFIG_FILE_NAME);
        if config_path.exists() {
            anyhow::bail!(
                "{} already exists; refusing to initialize over an existing pageserver",
                config_path.display()
            );
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut base = PageServerConf::default();
        if let Some(dir) = std::env::var_os("POSTGRES_INSTALL_DIR") {
            base.pg_distrib_dir = PathBuf::from(dir);
        }
        let mut conf = PageServerConf::parse(&base.to_toml(), overrides)?;
        // Relative paths would depend on where the daemon is started from.
        if conf.pg_distrib_dir.is_relative() {
            conf.pg_distrib_dir = cwd.join(&conf.pg_distrib_dir);
        }
        zenith_utils::crashsafe::create_dir_all_durable(workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        zenith_utils::crashsafe::write_file_atomic(&config_path, conf.to_toml().as_bytes())
            .with_context(|| format!("writing {}", config_path.display()))?;
        Ok(conf)
    }

    /// The configuration as TOML (what `--init` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The token checker when auth is on, with a relative key path taken
    /// from `workdir`.
    pub fn jwt_auth(&self, workdir: &Path) -> Result<Option<JwtAuth>, AuthError> {
        let key = self.auth_validation_public_key_path.as_ref();
        JwtAuth::for_auth_type(self.auth_type, key.map(|p| workdir.join(p)).as_deref())
    }

    /// Whether `import_pgdata` may read `dir` (made absolute and without
    /// `..` or symlinks first, so that it cannot climb out).
    pub fn check_import_dir(&self, dir: &Path) -> Result<PathBuf, String> {
        let allowed = match (&self.import_pgdata_dirs, self.auth_type) {
            // Anything goes; the import itself reports a missing directory.
            (None, AuthType::Trust) => return Ok(dir.to_path_buf()),
            (None, AuthType::ZenithJwt) => {
                return Err("import_pgdata is disabled: list the directories it may read in the pageserver's import_pgdata_dirs".into())
            }
            (Some(allowed), _) => allowed,
        };
        let real = dir
            .canonicalize()
            .map_err(|e| format!("import_pgdata {}: {e}", dir.display()))?;
        if allowed
            .iter()
            .filter_map(|a| a.canonicalize().ok())
            .any(|a| real.starts_with(a))
        {
            Ok(real)
        } else {
            Err(format!(
                "import_pgdata {} is outside the directories allowed by import_pgdata_dirs",
                real.display()
            ))
        }
    }

    /// Whether a WAL source may connect to `host`.
    pub fn check_wal_source_host(&self, host: &str) -> Result<(), String> {
        match &self.wal_source_allowed_hosts {
            None if self.auth_type == AuthType::Trust => Ok(()),
            None => Err("WAL sources are disabled: list the hosts they may name in the pageserver's wal_source_allowed_hosts".into()),
            Some(allowed) if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) => Ok(()),
            Some(_) => Err(format!(
                "WAL source host {host:?} is not in wal_source_allowed_hosts"
            )),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let addr = |key: &'static str, v: &str| {
            v.parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|e| ConfigError::Invalid {
                    key,
                    reason: format!("{v:?} is not host:port ({e})"),
                })
        };
        addr("listen_pg_addr", &self.listen_pg_addr)?;
        addr("listen_http_addr", &self.listen_http_addr)?;
        if let Some(rs) = &self.remote_storage {
            rs.kind().map_err(|e| ConfigError::Invalid {
                key: "remote_storage",
                reason: e.to_string(),
            })?;
        }
        let positive = |key: &'static str, ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be {what}"),
                })
            }
        };
        positive(
            "wait_lsn_timeout",
            !self.wait_lsn_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "wal_redo_timeout",
            !self.wal_redo_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "page_cache_size",
            self.page_cache_size >= 16,
            "at least 16 pages",
        )?;
        positive(
            "max_open_layer_files",
            self.max_open_layer_files >= 8,
            "at least 8",
        )?;
        positive(
            "pg_max_connections",
            self.pg_max_connections >= 1,
            "at least 1",
        )?;
        positive(
            "pg_startup_timeout",
            !self.pg_startup_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "pg_idle_timeout",
            !self.pg_idle_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "pg_send_timeout",
            !self.pg_send_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "auth_validation_public_key_path",
            self.auth_type == AuthType::Trust || self.auth_validation_public_key_path.is_some(),
            "set when auth_type is ZenithJWT",
        )?;
        let t = &self.tenant_config;
        positive(
            "tenant_config.checkpoint_distance",
            t.checkpoint_distance >= 8192,
            "at least 8192 bytes",
        )?;
        positive(
            "tenant_config.checkpoint_timeout",
            !t.checkpoint_timeout.is_zero(),
            "more than 0s",
        )?;
        positive(
            "tenant_config.compaction_threshold",
            t.compaction_threshold >= 2,
            "at least 2",
        )?;
        positive(
            "tenant_config.image_creation_threshold",
            t.image_creation_threshold >= 1,
            "at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            PageServerConf::parse("", &[]).unwrap(),
            PageServerConf::default()
        );
    }

    #[test]
    fn file_and_overrides() {
        let text = r#"
            listen_pg_addr = "127.0.0.1:15000"
            wait_lsn_timeout = "5s"
            [tenant_config]
            checkpoint_distance = 1048576
            gc_period = "0s"
        "#;
        let overrides = vec![
            "wal_redo_timeout=\"250ms\"".to_string(),
            "tenant_config.compaction_threshold=4".to_string(),
            "listen_http_addr='127.0.0.1:15001'".to_string(),
        ];
        let c = PageServerConf::parse(text, &overrides).unwrap();
        assert_eq!(c.listen_pg_addr, "127.0.0.1:15000");
        assert_eq!(c.listen_http_addr, "127.0.0.1:15001");
        assert_eq!(c.wait_lsn_timeout, Duration::from_secs(5));
        assert_eq!(c.wal_redo_timeout, Duration::from_millis(250));
        assert_eq!(c.tenant_config.checkpoint_distance, 1048576);
        assert_eq!(c.tenant_config.compaction_threshold, 4);
        assert_eq!(c.tenant_config.gc_period, Duration::ZERO);
        assert_eq!(c.tenant_config.image_creation_threshold, 3);
    }

    #[test]
    fn written_config_reads_back() {
        let mut c = PageServerConf::default();
        c.tenant_config.pitr_interval = Duration::from_secs(90);
        let back = PageServerConf::parse(&c.to_toml(), &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn auth_settings_parse_and_gate_dangerous_requests() {
        let e = PageServerConf::parse("auth_type = \"ZenithJWT\"", &[]).unwrap_err();
        assert!(
            e.to_string().contains("auth_validation_public_key_path"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("pgdata");
        std::fs::create_dir(&inside).unwrap();
        let text = format!(
            "auth_type = \"ZenithJWT\"\nauth_validation_public_key_path = \"k.pem\"\n\
             import_pgdata_dirs = [{:?}]\nwal_source_allowed_hosts = [\"127.0.0.1\"]",
            dir.path()
        );
        let c = PageServerConf::parse(&text, &[]).unwrap();
        assert_eq!(PageServerConf::parse(&c.to_toml(), &[]).unwrap(), c);
        assert!(c.check_import_dir(&inside).is_ok());
        assert!(c.check_import_dir(&inside.join("..").join("..")).is_err());
        assert!(c.check_import_dir(Path::new("/")).is_err());
        assert!(c.check_wal_source_host("127.0.0.1").is_ok());
        assert!(c.check_wal_source_host("10.0.0.1").is_err());
        let closed = PageServerConf {
            import_pgdata_dirs: None,
            wal_source_allowed_hosts: None,
            ..c
        };
        assert!(closed.check_import_dir(&inside).is_err());
        assert!(closed.check_wal_source_host("127.0.0.1").is_err());
        let open = PageServerConf::default();
        assert!(open.check_import_dir(&inside).is_ok());
        assert!(open.check_wal_source_host("10.0.0.1").is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("unknown_key = 1", "unknown_key"),
            ("wait_lsn_timeout = \"soon\"", "soon"),
            ("listen_pg_addr = \"nowhere\"", "listen_pg_addr"),
            ("page_cache_size = 1", "page_cache_size"),
            (
                "[tenant_config]\ncheckpoint_distance = 10",
                "checkpoint_distance",
            ),
            ("[tenant_config]\nbogus = 1", "bogus"),
        ];
        for (text, needle) in cases {
            let e = PageServerConf::parse(text, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = PageServerConf::parse("", &["novalue".to_string()]).unwrap_err();
        assert!(matches!(e, ConfigError::BadOverride(_)));
    }
}
