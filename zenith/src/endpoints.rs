//! `zenith proxy`, `zenith endpoint`, `zenith role`, `zenith db`: the
//! proxy's process and the console's endpoints (docs/proxy.md).

use clap::{Subcommand, ValueEnum};
use control_plane::background_process::Stopped;
use control_plane::console_node::ConsoleNode;
use control_plane::local_env::LocalEnv;
use control_plane::proxy::ProxyNode;
use zenith_utils::api::console::EndpointAuth;

#[derive(Subcommand)]
pub enum ProxyCmd {
    /// Start the proxy.
    Start,
    /// Stop the proxy.
    Stop {
        #[arg(long)]
        immediate: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// SCRAM-SHA-256 with the role's password.
    Password,
    /// A login URL approved in the console's web page.
    Link,
}

#[derive(Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint: a compute on BRANCH, reached through the proxy as NAME.
    Create {
        /// A DNS label: lowercase letters, digits and '-'.
        name: String,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Suspend after this long without connections (humantime, e.g. 5m, 10s; 0: never).
        #[arg(long)]
        suspend_timeout: Option<humantime::Duration>,
    },
    /// List endpoints and how to connect to them.
    List,
    /// Delete an endpoint and its compute (the branch stays).
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum RoleCmd {
    /// Create a login role in an endpoint (its SCRAM secret goes to the console and the compute).
    Create {
        endpoint: String,
        name: String,
        #[arg(long)]
        password: String,
    },
}

#[derive(Subcommand)]
pub enum DbCmd {
    /// Create a database in an endpoint.
    Create {
        endpoint: String,
        name: String,
        #[arg(long)]
        owner: String,
    },
}

pub fn proxy(env: &LocalEnv, cmd: ProxyCmd) -> anyhow::Result<()> {
    let p = ProxyNode::new(env);
    match cmd {
        ProxyCmd::Start => {
            let pid = p.start()?;
            println!(
                "proxy started (pid {pid}), clients on {}, log {}",
                env.proxy.listen_pg_addr,
                p.log_file().display()
            );
        }
        ProxyCmd::Stop { immediate } => match p.stop(immediate)? {
            Stopped::Stopped(pid) => println!("proxy (pid {pid}) stopped"),
            Stopped::Killed(pid) => println!("proxy (pid {pid}) killed after the timeout"),
            Stopped::NotRunning => println!("proxy was not running"),
        },
    }
    Ok(())
}

pub fn endpoint(env: &LocalEnv, cmd: EndpointCmd) -> anyhow::Result<()> {
    let c = ConsoleNode::new(env);
    let p = ProxyNode::new(env);
    match cmd {
        EndpointCmd::Create {
            name,
            branch,
            auth,
            suspend_timeout,
        } => {
            let auth = match auth {
                AuthArg::Password => EndpointAuth::Password,
                AuthArg::Link => EndpointAuth::Link,
            };
            let ms = suspend_timeout.map(|d| d.as_millis() as u64);
            let e = c.endpoint_create(&name, &branch, auth, ms)?;
            println!(
                "endpoint {} created on branch {} (compute port {}); add a role with `zenith role create {} NAME --password ...`",
                e.name, e.branch, e.port, e.name
            );
            println!(
                "connect: psql \"{}\"",
                p.connstr(&e.name, "ROLE", "postgres")
            );
        }
        EndpointCmd::List => {
            for e in c.endpoint_list()? {
                println!(
                    "{}: {:?} on branch {}, auth {:?}, suspend after {} ms, roles [{}]",
                    e.name,
                    e.state,
                    e.branch,
                    e.auth,
                    e.suspend_timeout_ms,
                    e.roles.join(", ")
                );
                println!("  psql \"{}\"", p.connstr(&e.name, "ROLE", "postgres"));
            }
        }
        EndpointCmd::Delete { name } => {
            c.endpoint_delete(&name)?;
            println!("endpoint {name} deleted");
        }
    }
    Ok(())
}

pub fn role(env: &LocalEnv, cmd: RoleCmd) -> anyhow::Result<()> {
    let RoleCmd::Create {
        endpoint,
        name,
        password,
    } = cmd;
    ConsoleNode::new(env).role_create(&endpoint, &name, &password)?;
    println!("role {name} created in endpoint {endpoint}");
    Ok(())
}

pub fn db(env: &LocalEnv, cmd: DbCmd) -> anyhow::Result<()> {
    let DbCmd::Create {
        endpoint,
        name,
        owner,
    } = cmd;
    ConsoleNode::new(env).db_create(&endpoint, &name, &owner)?;
    println!("database {name} (owner {owner}) created in endpoint {endpoint}");
    Ok(())
}

/// `zenith status` lines for the console and the proxy.
pub fn status(env: &LocalEnv) -> anyhow::Result<()> {
    let c = ConsoleNode::new(env);
    match c.pid()? {
        Some(pid) => println!(
            "console: running (pid {pid}), HTTP {}, log {}",
            env.console.listen_http_addr,
            c.log_file().display()
        ),
        None => println!("console: stopped (start it with `zenith start`)"),
    }
    let p = ProxyNode::new(env);
    match p.pid()? {
        Some(pid) => println!(
            "proxy: running (pid {pid}), clients {} (TLS, CA {}), HTTP {}, log {}",
            env.proxy.listen_pg_addr,
            p.ca_cert().display(),
            env.proxy.listen_http_addr,
            p.log_file().display()
        ),
        None => println!("proxy: stopped (start it with `zenith proxy start`)"),
    }
    if c.pid()?.is_some() {
        if let Ok(eps) = c.endpoint_list() {
            for e in eps {
                println!(
                    "endpoint {}: {:?}, branch {}, compute port {}",
                    e.name, e.state, e.branch, e.port
                );
            }
        }
    }
    Ok(())
}
