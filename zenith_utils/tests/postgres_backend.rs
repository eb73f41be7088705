//! `postgres_backend` serving real clients: `psql` over TLS
//! (`sslmode=require`, with a certificate made here by rcgen) and in plain
//! text, and the shared client for the limits: password authentication,
//! the connection limit, the startup and idle timeouts, shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Span;
use zenith_utils::postgres_backend::{
    self, AuthMethod, BackendConf, Handler, HandlerError, PostgresBackend,
};
use zenith_utils::postgres_client::{ClientError, Config, Connection};
use zenith_utils::pq_proto::{write_single_row_text_result, BeMessage, SqlState, StartupParams};

/// Answers every query with one row: whether the session is TLS, the
/// user, and the query. `fail` fails the query; `boom` ends the session.
struct TestHandler {
    password: Option<&'static str>,
}

impl Handler for TestHandler {
    fn startup(&mut self, params: &StartupParams) -> Result<(), HandlerError> {
        match params.user() {
            Some("nobody") => Err(HandlerError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "role \"nobody\" does not exist",
            )),
            _ => Ok(()),
        }
    }

    fn auth_method(&self) -> AuthMethod {
        match self.password {
            Some(_) => AuthMethod::CleartextPassword,
            None => AuthMethod::Trust,
        }
    }

    async fn check_password(
        &mut self,
        _params: &StartupParams,
        password: &str,
    ) -> Result<(), HandlerError> {
        if Some(password) == self.password {
            Ok(())
        } else {
            Err(HandlerError::fatal(
                SqlState::INVALID_PASSWORD,
                "password authentication failed",
            ))
        }
    }

    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> Result<(), HandlerError> {
        match query {
            "fail" => Err(HandlerError::query(
                SqlState::SYNTAX_ERROR,
                "you asked for it",
            )),
            "boom" => Err(HandlerError::fatal(SqlState::INTERNAL_ERROR, "boom")),
            "" => pgb.write_message(&BeMessage::EmptyQueryResponse),
            q => {
                let tls = if pgb.is_tls() { "on" } else { "off" };
                let user = pgb.startup_params().user().unwrap_or("").to_string();
                write_single_row_text_result(
                    pgb.writer.buf_mut(),
                    &[
                        ("tls", Some(tls)),
                        ("user", Some(&user)),
                        ("query", Some(q)),
                    ],
                )?;
                Ok(())
            }
        }
    }
}

struct TestServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(conf: BackendConf, password: Option<&'static str>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(postgres_backend::serve(
        listener,
        Arc::new(conf),
        move |_peer| (TestHandler { password }, Span::none()),
        rx,
    ));
    TestServer {
        addr,
        shutdown,
        task,
    }
}

/// A self-signed certificate for `localhost`, as rustls wants it.
fn tls_config() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

/// `psql` from the PostgreSQL build (`POSTGRES_INSTALL_DIR` or
/// `<repo>/tmp_install`), with its libpq.
fn psql() -> tokio::process::Command {
    let dir = std::env::var_os("POSTGRES_INSTALL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tmp_install"));
    assert!(
        dir.join("bin/psql").exists(),
        "no psql in {}: run `make postgres`",
        dir.display()
    );
    let mut cmd = tokio::process::Command::new(dir.join("bin/psql"));
    cmd.env("LD_LIBRARY_PATH", dir.join("lib"))
        .env_remove("PGSSLMODE")
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

