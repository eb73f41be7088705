//! The daemon's timelines: each one an [`Acceptor`] over a [`DiskStore`]
//! in `<datadir>/<tenant_id>/<timeline_id>/`, with watches that replication
//! senders wait on.
//!
//! The acceptor is behind a `std::sync::Mutex`: every call into it may
//! fsync, so callers run it off the async workers' tasks (`block_in_place`
//! or `spawn_blocking`; see [`Timeline::process_batch`]).
//! WAL below the commit LSN never changes, so replication senders read
//! segment files without taking the lock ([`wal_storage::read_segment`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::acceptor::{Acceptor, AcceptorError, AcceptorState, StoreError};
use crate::proto::{AcceptorMessage, NodeId, PageserverFeedback, ProposerMessage, Term};
use crate::wal_storage::{self, DiskStore};

static WAL_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "walkeeper_wal_bytes_received_total",
        "WAL bytes received in AppendRequests"
    )
    .expect("registering walkeeper_wal_bytes_received_total")
});

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "walkeeper_proposer_messages_total",
        "Proposer messages handled, by message and outcome",
        &["message", "outcome"]
    )
    .expect("registering walkeeper_proposer_messages_total")
});

static PROCESS_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "walkeeper_proposer_message_seconds",
        "Time to handle a proposer message, fsync included",
        vec![0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    )
    .expect("registering walkeeper_proposer_message_seconds")
});

/// PostgreSQL's default WAL segment size, for timelines that have not been
/// greeted yet.
pub const DEFAULT_WAL_SEG_SIZE: usize = 16 << 20;

/// What HTTP reports of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineStatus {
    pub tenant_id: String,
    pub timeline_id: String,
    pub term: Term,
    /// The term of the last WAL record this walkeeper holds.
    pub epoch: Term,
    pub term_history: Vec<(Term, String)>,
    pub flush_lsn: String,
    pub commit_lsn: String,
    /// WAL below this is on every walkeeper (from the proposer).
    pub truncate_lsn: String,
    /// What the pageserver has made durable.
    pub remote_consistent_lsn: String,
    pub local_start_lsn: String,
    pub timeline_start_lsn: String,
    pub pg_version: u32,
    pub system_id: u64,
    pub wal_seg_size: u32,
    /// The address of the connected proposer, if one is.
    pub proposer: Option<String>,
    /// Addresses of connected replication clients (the pageserver).
    pub replication_clients: Vec<String>,
    pub pageserver_feedback: Option<FeedbackStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeedbackStatus {
    pub write_lsn: String,
    pub flush_lsn: String,
    pub apply_lsn: String,
}

#[derive(Debug, Default)]
struct Connections {
    proposer: Option<String>,
    replication: Vec<(u64, String)>,
    next_id: u64,
}

pub struct Timeline {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    dir: PathBuf,
    acceptor: Mutex<Acceptor<DiskStore>>,
    /// The commit LSN (capped by this walkeeper's flush LSN): how far
    /// replication may send.
    commit_tx: watch::Sender<Lsn>,
    /// The term: a proposer's connection ends when it changes under it.
    term_tx: watch::Sender<Term>,
    conns: Mutex<Connections>,
}

