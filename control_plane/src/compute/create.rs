//! `zenith pg create`: a new compute, not started.

use anyhow::{bail, Context};
use zenith_utils::crashsafe;
use zenith_utils::id::TenantId;
use zenith_utils::lsn::Lsn;

use super::config::setting_line;
use super::spec::{ComputeSpec, SPEC_FILE_NAME};
use super::{catch_up, list, ComputeNode};
use crate::background_process;
use crate::local_env::{validate_name, LocalEnv};
use crate::pageserver::PageServerNode;

/// Create a compute (not started). `lsn` makes it read-only at that LSN.
#[allow(clippy::too_many_arguments)] // each is a choice of `zenith pg create`
pub fn create<'a>(
    env: &'a LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    name: &str,
    branch: &str,
    lsn: Option<Lsn>,
    port: Option<u16>,
    settings: &[String],
) -> anyhow::Result<ComputeNode<'a>> {
    validate_name("compute", name)?;
    for s in settings {
        setting_line(s)?;
    }
    env.check_binaries()?;
    let timeline = env.branch_timeline(tenant, branch)?;
    let existing = list(env)?;
    if existing
        .iter()
        .any(|c| c.spec.tenant_id == tenant && c.spec.name == name)
    {
        bail!("a compute named {name:?} already exists in tenant {tenant}: start it with `zenith pg start {name}`, or pick another name");
    }
    if lsn.is_none() {
        if let Some(w) = existing.iter().find(|c| {
            c.spec.tenant_id == tenant
                && c.spec.timeline_id == timeline
                && c.spec.read_only_lsn.is_none()
        }) {
            bail!(
                "compute {:?} already writes to branch {branch:?}; a branch has one read-write compute (use that one, create a branch with `zenith branch`, or add --lsn for a read-only compute)",
                w.spec.name
            );
        }
    }
    let port = match port {
        Some(p) => {
            if let Some(c) = existing.iter().find(|c| c.spec.port == p) {
                bail!(
                    "port {p} is already assigned to compute {:?}: pick another --port",
                    c.spec.name
                );
            }
            p
        }
        None => pick_port(env, &existing)?,
    };
    if let Some(l) = lsn {
        // An LSN the writer has produced but the pageserver not yet ingested.
        if ps.timeline_info(tenant, timeline)?.last_record_lsn < l {
            catch_up(env, ps, tenant, timeline)?;
        }
    }
    let info = ps.timeline_info(tenant, timeline)?;
    let basebackup_lsn = lsn.unwrap_or(info.last_record_lsn);
    if let Some(l) = lsn {
        if l > info.last_record_lsn {
            bail!(
                "LSN {l} is beyond the end of branch {branch:?} ({}): pick an earlier LSN",
                info.last_record_lsn
            );
        }
        if l < info.latest_gc_cutoff_lsn {
            bail!(
                "LSN {l} is below the GC cutoff {} of branch {branch:?}: its history there was garbage-collected; pick a later LSN",
                info.latest_gc_cutoff_lsn
            );
        }
    }

    let parent = env.computes_dir(tenant);
    crashsafe::create_dir_all_durable(&parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let dir = parent.join(name);
    let tmp = parent.join(format!("{name}{}", crashsafe::TEMP_FILE_SUFFIX));
    let _ = std::fs::remove_dir_all(&tmp);
    let spec = ComputeSpec {
        name: name.to_string(),
        tenant_id: tenant,
        timeline_id: timeline,
        branch: branch.to_string(),
        port,
        read_only_lsn: lsn,
        basebackup_lsn,
        settings: settings.to_vec(),
        password_auth: false,
    };
    let res = (|| -> anyhow::Result<()> {
        // Every start makes the data directory (`ComputeNode::start`).
        std::fs::create_dir_all(&tmp)?;
        let text = toml::to_string_pretty(&spec)?;
        crashsafe::write_file_atomic(tmp.join(SPEC_FILE_NAME), text.as_bytes())?;
        crashsafe::rename_durable(&tmp, &dir)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("creating compute {name:?}")));
    }
    Ok(ComputeNode { env, spec, dir })
}

/// The first port from `computes.base_port` that no compute has and that is free.
fn pick_port(env: &LocalEnv, existing: &[ComputeNode<'_>]) -> anyhow::Result<u16> {
    let mut p = env.computes.base_port;
    for _ in 0..1000 {
        let taken = existing.iter().any(|c| c.spec.port == p)
            || background_process::check_port_free(
                std::net::SocketAddr::from(([127, 0, 0, 1], p)),
                "compute",
                "change computes.base_port in .zenith/config",
            )
            .is_err();
        if !taken {
            return Ok(p);
        }
        p = p.checked_add(1).context("no free port for the compute")?;
    }
    bail!(
        "no free port for a compute from {}: pass --port",
        env.computes.base_port
    )
}
