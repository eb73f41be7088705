//! `zenith pg export`: a branch as a stock PostgreSQL data directory.

use std::path::Path;

use anyhow::{bail, Context};
use zenith_utils::crashsafe;
use zenith_utils::id::TenantId;
use zenith_utils::lsn::Lsn;

use super::catch_up;
use crate::local_env::LocalEnv;
use crate::pageserver::PageServerNode;

/// `zenith pg export`: write the branch's data at `lsn` (default: its end,
/// once the pageserver has the WAL of a running writer) as a stock
/// PostgreSQL 15 data directory at `dest`, from a full basebackup. `dest`
/// must not exist or be empty; it appears complete or not at all. Returns
/// the LSN.
pub fn export(
    env: &LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    branch: &str,
    lsn: Option<Lsn>,
    dest: &Path,
) -> anyhow::Result<Lsn> {
    env.check_binaries()?;
    let timeline = env.branch_timeline(tenant, branch)?;
    if dest.exists()
        && std::fs::read_dir(dest)
            .with_context(|| format!("reading {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: export into a new directory",
            dest.display()
        );
    }
    let lsn = match lsn {
        Some(l) => l,
        None => {
            catch_up(env, ps, tenant, timeline)?;
            ps.timeline_info(tenant, timeline)?.last_record_lsn
        }
    };
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = dest.with_file_name(format!("{name}{}", crashsafe::TEMP_FILE_SUFFIX));
    let _ = std::fs::remove_dir_all(&tmp);
    let res = (|| -> anyhow::Result<()> {
        ps.basebackup_into(tenant, timeline, Some(lsn), true, &tmp)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        if dest.exists() {
            std::fs::remove_dir(dest).with_context(|| format!("replacing {}", dest.display()))?;
        }
        crashsafe::rename_durable(&tmp, dest)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("exporting branch {branch:?} at {lsn}")));
    }
    Ok(lsn)
}