impl Timeline {
    fn open(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        node_id: NodeId,
    ) -> Result<Timeline, StoreError> {
        let seg_size =
            match crate::control_file::load(dir).map_err(|e| StoreError(e.to_string()))? {
                Some(st) if st.server.wal_seg_size != 0 => st.server.wal_seg_size as usize,
                _ => DEFAULT_WAL_SEG_SIZE,
            };
        let (store, state) = DiskStore::open(dir, seg_size)?;
        let state = match state {
            Some(st) => {
                if st.tenant_id != tenant_id || st.timeline_id != timeline_id {
                    return Err(StoreError(format!(
                        "{} holds tenant {} timeline {}",
                        dir.display(),
                        st.tenant_id,
                        st.timeline_id
                    )));
                }
                st
            }
            None => AcceptorState::new(tenant_id, timeline_id),
        };
        let acceptor = Acceptor::new(state, store, node_id);
        let commit = acceptor.state.commit_lsn.min(acceptor.flush_lsn());
        let term = acceptor.state.term;
        Ok(Timeline {
            tenant_id,
            timeline_id,
            dir: dir.to_path_buf(),
            acceptor: Mutex::new(acceptor),
            commit_tx: watch::channel(commit).0,
            term_tx: watch::channel(term).0,
            conns: Mutex::new(Connections::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Acceptor<DiskStore>> {
        // A panic while holding the lock leaves the acceptor as the last
        // completed call left it: durable state is on disk either way.
        self.acceptor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handle proposer messages with one fsync for all of them (blocking);
    /// see [`Acceptor::process_batch`].
    pub fn process_batch(
        &self,
        msgs: &[ProposerMessage],
    ) -> (Vec<AcceptorMessage>, Option<AcceptorError>) {
        let started = std::time::Instant::now();
        for m in msgs {
            if let ProposerMessage::Append(a) = m {
                WAL_BYTES.inc_by(a.wal_data.len() as u64);
            }
        }
        let mut acc = self.lock();
        if let Some(ProposerMessage::Greeting(g)) = msgs.first() {
            // A timeline that holds no WAL yet takes the proposer's segment size.
            if g.wal_seg_size.is_power_of_two() && g.wal_seg_size >= 1 << 20 {
                if let Err(e) = acc.store.set_seg_size(g.wal_seg_size as usize) {
                    return (Vec::new(), Some(e.into()));
                }
            }
        }
        let (replies, err) = acc.process_batch(msgs);
        PROCESS_SECONDS.observe(started.elapsed().as_secs_f64());
        for (i, m) in msgs.iter().enumerate() {
            let ok = err.is_none() || i < replies.len();
            REQUESTS
                .with_label_values(&[m.name(), if ok { "ok" } else { "error" }])
                .inc();
        }
        self.publish(acc);
        (replies, err)
    }

    /// Tell the watchers the acceptor's commit LSN and term (and unlock).
    fn publish(&self, acc: std::sync::MutexGuard<'_, Acceptor<DiskStore>>) {
        let commit = acc.state.commit_lsn.min(acc.flush_lsn());
        let term = acc.state.term;
        drop(acc);
        self.commit_tx.send_if_modified(|c| {
            let changed = *c != commit;
            *c = commit;
            changed
        });
        self.term_tx.send_if_modified(|t| {
            let changed = *t != term;
            *t = term;
            changed
        });
    }

    pub fn commit_lsn(&self) -> watch::Receiver<Lsn> {
        self.commit_tx.subscribe()
    }

    pub fn term(&self) -> watch::Receiver<Term> {
        self.term_tx.subscribe()
    }

    pub fn seg_size(&self) -> usize {
        self.lock().store.seg_size()
    }

    pub fn system_id(&self) -> u64 {
        self.lock().state.server.system_id
    }

    pub fn start_lsn(&self) -> Lsn {
        self.lock().store.start_lsn()
    }

    /// The flush LSN and the term of this walkeeper's last WAL.
    pub fn flush_and_epoch(&self) -> (Lsn, Term) {
        let acc = self.lock();
        (acc.flush_lsn(), acc.epoch())
    }

    /// WAL at `lsn` below `end` (at most `buf.len()` bytes). `end` must be
    /// at or below the commit LSN or the caller must hold the term (WAL
    /// above the commit LSN may be truncated by a new proposer).
    pub fn read_wal(&self, lsn: Lsn, end: Lsn, buf: &mut [u8]) -> Result<usize, StoreError> {
        let n = buf.len().min(end.0.saturating_sub(lsn.0) as usize);
        if n == 0 {
            return Ok(0);
        }
        wal_storage::read_segment(&self.dir, self.seg_size(), lsn, &mut buf[..n])
    }

    /// Record the pageserver's feedback: relayed to the proposer, and its
    /// durable LSN lets WAL below it go.
    pub fn pageserver_feedback(&self, write: Lsn, flush: Lsn, apply: Lsn) {
        let mut acc = self.lock();
        acc.pageserver_feedback = Some(PageserverFeedback {
            current_timeline_size: 0,
            ps_writelsn: write,
            ps_flushlsn: flush,
            ps_applylsn: apply,
            ps_replytime: 0,
        });
        if flush > acc.state.remote_consistent_lsn && flush <= acc.flush_lsn() {
            // Persisted with the next control file write (a hint: losing it
            // only keeps more WAL).
            acc.state.remote_consistent_lsn = flush;
        }
    }

    /// Remove WAL segments everyone has: below both the pageserver's durable
    /// LSN and the proposer's truncate LSN (blocking).
    pub fn remove_old_wal(&self) -> Result<usize, StoreError> {
        let mut acc = self.lock();
        let horizon = acc
            .state
            .remote_consistent_lsn
            .min(acc.state.peer_horizon_lsn)
            .min(acc.state.commit_lsn);
        if horizon == Lsn(0) {
            return Ok(0);
        }
        acc.store.remove_segments_below(horizon)
    }

    pub fn proposer_connected(&self, addr: String) -> ConnGuard<'_> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.proposer = Some(addr);
        ConnGuard {
            tl: self,
            replication: None,
        }
    }

    pub fn replication_connected(&self, addr: String) -> ConnGuard<'_> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.next_id += 1;
        let id = c.next_id;
        c.replication.push((id, addr));
        ConnGuard {
            tl: self,
            replication: Some(id),
        }
    }

    /// The flush LSN and the commit LSN (capped by the flush LSN), as
    /// [`status`](Self::status) reports them.
    pub fn flush_and_commit_lsn(&self) -> (Lsn, Lsn) {
        let acc = self.lock();
        let flush = acc.flush_lsn();
        (flush, acc.state.commit_lsn.min(flush))
    }

    /// Whether a proposer (a compute's walproposer) is connected.
    pub fn has_proposer(&self) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .proposer
            .is_some()
    }

    pub fn status(&self) -> TimelineStatus {
        let acc = self.lock();
        let st = &acc.state;
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        TimelineStatus {
            tenant_id: self.tenant_id.to_string(),
            timeline_id: self.timeline_id.to_string(),
            term: st.term,
            epoch: acc.epoch(),
            term_history: st
                .term_history
                .iter()
                .map(|(t, l)| (*t, l.to_string()))
                .collect(),
            flush_lsn: acc.flush_lsn().to_string(),
            commit_lsn: st.commit_lsn.min(acc.flush_lsn()).to_string(),
            truncate_lsn: st.peer_horizon_lsn.to_string(),
            remote_consistent_lsn: st.remote_consistent_lsn.to_string(),
            local_start_lsn: acc.store.start_lsn().to_string(),
            timeline_start_lsn: st.timeline_start_lsn.to_string(),
            pg_version: st.server.pg_version,
            system_id: st.server.system_id,
            wal_seg_size: st.server.wal_seg_size,
            proposer: conns.proposer.clone(),
            replication_clients: conns.replication.iter().map(|(_, a)| a.clone()).collect(),
            pageserver_feedback: acc.pageserver_feedback.map(|f| FeedbackStatus {
                write_lsn: f.ps_writelsn.to_string(),
                flush_lsn: f.ps_flushlsn.to_string(),
                apply_lsn: f.ps_applylsn.to_string(),
            }),
        }
    }
}

/// Unregisters a connection from the timeline's status when dropped.
pub struct ConnGuard<'a> {
    tl: &'a Timeline,
    replication: Option<u64>,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut c = self.tl.conns.lock().unwrap_or_else(|e| e.into_inner());
        match self.replication {
            Some(id) => c.replication.retain(|(i, _)| *i != id),
            None => c.proposer = None,
        }
    }
}

