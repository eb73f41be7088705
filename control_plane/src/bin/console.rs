//! The console daemon (docs/proxy.md).
//!
//! ```text
//! console --repo <zenith repository>
//! ```
//!
//! Serves the console API and link-auth pages on the repository's
//! `[console] listen_http_addr`, keeps its state in `<repo>/console/`, and
//! suspends idle endpoints, until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use control_plane::console::{self, Console};
use control_plane::local_env::LocalEnv;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;
use zenith_utils::api::console::PID_FILE_NAME;
use zenith_utils::auth::{JwtAuth, Scope};
use zenith_utils::daemon::{self, one_line, PidFile};
use zenith_utils::logging::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "console",
    version,
    about = "Zenith console: endpoints, roles and databases; wakes and suspends computes for the proxy"
)]
struct Args {
    /// The zenith repository (`.zenith`).
    #[arg(long)]
    repo: PathBuf,
    /// `plain` or `json` log lines.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("console: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let env = LocalEnv::load(&args.repo)?;
    let workdir = env.base_dir.join("console");
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    logging::init(args.log_format, "info")?;
    let pid_file = PidFile::acquire(&workdir.join(PID_FILE_NAME), "console")?;
    let console = Console::new(
        env.base_dir.clone(),
        workdir,
        env.console.suspend_timeout_ms,
        format!("http://{}", env.proxy.listen_http_addr),
        env.bearer(Scope::ControlPlane, None)?,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("console")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(Arc::new(console), env));
    runtime.shutdown_timeout(Duration::from_secs(1));
    pid_file.release();
    result
}

async fn serve(console: Arc<Console>, env: LocalEnv) -> anyhow::Result<()> {
    let signal = daemon::shutdown_signal().context("installing signal handlers")?;
    tokio::pin!(signal);
    let addr = env.console.listen_http_addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    info!(http = %addr, "console started");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let auth = match env.auth_enabled() {
        true => Some(Arc::new(
            JwtAuth::from_key_path(&env.auth_public_key_path()).context("loading the auth key")?,
        )),
        false => None,
    };
    let mut http = tokio::spawn(zenith_utils::http::serve(
        listener,
        Arc::new(console::api::router(auth)),
        Arc::clone(&console),
        shutdown_rx,
    ));
    let c = Arc::clone(&console);
    let suspender = tokio::spawn(async move {
        loop {
            tokio::time::sleep(console::POLL).await;
            c.suspend_idle().await;
        }
    });
    let res = tokio::select! {
        sig = &mut signal => { info!("{sig} received, shutting down"); Ok(()) }
        r = &mut http => Err(daemon::task_ended("the HTTP server", r.map(|r| r.map_err(anyhow::Error::from)))),
    };
    daemon::exit_on_second_signal("console").context("installing signal handlers")?;
    suspender.abort();
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    res
}
