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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::{info, info_span};
use walkeeper::http::{self, HttpState};
use walkeeper::timeline::Timelines;
use walkeeper::wal_service::WalServiceHandler;
use zenith_utils::auth::{AuthType, JwtAuth};
use zenith_utils::crashsafe;
use zenith_utils::daemon::{self, bind, Daemon, Servers};
use zenith_utils::logging::LogFormat;
use zenith_utils::postgres_backend::{self, BackendConf};

use zenith_utils::api::walkeeper::PID_FILE_NAME;
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
    daemon::main("walkeeper", || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    crashsafe::create_dir_all_durable(&args.datadir)
        .with_context(|| format!("creating {}", args.datadir.display()))?;
    let datadir = args
        .datadir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.datadir.display()))?;
    Daemon::new("walkeeper", datadir.join(PID_FILE_NAME))
        .log_format(args.log_format)
        .testing(cfg!(feature = "testing"))
        .run(|servers| start(servers, datadir, args))
}

async fn start(mut servers: Servers, datadir: PathBuf, args: &Args) -> anyhow::Result<Servers> {
    walkeeper::timeline::check_node_id(&datadir, args.id)?;
    let key = args.auth_validation_public_key_path.as_deref();
    let auth = JwtAuth::for_auth_type(args.auth_type, key)
        .context("loading the auth key")?
        .map(Arc::new);
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
        "walkeeper loaded"
    );

    let state = Arc::new(HttpState {
        node_id,
        timelines: Arc::clone(&timelines),
    });
    servers.serve(
        "HTTP server",
        zenith_utils::http::serve(
            http_listener,
            Arc::new(http::router(auth.clone())),
            state,
            servers.shutdown_rx(),
        ),
    );
    let tls = Arc::clone(&timelines);
    servers.serve(
        "WAL service",
        postgres_backend::serve(
            pg_listener,
            Arc::new(BackendConf::new("walkeeper")),
            move |peer| {
                let span = info_span!("wal_service", %peer, tenant_id = tracing::field::Empty, timeline_id = tracing::field::Empty);
                let handler = WalServiceHandler::new(Arc::clone(&tls), peer, auth.clone());
                (handler, span)
            },
            servers.shutdown_rx(),
        ),
    );
    servers.background(async move {
        loop {
            tokio::time::sleep(WAL_REMOVAL_INTERVAL).await;
            let t = Arc::clone(&timelines);
            let _ = tokio::task::spawn_blocking(move || t.remove_old_wal()).await;
        }
    });
    Ok(servers)
}
