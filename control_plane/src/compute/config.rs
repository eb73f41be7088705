//! The configuration files a compute starts with: `postgresql.conf` (ours,
//! the zenith extension's, the walproposer's, the user's settings) and
//! `pg_hba.conf`.

use std::path::Path;

use anyhow::{bail, Context};
use zenith_utils::crashsafe;

use super::spec::ComputeSpec;
use crate::local_env::LocalEnv;

/// A `NAME=VALUE` setting as a postgresql.conf line.
pub(super) fn setting_line(s: &str) -> anyhow::Result<String> {
    let (name, value) = s
        .split_once('=')
        .with_context(|| format!("setting {s:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        bail!("setting {s:?}: {name:?} is not a PostgreSQL setting name");
    }
    Ok(format!("{name} = '{}'\n", value.trim().replace('\'', "''")))
}

/// Our `postgresql.conf` and `pg_hba.conf` (replacing the basebackup's
/// minimal ones), and `standby.signal` for a read-only compute. A
/// read-write compute with walkeepers gets the walproposer: commits wait
/// until a majority of walkeepers has the WAL on disk.
pub(super) fn write_config(
    env: &LocalEnv,
    pgdata: &Path,
    spec: &ComputeSpec,
) -> anyhow::Result<()> {
    let mut conf = format!(
        "# Written by zenith for compute {name:?}.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         max_connections = 100\n\
         shared_buffers = 128MB\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         fsync = on\n\
         synchronous_commit = on\n\
         max_prepared_transactions = 10\n\
         restart_after_crash = off\n\
         effective_io_concurrency = 32\n\
         maintenance_io_concurrency = 32\n\
         log_line_prefix = '%m [%p] '\n",
        name = spec.name,
        port = spec.port
    );
    conf.push_str(&zenith_config(env, spec));
    if spec.read_only_lsn.is_none() && !env.walkeepers.is_empty() {
        conf.push_str(&walproposer_config(env));
        // WAL a lagging walkeeper may still need is read from here.
        conf.push_str("wal_keep_size = '1GB'\n");
    }
    for s in &spec.settings {
        conf.push_str(&setting_line(s)?);
    }
    let hba = if spec.password_auth {
        // The superuser stays trusted on loopback (the console and the
        // control plane use it); every other role proves its password.
        "# Written by zenith: the superuser is trusted on loopback, other roles use SCRAM.\n\
         local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all postgres ::1/128 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n\
         local replication all trust\n\
         host replication postgres 127.0.0.1/32 trust\n"
    } else {
        "# Written by zenith: local computes trust loopback connections.\n\
         local all all trust\n\
         host all all 127.0.0.1/32 trust\n\
         host all all ::1/128 trust\n\
         local replication all trust\n\
         host replication all 127.0.0.1/32 trust\n\
         host replication all ::1/128 trust\n"
    };
    crashsafe::write_file_atomic(pgdata.join("postgresql.conf"), conf.as_bytes())?;
    crashsafe::write_file_atomic(pgdata.join("pg_hba.conf"), hba.as_bytes())?;
    if spec.read_only_lsn.is_some() {
        crashsafe::write_file_atomic(pgdata.join("standby.signal"), b"")?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// What every compute of `spec`'s timeline gets: the zenith extension,
/// its timeline, and the pageserver that has its pages.
pub(super) fn zenith_config(env: &LocalEnv, spec: &ComputeSpec) -> String {
    let ps = env.pageserver.listen_pg_addr;
    format!(
        "shared_preload_libraries = 'zenith'\n\
         zenith.tenant_id = '{}'\n\
         zenith.timeline_id = '{}'\n\
         zenith.pageserver_connstring = 'host={} port={} dbname=postgres user=zenith_admin application_name=compute'\n",
        spec.tenant_id,
        spec.timeline_id,
        ps.ip(),
        ps.port()
    )
}

/// The walproposer's settings.
pub(super) fn walproposer_config(env: &LocalEnv) -> String {
    format!(
        "zenith.walkeepers = '{}'\n\
         synchronous_standby_names = 'walproposer'\n",
        crate::walkeeper::addresses(env)
    )
}
