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

use anyhow::Context;
use clap::Parser;
use control_plane::console::{self, Console};
use control_plane::local_env::LocalEnv;
use tracing::info;
use zenith_utils::api::console::PID_FILE_NAME;
use zenith_utils::auth::{AuthType, JwtAuth, Scope};
use zenith_utils::daemon::{self, bind, Daemon, Servers};
use zenith_utils::logging::LogFormat;

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
    daemon::main("console", || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let env = LocalEnv::load(&args.repo)?;
    let workdir = env.base_dir.join("console");
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    Daemon::new("console", workdir.join(PID_FILE_NAME))
        .log_format(args.log_format)
        .run(|servers| start(servers, env, workdir))
}

async fn start(mut servers: Servers, env: LocalEnv, workdir: PathBuf) -> anyhow::Result<Servers> {
    let console = Arc::new(Console::new(
        env.base_dir.clone(),
        workdir,
        env.console.suspend_timeout_ms,
        format!("http://{}", env.proxy.listen_http_addr),
        env.bearer(Scope::ControlPlane, None)?,
    )?);
    let key = env.auth_enabled().then(|| env.auth_public_key_path());
    let auth = JwtAuth::for_auth_type(
        if key.is_some() {
            AuthType::ZenithJwt
        } else {
            AuthType::Trust
        },
        key.as_deref(),
    )
    .context("loading the auth key")?
    .map(Arc::new);
    let addr = env.console.listen_http_addr.to_string();
    let listener = bind("HTTP", &addr).await?;
    info!(http = %addr, "console listening");
    servers.serve(
        "the HTTP server",
        zenith_utils::http::serve(
            listener,
            Arc::new(console::api::router(auth)),
            Arc::clone(&console),
            servers.shutdown_rx(),
        ),
    );
    servers.background(async move {
        loop {
            tokio::time::sleep(console::POLL).await;
            console.suspend_idle().await;
        }
    });
    Ok(servers)
}
