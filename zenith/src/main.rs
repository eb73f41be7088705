//! The `zenith` CLI: a thin layer over `control_plane`.
//!
//! Every command works on the repository in `.zenith/` of the current
//! directory, or in `$ZENITH_REPO_DIR`. Errors are printed as one line
//! saying what went wrong and what to do, with exit status 1.

mod endpoints;
mod monitoring;
mod token;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use control_plane::background_process::Stopped;
use control_plane::branches::{self, PointSpec};
use control_plane::compute::{self, ComputeStatus};
use control_plane::local_env::{self, InitConfig, LocalEnv, DEFAULT_BRANCH_NAME};
use control_plane::pageserver::PageServerNode;
use control_plane::repo;
use control_plane::walkeeper::WalkeeperNode;
use zenith_utils::id::TenantId;

#[derive(Parser)]
#[command(
    name = "zenith",
    version,
    about = "Run a local Zenith cluster: PostgreSQL with storage separated from compute",
    long_about = "Run a local Zenith cluster: PostgreSQL with storage separated from compute.\n\n\
                  The repository lives in .zenith/ of the current directory (or $ZENITH_REPO_DIR).",
    after_help = "Example, a first session:\n  \
                  zenith init\n  \
                  zenith start\n  \
                  zenith pg start main\n  \
                  psql postgresql://postgres@127.0.0.1:55432/postgres\n  \
                  zenith branch dev main\n  \
                  zenith pg start dev_node --branch dev\n  \
                  zenith stop"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a repository: config, pageserver workdir, a default tenant and its `main` branch.
    #[command(
        after_help = "Examples:\n  zenith init\n  zenith init --config my-ports.toml\n\n\
                            The --config file may set pg_distrib_dir, zenith_distrib_dir,\n\
                            [pageserver] listen_pg_addr / listen_http_addr and [computes] base_port."
    )]
    Init {
        /// TOML file with settings for the new repository (ports, binary paths).
        #[arg(long)]
        config: Option<PathBuf>,
        /// PostgreSQL major version of the computes (only 15 is supported).
        #[arg(long, default_value_t = 15)]
        pg_version: u32,
        /// How many walkeepers make the WAL service (0: computes stream WAL
        /// to the pageserver through a replication slot instead).
        #[arg(long, default_value_t = 3)]
        walkeepers: usize,
        /// Turn on JWT auth: make a key pair; every daemon then checks tokens
        /// the CLI signs (see `zenith token`).
        #[arg(long)]
        auth: bool,
        /// The daemons' log lines: plain or json (with tenant and timeline ids).
        #[arg(long, value_name = "FORMAT")]
        log_format: Option<zenith_utils::logging::LogFormat>,
    },
    /// Start every daemon (walkeepers, pageserver, console, proxy); computes start with `zenith pg start` or on a proxy connection.
    #[command(after_help = "Example:\n  zenith start")]
    Start,
    /// Stop monitoring, the proxy, the console, every running compute, then the walkeepers and the pageserver.
    #[command(after_help = "Examples:\n  zenith stop\n  zenith stop --immediate")]
    Stop {
        /// Kill instead of shutting down cleanly (SIGKILL, pg_ctl -m immediate).
        #[arg(long)]
        immediate: bool,
    },
    /// Show each daemon, its pid and ports, and each branch's last LSN and lag.
    #[command(after_help = "Example:\n  zenith status")]
    Status,
    /// Start, stop or restart the pageserver alone.
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith pageserver restart\n  zenith pageserver stop --immediate"
    )]
    Pageserver(PageserverCmd),
    /// Start, stop or restart one walkeeper.
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith walkeeper stop 2 --immediate\n  zenith walkeeper start 2\n  zenith walkeeper restart 1"
    )]
    Walkeeper(WalkeeperCmd),
    /// Create or list tenants.
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith tenant create\n  zenith tenant list"
    )]
    Tenant(TenantCmd),
    /// Without arguments: the tree of branches. With NEW [SOURCE]: create a branch.
    #[command(
        after_help = "Examples:\n  zenith branch\n  zenith branch dev main\n  \
                            zenith branch old main@0/16B3748\n  \
                            zenith branch yesterday main@2026-11-23T12:00:00Z"
    )]
    Branch {
        /// Name of the new branch.
        new: Option<String>,
        /// Where it starts: BRANCH, BRANCH@LSN or BRANCH@TIMESTAMP (ISO 8601). Default: main.
        source: Option<String>,
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
    /// Compute nodes (PostgreSQL servers on a branch).
    #[command(subcommand)]
    Pg(PgCmd),
    /// Start or stop the proxy (`zenith start` starts it too).
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith proxy stop\n  zenith proxy start"
    )]
    Proxy(endpoints::ProxyCmd),
    /// Endpoints: computes the console runs on branches, reached through the proxy by name.
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith endpoint create ep1 --branch main --suspend-timeout 5m\n  \
                      zenith endpoint create ep2 --auth link\n  zenith endpoint list\n  zenith endpoint delete ep2"
    )]
    Endpoint(endpoints::EndpointCmd),
    /// Roles of an endpoint.
    #[command(
        subcommand,
        after_help = "Example:\n  zenith role create ep1 alice --password s3cret"
    )]
    Role(endpoints::RoleCmd),
    /// Prometheus on the cluster's metrics, and a postgres_exporter per running compute.
    #[command(
        subcommand,
        after_help = "Examples:\n  zenith monitoring start\n  zenith monitoring stop"
    )]
    Monitoring(monitoring::MonitoringCmd),
    /// Databases of an endpoint.
    #[command(
        subcommand,
        after_help = "Example:\n  zenith db create ep1 shop --owner alice"
    )]
    Db(endpoints::DbCmd),
    /// Print a token for a repository with auth on (`zenith init --auth`).
    #[command(after_help = "Examples:
  zenith token --scope tenant
  zenith token --scope pageserverapi --expires-in 1h
                        psql \"host=127.0.0.1 port=64000 password=$(zenith token --scope tenant)\"")]
    Token(token::TokenArgs),
}

