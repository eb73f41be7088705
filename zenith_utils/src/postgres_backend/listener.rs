//! Accepting connections and running each one to its end: the connection
//! limit, the startup timeout, shutdown and its grace period.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument, Span};

use super::conf::BackendConf;
use super::connection::PostgresBackend;
use super::error::HandlerError;
use super::handler::Handler;
use super::messages::{BackendReader, BackendWriter};
use super::socket::{ReadHalf, WriteHalf};
use super::startup::Started;
use crate::pq_proto::{FeDecoder, SqlState, StartupParams};

/// Serves `listener` until `shutdown` turns true (or its sender is gone).
/// `new_connection` makes the handler of each accepted connection and the
/// span its logs go to.
pub async fn serve<H, F>(
    listener: TcpListener,
    conf: Arc<BackendConf>,
    new_connection: F,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: Handler + 'static,
    F: Fn(SocketAddr) -> (H, Span),
{
    info!(addr = ?listener.local_addr().ok(), "{} listening", conf.name);
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(res) = conns.join_next(), if !conns.is_empty() => log_task_end(conf.name, res),
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    // Ended connections must not count against the limit.
                    while let Some(res) = conns.try_join_next() {
                        log_task_end(conf.name, res);
                    }
                    let over_limit = conns.len() >= conf.max_connections;
                    let (handler, span) = new_connection(peer);
                    let conn = run_connection(
                        sock, peer, handler, Arc::clone(&conf), shutdown.clone(), over_limit,
                    );
                    conns.spawn(conn.instrument(span));
                }
                Err(e) => {
                    // E.g. out of file descriptors: transient, do not spin.
                    warn!("{} accept failed: {e}", conf.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    info!(
        connections = conns.len(),
        "{} stopped accepting connections", conf.name
    );
    let drain = async {
        while let Some(res) = conns.join_next().await {
            log_task_end(conf.name, res);
        }
    };
    if tokio::time::timeout(conf.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!(
            connections = conns.len(),
            "{} connections still busy after {:?}; aborting them", conf.name, conf.shutdown_grace
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

fn log_task_end(name: &str, res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!("{name} connection task panicked: {e}");
        }
    }
}

/// Runs one connection to its end; errors are logged in its span.
pub async fn run_connection<H: Handler>(
    sock: TcpStream,
    peer: SocketAddr,
    mut handler: H,
    conf: Arc<BackendConf>,
    shutdown: watch::Receiver<bool>,
    over_limit: bool,
) {
    debug!("connection accepted");
    if let Err(e) = sock.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let (rd, wr) = sock.into_split();
    let mut pgb = PostgresBackend {
        reader: BackendReader {
            rd: ReadHalf::Plain(rd),
            buf: BytesMut::with_capacity(8192),
            decoder: FeDecoder::new(conf.max_message_size),
            shutdown,
        },
        writer: BackendWriter {
            wr: WriteHalf::Plain(wr),
            buf: BytesMut::with_capacity(8192),
        },
        peer,
        params: StartupParams::new(),
        tls: false,
        sni: None,
    };
    let started = tokio::time::timeout(
        conf.startup_timeout,
        pgb.startup(&mut handler, &conf, over_limit),
    )
    .await
    .unwrap_or_else(|_| {
        Err(HandlerError::fatal(
            SqlState::QUERY_CANCELED,
            format!(
                "canceling authentication due to timeout ({:?})",
                conf.startup_timeout
            ),
        ))
    });
    let result = match started {
        Ok(Started::Queries) => pgb.query_loop(&mut handler, &conf).await,
        Ok(Started::TakeOver) => handler.take_over(&mut pgb).await,
        Ok(Started::Ended) => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) | Err(HandlerError::ClientGone) => debug!("connection closed"),
        Err(e) => {
            pgb.report_fatal(&e).await;
            match e {
                HandlerError::Shutdown => debug!("connection closed at shutdown"),
                e => info!("connection closed: {e}"),
            }
        }
    }
}
