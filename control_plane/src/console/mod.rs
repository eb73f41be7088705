//! The console: the control-plane service behind the proxy (docs/proxy.md).
//!
//! An **endpoint** is a compute on a branch, reached through the proxy by
//! its name; the console keeps, in `console.json` of its workdir, each
//! endpoint's tenant, branch, auth method, suspend timeout and roles (name
//! and SCRAM secret; the keys too, for link auth, so the file is 0600).
//! Roles and databases are created in the endpoint's compute as well: they
//! live in the branch's catalog.
//!
//! - The proxy asks for a role's secret and to **wake** an endpoint: the
//!   compute is started if it is suspended, and the answer comes once it
//!   accepts connections.
//! - **Scale to zero**: every `POLL` the console counts the client
//!   connections of each running endpoint's compute; one that had none for
//!   its suspend timeout (since the last connection or wake-up) is stopped.
//! - **Link auth**: the proxy sends the client a URL of the console's
//!   page; approving there (optionally creating the role and database)
//!   sends the proxy the compute's address and the role's keys.
//!
//! Compute starts and stops are blocking (they run pg_ctl): they run on
//! the blocking pool, one at a time per endpoint.

pub mod api;
pub mod page;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{info, warn};
use zenith_utils::api::console::{
    valid_endpoint_name, ComputeAddress, DatabaseInfo, EndpointAuth, EndpointCreateRequest,
    EndpointInfo, EndpointState, LinkApproval, LinkSession, RoleSecret,
};
use zenith_utils::postgres_client::{Config, Connection};
use zenith_utils::scram::{ScramKeys, ScramSecret};

use crate::compute::{self, ComputeStatus, COMPUTE_USER};
use crate::local_env::LocalEnv;
use crate::pageserver::PageServerNode;
use crate::repo;
pub use store::{Endpoint, Role, Store};

/// The shortest suspend timeout (a shorter one is raised to it).
pub const MIN_SUSPEND_MS: u64 = 1000;

/// How often the console looks for idle endpoints.
pub const POLL: Duration = Duration::from_millis(250);

/// An error with the HTTP status it deserves.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

type Result<T> = std::result::Result<T, ConsoleError>;

/// What runs for an endpoint besides its stored definition.
#[derive(Default)]
struct Activity {
    /// The last wake-up or the last poll that saw a client.
    last_active: Option<Instant>,
}

pub struct Console {
    repo: PathBuf,
    default_suspend_ms: u64,
    proxy_http: String,
    /// `Authorization` for the proxy's API, with auth on.
    proxy_bearer: Option<String>,
    store: Mutex<Store>,
    /// One start/stop at a time per endpoint.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Activity>>>>,
}

/// Role and database names: letters, digits, `_` and `-`, at most 63.
fn check_ident(what: &str, name: &str) -> Result<()> {
    crate::local_env::validate_name(what, name).map_err(|e| ConsoleError::BadRequest(e.to_string()))
}