#[derive(Subcommand)]
enum PageserverCmd {
    /// Start the pageserver.
    Start,
    /// Stop the pageserver.
    Stop {
        #[arg(long)]
        immediate: bool,
    },
    /// Stop, then start the pageserver.
    Restart,
}

#[derive(Subcommand)]
enum WalkeeperCmd {
    /// Start walkeeper ID.
    Start { id: u64 },
    /// Stop walkeeper ID.
    Stop {
        id: u64,
        /// SIGKILL instead of SIGTERM.
        #[arg(long)]
        immediate: bool,
    },
    /// Stop, then start walkeeper ID.
    Restart {
        id: u64,
        #[arg(long)]
        immediate: bool,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant with a `main` branch.
    Create {
        /// The new tenant's id (32 hex digits); generated if not given.
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
    /// List the pageserver's tenants.
    List,
}

#[derive(Args, Clone)]
struct PgTarget {
    /// Name of the compute.
    name: String,
    #[arg(long)]
    tenant_id: Option<TenantId>,
}

#[derive(Args, Clone)]
struct PgCreateArgs {
    #[command(flatten)]
    target: PgTarget,
    /// The branch to run on (default: main).
    #[arg(long)]
    branch: Option<String>,
    /// Read-only at this LSN (X/Y) or time (ISO 8601) instead of read-write at the branch's end.
    #[arg(long)]
    lsn: Option<String>,
    /// Port to listen on (default: the next free one from computes.base_port).
    #[arg(long)]
    port: Option<u16>,
    /// A PostgreSQL setting for this compute, NAME=VALUE (repeatable); kept
    /// with the compute and written at every start.
    #[arg(short = 'c', long = "config", value_name = "NAME=VALUE")]
    settings: Vec<String>,
}

#[derive(Subcommand)]
enum PgCmd {
    /// Create a compute (without starting it).
    #[command(
        after_help = "Examples:\n  zenith pg create main\n  zenith pg create ro --branch main --lsn 0/16B3748"
    )]
    Create(PgCreateArgs),
    /// Start a compute, creating it first if it does not exist.
    #[command(
        after_help = "Examples:\n  zenith pg start main\n  zenith pg start dev_node --branch dev\n  \
                            zenith pg start past --branch main --lsn 2026-11-24T10:00:00Z"
    )]
    Start(PgCreateArgs),
    /// Stop a compute.
    #[command(
        after_help = "Examples:\n  zenith pg stop main\n  zenith pg stop dev_node --destroy"
    )]
    Stop {
        #[command(flatten)]
        target: PgTarget,
        /// Also delete it.
        #[arg(long)]
        destroy: bool,
        /// pg_ctl -m immediate instead of fast.
        #[arg(long)]
        immediate: bool,
    },
    /// List computes: name, branch, LSN, port, status, mode and a psql connection string.
    #[command(after_help = "Example:\n  zenith pg list")]
    List {
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
    /// Stop and delete a compute and its data directory.
    #[command(after_help = "Example:\n  zenith pg destroy dev_node")]
    Destroy {
        #[command(flatten)]
        target: PgTarget,
    },
    /// Write a branch, at its end or an LSN or time, as a stock PostgreSQL 15 data directory
    /// (every relation file, from a full basebackup).
    #[command(
        after_help = "Examples:\n  zenith pg export ./main_copy\n  zenith pg export ./before --branch main --lsn 0/16B3748"
    )]
    Export {
        /// The directory to create (must not exist, or be empty).
        dir: std::path::PathBuf,
        /// The branch (default: main).
        #[arg(long)]
        branch: Option<String>,
        /// At this LSN (X/Y) or time (ISO 8601) instead of the branch's end.
        #[arg(long)]
        lsn: Option<String>,
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
}

