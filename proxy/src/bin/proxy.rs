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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use proxy::config::{ProxyConf, CONFIG_FILE_NAME, PID_FILE_NAME};
use proxy::handler::ProxyHandler;
use proxy::state::ProxyState;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, info_span, warn};
use zenith_utils::daemon::{self, one_line, PidFile};
use zenith_utils::logging::{self, LogFormat};
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
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn load_conf(workdir: &Path, overrides: &[String]) -> anyhow::Result<ProxyConf> {
    let path = workdir.join(CONFIG_FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    daemon::parse_config(&text, overrides).with_context(|| format!("in {}", path.display()))
}

/// The rustls configuration and the certificate's channel-binding data.
fn tls(conf: &ProxyConf) -> anyhow::Result<Option<(Arc<rustls::ServerConfig>, Vec<u8>)>> {
    let (Some(cert), Some(key)) = (&conf.tls_cert, &conf.tls_key) else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the certificate {}", cert.display()))?;
    let first = certs
        .first()
        .with_context(|| format!("{} holds no certificate", cert.display()))?;
    let binding = zenith_utils::scram::tls_server_end_point(first);
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS certificate and key do not go together")?;
    Ok(Some((Arc::new(config), binding)))
}

fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.workdir)
        .with_context(|| format!("creating {}", args.workdir.display()))?;
    let workdir = args
        .workdir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.workdir.display()))?;
    logging::init(args.log_format, "info")?;
    let conf = load_conf(&workdir, &args.overrides)?;
    let pid_file = PidFile::acquire(&workdir.join(PID_FILE_NAME), "proxy")?;
    let runtime = match conf.worker_threads {
        // One thread: no cross-thread wake-ups on every relayed message.
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("proxy")
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("proxy")
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .thread_name("proxy")
            .build(),
    }
    .context("starting the async runtime")?;
    let result = runtime.block_on(serve(conf));
    runtime.shutdown_timeout(Duration::from_secs(1));
    pid_file.release();
    if result.is_ok() {
        info!("proxy stopped");
    }
    result
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn serve(conf: ProxyConf) -> anyhow::Result<()> {
    let signal = daemon::shutdown_signal().context("installing signal handlers")?;
    tokio::pin!(signal);
    let tls = tls(&conf)?;
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
        "proxy started"
    );
    let auth = conf
        .jwt_auth()
        .context("loading the auth key")?
        .map(Arc::new);
    let state = Arc::new(ProxyState::new(conf, binding));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut http_task = tokio::spawn(zenith_utils::http::serve(
        http_listener,
        Arc::new(proxy::mgmt::router(auth)),
        Arc::clone(&state),
        shutdown_rx.clone(),
    ));
    let st = Arc::clone(&state);
    let mut pg_task = tokio::spawn(postgres_backend::serve(
        pg_listener,
        Arc::new(backend),
        move |peer| {
            let span = info_span!(
                "conn",
                %peer,
                endpoint = tracing::field::Empty,
                user = tracing::field::Empty
            );
            (ProxyHandler::new(Arc::clone(&st), peer), span)
        },
        shutdown_rx.clone(),
    ));
    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        sig = &mut signal => info!("{sig} received, shutting down"),
        r = &mut http_task => failure = Some(daemon::task_ended("HTTP server", r.map(|r| r.map_err(anyhow::Error::from)))),
        r = &mut pg_task => failure = Some(daemon::task_ended("client listener", r.map(|r| r.map_err(anyhow::Error::from)))),
    }
    daemon::exit_on_second_signal("proxy").context("installing signal handlers")?;
    let _ = shutdown_tx.send(true);
    for (what, task) in [("HTTP server", http_task), ("client listener", pg_task)] {
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
