//! The lifecycle every daemon shares, so that each `main` is its
//! configuration plus the servers it registers:
//!
//! 1. logging, then the pid file (a second instance is refused), then the
//!    async runtime;
//! 2. SIGTERM/SIGINT handlers, installed before anything else runs in the
//!    runtime so that a signal during startup is not lost;
//! 3. the daemon's `start`, which binds its listeners ([`bind`]: a port in
//!    use fails before anything is loaded), loads its state and registers
//!    named servers ([`Servers::serve`]), background loops
//!    ([`Servers::background`]) and a shutdown step
//!    ([`Servers::on_shutdown`]);
//! 4. running until the first signal, or until a server ends on its own
//!    (that is a failure: the daemon shuts down and exits 1);
//! 5. shutdown: a second signal now exits at once with status 1;
//!    background loops are aborted, the servers are told to stop and given
//!    the grace period to drain, then the shutdown step runs (the
//!    pageserver flushes its timelines), the pid file is removed.
//!
//! [`main`] turns the result into the exit status, with a fatal error
//! printed as one line on stderr.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use super::{exit_on_second_signal, one_line, shutdown_signal, task_ended, PidFile};
use crate::logging::{self, LogFormat};

/// Runs `run` and turns its result into the process's exit status: a fatal
/// error is one line on stderr (`<name>: error: ...`) and status 1.
pub fn main(name: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Binds a listener; the error names what it is for and the address.
pub async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

type ShutdownStep = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// What a daemon registers in its `start`; see the module docs.
pub struct Servers {
    shutdown_tx: watch::Sender<bool>,
    servers: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
    background: Vec<JoinHandle<()>>,
    on_shutdown: Option<ShutdownStep>,
}

impl Servers {
    fn new() -> Servers {
        Servers {
            shutdown_tx: watch::channel(false).0,
            servers: JoinSet::new(),
            names: HashMap::new(),
            background: Vec::new(),
            on_shutdown: None,
        }
    }

    /// Becomes true when shutdown starts: servers stop accepting and finish
    /// what they are doing.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// A server that runs until shutdown (it watches
    /// [`shutdown_rx`](Self::shutdown_rx)). Ending before that, with or
    /// without an error, shuts the daemon down with a failure naming `name`.
    pub fn serve<E>(
        &mut self,
        name: &'static str,
        server: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<anyhow::Error> + 'static,
    {
        let handle = self
            .servers
            .spawn(async move { server.await.map_err(Into::into) });
        self.names.insert(handle.id(), name);
    }

    /// A loop that runs until shutdown, when it is aborted.
    pub fn background(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.push(tokio::spawn(task));
    }

    /// The last step of shutdown, after the servers drained (or their grace
    /// period ran out); its error is the daemon's.
    pub fn on_shutdown(&mut self, step: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        self.on_shutdown = Some(Box::pin(step));
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("a server")
    }
}

/// One daemon's lifecycle settings; [`run`](Daemon::run) does the rest.
pub struct Daemon {
    name: &'static str,
    pid_file: PathBuf,
    log_format: LogFormat,
    worker_threads: usize,
    grace: Duration,
    testing: bool,
}

impl Daemon {
    /// `name` names the daemon in logs, errors and thread names; its pid
    /// file is at `pid_file`.
    pub fn new(name: &'static str, pid_file: PathBuf) -> Daemon {
        Daemon {
            name,
            pid_file,
            log_format: LogFormat::Plain,
            worker_threads: 0,
            grace: Duration::from_secs(5),
            testing: false,
        }
    }

    pub fn log_format(mut self, format: LogFormat) -> Daemon {
        self.log_format = format;
        self
    }

    /// Async worker threads: 0 for one per core, 1 for a single-threaded
    /// runtime (no cross-thread wake-ups).
    pub fn worker_threads(mut self, n: usize) -> Daemon {
        self.worker_threads = n;
        self
    }

    /// How long the servers may take to drain at shutdown.
    pub fn grace(mut self, grace: Duration) -> Daemon {
        self.grace = grace;
        self
    }

    /// Testing builds: failpoints armed from the `FAILPOINTS` environment
    /// variable (`name=actions;...`) or `PUT /v1/failpoints`, and a panic
    /// anywhere ends the process at once, the way a crash would: no
    /// shutdown, no flush, exit status 70 (not abort(), which could leave a
    /// core file).
    pub fn testing(mut self, on: bool) -> Daemon {
        self.testing = on;
        self
    }

    /// Runs the daemon until a signal or a failed server (see the module
    /// docs). `start` binds, loads and registers what the daemon serves.
    pub fn run<F, Fut>(self, start: F) -> anyhow::Result<()>
    where
        F: FnOnce(Servers) -> Fut,
        Fut: Future<Output = anyhow::Result<Servers>>,
    {
        let _failpoints = self.testing.then(|| {
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                default_hook(info);
                std::process::exit(70);
            }));
            fail::FailScenario::setup()
        });
        logging::init(self.log_format, "info")?;
        let pid_file = PidFile::acquire(&self.pid_file, self.name)?;
        let runtime = match self.worker_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        }
        .enable_all()
        .thread_name(self.name)
        .build()
        .context("starting the async runtime")?;
        let result = runtime.block_on(self.serve(start));
        // The servers drained and the shutdown step ran; do not wait for
        // lingering tasks.
        runtime.shutdown_timeout(Duration::from_secs(1));
        pid_file.release();
        if result.is_ok() {
            info!("{} stopped", self.name);
        }
        result
    }

    async fn serve<F, Fut>(&self, start: F) -> anyhow::Result<()>
    where
        F: FnOnce(Servers) -> Fut,
        Fut: Future<Output = anyhow::Result<Servers>>,
    {
        let signal = shutdown_signal().context("installing signal handlers")?;
        tokio::pin!(signal);
        let mut servers = start(Servers::new()).await?;
        info!("{} started", self.name);

        let mut failure = None;
        tokio::select! {
            sig = &mut signal => info!("{sig} received, shutting down"),
            Some(ended) = servers.servers.join_next_with_id() => {
                let e = match ended {
                    Ok((id, r)) => task_ended(servers.name(id), Ok(r)),
                    Err(e) => task_ended(servers.name(e.id()), Err(e)),
                };
                error!("{e:#}; shutting down");
                failure = Some(e);
            }
        }
        exit_on_second_signal(self.name).context("installing signal handlers")?;
        for task in &servers.background {
            task.abort();
        }
        let _ = servers.shutdown_tx.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(ended) = servers.servers.join_next_with_id().await {
                match ended {
                    Ok((_, Ok(()))) => {}
                    Ok((id, Err(e))) => warn!("{}: {e:#}", servers.name(id)),
                    Err(e) => warn!("{}: {e}", servers.name(e.id())),
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                "{} server(s) did not stop within {:?}; going on",
                servers.servers.len(),
                self.grace
            );
            servers.servers.abort_all();
        }
        if let Some(step) = servers.on_shutdown.take() {
            step.await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