fn main() {
    // `zenith status | head`: end quietly when the reader goes away, as
    // other command-line tools do, instead of panicking on a broken pipe.
    // SAFETY: no other thread runs yet; SIG_DFL is async-signal-safe.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("zenith: {e:#}");
        std::process::exit(1);
    }
}

fn load_env() -> anyhow::Result<LocalEnv> {
    LocalEnv::load(&local_env::repo_dir())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init {
            config,
            pg_version,
            walkeepers,
            auth,
            log_format,
        } => {
            let mut init = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    InitConfig::parse(&text, path)?
                }
                None => InitConfig::default(),
            };
            init.pg_version = Some(pg_version);
            if auth {
                init.auth_type = zenith_utils::auth::AuthType::ZenithJwt;
            }
            if let Some(f) = log_format {
                init.log_format = f;
            }
            if init.walkeepers.is_none() {
                init.walkeepers = Some(walkeepers);
            }
            let env = repo::init(&local_env::repo_dir(), init)?;
            let tenant = env.tenant(None)?;
            println!(
                "Initialized a zenith repository in {}\n  default tenant {tenant}, branch {DEFAULT_BRANCH_NAME} (timeline {})\nNext: zenith start",
                env.base_dir.display(),
                env.branch_timeline(tenant, DEFAULT_BRANCH_NAME)?
            );
        }
        Cmd::Start => {
            let env = load_env()?;
            for line in repo::start_all(&env)? {
                println!("{line}");
            }
        }
        Cmd::Walkeeper(cmd) => {
            let env = load_env()?;
            let (id, stop, start, immediate) = match cmd {
                WalkeeperCmd::Start { id } => (id, false, true, false),
                WalkeeperCmd::Stop { id, immediate } => (id, true, false, immediate),
                WalkeeperCmd::Restart { id, immediate } => (id, true, true, immediate),
            };
            let wk = WalkeeperNode::find(&env, id)?;
            if stop {
                match wk.stop(immediate)? {
                    Stopped::Stopped(pid) => println!("walkeeper {id} (pid {pid}) stopped"),
                    Stopped::Killed(pid) => println!("walkeeper {id} (pid {pid}) killed"),
                    Stopped::NotRunning => println!("walkeeper {id} was not running"),
                }
            }
            if start {
                let pid = wk.start()?;
                println!(
                    "walkeeper {id} started (pid {pid}), WAL service on {}, log {}",
                    wk.conf.listen_pg_addr,
                    wk.log_file().display()
                );
            }
        }
        Cmd::Stop { immediate } => {
            let env = load_env()?;
            for line in repo::stop_all(&env, immediate)? {
                println!("{line}");
            }
        }
        Cmd::Status => status(&load_env()?)?,
        Cmd::Proxy(cmd) => endpoints::proxy(&load_env()?, cmd)?,
        Cmd::Endpoint(cmd) => endpoints::endpoint(&load_env()?, cmd)?,
        Cmd::Token(args) => token::token(&load_env()?, args)?,
        Cmd::Role(cmd) => endpoints::role(&load_env()?, cmd)?,
        Cmd::Db(cmd) => endpoints::db(&load_env()?, cmd)?,
        Cmd::Monitoring(cmd) => monitoring::monitoring(&load_env()?, cmd)?,
        Cmd::Pageserver(cmd) => {
            let env = load_env()?;
            let ps = PageServerNode::new(&env);
            let stop = |immediate| -> anyhow::Result<()> {
                match ps.stop(immediate)? {
                    Stopped::Stopped(pid) => println!("pageserver (pid {pid}) stopped"),
                    Stopped::Killed(pid) => {
                        println!("pageserver (pid {pid}) killed after the timeout")
                    }
                    Stopped::NotRunning => println!("pageserver was not running"),
                }
                Ok(())
            };
            match cmd {
                PageserverCmd::Start => {
                    let pid = ps.start()?;
                    println!("pageserver started (pid {pid})");
                }
                PageserverCmd::Stop { immediate } => stop(immediate)?,
                PageserverCmd::Restart => {
                    stop(false)?;
                    let pid = ps.start()?;
                    println!("pageserver started (pid {pid})");
                }
            }
        }
        Cmd::Tenant(TenantCmd::Create { tenant_id }) => {
            let mut env = load_env()?;
            let (tenant, timeline) =
                PageServerNode::new(&env).tenant_create_with_timeline(tenant_id)?;
            env.add_branch(tenant, DEFAULT_BRANCH_NAME, timeline)?;
            env.save()?;
            println!(
                "tenant {tenant} created with branch {DEFAULT_BRANCH_NAME} (timeline {timeline})"
            );
        }
        Cmd::Tenant(TenantCmd::List) => {
            let env = load_env()?;
            for t in PageServerNode::new(&env).tenant_list()? {
                let default = if Some(t) == env.default_tenant_id {
                    " (default)"
                } else {
                    ""
                };
                println!("{t}{default}");
            }
        }
        Cmd::Branch {
            new,
            source,
            tenant_id,
        } => {
            let mut env = load_env()?;
            let tenant = env.tenant(tenant_id)?;
            match new {
                None => {
                    if source.is_some() {
                        bail!("give the new branch's name first: zenith branch NEW SOURCE");
                    }
                    let timelines = PageServerNode::new(&env).timeline_list(tenant)?;
                    print!("{}", branches::tree(&env, &timelines, tenant));
                }
                Some(name) => {
                    let source = source.unwrap_or_else(|| DEFAULT_BRANCH_NAME.to_string());
                    let started = Instant::now();
                    let info = branches::create_branch(&mut env, tenant, &name, &source)?;
                    println!(
                        "branch {name} created from {source} at {} (timeline {}) in {} ms",
                        info.ancestor_lsn.map(|l| l.to_string()).unwrap_or_default(),
                        info.timeline_id,
                        started.elapsed().as_millis()
                    );
                }
            }
        }
        Cmd::Pg(cmd) => pg(cmd)?,
    }
    Ok(())
}

