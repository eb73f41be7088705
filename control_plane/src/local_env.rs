//! The repository directory (`.zenith/`, or `$ZENITH_REPO_DIR`) and its
//! configuration file `config` (TOML).
//!
//! Layout (docs/architecture.md §10):
//!
//! ```text
//! .zenith/
//!   config                         this file: binaries, ports, tenants, branch names
//!   pageserver/                    the pageserver's workdir (pageserver.toml, pid, log, tenants/)
//!   remote_storage/                the object store of layer files and indexes (local backend)
//!   walkeepers/<id>/               each walkeeper's data directory (timelines, pid, log)
//!   pgdatadirs/tenants/<tenant>/<compute>/
//!       compute.toml               what the compute is (branch, mode, port)
//!       compute.log                PostgreSQL's log
//!       pgdata/                    its data directory
//!   monitoring/                    `zenith monitoring start`: prometheus.yml, computes.json,
//!                                  Prometheus' pid, log and data/, exporters/<tenant>-<compute>/
//! ```
//!
//! The file is written atomically (temp file, fsync, rename, fsync dir), so a
//! crash leaves either the old or the new configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zenith_utils::auth::{self, AuthType, Claims, Scope, TokenIssuer};
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::logging::LogFormat;

/// Name of the configuration file in the repository directory.
pub const CONFIG_FILE_NAME: &str = "config";

/// The name every tenant's first branch gets.
pub const DEFAULT_BRANCH_NAME: &str = "main";

/// The repository directory: `$ZENITH_REPO_DIR`, else `.zenith` in the current
/// directory.
pub fn repo_dir() -> PathBuf {
    match std::env::var_os("ZENITH_REPO_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(".zenith"),
    }
}

/// The pageserver's addresses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PageServerConf {
    /// Page service (libpq protocol): computes and basebackups.
    #[serde(default = "default_pg_addr")]
    pub listen_pg_addr: SocketAddr,
    /// HTTP management API.
    #[serde(default = "default_http_addr")]
    pub listen_http_addr: SocketAddr,
}

fn default_pg_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 64000))
}

fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9898))
}

impl Default for PageServerConf {
    fn default() -> Self {
        PageServerConf {
            listen_pg_addr: default_pg_addr(),
            listen_http_addr: default_http_addr(),
        }
    }
}

/// Where computes listen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComputesConf {
    /// The first port tried for a new compute; the next free one is taken.
    #[serde(default = "default_compute_port")]
    pub base_port: u16,
}

fn default_compute_port() -> u16 {
    55432
}

impl Default for ComputesConf {
    fn default() -> Self {
        ComputesConf {
            base_port: default_compute_port(),
        }
    }
}

/// The proxy's addresses and the domain of its server names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConf {
    /// Where clients connect (PostgreSQL protocol, TLS).
    pub listen_pg_addr: SocketAddr,
    /// HTTP: metrics, status, link-session approvals from the console.
    pub listen_http_addr: SocketAddr,
    /// Server names `<endpoint>.<domain>` name endpoints; the certificate
    /// `zenith init` makes is for `*.<domain>`.
    pub domain: String,
}

impl Default for ProxyConf {
    fn default() -> Self {
        ProxyConf {
            listen_pg_addr: SocketAddr::from(([127, 0, 0, 1], 4432)),
            listen_http_addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
            domain: "zenith.localhost".to_string(),
        }
    }
}

/// The console's address and defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConf {
    /// HTTP: the API of the proxy and users, and the link-auth pages.
    pub listen_http_addr: SocketAddr,
    /// An endpoint without connections this long is suspended (its
    /// compute stopped), unless it says otherwise; 0: never.
    pub suspend_timeout_ms: u64,
}

impl Default for ConsoleConf {
    fn default() -> Self {
        ConsoleConf {
            listen_http_addr: SocketAddr::from(([127, 0, 0, 1], 7002)),
            suspend_timeout_ms: 300_000,
        }
    }
}

