//! What a compute is: its [`ComputeSpec`], kept in `compute.toml`.

use serde::{Deserialize, Serialize};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

pub(super) const SPEC_FILE_NAME: &str = "compute.toml";

/// What a compute is; stored in its `compute.toml`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    pub name: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// The branch name when the compute was created.
    pub branch: String,
    pub port: u16,
    /// `None`: read-write at the branch's tip. `Some`: read-only at this LSN.
    pub read_only_lsn: Option<Lsn>,
    /// The branch's end (or the read-only LSN) when the compute was created;
    /// informational: every start takes its own slim basebackup.
    pub basebackup_lsn: Lsn,
    /// PostgreSQL settings given at creation (`NAME=VALUE`), written after ours.
    #[serde(default)]
    pub settings: Vec<String>,
    /// Roles other than the superuser log in with SCRAM-SHA-256 (endpoints
    /// of the console, reached through the proxy); otherwise loopback is
    /// trusted.
    #[serde(default)]
    pub password_auth: bool,
}
