//! `zenith token`: a token signed with the repository's private key (a
//! repository made with `zenith init --auth`), for psql, curl and scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use control_plane::local_env::LocalEnv;
use zenith_utils::auth::{Claims, Scope};
use zenith_utils::id::TenantId;

#[derive(Args)]
pub struct TokenArgs {
    /// pageserverapi, tenant, walkeeperdata or controlplane.
    #[arg(long)]
    scope: Scope,
    /// The tenant of a `tenant` token (default: the default tenant), or to
    /// bind a `walkeeperdata` token to.
    #[arg(long)]
    tenant_id: Option<TenantId>,
    /// Make the token expire, e.g. `1h` or `30m` (default: never).
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
}

pub fn token(env: &LocalEnv, args: TokenArgs) -> anyhow::Result<()> {
    if !env.auth_enabled() {
        bail!("auth is off in this repository: tokens are not needed (make one with auth on with `zenith init --auth`)");
    }
    let tenant_id = match (args.scope, args.tenant_id) {
        (Scope::Tenant, None) => Some(env.tenant(None)?),
        (_, t) => t,
    };
    let exp = match args.expires_in {
        Some(d) => Some(
            (SystemTime::now() + d)
                .duration_since(UNIX_EPOCH)
                .context("reading the clock")?
                .as_secs(),
        ),
        None => None,
    };
    let claims = Claims {
        exp,
        ..Claims::new(args.scope, tenant_id)
    };
    match env.token(&claims)? {
        Some(t) => println!("{t}"),
        None => bail!("no token was made"),
    }
    Ok(())
}
