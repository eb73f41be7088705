//! The proxy daemon.
//!
//! ```text
//! proxy -D <workdir> [-c key=value ...]
//! ```
//!
//! Reads `<workdir>/proxy.toml` (see `proxy::config::ProxyConf`), takes the
//! pid file `proxy.pid`, and serves clients and HTTP until SIGTERM/SIGINT.
//! Fatal errors are one line on stderr and exit status 1. See
//! docs/proxy.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use proxy::config::{ProxyConf, PID_FILE_NAME};
use proxy::handler::ProxyHandler;
use proxy::state::ProxyState;
use tracing::{info, info_span};
use zenith_utils::daemon::{self, bind, Daemon, Servers};
use zenith_utils::logging::LogFormat;
use zenith_utils::postgres_backend::{self, BackendConf};

#[derive(Parser, Debug)]
#[command(
    name = "proxy",
    version,
    about = "Zenith proxy: one PostgreSQL address for every endpoint, with SCRAM pass-through and wake-up of suspended computes"
)]
struct Args {
    /// Working directory: proxy.toml, the pid file.
    #[arg(short = 'D', long = "workdir", value_name = "DIR")]
    workdir: PathBuf,
    /// Overrides a setting of proxy.toml (`key=value`, TOML syntax).
    #[arg(short = 'c', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// `plain` or `json` log lines.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    daemon::main("proxy", || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.workdir)
        .with_context(|| format!("creating {}", args.workdir.display()))?;
    let workdir = args
        .workdir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.workdir.display()))?;
    let conf = ProxyConf::load(&workdir, &args.overrides)?;
    Daemon::new("proxy", workdir.join(PID_FILE_NAME))
        .log_format(args.log_format)
        // One thread: no cross-thread wake-ups on every relayed message.
        .worker_threads(conf.worker_threads)
        .run(|servers| start(servers, conf))
}

async fn start(mut servers: Servers, conf: ProxyConf) -> anyhow::Result<Servers> {
    let tls = conf.tls()?;
    let auth = conf
        .jwt_auth()
        .context("loading the auth key")?
        .map(Arc::new);
    let http_listener = bind("HTTP", &conf.listen_http).await?;
    let pg_listener = bind("clients", &conf.listen_pg).await?;
    proxy::metrics::register_all();
    let mut backend = BackendConf::new("proxy");
    backend.max_connections = conf.max_connections;
    // Authentication has its own limit (`startup_timeout`); this one covers
    // the wait for the startup packet and TLS too.
    backend.startup_timeout = conf.startup_timeout() + Duration::from_secs(1);
    backend.shutdown_grace = Duration::from_secs(1);
    let (tls_config, binding) = match tls {
        Some((c, b)) => (Some(c), Some(b)),
        None => (None, None),
    };
    backend.tls = tls_config;
    info!(
        pg = %conf.listen_pg,
        http = %conf.listen_http,
        console = %conf.console_url,
        tls = backend.tls.is_some(),
        "proxy listening"
    );
    let state = Arc::new(ProxyState::new(conf, binding));
    servers.serve(
        "HTTP server",
        zenith_utils::http::serve(
            http_listener,
            Arc::new(proxy::mgmt::router(auth)),
            Arc::clone(&state),
            servers.shutdown_rx(),
        ),
    );
    servers.serve(
        "client listener",
        postgres_backend::serve(
            pg_listener,
            Arc::new(backend),
            move |peer| {
                let span = info_span!(
                    "conn",
                    %peer,
                    endpoint = tracing::field::Empty,
                    user = tracing::field::Empty
                );
                (ProxyHandler::new(Arc::clone(&state), peer), span)
            },
            servers.shutdown_rx(),
        ),
    );
    Ok(servers)
}
