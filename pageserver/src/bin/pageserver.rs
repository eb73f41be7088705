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
use pageserver::config::{PageServerConf, CONFIG_FILE_NAME};
use pageserver::http::{self, ApiState};
use pageserver::tenant::mgr::TenantManager;
use pageserver::wal_sources::WalSources;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};
use zenith_utils::api::pageserver::PID_FILE_NAME;
use zenith_utils::crashsafe;
use zenith_utils::daemon::{self, one_line, PidFile};
use zenith_utils::logging::{self, LogFormat};

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
    // Testing builds: failpoints armed from the FAILPOINTS environment
    // variable (`name=actions;...`) or `PUT /v1/failpoints`, and a panic
    // anywhere ends the process at once, the way a crash would: no shutdown,
    // no flush, exit status 70 (not abort(), which could leave a core file).
    #[cfg(feature = "testing")]
    let _failpoints = {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::exit(70);
        }));
        fail::FailScenario::setup()
    };
    let result = if args.init { init(&args) } else { run(&args) };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pageserver: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `--init`: create the workdir and write the configuration.
fn init(args: &Args) -> anyhow::Result<ExitCode> {
    let config_path = args.workdir.join(CONFIG_FILE_NAME);
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to initialize over an existing pageserver",
            config_path.display()
        );
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut base = PageServerConf::default();
    if let Some(dir) = std::env::var_os("POSTGRES_INSTALL_DIR") {
        base.pg_distrib_dir = PathBuf::from(dir);
    }
    let mut conf = PageServerConf::parse(&base.to_toml(), &args.config_override)?;
    // Relative paths would depend on where the daemon is started from.
    if conf.pg_distrib_dir.is_relative() {
        conf.pg_distrib_dir = cwd.join(&conf.pg_distrib_dir);
    }
    if !conf.pg_distrib_dir.join("bin/initdb").exists() {
        eprintln!(
            "pageserver: warning: no PostgreSQL installation in {} (pg_distrib_dir); \
             timeline bootstrap and WAL redo will fail until it exists",
            conf.pg_distrib_dir.display()
        );
    }
    crashsafe::create_dir_all_durable(&args.workdir)
        .with_context(|| format!("creating {}", args.workdir.display()))?;
    crashsafe::write_file_atomic(&config_path, conf.to_toml().as_bytes())
        .with_context(|| format!("writing {}", config_path.display()))?;
    println!("initialized pageserver in {}", args.workdir.display());
    Ok(ExitCode::SUCCESS)
}

/// Run the daemon until a signal.
fn run(args: &Args) -> anyhow::Result<ExitCode> {
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
    logging::init(args.log_format, "info")?;
    let pid_file = PidFile::acquire(&workdir.join(PID_FILE_NAME), "pageserver")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pageserver")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(workdir, conf));
    // Receivers and flushes are done; do not wait for lingering tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    pid_file.release();
    match result {
        Ok(()) => {
            info!("pageserver stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn serve(workdir: PathBuf, conf: Arc<PageServerConf>) -> anyhow::Result<()> {
    // Installed first, so that a signal during startup is not lost.
    let signal = daemon::shutdown_signal().context("installing signal handlers")?;
    tokio::pin!(signal);

    // Bind first: a port in use fails before anything is loaded or started.
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
        "pageserver started"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(ApiState::new(
        Arc::clone(&mgr),
        Arc::clone(&conf),
        Arc::clone(&wal_sources),
        auth.clone(),
    ));
    let mut http_task = tokio::spawn(http::serve(http_listener, state, shutdown_rx.clone()));
    let mut pg_task = tokio::spawn(pageserver::page_service::serve(
        pg_listener,
        Arc::clone(&mgr),
        Arc::clone(&conf),
        auth,
        shutdown_rx.clone(),
    ));

    // Run until a signal, or until a server fails.
    let mut failure: Option<anyhow::Error> = None;
    let (mut http_done, mut pg_done) = (false, false);
    tokio::select! {
        sig = &mut signal => info!("{sig} received, shutting down"),
        r = &mut http_task => {
            http_done = true;
            failure = Some(server_ended("HTTP server", r));
        }
        r = &mut pg_task => {
            pg_done = true;
            failure = Some(server_ended("page service", r));
        }
    }
    daemon::exit_on_second_signal("pageserver").context("installing signal handlers")?;

    let _ = shutdown_tx.send(true);
    if !http_done {
        if let Err(e) = http_task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            warn!("HTTP server: {e:#}");
        }
    }
    if !pg_done {
        if let Err(e) = pg_task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            warn!("page service: {e:#}");
        }
    }
    tokio::task::spawn_blocking(move || {
        wal_sources.stop_all();
        mgr.shutdown()
    })
    .await?
    .context("flushing timelines at shutdown")?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error for a server task that stopped before shutdown was asked.
fn server_ended(
    what: &str,
    r: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Error {
    let e = match r {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped unexpectedly"),
        Ok(Err(e)) => e.context(format!("{what} failed")),
        Err(e) => anyhow::anyhow!("{what} crashed: {e}"),
    };
    error!("{e:#}; shutting down");
    e
}