/// Every timeline of a walkeeper.
pub struct Timelines {
    datadir: PathBuf,
    node_id: NodeId,
    map: RwLock<HashMap<(TenantId, TimelineId), Arc<Timeline>>>,
}

impl Timelines {
    /// Load every timeline under `datadir` (blocking).
    pub fn load(datadir: &Path, node_id: NodeId) -> anyhow::Result<Timelines> {
        let mut map = HashMap::new();
        for tenant in std::fs::read_dir(datadir)? {
            let tenant = tenant?;
            let Some(tenant_id) = tenant
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<TenantId>().ok())
            else {
                continue;
            };
            for tl in std::fs::read_dir(tenant.path())? {
                let tl = tl?;
                let Some(timeline_id) = tl
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<TimelineId>().ok())
                else {
                    continue;
                };
                let t =
                    Timeline::open(&tl.path(), tenant_id, timeline_id, node_id).map_err(|e| {
                        anyhow::anyhow!("loading timeline {tenant_id}/{timeline_id}: {e}")
                    })?;
                info!(%tenant_id, %timeline_id, flush_lsn = %t.flush_and_epoch().0, "timeline loaded");
                map.insert((tenant_id, timeline_id), Arc::new(t));
            }
        }
        Ok(Timelines {
            datadir: datadir.to_path_buf(),
            node_id,
            map: RwLock::new(map),
        })
    }

    pub fn get(&self, tenant_id: TenantId, timeline_id: TimelineId) -> Option<Arc<Timeline>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant_id, timeline_id))
            .cloned()
    }

    /// The timeline, created (directory and all) if it does not exist yet
    /// (blocking).
    pub fn get_or_create(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Arc<Timeline>, StoreError> {
        if let Some(t) = self.get(tenant_id, timeline_id) {
            return Ok(t);
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(&(tenant_id, timeline_id)) {
            return Ok(Arc::clone(t));
        }
        let dir = self
            .datadir
            .join(tenant_id.to_string())
            .join(timeline_id.to_string());
        let t = Arc::new(Timeline::open(&dir, tenant_id, timeline_id, self.node_id)?);
        info!(%tenant_id, %timeline_id, "timeline created");
        map.insert((tenant_id, timeline_id), Arc::clone(&t));
        Ok(t)
    }

    pub fn all(&self) -> Vec<Arc<Timeline>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One pass of WAL removal over every timeline (blocking).
    pub fn remove_old_wal(&self) {
        for tl in self.all() {
            match tl.remove_old_wal() {
                Ok(0) => {}
                Ok(n) => {
                    info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, "removed {n} WAL segments")
                }
                Err(e) => {
                    warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, "WAL removal failed: {e}")
                }
            }
        }
    }
}
