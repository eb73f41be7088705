//! The pageserver daemon.
//!
//! ```text
//! pageserver -D <workdir> --init [-c key=value]...   write <workdir>/pageserver.toml and exit
//! pageserver -D <workdir> [-c key=value]...          run
//! ```
//!
//! Running: load the configuration, take the pid file (`pageserver.pid`,
//! locked with `flock` for the life of the process, so a second instance on
//! the same workdir refuses to start and a stale file from a dead process is
//! simply taken over), bind the HTTP and page-service listeners, load the
//! tenants, restart the WAL receivers of timelines with a stored WAL source,
//! and serve. SIGTERM or SIGINT: stop accepting, let in-flight HTTP requests
//! finish, stop the WAL receivers, flush every timeline, remove the pid file
//! and exit 0. A second signal during shutdown exits at once with status 1.
//!
//! Fatal errors are printed as one line on stderr and exit with status 1.
//! See docs/pageserver.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use pageserver::config::PageServerConf;
use pageserver::http::{self, ApiState};
use pageserver::tenant_mgr::TenantManager;
use pageserver::wal_sources::WalSources;
use tracing::info;
use zenith_utils::api::pageserver::PID_FILE_NAME;
use zenith_utils::daemon::{self, bind, Daemon, Servers};
use zenith_utils::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "pageserver",
    version,
    about = "Zenith pageserver: stores WAL-derived page versions and serves GetPage@LSN"
)]
struct Args {
    /// Working directory: configuration, pid file and tenants.
    #[arg(short = 'D', long = "workdir", value_name = "DIR")]
    workdir: PathBuf,
    /// Create the working directory and its pageserver.toml, then exit.
    #[arg(long)]
    init: bool,
    /// Configuration override `key=value` (a TOML value), applied after the file.
    /// With --init the overrides are written to the file.
    #[arg(short = 'c', long = "config-override", value_name = "KEY=VALUE")]
    config_override: Vec<String>,
    /// `plain` or `json` log lines (JSON: one object per line, with the
    /// span fields such as tenant_id and timeline_id).
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    daemon::main("pageserver", || {
        if args.init {
            init(&args)
        } else {
            run(&args)
        }
    })
}

/// `--init`: create the workdir and write the configuration.
fn init(args: &Args) -> anyhow::Result<()> {
    let conf = PageServerConf::init_workdir(&args.workdir, &args.config_override)?;
    if !conf.pg_distrib_dir.join("bin/initdb").exists() {
        eprintln!(
            "pageserver: warning: no PostgreSQL installation in {} (pg_distrib_dir); \
             timeline bootstrap and WAL redo will fail until it exists",
            conf.pg_distrib_dir.display()
        );
    }
    println!("initialized pageserver in {}", args.workdir.display());
    Ok(())
}

/// Run the daemon until a signal.
fn run(args: &Args) -> anyhow::Result<()> {
    if !args.workdir.is_dir() {
        bail!(
            "working directory {} does not exist; create it with --init",
            args.workdir.display()
        );
    }
    let workdir = args
        .workdir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.workdir.display()))?;
    let mut conf = PageServerConf::load(&workdir, &args.config_override)?;
    if conf.pg_distrib_dir.is_relative() {
        conf.pg_distrib_dir = workdir.join(&conf.pg_distrib_dir);
    }
    let conf = Arc::new(conf);
    pageserver::page_cache::init(conf.page_cache_size);
    pageserver::tenant::storage_layer::reader_cache::init(conf.max_open_layer_files);
    Daemon::new("pageserver", workdir.join(PID_FILE_NAME))
        .log_format(args.log_format)
        .testing(cfg!(feature = "testing"))
        .run(|servers| start(servers, workdir, conf))
}

async fn start(
    mut servers: Servers,
    workdir: PathBuf,
    conf: Arc<PageServerConf>,
) -> anyhow::Result<Servers> {
    let auth = conf
        .jwt_auth(&workdir)
        .context("loading the auth key")?
        .map(Arc::new);
    let http_listener = bind("HTTP", &conf.listen_http_addr).await?;
    let pg_listener = bind("the page service", &conf.listen_pg_addr).await?;

    let mgr = {
        let (workdir, conf) = (workdir.clone(), Arc::clone(&conf));
        tokio::task::spawn_blocking(move || TenantManager::load(&workdir, conf))
            .await?
            .context("loading tenants")?
    };
    let mgr = Arc::new(mgr);
    let wal_sources = Arc::new(WalSources::new());
    let started = {
        let (ws, mgr) = (Arc::clone(&wal_sources), Arc::clone(&mgr));
        tokio::task::spawn_blocking(move || ws.start_all(&mgr)).await??
    };
    info!(
        workdir = %workdir.display(),
        tenants = mgr.list().len(),
        wal_receivers = started,
        http = %conf.listen_http_addr,
        pg = %conf.listen_pg_addr,
        "pageserver loaded"
    );

    let state = Arc::new(ApiState::new(
        Arc::clone(&mgr),
        Arc::clone(&conf),
        Arc::clone(&wal_sources),
        auth.clone(),
    ));
    servers.serve(
        "HTTP server",
        http::serve(http_listener, state, servers.shutdown_rx()),
    );
    servers.serve(
        "page service",
        pageserver::page_service::serve(
            pg_listener,
            Arc::clone(&mgr),
            Arc::clone(&conf),
            auth,
            servers.shutdown_rx(),
        ),
    );
    // After the servers drained: stop the WAL receivers, flush every timeline.
    servers.on_shutdown(async move {
        tokio::task::spawn_blocking(move || {
            wal_sources.stop_all();
            mgr.shutdown()
        })
        .await?
        .context("flushing timelines at shutdown")
    });
    Ok(servers)
}