fn pg(cmd: PgCmd) -> anyhow::Result<()> {
    let env = load_env()?;
    let ps = PageServerNode::new(&env);
    match cmd {
        PgCmd::Create(a) => {
            let c = create_compute(&env, &ps, &a)?;
            println!(
                "compute {} created ({}) on branch {}; start it with `zenith pg start {}`",
                c.spec.name,
                c.mode(),
                c.spec.branch,
                c.spec.name
            );
        }
        PgCmd::Start(a) => {
            let tenant = env.tenant(a.target.tenant_id)?;
            let started = Instant::now();
            let mut created = false;
            let c = match compute::find(&env, tenant, &a.target.name) {
                Ok(c) => {
                    if let Some(b) = &a.branch {
                        if *b != c.spec.branch {
                            bail!(
                                "compute {} runs on branch {}, not {b}: omit --branch, or create another compute",
                                c.spec.name, c.spec.branch
                            );
                        }
                    }
                    if a.lsn.is_some() || a.port.is_some() || !a.settings.is_empty() {
                        bail!("compute {} already exists: --lsn, --port and --config only apply when creating one (destroy it first to change them)", c.spec.name);
                    }
                    c
                }
                Err(_) => {
                    created = true;
                    create_compute(&env, &ps, &a)?
                }
            };
            let timings = match compute_change(repo::start_compute(&c, &ps)) {
                Ok(t) => t,
                Err(e) => {
                    // Do not leave behind a compute this command made and could not start.
                    if created {
                        let _ = compute_change(repo::destroy_compute(&c, &ps));
                    }
                    return Err(e);
                }
            };
            println!(
                "compute {} started on branch {} ({}) in {} ms{}\n  psql {}",
                c.spec.name,
                c.spec.branch,
                c.mode(),
                started.elapsed().as_millis(),
                if c.uses_walkeepers() {
                    format!(" ({timings})")
                } else {
                    String::new()
                },
                c.connstr()
            );
        }
        PgCmd::Stop {
            target,
            destroy,
            immediate,
        } => {
            let tenant = env.tenant(target.tenant_id)?;
            let c = compute::find(&env, tenant, &target.name)?;
            if destroy {
                compute_change(repo::destroy_compute(&c, &ps))?;
                println!("compute {} stopped and destroyed", c.spec.name);
            } else {
                compute_change(repo::stop_compute(&c, immediate))?;
                println!("compute {} stopped", c.spec.name);
            }
        }
        PgCmd::Export {
            dir,
            branch,
            lsn,
            tenant_id,
        } => {
            let tenant = env.tenant(tenant_id)?;
            let branch = branch.unwrap_or_else(|| DEFAULT_BRANCH_NAME.to_string());
            let lsn = match lsn {
                None => None,
                Some(s) => match branches::parse_point(&s)? {
                    PointSpec::Latest => None,
                    PointSpec::Lsn(l) => Some(l),
                    p @ PointSpec::Timestamp(_) => {
                        branches::resolve_point(&env, &ps, tenant, &branch, &p)?
                    }
                },
            };
            let lsn = compute::export(&env, &ps, tenant, &branch, lsn, &dir)?;
            println!(
                "branch {branch} at {lsn} exported to {}: a stock PostgreSQL 15 starts there (pg_ctl -D {} start)",
                dir.display(),
                dir.display()
            );
        }
        PgCmd::Destroy { target } => {
            let tenant = env.tenant(target.tenant_id)?;
            let c = compute::find(&env, tenant, &target.name)?;
            compute_change(repo::destroy_compute(&c, &ps))?;
            println!("compute {} destroyed", c.spec.name);
        }
        PgCmd::List { tenant_id } => {
            let tenant = env.tenant(tenant_id)?;
            println!(
                "{:<16} {:<12} {:<12} {:<6} {:<8} {:<48} CONNECTION",
                "NAME", "BRANCH", "LSN", "PORT", "STATUS", "MODE"
            );
            for c in compute::list(&env)? {
                if c.spec.tenant_id != tenant {
                    continue;
                }
                let status = c.status();
                let lsn = match c.spec.read_only_lsn {
                    Some(l) => l.to_string(),
                    None if status == ComputeStatus::Running => c
                        .flush_lsn()
                        .map(|l| l.to_string())
                        .unwrap_or_else(|_| "?".into()),
                    None => "-".into(),
                };
                println!(
                    "{:<16} {:<12} {:<12} {:<6} {:<8} {:<48} psql {}",
                    c.spec.name,
                    c.spec.branch,
                    lsn,
                    c.spec.port,
                    status,
                    c.mode(),
                    c.connstr()
                );
            }
        }
    }
    Ok(())
}

