//! Branch names, branch sources (`BRANCH`, `BRANCH@LSN`, `BRANCH@TIMESTAMP`)
//! and the branch tree.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::compute::catch_up;
use crate::local_env::LocalEnv;
use crate::pageserver::{PageServerNode, TimelineInfo};
use zenith_utils::api::pageserver::LsnTimestampKind;

/// A point in a branch's history, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointSpec {
    /// The branch's end.
    Latest,
    Lsn(Lsn),
    /// An ISO 8601 time, resolved with `get_lsn_by_timestamp`.
    Timestamp(String),
}

/// `BRANCH`, `BRANCH@LSN` or `BRANCH@TIMESTAMP`.
pub fn parse_source(s: &str) -> anyhow::Result<(String, PointSpec)> {
    match s.split_once('@') {
        None => Ok((s.to_string(), PointSpec::Latest)),
        Some((b, at)) => {
            if b.is_empty() {
                bail!("invalid source {s:?}: expected BRANCH, BRANCH@LSN or BRANCH@TIMESTAMP");
            }
            Ok((b.to_string(), parse_point(at)?))
        }
    }
}

/// An LSN (`X/Y`) or an ISO 8601 timestamp.
pub fn parse_point(at: &str) -> anyhow::Result<PointSpec> {
    if let Ok(l) = at.parse::<Lsn>() {
        return Ok(PointSpec::Lsn(l));
    }
    if humantime::parse_rfc3339_weak(at).is_ok() {
        return Ok(PointSpec::Timestamp(at.to_string()));
    }
    bail!(
        "{at:?} is neither an LSN (like 0/16B3748) nor an ISO 8601 time (like 2026-11-24T10:00:00Z)"
    )
}

/// Resolve a point of `branch` to an LSN (`None` = the branch's end).
///
/// For the end of a branch with a running read-write compute, wait until
/// the pageserver has the compute's WAL up to its flush position first, so
/// that everything committed on the compute is in the branch point.
pub fn resolve_point(
    env: &LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    branch: &str,
    point: &PointSpec,
) -> anyhow::Result<Option<Lsn>> {
    let timeline = env.branch_timeline(tenant, branch)?;
    match point {
        PointSpec::Lsn(l) => Ok(Some(*l)),
        PointSpec::Timestamp(ts) => {
            // Commits the writer made up to now must be on the pageserver.
            catch_up(env, ps, tenant, timeline)?;
            let (lsn, kind) = ps.lsn_by_timestamp(tenant, timeline, ts)?;
            match kind {
                LsnTimestampKind::Present | LsnTimestampKind::Future => Ok(Some(lsn)),
                LsnTimestampKind::Past => bail!(
                    "{ts} is before the first commit of branch {branch:?}: pick a later time or an LSN"
                ),
                LsnTimestampKind::NoData => bail!(
                    "branch {branch:?} has no commits to locate {ts} by: give an LSN instead"
                ),
            }
        }
        PointSpec::Latest => catch_up(env, ps, tenant, timeline),
    }
}

/// `zenith branch NEW SOURCE`: create the branch and record its name.
pub fn create_branch(
    env: &mut LocalEnv,
    tenant: TenantId,
    new_name: &str,
    source: &str,
) -> anyhow::Result<TimelineInfo> {
    // Before anything is created on the pageserver.
    env.check_new_branch(tenant, new_name)?;
    let (src, point) = parse_source(source)?;
    let info = {
        let ps = PageServerNode::new(env);
        let ancestor = env.branch_timeline(tenant, &src)?;
        let lsn = resolve_point(env, &ps, tenant, &src, &point)?;
        ps.timeline_create(tenant, None, Some(ancestor), lsn)
            .with_context(|| format!("creating branch {new_name:?} from {source:?}"))?
    };
    env.add_branch(tenant, new_name, info.timeline_id)?;
    env.save()?;
    Ok(info)
}

/// The branch tree of a tenant, one line per timeline:
/// `main`, then children indented with their branch-point LSNs.
pub fn tree(env: &LocalEnv, timelines: &[TimelineInfo], tenant: TenantId) -> String {
    let mut children: BTreeMap<Option<TimelineId>, Vec<&TimelineInfo>> = BTreeMap::new();
    for t in timelines {
        children.entry(t.ancestor_timeline_id).or_default().push(t);
    }
    for v in children.values_mut() {
        v.sort_by_key(|t| {
            (
                t.ancestor_lsn,
                env.branch_name(tenant, t.timeline_id).map(str::to_string),
            )
        });
    }
    let mut out = String::new();
    fn walk(
        env: &LocalEnv,
        tenant: TenantId,
        children: &BTreeMap<Option<TimelineId>, Vec<&TimelineInfo>>,
        parent: Option<TimelineId>,
        prefix: &str,
        out: &mut String,
    ) {
        let Some(kids) = children.get(&parent) else {
            return;
        };
        for (i, t) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let name = env
                .branch_name(tenant, t.timeline_id)
                .map(str::to_string)
                .unwrap_or_else(|| format!("(unnamed {})", t.timeline_id));
            let (branch_glyph, next_prefix) = if parent.is_none() {
                ("", String::new())
            } else if last {
                ("└─ ", format!("{prefix}   "))
            } else {
                ("├─ ", format!("{prefix}│  "))
            };
            let at = match t.ancestor_lsn {
                Some(l) => format!(" @{l}"),
                None => String::new(),
            };
            out.push_str(&format!(
                "{prefix}{branch_glyph}{name}{at}  (timeline {}, last LSN {})\n",
                t.timeline_id, t.last_record_lsn
            ));
            walk(
                env,
                tenant,
                children,
                Some(t.timeline_id),
                &next_prefix,
                out,
            );
        }
    }
    walk(env, tenant, &children, None, "", &mut out);
    // Timelines whose ancestor is not in the list (should not happen).
    let known: std::collections::HashSet<TimelineId> =
        timelines.iter().map(|t| t.timeline_id).collect();
    for t in timelines {
        if let Some(a) = t.ancestor_timeline_id {
            if !known.contains(&a) {
                out.push_str(&format!("{} (ancestor {a} missing)\n", t.timeline_id));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            parse_source("main").unwrap(),
            ("main".into(), PointSpec::Latest)
        );
        assert_eq!(
            parse_source("main@0/16B3748").unwrap(),
            ("main".into(), PointSpec::Lsn("0/16B3748".parse().unwrap()))
        );
        assert_eq!(
            parse_source("dev@2026-11-24T10:00:00Z").unwrap(),
            (
                "dev".into(),
                PointSpec::Timestamp("2026-11-24T10:00:00Z".into())
            )
        );
        assert_eq!(
            parse_source("dev@2026-11-24 10:00:00.123456").unwrap().1,
            PointSpec::Timestamp("2026-11-24 10:00:00.123456".into())
        );
        assert!(parse_source("main@yesterday").is_err());
        assert!(parse_source("@0/1").is_err());
    }
}