/// A client for the proxy's API: errors are answers, 10 s at most.
fn proxy_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Console {
    pub fn new(
        repo: PathBuf,
        workdir: PathBuf,
        default_suspend_ms: u64,
        proxy_http: String,
        proxy_bearer: Option<String>,
    ) -> anyhow::Result<Console> {
        let store = Store::load(workdir)?;
        Ok(Console {
            repo,
            default_suspend_ms,
            proxy_http,
            proxy_bearer,
            store: Mutex::new(store),
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn env(&self) -> anyhow::Result<LocalEnv> {
        LocalEnv::load(&self.repo)
    }

    pub fn endpoint(&self, name: &str) -> Result<Endpoint> {
        self.store()
            .get(name)
            .cloned()
            .ok_or_else(|| ConsoleError::NotFound(format!("endpoint \"{name}\" does not exist")))
    }

    fn lock_of(&self, name: &str) -> Arc<tokio::sync::Mutex<Activity>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// The compute's status and port (blocking).
    fn compute_status(&self, ep: &Endpoint) -> anyhow::Result<(ComputeStatus, u16)> {
        let env = self.env()?;
        let c = compute::find(&env, ep.tenant_id, &ep.name)?;
        Ok((c.status(), c.spec.port))
    }

    pub async fn info(self: &Arc<Self>, ep: &Endpoint) -> Result<EndpointInfo> {
        let (me, e) = (Arc::clone(self), ep.clone());
        let (status, port) = blocking(move || me.compute_status(&e)).await?;
        Ok(EndpointInfo {
            name: ep.name.clone(),
            tenant_id: ep.tenant_id,
            branch: ep.branch.clone(),
            port,
            auth: ep.auth,
            suspend_timeout_ms: ep.suspend_timeout_ms,
            state: match status {
                ComputeStatus::Running => EndpointState::Running,
                ComputeStatus::Stopped => EndpointState::Suspended,
            },
            roles: ep.roles.iter().map(|r| r.name.clone()).collect(),
        })
    }

    pub async fn list(self: &Arc<Self>) -> Result<Vec<EndpointInfo>> {
        let eps: Vec<Endpoint> = self.store().all().to_vec();
        let mut out = Vec::new();
        for ep in &eps {
            out.push(self.info(ep).await?);
        }
        Ok(out)
    }

    pub async fn create(self: &Arc<Self>, req: EndpointCreateRequest) -> Result<EndpointInfo> {
        if !valid_endpoint_name(&req.name) {
            return Err(ConsoleError::BadRequest(format!(
                "{:?} is not an endpoint name: use lowercase letters, digits and '-' (a DNS label, at most 63)",
                req.name
            )));
        }
        if self.store().get(&req.name).is_some() {
            return Err(ConsoleError::Conflict(format!(
                "endpoint \"{}\" already exists",
                req.name
            )));
        }
        let me = Arc::clone(self);
        let r = req.clone();
        let tenant = blocking(move || -> anyhow::Result<_> {
            let env = me.env()?;
            let tenant = env.tenant(r.tenant_id)?;
            let ps = PageServerNode::new(&env);
            let mut c = compute::create(&env, &ps, tenant, &r.name, &r.branch, None, None, &[])?;
            c.spec.password_auth = true;
            c.save_spec()?;
            Ok(tenant)
        })
        .await
        .map_err(|e| ConsoleError::BadRequest(format!("{e:#}")))?;
        let ep = Endpoint {
            name: req.name.clone(),
            tenant_id: tenant,
            branch: req.branch.clone(),
            auth: req.auth,
            // A client gets the address at its wake-up and connects within
            // milliseconds; a shorter timeout could stop the compute first.
            suspend_timeout_ms: match req.suspend_timeout_ms.unwrap_or(self.default_suspend_ms) {
                0 => 0,
                ms => ms.max(MIN_SUSPEND_MS),
            },
            roles: Vec::new(),
        };
        self.store().insert(ep.clone())?;
        info!(endpoint = %ep.name, branch = %ep.branch, "endpoint created");
        self.info(&ep).await
    }

    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let ep = self.endpoint(name)?;
        let lock = self.lock_of(name);
        let _g = lock.lock().await;
        let me = Arc::clone(self);
        blocking(move || -> anyhow::Result<()> {
            let env = me.env()?;
            let ps = PageServerNode::new(&env);
            if let Ok(c) = compute::find(&env, ep.tenant_id, &ep.name) {
                compute_change(repo::destroy_compute(&c, &ps))?;
            }
            Ok(())
        })
        .await?;
        self.store().remove(name)?;
        info!(endpoint = %name, "endpoint deleted");
        Ok(())
    }

    /// Starts the endpoint's compute if it is stopped; its address.
    pub async fn wake(self: &Arc<Self>, name: &str) -> Result<ComputeAddress> {
        let ep = self.endpoint(name)?;
        let lock = self.lock_of(name);
        let mut activity = lock.lock().await;
        let me = Arc::clone(self);
        let (port, started_ms) = blocking(move || -> anyhow::Result<(u16, u64)> {
            let env = me.env()?;
            let c = compute::find(&env, ep.tenant_id, &ep.name)?;
            if c.status() == ComputeStatus::Running {
                return Ok((c.spec.port, 0));
            }
            let t = Instant::now();
            let ps = PageServerNode::new(&env);
            compute_change(repo::start_compute(&c, &ps))?;
            Ok((c.spec.port, (t.elapsed().as_millis() as u64).max(1)))
        })
        .await?;
        activity.last_active = Some(Instant::now());
        if started_ms > 0 {
            info!(endpoint = %name, ms = started_ms, "endpoint woken");
        }
        Ok(ComputeAddress {
            host: "127.0.0.1".into(),
            port,
            started_ms,
        })
    }

    /// Runs SQL statements as the superuser in the endpoint's compute
    /// (woken first) and returns the last one's rows.
    async fn admin_sql(
        self: &Arc<Self>,
        name: &str,
        dbname: &str,
        sql: &[String],
    ) -> Result<Vec<Vec<Option<String>>>> {
        let addr = self.wake(name).await?;
        let config = Config::new(addr.host, addr.port, COMPUTE_USER).dbname(dbname);
        let mut conn = Connection::connect(&config)
            .await
            .with_context(|| format!("connecting to endpoint {name:?}"))?;
        let mut rows = Vec::new();
        for q in sql {
            rows = conn
                .simple_query(q)
                .await
                .map_err(|e| match e.server_error() {
                    Some(err) => ConsoleError::BadRequest(err.message.clone()),
                    None => ConsoleError::Internal(anyhow::anyhow!("{e}")),
                })?;
        }
        let _ = conn.terminate().await;
        Ok(rows.iter().map(|r| r.values.clone()).collect())
    }

    pub async fn create_role(
        self: &Arc<Self>,
        endpoint: &str,
        name: &str,
        password: &str,
    ) -> Result<()> {
        check_ident("role", name)?;
        if name == COMPUTE_USER {
            return Err(ConsoleError::BadRequest(format!(
                "\"{COMPUTE_USER}\" is the compute's superuser; pick another role name"
            )));
        }
        let ep = self.endpoint(endpoint)?;
        if ep.roles.iter().any(|r| r.name == name) {
            return Err(ConsoleError::Conflict(format!(
                "role \"{name}\" already exists in endpoint \"{endpoint}\""
            )));
        }
        let secret = ScramSecret::from_password(password);
        let keys = ScramKeys::from_password(password, &secret);
        // The branch may have the role already (made on its parent before
        // the branch was): then it gets this password.
        let exists = !self
            .admin_sql(
                endpoint,
                "postgres",
                &[format!(
                    "SELECT 1 FROM pg_roles WHERE rolname = {}",
                    quote_literal(name)
                )],
            )
            .await?
            .is_empty();
        let sql = format!(
            "{} ROLE {} LOGIN PASSWORD {}",
            if exists { "ALTER" } else { "CREATE" },
            quote_ident(name),
            quote_literal(&secret.to_string())
        );
        self.admin_sql(endpoint, "postgres", &[sql]).await?;
        self.store().add_role(
            endpoint,
            Role {
                name: name.to_string(),
                secret: secret.to_string(),
                client_key: hex::encode(keys.client_key),
                server_key: hex::encode(keys.server_key),
            },
        )?;
        info!(endpoint, role = name, "role created");
        Ok(())
    }

    pub async fn delete_role(self: &Arc<Self>, endpoint: &str, name: &str) -> Result<()> {
        let ep = self.endpoint(endpoint)?;
        if !ep.roles.iter().any(|r| r.name == name) {
            return Err(ConsoleError::NotFound(format!(
                "role \"{name}\" does not exist in endpoint \"{endpoint}\""
            )));
        }
        self.admin_sql(
            endpoint,
            "postgres",
            &[format!("DROP ROLE IF EXISTS {}", quote_ident(name))],
        )
        .await?;
        self.store().remove_role(endpoint, name)?;
        Ok(())
    }

    pub async fn create_database(
        self: &Arc<Self>,
        endpoint: &str,
        db: &DatabaseInfo,
    ) -> Result<()> {
        check_ident("database", &db.name)?;
        check_ident("role", &db.owner)?;
        let sql = format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(&db.name),
            quote_ident(&db.owner)
        );
        self.admin_sql(endpoint, "postgres", &[sql]).await?;
        info!(endpoint, database = %db.name, owner = %db.owner, "database created");
        Ok(())
    }

    pub async fn delete_database(self: &Arc<Self>, endpoint: &str, name: &str) -> Result<()> {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", quote_ident(name));
        self.admin_sql(endpoint, "postgres", &[sql]).await?;
        Ok(())
    }

    pub async fn databases(self: &Arc<Self>, endpoint: &str) -> Result<Vec<DatabaseInfo>> {
        let rows = self
            .admin_sql(
                endpoint,
                "postgres",
                &["SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datallowconn ORDER BY 1".to_string()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DatabaseInfo {
                name: r.first().cloned().flatten().unwrap_or_default(),
                owner: r.get(1).cloned().flatten().unwrap_or_default(),
            })
            .collect())
    }

    /// What the proxy needs to authenticate `role` of `endpoint`.
    pub fn role_secret(&self, endpoint: &str, role: &str) -> Result<RoleSecret> {
        let ep = self.endpoint(endpoint)?;
        if ep.auth == EndpointAuth::Link {
            return Ok(RoleSecret {
                auth: EndpointAuth::Link,
                secret: None,
            });
        }
        let r = ep.roles.iter().find(|r| r.name == role).ok_or_else(|| {
            ConsoleError::NotFound(format!(
                "role \"{role}\" does not exist in endpoint \"{endpoint}\""
            ))
        })?;
        Ok(RoleSecret {
            auth: ep.auth,
            secret: Some(r.secret.clone()),
        })
    }

    /// What the link-auth client waiting under `session` asked for, from
    /// the proxy (not from the page's URL, which the client could edit).
    pub async fn link_session(&self, session: &str) -> Result<LinkSession> {
        if session.len() != 32 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConsoleError::NotFound(format!(
                "{session:?} is not a link session id"
            )));
        }
        let url = format!("{}/v1/link_sessions/{}", self.proxy_http, session);
        let bearer = self.proxy_bearer.clone();
        let answer = blocking(move || -> anyhow::Result<Option<LinkSession>> {
            let req = crate::with_bearer(proxy_agent().get(&url), bearer.as_deref());
            let mut resp = req.call().context("asking the proxy")?;
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            if !resp.status().is_success() {
                return Ok(None);
            }
            Ok(Some(
                serde_json::from_str(&text).context("the proxy's answer")?,
            ))
        })
        .await?;
        answer.ok_or_else(|| {
            ConsoleError::NotFound(
                "no client waits for this session (it timed out or disconnected)".into(),
            )
        })
    }

    /// Approves a link-auth session: wakes the endpoint, creates the role
    /// (with a password only the console knows) and the database if asked
    /// and missing, and sends the proxy where and as whom to log in.
    pub async fn approve_link(self: &Arc<Self>, session: &str, create: bool) -> Result<()> {
        let s = self.link_session(session).await?;
        let (endpoint, user, dbname) = (s.endpoint.as_str(), s.user.as_str(), s.dbname.as_str());
        check_ident("role", user)?;
        check_ident("database", dbname)?;
        let ep = self.endpoint(endpoint)?;
        if !ep.roles.iter().any(|r| r.name == user) {
            if !create {
                return Err(ConsoleError::NotFound(format!(
                    "role \"{user}\" does not exist in endpoint \"{endpoint}\": tick \"create\" to make it"
                )));
            }
            let password = hex::encode(rand::random::<[u8; 24]>());
            self.create_role(endpoint, user, &password).await?;
        }
        if create {
            let exists = self
                .admin_sql(
                    endpoint,
                    "postgres",
                    &[format!(
                        "SELECT 1 FROM pg_database WHERE datname = {}",
                        quote_literal(dbname)
                    )],
                )
                .await?;
            if exists.is_empty() {
                self.create_database(
                    endpoint,
                    &DatabaseInfo {
                        name: dbname.into(),
                        owner: user.into(),
                    },
                )
                .await?;
            }
        }
        let ep = self.endpoint(endpoint)?;
        let role = ep
            .roles
            .iter()
            .find(|r| r.name == user)
            .ok_or_else(|| ConsoleError::NotFound(format!("role \"{user}\" vanished")))?;
        let addr = self.wake(endpoint).await?;
        let approval = LinkApproval {
            host: addr.host,
            port: addr.port,
            user: user.to_string(),
            dbname: dbname.to_string(),
            client_key: role.client_key.clone(),
            server_key: role.server_key.clone(),
        };
        let url = format!("{}/v1/link_sessions/{}", self.proxy_http, session);
        let bearer = self.proxy_bearer.clone();
        blocking(move || -> anyhow::Result<()> {
            let req = crate::with_bearer(proxy_agent().post(&url), bearer.as_deref());
            let mut resp = req.send_json(&approval).context("telling the proxy")?;
            if !resp.status().is_success() {
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                bail!("the proxy refused the approval: {text}");
            }
            Ok(())
        })
        .await
        .map_err(|e| ConsoleError::NotFound(format!("{e:#}")))?;
        info!(endpoint, user, session, "link session approved");
        Ok(())
    }

    /// One pass of scale to zero: stops computes idle for their timeout.
    pub async fn suspend_idle(self: &Arc<Self>) {
        let eps: Vec<Endpoint> = self.store().all().to_vec();
        for ep in eps {
            if ep.suspend_timeout_ms == 0 {
                continue;
            }
            let lock = self.lock_of(&ep.name);
            let Ok(mut activity) = lock.try_lock() else {
                continue; // starting or stopping right now
            };
            let me = Arc::clone(self);
            let e = ep.clone();
            let Ok(Ok((status, port))) =
                tokio::task::spawn_blocking(move || me.compute_status(&e)).await
            else {
                continue;
            };
            if status != ComputeStatus::Running {
                activity.last_active = None;
                continue;
            }
            let clients = match client_connections(port).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(endpoint = %ep.name, "cannot count connections: {e:#}");
                    continue;
                }
            };
            let now = Instant::now();
            if clients > 0 || activity.last_active.is_none() {
                activity.last_active = Some(now);
                continue;
            }
            let idle = activity
                .last_active
                .map(|t| now.duration_since(t))
                .unwrap_or_default();
            if idle < Duration::from_millis(ep.suspend_timeout_ms) {
                continue;
            }
            let me = Arc::clone(self);
            let e = ep.clone();
            let res = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let env = me.env()?;
                let c = compute::find(&env, e.tenant_id, &e.name)?;
                compute_change(repo::stop_compute(&c, false))
            })
            .await;
            match res {
                Ok(Ok(())) => {
                    activity.last_active = None;
                    info!(endpoint = %ep.name, idle_ms = idle.as_millis() as u64, "endpoint suspended");
                }
                Ok(Err(e)) => warn!(endpoint = %ep.name, "cannot suspend: {e:#}"),
                Err(e) => warn!(endpoint = %ep.name, "cannot suspend: {e}"),
            }
        }
    }
}

/// Client sessions of the compute on `port`, ours excluded.
async fn client_connections(port: u16) -> anyhow::Result<u64> {
    let config = Config::new("127.0.0.1", port, COMPUTE_USER).dbname("postgres");
    let mut conn = Connection::connect(&config).await?;
    let rows = conn
        .simple_query(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .await?;
    let _ = conn.terminate().await;
    let n = rows
        .first()
        .and_then(|r| r.get(0))
        .and_then(|s| s.parse().ok())
        .context("unexpected answer counting connections")?;
    Ok(n)
}

/// How a compute start, stop or destroy went; a failed monitoring sync
/// after it is logged as a warning (the start or stop stands).
fn compute_change<T>(change: repo::ComputeChange<T>) -> anyhow::Result<T> {
    if let Some(e) = change.monitoring_error() {
        warn!("updating the monitoring of computes: {e:#}");
    }
    change.result
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("task failed: {e}")))?
        .map_err(ConsoleError::Internal)
}
