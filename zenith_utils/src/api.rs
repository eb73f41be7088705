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
        /// `disk_consistent_lsn` of the last index in remote storage; null
        /// without remote storage.
        #[serde(default)]
        pub remote_consistent_lsn: Option<Lsn>,
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

/// The console's API (`control_plane`'s `console` daemon): for the proxy
/// (role secrets, waking endpoints) and for users (endpoints, roles,
/// databases). See docs/proxy.md.
pub mod console {
    use serde::{Deserialize, Serialize};

    use crate::id::TenantId;

    /// The console's state file in its workdir.
    pub const STATE_FILE_NAME: &str = "console.json";
    /// Its pid file in its workdir, locked while it runs.
    pub const PID_FILE_NAME: &str = "console.pid";

    /// Whether `name` can name an endpoint: a DNS label (lowercase letters,
    /// digits, `-` not at either end, at most 63), since it is the first
    /// label of the server name clients connect to.
    pub fn valid_endpoint_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    /// How clients of an endpoint log in through the proxy.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
    #[serde(rename_all = "lowercase")]
    pub enum EndpointAuth {
        /// SCRAM-SHA-256 against the role's secret (or the password form).
        #[default]
        Password,
        /// The proxy answers with a login URL; the user approves the
        /// session in the console's web page.
        Link,
    }

    /// `POST /v1/endpoints`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct EndpointCreateRequest {
        /// A DNS label: lowercase letters, digits and `-`.
        pub name: String,
        /// The branch the endpoint's compute runs on.
        pub branch: String,
        /// Default: the repository's default tenant.
        #[serde(default)]
        pub tenant_id: Option<TenantId>,
        #[serde(default)]
        pub auth: EndpointAuth,
        /// Stop the compute after this long without client connections;
        /// `None`: the console's default; `Some(0)`: never.
        #[serde(default)]
        pub suspend_timeout_ms: Option<u64>,
    }

    /// Whether an endpoint's compute runs.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum EndpointState {
        Running,
        Suspended,
    }

    /// `GET /v1/endpoints` elements; the answer to `POST /v1/endpoints`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct EndpointInfo {
        pub name: String,
        pub tenant_id: TenantId,
        pub branch: String,
        /// The compute's port on 127.0.0.1.
        pub port: u16,
        pub auth: EndpointAuth,
        pub suspend_timeout_ms: u64,
        pub state: EndpointState,
        pub roles: Vec<String>,
    }

    /// `POST /v1/endpoints/{endpoint}/roles`.
    #[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct RoleCreateRequest {
        pub name: String,
        pub password: String,
    }

    impl std::fmt::Debug for RoleCreateRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RoleCreateRequest")
                .field("name", &self.name)
                .field("password", &"<redacted>")
                .finish()
        }
    }

    /// `POST /v1/endpoints/{endpoint}/databases`, and the elements of its
    /// `GET`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct DatabaseInfo {
        pub name: String,
        pub owner: String,
    }

    /// `GET /v1/proxy/endpoints/{endpoint}/roles/{role}`: how that role
    /// logs in. 404 for an unknown endpoint or role (`msg` says which).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct RoleSecret {
        pub auth: EndpointAuth,
        /// The SCRAM-SHA-256 secret as in `pg_authid`; `None` for link
        /// endpoints.
        pub secret: Option<String>,
    }

    /// `POST /v1/proxy/endpoints/{endpoint}/wake`: the compute runs (it was
    /// started if it was suspended) and listens here.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct ComputeAddress {
        pub host: String,
        pub port: u16,
        /// How long starting it took; 0 when it was running.
        pub started_ms: u64,
    }

    /// What a link-auth client asked for: the proxy's
    /// `GET /v1/link_sessions/{session_id}`, which the console's page reads.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct LinkSession {
        pub endpoint: String,
        pub user: String,
        pub dbname: String,
    }

    /// A link-auth session approved in the console, sent to the proxy's
    /// `POST /v1/link_sessions/{session_id}`: where and as whom the proxy
    /// logs in (SCRAM keys of the role, hex).
    #[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct LinkApproval {
        pub host: String,
        pub port: u16,
        pub user: String,
        pub dbname: String,
        pub client_key: String,
        pub server_key: String,
    }

    impl std::fmt::Debug for LinkApproval {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LinkApproval")
                .field("host", &self.host)
                .field("port", &self.port)
                .field("user", &self.user)
                .field("dbname", &self.dbname)
                .finish_non_exhaustive()
        }
    }
}

/// The walkeeper's API (`walkeeper/src/http.rs`). See docs/walkeeper.md.
pub mod walkeeper {
    use serde::{Deserialize, Serialize};

    use crate::id::{TenantId, TimelineId};
    use crate::lsn::Lsn;

    /// A term of the quorum protocol.
    pub type Term = u64;

    /// Its pid file in its data directory, locked while it runs.
    pub const PID_FILE_NAME: &str = "walkeeper.pid";

    /// `GET /v1/tenant/{tenant_id}/timeline/{timeline_id}`, and the
    /// elements of `GET /v1/walkeeper`'s `timelines`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TimelineStatus {
        pub tenant_id: TenantId,
        pub timeline_id: TimelineId,
        pub term: Term,
        /// The term of the last WAL record this walkeeper holds.
        pub epoch: Term,
        /// (term, the LSN where its WAL starts), oldest first.
        pub term_history: Vec<(Term, Lsn)>,
        pub flush_lsn: Lsn,
        /// The commit LSN, capped by this walkeeper's flush LSN.
        pub commit_lsn: Lsn,
        /// WAL below this is on every walkeeper (from the proposer).
        pub truncate_lsn: Lsn,
        /// What the pageserver has made durable.
        pub remote_consistent_lsn: Lsn,
        /// The first LSN this walkeeper still holds.
        pub local_start_lsn: Lsn,
        pub timeline_start_lsn: Lsn,
        pub pg_version: u32,
        pub system_id: u64,
        pub wal_seg_size: u32,
        /// The address of the connected proposer, if one is.
        pub proposer: Option<String>,
        /// Addresses of connected replication clients (the pageserver).
        pub replication_clients: Vec<String>,
        pub pageserver_feedback: Option<FeedbackStatus>,
    }

    /// The replication client's last status update.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FeedbackStatus {
        pub write_lsn: Lsn,
        pub flush_lsn: Lsn,
        pub apply_lsn: Lsn,
    }

    /// `GET /v1/walkeeper`.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct WalkeeperStatus {
        pub id: u64,
        pub timelines: Vec<TimelineStatus>,
    }
}