async fn run_psql(addr: SocketAddr, sslmode: &str, query: &str) -> (bool, String, String) {
    let out = psql()
        .arg(format!(
            "host=127.0.0.1 port={} user=alice dbname=db sslmode={sslmode}",
            addr.port()
        ))
        .args(["-X", "-A", "-t", "-F", "|", "-c", query])
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_sslmode_require() {
    let conf = BackendConf {
        tls: Some(tls_config()),
        ..BackendConf::new("test server")
    };
    let server = start(conf, None).await;
    let (ok, out, err) = run_psql(server.addr, "require", "hello over tls").await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, "on|alice|hello over tls");
    // The same server still serves plain-text clients.
    let (ok, out, err) = run_psql(server.addr, "disable", "plain").await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, "off|alice|plain");
    // Errors arrive over TLS too, with their SQLSTATE.
    let out = psql()
        .arg(format!(
            "host=127.0.0.1 port={} user=alice sslmode=require",
            server.addr.port()
        ))
        .args(["-X", "-v", "VERBOSITY=verbose", "-c", "fail"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ERROR:  42601: you asked for it"),
        "{stderr}"
    );

    server.shutdown.send(true).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_sslmode_require_is_refused() {
    let server = start(BackendConf::new("test server"), None).await;
    let (ok, _, err) = run_psql(server.addr, "require", "x").await;
    assert!(!ok);
    assert!(err.contains("server does not support SSL"), "{err}");
    let (ok, out, _) = run_psql(server.addr, "prefer", "x").await;
    assert!(ok);
    assert_eq!(out, "off|alice|x");
}

fn client(addr: SocketAddr, user: &str, password: Option<&str>) -> Config {
    let mut c = Config::new("127.0.0.1", addr.port(), user);
    c.password = password.map(str::to_string);
    c.connect_timeout = Duration::from_secs(10);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hook_queries_and_errors() {
    let server = start(BackendConf::new("test server"), Some("s3cret")).await;
    let mut conn = Connection::connect(&client(server.addr, "bob", Some("s3cret")))
        .await
        .unwrap();
    let rows = conn.simple_query("q").await.unwrap();
    assert_eq!(
        rows[0].values,
        [Some("off".into()), Some("bob".into()), Some("q".into())]
    );
    // A failed query: ERROR, and the session goes on.
    let err = conn.simple_query("fail").await.unwrap_err();
    assert_eq!(err.sql_state(), Some(SqlState::SYNTAX_ERROR));
    assert!(conn.simple_query("").await.unwrap().is_empty());
    // A fatal one ends it.
    let err = conn.simple_query("boom").await.unwrap_err();
    assert_eq!(err.sql_state(), Some(SqlState::INTERNAL_ERROR));
    assert!(conn.simple_query("again").await.is_err());

    let err = Connection::connect(&client(server.addr, "bob", Some("wrong")))
        .await
        .err()
        .unwrap();
    assert_eq!(err.sql_state(), Some(SqlState::INVALID_PASSWORD), "{err}");
    let err = Connection::connect(&client(server.addr, "nobody", Some("s3cret")))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.sql_state(),
        Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
    // No password to give: our client says so.
    let err = Connection::connect(&client(server.addr, "bob", None))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Auth(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_timeouts() {
    let conf = BackendConf {
        max_connections: 1,
        startup_timeout: Duration::from_millis(500),
        idle_timeout: Some(Duration::from_millis(500)),
        ..BackendConf::new("test server")
    };
    let server = start(conf, None).await;

    // One connection is served; a second is refused with 53300.
    let mut first = Connection::connect(&client(server.addr, "a", None))
        .await
        .unwrap();
    let err = Connection::connect(&client(server.addr, "b", None))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.sql_state(),
        Some(SqlState::TOO_MANY_CONNECTIONS),
        "{err}"
    );
    assert!(err.to_string().contains("at most 1"), "{err}");
    assert_eq!(first.simple_query("x").await.unwrap().len(), 1);

    // Idle past the timeout: FATAL 57P05, then closed.
    let err = loop {
        match first.simple_query("x").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(600)).await,
            Err(e) => break e,
        }
    };
    assert!(
        err.sql_state() == Some(SqlState::IDLE_SESSION_TIMEOUT)
            || matches!(err, ClientError::Closed | ClientError::Io(_)),
        "{err}"
    );
    drop(first);

    // A client that connects and says nothing is cut off by the startup
    // timeout with FATAL 57014.
    let mut sock = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf))
        .await
        .expect("the startup timeout did not close the connection")
        .unwrap();
    assert!(buf.windows(6).any(|w| w == b"C57014"), "{buf:?}");
    let _ = sock.write_all(b"x").await;

    server.shutdown.send(true).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_idle_sessions_with_57p01() {
    let server = start(BackendConf::new("test server"), None).await;
    let mut conn = Connection::connect(&client(server.addr, "a", None))
        .await
        .unwrap();
    server.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    let err = conn.simple_query("x").await.unwrap_err();
    assert!(
        err.sql_state() == Some(SqlState::ADMIN_SHUTDOWN)
            || matches!(err, ClientError::Closed | ClientError::Io(_)),
        "{err}"
    );
    assert!(TcpStream::connect(server.addr).await.is_err());
}
