//! The walkeeper daemon.
//!
//! ```text
//! walkeeper -D <datadir> --id N --listen-pg ADDR --listen-http ADDR
//! ```
//!
//! Takes the pid file (`walkeeper.pid`, flock-ed for the life of the
//! process), records its id in `walkeeper.id` on first start (a later start
//! with another id is refused: the id names this WAL to proposers), loads
//! every timeline under the data directory (finding each one's end of WAL),
//! and serves the WAL service and HTTP until SIGTERM/SIGINT. A background
//! task removes WAL every walkeeper and the pageserver have.
//!
//! Fatal errors are one line on stderr and exit status 1. See
//! docs/walkeeper.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, info_span, warn};
use walkeeper::http::{self, HttpState};
use walkeeper::timeline::Timelines;
use walkeeper::wal_service::WalServiceHandler;
use zenith_utils::auth::{AuthType, JwtAuth};
use zenith_utils::crashsafe;
use zenith_utils::daemon::{self, one_line, PidFile};
use zenith_utils::logging::{self, LogFormat};
use zenith_utils::postgres_backend::{self, BackendConf};

pub const PID_FILE_NAME: &str = "walkeeper.pid";
const ID_FILE_NAME: &str = "walkeeper.id";
const WAL_REMOVAL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "walkeeper",
    version,
    about = "Zenith walkeeper: stores compute WAL under a quorum protocol and serves it to the pageserver"
)]
struct Args {
    /// Data directory: timelines, id and pid file. Created if missing.
    #[arg(short = 'D', long = "datadir", value_name = "DIR")]
    datadir: PathBuf,
    /// This walkeeper's id (unique among a timeline's walkeepers).
    #[arg(long)]
    id: u64,
    /// Address of the WAL service (PostgreSQL protocol).
    #[arg(
        long = "listen-pg",
        value_name = "ADDR",
        default_value = "127.0.0.1:5454"
    )]
    listen_pg: String,
    /// Address of the HTTP API.
    #[arg(
        long = "listen-http",
        value_name = "ADDR",
        default_value = "127.0.0.1:7676"
    )]
    listen_http: String,
    /// `Trust`, or `ZenithJWT`: every connection and API request carries a
    /// token (scope walkeeperdata).
    #[arg(long = "auth-type", value_name = "TYPE", default_value = "Trust")]
    auth_type: AuthType,
    /// The public key (PEM) that checks tokens; needed with ZenithJWT.
    #[arg(long = "auth-validation-public-key-path", value_name = "FILE")]
    auth_validation_public_key_path: Option<PathBuf>,
    /// `plain` or `json` log lines.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walkeeper: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// The id recorded in the data directory, written on first start.
fn check_id(datadir: &Path, id: u64) -> anyhow::Result<()> {
    let path = datadir.join(ID_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let have: u64 = s
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold an id", path.display()))?;
            if have != id {
                bail!(
                    "{} belongs to walkeeper {have}, not {id}; start it with --id {have}",
                    datadir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crashsafe::write_file_atomic(&path, format!("{id}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    crashsafe::create_dir_all_durable(&args.datadir)
        .with_context(|| format!("creating {}", args.datadir.display()))?;
    let datadir = args
        .datadir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.datadir.display()))?;
    logging::init(args.log_format, "info")?;
    let pid_file = PidFile::acquire(&datadir.join(PID_FILE_NAME), "walkeeper")?;
    check_id(&datadir, args.id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("walkeeper")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(datadir, args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    pid_file.release();
    if result.is_ok() {
        info!("walkeeper stopped");
    }
    result
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn serve(datadir: PathBuf, args: &Args) -> anyhow::Result<()> {
    let signal = daemon::shutdown_signal().context("installing signal handlers")?;
    tokio::pin!(signal);
    let auth = match (args.auth_type, &args.auth_validation_public_key_path) {
        (AuthType::Trust, _) => None,
        (AuthType::ZenithJwt, Some(path)) => Some(Arc::new(
            JwtAuth::from_key_path(path).context("loading the auth key")?,
        )),
        (AuthType::ZenithJwt, None) => {
            bail!("--auth-type ZenithJWT needs --auth-validation-public-key-path")
        }
    };
    let http_listener = bind("HTTP", &args.listen_http).await?;
    let pg_listener = bind("the WAL service", &args.listen_pg).await?;

    let node_id = args.id;
    let timelines = {
        let dir = datadir.clone();
        tokio::task::spawn_blocking(move || Timelines::load(&dir, node_id))
            .await?
            .context("loading timelines")?
    };
    let timelines = Arc::new(timelines);
    info!(
        id = node_id,
        datadir = %datadir.display(),
        timelines = timelines.all().len(),
        pg = %args.listen_pg,
        http = %args.listen_http,
        "walkeeper started"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(HttpState {
        node_id,
        timelines: Arc::clone(&timelines),
    });
    let mut http_task = tokio::spawn(zenith_utils::http::serve(
        http_listener,
        Arc::new(http::router(auth.clone())),
        state,
        shutdown_rx.clone(),
    ));
    let conf = Arc::new(BackendConf::new("walkeeper"));
    let tls = Arc::clone(&timelines);
    let mut pg_task = tokio::spawn(postgres_backend::serve(
        pg_listener,
        conf,
        move |peer| {
            let span = info_span!("wal_service", %peer, tenant_id = tracing::field::Empty, timeline_id = tracing::field::Empty);
            let handler = WalServiceHandler::new(Arc::clone(&tls), peer, auth.clone());
            (handler, span)
        },
        shutdown_rx.clone(),
    ));
    let removal = {
        let timelines = Arc::clone(&timelines);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WAL_REMOVAL_INTERVAL).await;
                let t = Arc::clone(&timelines);
                let _ = tokio::task::spawn_blocking(move || t.remove_old_wal()).await;
            }
        })
    };

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        sig = &mut signal => info!("{sig} received, shutting down"),
        r = &mut http_task => failure = Some(daemon::task_ended("HTTP server", r.map(|r| r.map_err(anyhow::Error::from)))),
        r = &mut pg_task => failure = Some(daemon::task_ended("WAL service", r.map(|r| r.map_err(anyhow::Error::from)))),
    }
    daemon::exit_on_second_signal("walkeeper").context("installing signal handlers")?;
    removal.abort();
    let _ = shutdown_tx.send(true);
    for (what, task) in [("HTTP server", http_task), ("WAL service", pg_task)] {
        if !task.is_finished() {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => warn!("{what}: {e:#}"),
                Ok(Err(e)) => warn!("{what}: {e}"),
                Err(_) => warn!("{what} did not stop within 5 s"),
                Ok(Ok(Ok(()))) => {}
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