/// Prometheus, run by `zenith monitoring start` (docs/monitoring.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConf {
    /// Prometheus' web UI and HTTP API.
    pub listen_http_addr: SocketAddr,
    /// How often every target is scraped (e.g. "1s", "500ms").
    pub scrape_interval: String,
}

impl Default for MonitoringConf {
    fn default() -> Self {
        MonitoringConf {
            listen_http_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            scrape_interval: "1s".to_string(),
        }
    }
}

/// One walkeeper of the repository (in `.zenith/config`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalkeeperConf {
    pub id: u64,
    pub listen_pg_addr: SocketAddr,
    pub listen_http_addr: SocketAddr,
}

impl WalkeeperConf {
    /// `n` walkeepers with ids 1..=n on consecutive ports from `base_pg`
    /// and `base_http`.
    pub fn defaults(n: usize, base_pg: u16, base_http: u16) -> Vec<WalkeeperConf> {
        (0..n)
            .map(|i| WalkeeperConf {
                id: i as u64 + 1,
                listen_pg_addr: SocketAddr::from(([127, 0, 0, 1], base_pg + i as u16)),
                listen_http_addr: SocketAddr::from(([127, 0, 0, 1], base_http + i as u16)),
            })
            .collect()
    }
}

/// A branch name of a tenant and the timeline it stands for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchName {
    pub name: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
}

/// The contents of `.zenith/config`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalEnv {
    /// The repository directory (not stored; set when loading).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// PostgreSQL 15 installation: `bin/postgres`, `bin/pg_ctl`, `lib/`, `share/`.
    pub pg_distrib_dir: PathBuf,
    /// Directory of our binaries (`pageserver`, ...).
    pub zenith_distrib_dir: PathBuf,
    /// PostgreSQL major version of the computes.
    #[serde(default = "default_pg_version")]
    pub pg_version: u32,
    /// The tenant commands act on when `--tenant-id` is not given.
    pub default_tenant_id: Option<TenantId>,
    /// `ZenithJWT` (`zenith init --auth`): every daemon checks tokens, and
    /// the CLI signs them with the repository's private key.
    #[serde(default)]
    pub auth_type: AuthType,
    /// How the daemons write their logs: `plain` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub pageserver: PageServerConf,
    #[serde(default)]
    pub computes: ComputesConf,
    #[serde(default)]
    pub proxy: ProxyConf,
    #[serde(default)]
    pub console: ConsoleConf,
    #[serde(default)]
    pub monitoring: MonitoringConf,
    /// The walkeepers of every timeline (none: computes stream to the
    /// pageserver through a replication slot instead).
    #[serde(default, rename = "walkeeper")]
    pub walkeepers: Vec<WalkeeperConf>,
    /// Branch names, per tenant.
    #[serde(default, rename = "branch")]
    pub branches: Vec<BranchName>,
}

fn default_pg_version() -> u32 {
    15
}

/// What `zenith init --config FILE` may set; everything else is derived.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub pg_distrib_dir: Option<PathBuf>,
    pub zenith_distrib_dir: Option<PathBuf>,
    pub pg_version: Option<u32>,
    /// `ZenithJWT` to turn auth on (what `--auth` sets).
    #[serde(default)]
    pub auth_type: AuthType,
    /// The daemons' log lines: `plain` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub pageserver: PageServerConf,
    #[serde(default)]
    pub computes: ComputesConf,
    #[serde(default)]
    pub proxy: ProxyConf,
    #[serde(default)]
    pub console: ConsoleConf,
    #[serde(default)]
    pub monitoring: MonitoringConf,
    /// How many walkeepers to create (default 3; 0: none).
    pub walkeepers: Option<usize>,
    /// Explicit walkeepers (ids and addresses) instead of `walkeepers` on
    /// default ports.
    #[serde(default, rename = "walkeeper")]
    pub walkeeper_list: Vec<WalkeeperConf>,
    /// First WAL-service and HTTP ports of the walkeepers.
    pub walkeeper_base_pg_port: Option<u16>,
    pub walkeeper_base_http_port: Option<u16>,
    /// Extra `pageserver --init -c` settings written into `pageserver.toml`,
    /// e.g. `"tenant_config.checkpoint_distance=1048576"`.
    #[serde(default)]
    pub pageserver_config: Vec<String>,
}

