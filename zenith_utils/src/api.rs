//! The request and response bodies of the daemons' HTTP APIs, and the
//! names of the files a daemon keeps in its workdir, defined once for the
//! daemon that serves them and the clients that call them (the control
//! plane, tests).
//!
//! They live here rather than in the daemon's crate so that a client does
//! not link the daemon's storage code to know the shape of a JSON body:
//! these types need only ids and LSNs. The pagestream codec and its client
//! stay in the pageserver crate (`pageserver::pagestream`): they need
//! `postgres_ffi`'s relation and SLRU types, and every user of them
//! (`pagebench`, the pageserver's tests) is in that crate.

/// The pageserver's management API (`pageserver/src/http/openapi_spec.yml`).
pub mod pageserver {
    use serde::{Deserialize, Serialize};

    use crate::id::{TenantId, TimelineId};
    use crate::lsn::Lsn;

    /// The pageserver's configuration file in its workdir.
    pub const CONFIG_FILE_NAME: &str = "pageserver.toml";
    /// Its pid file in its workdir, locked while it runs.
    pub const PID_FILE_NAME: &str = "pageserver.pid";

    /// An element of `GET /v1/tenant`; the answer to `POST /v1/tenant`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TenantInfo {
        pub id: TenantId,
    }

    /// `POST /v1/tenant`.
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct TenantCreateRequest {
        /// Default: a new random id.
        pub new_tenant_id: Option<TenantId>,
    }

    /// Whether a timeline is served.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
    #[serde(rename_all = "lowercase")]
    pub enum TimelineState {
        /// Loaded, taking WAL and serving reads.
        #[default]
        Active,
        /// It failed: WAL ingest stopped (reads of what it has go on), or
        /// it could not be loaded at all (then every LSN below is `0/0`).
        /// `broken_reason` says why; a restart of the pageserver retries.
        Broken,
    }

    /// `GET /v1/tenant/{tenant_id}/timeline/{timeline_id}`, elements of
    /// the timeline list, and the answer to timeline creation.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TimelineInfo {
        pub timeline_id: TimelineId,
        pub tenant_id: TenantId,
        #[serde(default)]
        pub state: TimelineState,
        #[serde(default)]
        pub broken_reason: Option<String>,
        pub ancestor_timeline_id: Option<TimelineId>,
        pub ancestor_lsn: Option<Lsn>,
        pub last_record_lsn: Lsn,
        pub prev_record_lsn: Lsn,
        pub disk_consistent_lsn: Lsn,
        pub latest_gc_cutoff_lsn: Lsn,
        pub initdb_lsn: Lsn,
        /// Sum of the databases' sizes at `last_record_lsn`; null if it
        /// could not be computed.
        pub current_logical_size: Option<u64>,
        /// Sum of the sizes of the timeline's layer files.
        pub current_physical_size: u64,
        /// The persisted WAL source, password replaced by `***`.
        pub wal_source: Option<String>,
    }

    /// `POST /v1/tenant/{tenant_id}/timeline`: bootstrap (initdb), import
    /// a data directory, or branch.
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct TimelineCreateRequest {
        /// Default: a new random id.
        pub new_timeline_id: Option<TimelineId>,
        /// Branch from this timeline ...
        pub ancestor_timeline_id: Option<TimelineId>,
        /// ... at this LSN (default: its last record).
        pub ancestor_start_lsn: Option<Lsn>,
        /// Import this cleanly stopped PostgreSQL data directory (a path on
        /// the pageserver's machine) instead of running initdb.
        pub import_pgdata: Option<String>,
    }

    /// `DELETE /v1/tenant/{tenant_id}/timeline/{timeline_id}`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TimelineDeleted {
        pub tenant_id: TenantId,
        pub timeline_id: TimelineId,
    }

    /// `PUT .../wal_source`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct WalSourceRequest {
        /// `host=... port=... user=... [password=...] [slot=...]`.
        pub connstr: String,
    }

    /// The answer to `PUT` and `DELETE .../wal_source`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct WalSourceResponse {
        /// The connection string (password replaced by `***`), or null.
        pub wal_source: Option<String>,
    }

    /// The answer to `PUT .../checkpoint`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct CheckpointResponse {
        pub disk_consistent_lsn: Lsn,
        pub last_record_lsn: Lsn,
    }

    /// `PUT .../do_gc`.
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct GcRequest {
        /// Bytes of WAL history to keep below the last record (default: the
        /// tenant configuration's `gc_horizon`).
        pub gc_horizon: Option<u64>,
        /// History to keep by age, e.g. "0s" or "1h" (default: the tenant
        /// configuration's `pitr_interval`).
        pub pitr_interval: Option<String>,
    }

    /// The answer to `PUT .../do_gc`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct GcResponse {
        pub cutoff: Lsn,
        pub layers_total: usize,
        pub layers_removed: usize,
        pub bytes_removed: u64,
    }

    /// The answer to `PUT .../compact`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct CompactResponse {
        /// L1 delta layers written by merging L0 layers (0: fewer than two).
        pub l1_layers_written: usize,
        /// The last image layer created, if any (see `image_layers`).
        pub image_layer: Option<String>,
        /// Every image layer created: one per key-range partition with
        /// enough deltas above its last image.
        #[serde(default)]
        pub image_layers: Vec<String>,
    }

    /// How [`LsnByTimestampResponse::lsn`] relates to the commits.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum LsnTimestampKind {
        /// The last commit at or before the timestamp.
        Present,
        /// Every commit is older: the last record.
        Future,
        /// Every commit is newer: the oldest readable LSN.
        Past,
        /// No commit in the timeline's readable history.
        NoData,
    }

    /// The answer to `GET .../get_lsn_by_timestamp?timestamp=...`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct LsnByTimestampResponse {
        pub lsn: Lsn,
        pub kind: LsnTimestampKind,
    }
}