fn create_compute<'a>(
    env: &'a LocalEnv,
    ps: &PageServerNode<'_>,
    a: &PgCreateArgs,
) -> anyhow::Result<compute::ComputeNode<'a>> {
    let tenant = env.tenant(a.target.tenant_id)?;
    let branch = a
        .branch
        .clone()
        .unwrap_or_else(|| DEFAULT_BRANCH_NAME.to_string());
    let lsn = match &a.lsn {
        None => None,
        Some(s) => match branches::parse_point(s)? {
            PointSpec::Latest => None,
            PointSpec::Lsn(l) => Some(l),
            p @ PointSpec::Timestamp(_) => branches::resolve_point(env, ps, tenant, &branch, &p)?,
        },
    };
    compute::create(
        env,
        ps,
        tenant,
        &a.target.name,
        &branch,
        lsn,
        a.port,
        &a.settings,
    )
}

/// How a compute start, stop or destroy went, after a warning on stderr if
/// the monitoring sync that followed it failed (the start or stop stands).
fn compute_change<T>(change: repo::ComputeChange<T>) -> anyhow::Result<T> {
    if let Some(e) = change.monitoring_error() {
        eprintln!("warning: updating the monitoring of computes: {e:#}");
    }
    change.result
}

fn status(env: &LocalEnv) -> anyhow::Result<()> {
    let ps = PageServerNode::new(env);
    let pid = ps.pid()?;
    match pid {
        Some(pid) => println!(
            "pageserver: running (pid {pid}), page service {}, HTTP {}, log {}",
            env.pageserver.listen_pg_addr,
            env.pageserver.listen_http_addr,
            ps.log_file().display()
        ),
        None => {
            println!("pageserver: stopped (start it with `zenith start`)");
        }
    }
    let walkeepers = WalkeeperNode::all(env);
    for wk in &walkeepers {
        match wk.pid()? {
            Some(pid) => println!(
                "walkeeper {}: running (pid {pid}), WAL service {}, HTTP {}, log {}",
                wk.conf.id,
                wk.conf.listen_pg_addr,
                wk.conf.listen_http_addr,
                wk.log_file().display()
            ),
            None => println!(
                "walkeeper {}: stopped (start it with `zenith walkeeper start {}`)",
                wk.conf.id, wk.conf.id
            ),
        }
    }
    endpoints::status(env)?;
    monitoring::status(env)?;
    let computes = compute::list(env)?;
    let running = pid.is_some();
    let mut tenants: Vec<TenantId> = env.branches.iter().map(|b| b.tenant_id).collect();
    tenants.sort();
    tenants.dedup();
    for tenant in tenants {
        let default = if Some(tenant) == env.default_tenant_id {
            " (default)"
        } else {
            ""
        };
        println!("tenant {tenant}{default}");
        let infos = if running {
            ps.timeline_list(tenant).ok()
        } else {
            None
        };
        for b in env.branches.iter().filter(|b| b.tenant_id == tenant) {
            let info = infos
                .as_ref()
                .and_then(|v| v.iter().find(|t| t.timeline_id == b.timeline_id));
            let writer = computes.iter().find(|c| {
                c.spec.timeline_id == b.timeline_id
                    && !c.read_only()
                    && c.status() == ComputeStatus::Running
            });
            let last = info
                .map(|i| i.last_record_lsn.to_string())
                .unwrap_or_else(|| "?".into());
            let lag = match (info, writer) {
                (Some(i), Some(w)) => match w.flush_lsn() {
                    Ok(f) => format!(
                        "lag {} bytes behind compute {}",
                        u64::from(f).saturating_sub(u64::from(i.last_record_lsn)),
                        w.spec.name
                    ),
                    Err(_) => "lag ?".into(),
                },
                _ => "lag - (no running read-write compute)".into(),
            };
            let broken = match info.and_then(|i| i.broken_reason.as_deref()) {
                Some(reason) => format!("  BROKEN: {reason}"),
                None => String::new(),
            };
            println!(
                "  branch {:<16} timeline {}  last_record_lsn {last}  {lag}{broken}",
                b.name, b.timeline_id
            );
            for wk in &walkeepers {
                if let Ok(Some(st)) = wk.timeline_status(tenant, b.timeline_id) {
                    println!(
                        "    walkeeper {}: term {} epoch {} flush {} commit {}{}",
                        wk.conf.id,
                        st.term,
                        st.epoch,
                        st.flush_lsn,
                        st.commit_lsn,
                        st.proposer
                            .map(|p| format!(", proposer {p}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    for c in &computes {
        println!(
            "compute {}: {} on port {}, branch {}, {}",
            c.spec.name,
            c.status(),
            c.spec.port,
            c.spec.branch,
            c.mode()
        );
    }
    Ok(())
}