impl InitConfig {
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<InitConfig> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid zenith init configuration: {}",
                origin.display(),
                e.message()
            )
        })
    }
}

/// Where our binaries are by default: next to the running `zenith`.
fn default_zenith_distrib_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the zenith executable")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// Where PostgreSQL is by default: `$POSTGRES_INSTALL_DIR`, else the
/// `tmp_install` of the source tree `zenith` was built in
/// (`<tree>/target/release/zenith` → `<tree>/tmp_install`).
fn default_pg_distrib_dir(zenith_dir: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("POSTGRES_INSTALL_DIR") {
        return PathBuf::from(d);
    }
    let tree = zenith_dir.parent().and_then(Path::parent);
    match tree {
        Some(t) => t.join("tmp_install"),
        None => PathBuf::from("tmp_install"),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p))
    }
}

impl LocalEnv {
    /// A new configuration for `base_dir` from `zenith init`'s settings.
    pub fn new(base_dir: &Path, init: &InitConfig) -> anyhow::Result<LocalEnv> {
        let zenith_distrib_dir = match init.zenith_distrib_dir.clone() {
            Some(d) => d,
            None => default_zenith_distrib_dir()?,
        };
        let pg_distrib_dir = match init.pg_distrib_dir.clone() {
            Some(d) => d,
            None => default_pg_distrib_dir(&zenith_distrib_dir),
        };
        let pg_version = init.pg_version.unwrap_or(15);
        if pg_version != 15 {
            bail!("PostgreSQL {pg_version} is not supported: only 15 is (use --pg-version 15)");
        }
        Ok(LocalEnv {
            base_dir: absolute(base_dir)?,
            pg_distrib_dir: absolute(&pg_distrib_dir)?,
            zenith_distrib_dir: absolute(&zenith_distrib_dir)?,
            pg_version,
            default_tenant_id: None,
            auth_type: init.auth_type,
            log_format: init.log_format,
            pageserver: init.pageserver.clone(),
            computes: init.computes.clone(),
            proxy: init.proxy.clone(),
            console: init.console.clone(),
            monitoring: init.monitoring.clone(),
            walkeepers: if init.walkeeper_list.is_empty() {
                WalkeeperConf::defaults(
                    init.walkeepers.unwrap_or(3),
                    init.walkeeper_base_pg_port.unwrap_or(5454),
                    init.walkeeper_base_http_port.unwrap_or(7676),
                )
            } else {
                init.walkeeper_list.clone()
            },
            branches: Vec::new(),
        })
    }

    /// Load `<base_dir>/config`.
    pub fn load(base_dir: &Path) -> anyhow::Result<LocalEnv> {
        let path = base_dir.join(CONFIG_FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no zenith repository in {}: run `zenith init` first (or set ZENITH_REPO_DIR)",
                base_dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut env: LocalEnv = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "the configuration file {} is corrupted ({}): fix it by hand, or remove {} and run `zenith init` again",
                path.display(),
                e.message().trim(),
                base_dir.display()
            )
        })?;
        env.base_dir = absolute(base_dir)?;
        Ok(env)
    }

    /// Write the configuration atomically.
    pub fn save(&self) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("serializing the configuration")?;
        let path = self.base_dir.join(CONFIG_FILE_NAME);
        let text =
            format!("# The zenith repository's configuration; written by the zenith CLI.\n{text}");
        crashsafe::write_file_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Whether the daemons check tokens.
    pub fn auth_enabled(&self) -> bool {
        self.auth_type == AuthType::ZenithJwt
    }

    pub fn auth_public_key_path(&self) -> PathBuf {
        self.base_dir.join(auth::PUBLIC_KEY_FILE)
    }

    /// The local directory object store the pageserver uploads to.
    pub fn remote_storage_dir(&self) -> PathBuf {
        self.base_dir.join("remote_storage")
    }

    pub fn auth_private_key_path(&self) -> PathBuf {
        self.base_dir.join(auth::PRIVATE_KEY_FILE)
    }

    /// Makes the key pair of `zenith init --auth` (the private key 0600).
    pub fn generate_auth_keys(&self) -> anyhow::Result<()> {
        let (private, public) = auth::generate_key_pair()?;
        crashsafe::write_file_atomic_mode(self.auth_private_key_path(), private.as_bytes(), 0o600)
            .context("writing the auth private key")?;
        crashsafe::write_file_atomic(self.auth_public_key_path(), public.as_bytes())
            .context("writing the auth public key")?;
        Ok(())
    }

    /// A token with `claims`, signed with the repository's private key;
    /// `None` when auth is off.
    pub fn token(&self, claims: &Claims) -> anyhow::Result<Option<String>> {
        if !self.auth_enabled() {
            return Ok(None);
        }
        let issuer = TokenIssuer::from_key_path(&self.auth_private_key_path())?;
        Ok(Some(issuer.issue(claims)?))
    }

    /// The token of a scope (and tenant), for clients and daemons; made
    /// once per process (an RSA signature per HTTP call would cost more
    /// than the call).
    pub fn scoped_token(
        &self,
        scope: Scope,
        tenant_id: Option<TenantId>,
    ) -> anyhow::Result<Option<String>> {
        type Cache = Mutex<HashMap<(PathBuf, Scope, Option<TenantId>), String>>;
        static TOKENS: LazyLock<Cache> = LazyLock::new(Default::default);
        if !self.auth_enabled() {
            return Ok(None);
        }
        let key = (self.base_dir.clone(), scope, tenant_id);
        if let Some(t) = TOKENS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Some(t.clone()));
        }
        let token = self.token(&Claims::new(scope, tenant_id))?;
        if let Some(t) = &token {
            TOKENS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, t.clone());
        }
        Ok(token)
    }

    /// `Authorization` header value for an HTTP call with `scope`.
    pub fn bearer(
        &self,
        scope: Scope,
        tenant_id: Option<TenantId>,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .scoped_token(scope, tenant_id)?
            .map(|t| format!("Bearer {t}")))
    }

    pub fn pageserver_workdir(&self) -> PathBuf {
        self.base_dir.join("pageserver")
    }

    pub fn computes_dir(&self, tenant: TenantId) -> PathBuf {
        self.base_dir
            .join("pgdatadirs")
            .join("tenants")
            .join(tenant.to_string())
    }

    /// Path of a PostgreSQL program (`postgres`, `pg_ctl`, `psql`, ...).
    pub fn pg_bin(&self, name: &str) -> PathBuf {
        self.pg_distrib_dir.join("bin").join(name)
    }

    pub fn pg_lib_dir(&self) -> PathBuf {
        self.pg_distrib_dir.join("lib")
    }

    /// Path of one of our programs.
    pub fn zenith_bin(&self, name: &str) -> PathBuf {
        self.zenith_distrib_dir.join(name)
    }

    /// Fail with "run make" when the binaries are missing.
    pub fn check_binaries(&self) -> anyhow::Result<()> {
        for p in [
            self.pg_bin("postgres"),
            self.pg_bin("pg_ctl"),
            self.pg_bin("psql"),
        ] {
            if !p.is_file() {
                bail!(
                    "PostgreSQL is not built ({} is missing): run `make` (or `make postgres`) in the source tree",
                    p.display()
                );
            }
        }
        for (bin, what) in [
            ("pageserver", "the pageserver"),
            ("walkeeper", "the walkeeper"),
            ("console", "the console"),
            ("proxy", "the proxy"),
        ] {
            if bin == "walkeeper" && self.walkeepers.is_empty() {
                continue;
            }
            let p = self.zenith_bin(bin);
            if !p.is_file() {
                bail!(
                    "{what} is not built ({} is missing): run `make` (or `make rust`) in the source tree",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// The tenant to act on: the given one, else the default.
    pub fn tenant(&self, given: Option<TenantId>) -> anyhow::Result<TenantId> {
        match given.or(self.default_tenant_id) {
            Some(t) => Ok(t),
            None => {
                bail!("no tenant given and the repository has no default tenant: pass --tenant-id")
            }
        }
    }

    /// The timeline a branch name stands for.
    pub fn branch_timeline(&self, tenant: TenantId, name: &str) -> anyhow::Result<TimelineId> {
        match self
            .branches
            .iter()
            .find(|b| b.tenant_id == tenant && b.name == name)
        {
            Some(b) => Ok(b.timeline_id),
            None => {
                let known: Vec<&str> = self
                    .branches
                    .iter()
                    .filter(|b| b.tenant_id == tenant)
                    .map(|b| b.name.as_str())
                    .collect();
                bail!(
                    "unknown branch {name:?} of tenant {tenant} (branches: {}); list them with `zenith branch`",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            }
        }
    }

    /// The branch name of a timeline, if it has one.
    pub fn branch_name(&self, tenant: TenantId, timeline: TimelineId) -> Option<&str> {
        self.branches
            .iter()
            .find(|b| b.tenant_id == tenant && b.timeline_id == timeline)
            .map(|b| b.name.as_str())
    }

    /// Fail unless `name` is a valid branch name the tenant does not have yet.
    pub fn check_new_branch(&self, tenant: TenantId, name: &str) -> anyhow::Result<()> {
        validate_name("branch", name)?;
        if self.branch_timeline(tenant, name).is_ok() {
            bail!("branch {name:?} already exists in tenant {tenant}: pick another name");
        }
        Ok(())
    }

    /// Record a branch name; refused if the tenant already has it.
    pub fn add_branch(
        &mut self,
        tenant: TenantId,
        name: &str,
        timeline: TimelineId,
    ) -> anyhow::Result<()> {
        self.check_new_branch(tenant, name)?;
        self.branches.push(BranchName {
            name: name.to_string(),
            tenant_id: tenant,
            timeline_id: timeline,
        });
        Ok(())
    }
}

/// Branch and compute names become file names and appear in connection
/// strings: letters, digits, `_` and `-` only.
pub fn validate_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("invalid {what} name {name:?}: use 1 to 63 letters, digits, '_' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LocalEnv {
        let mut env = LocalEnv::new(
            Path::new("/tmp/repo"),
            &InitConfig {
                pg_distrib_dir: Some("/pg".into()),
                zenith_distrib_dir: Some("/bin".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let t = TenantId::generate();
        env.default_tenant_id = Some(t);
        env.add_branch(t, "main", TimelineId::generate()).unwrap();
        env
    }

    #[test]
    fn config_round_trips() {
        let env = sample();
        let text = toml::to_string_pretty(&env).unwrap();
        let mut back: LocalEnv = toml::from_str(&text).unwrap();
        back.base_dir = env.base_dir.clone();
        assert_eq!(back, env);
    }

    #[test]
    fn branch_names_are_per_tenant_and_unique() {
        let mut env = sample();
        let t = env.default_tenant_id.unwrap();
        assert!(env.add_branch(t, "main", TimelineId::generate()).is_err());
        let other = TenantId::generate();
        env.add_branch(other, "main", TimelineId::generate())
            .unwrap();
        assert_ne!(
            env.branch_timeline(t, "main").unwrap(),
            env.branch_timeline(other, "main").unwrap()
        );
        let err = env.branch_timeline(t, "dev").unwrap_err().to_string();
        assert!(err.contains("unknown branch \"dev\""), "{err}");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("branch", "dev_1-x").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(validate_name("branch", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn corrupted_config_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE_NAME), "pg_distrib_dir = [").unwrap();
        let err = LocalEnv::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is corrupted"), "{err}");
        let missing = tempfile::tempdir().unwrap();
        let err = LocalEnv::load(&missing.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `zenith init`"), "{err}");
    }
}
