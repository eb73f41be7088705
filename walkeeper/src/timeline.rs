//! The daemon's timelines: each one an [`Acceptor`] over a [`DiskStore`]
//! in `<datadir>/<tenant_id>/<timeline_id>/`, with watches that replication
//! senders wait on.
//!
//! The acceptor is behind a `std::sync::Mutex`: every call into it may
//! fsync, so callers run it off the async workers' tasks (`block_in_place`
//! or `spawn_blocking`; see [`Timeline::process_batch`]). Async code never
//! takes that lock: after each call the timeline publishes a snapshot of
//! the acceptor's state in a `watch` channel, and status, metrics and
//! replication read that.
//! WAL below the commit LSN never changes, so replication senders read
//! segment files without taking the lock ([`wal_storage::read_segment`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use anyhow::{bail, Context};

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

use tokio::sync::watch;
use tracing::{info, warn};
use zenith_utils::api::walkeeper::{FeedbackStatus, TimelineStatus};
use zenith_utils::crashsafe;
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

/// What readers see of a timeline's acceptor, published after every call
/// that changes it (a flush, a vote, WAL removal). HTTP status, metrics and
/// replication read this instead of taking the acceptor's lock, which is
/// held across fsyncs.
#[derive(Debug, Clone)]
struct Snapshot {
    term: Term,
    epoch: Term,
    term_history: Vec<(Term, Lsn)>,
    flush_lsn: Lsn,
    /// Capped by the flush LSN.
    commit_lsn: Lsn,
    truncate_lsn: Lsn,
    remote_consistent_lsn: Lsn,
    local_start_lsn: Lsn,
    timeline_start_lsn: Lsn,
    pg_version: u32,
    system_id: u64,
    wal_seg_size: u32,
    /// The segment size the store uses (the proposer's, once greeted).
    store_seg_size: usize,
}

impl Snapshot {
    fn of(acc: &Acceptor<DiskStore>) -> Snapshot {
        let st = &acc.state;
        let flush_lsn = acc.flush_lsn();
        Snapshot {
            term: st.term,
            epoch: acc.epoch(),
            term_history: st.term_history.clone(),
            flush_lsn,
            commit_lsn: st.commit_lsn.min(flush_lsn),
            truncate_lsn: st.peer_horizon_lsn,
            remote_consistent_lsn: st.remote_consistent_lsn,
            local_start_lsn: acc.store.start_lsn(),
            timeline_start_lsn: st.timeline_start_lsn,
            pg_version: st.server.pg_version,
            system_id: st.server.system_id,
            wal_seg_size: st.server.wal_seg_size,
            store_seg_size: acc.store.seg_size(),
        }
    }
}

#[derive(Debug, Default)]
struct Connections {
    proposer: Option<String>,
    replication: Vec<(u64, String)>,
    next_id: u64,
}

/// The acceptor's lock is held across fsyncs: only blocking code takes it
/// ([`process_batch`](Timeline::process_batch), loading, WAL removal).
/// Async code reads the published [`Snapshot`] and the other fields, whose
/// locks are only ever held for a copy.
pub struct Timeline {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    dir: PathBuf,
    acceptor: Mutex<Acceptor<DiskStore>>,
    snapshot: watch::Sender<Snapshot>,
    /// The commit LSN (capped by this walkeeper's flush LSN): how far
    /// replication may send.
    commit_tx: watch::Sender<Lsn>,
    /// The term: a proposer's connection ends when it changes under it.
    term_tx: watch::Sender<Term>,
    /// The replication client's latest feedback, handed to the acceptor
    /// (relayed to the proposer, persisted as the remote consistent LSN) by
    /// the next call that holds its lock.
    feedback: Mutex<Option<PageserverFeedback>>,
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
        let snapshot = Snapshot::of(&acceptor);
        Ok(Timeline {
            tenant_id,
            timeline_id,
            dir: dir.to_path_buf(),
            commit_tx: watch::channel(snapshot.commit_lsn).0,
            term_tx: watch::channel(snapshot.term).0,
            snapshot: watch::channel(snapshot).0,
            acceptor: Mutex::new(acceptor),
            feedback: Mutex::new(None),
            conns: Mutex::new(Connections::default()),
        })
    }

    /// The acceptor, with the latest replication feedback handed to it
    /// (blocking: the lock may be held by a call that fsyncs).
    fn lock(&self) -> std::sync::MutexGuard<'_, Acceptor<DiskStore>> {
        // A panic while holding the lock leaves the acceptor as the last
        // completed call left it: durable state is on disk either way.
        let mut acc = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        let feedback = *self.feedback.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = feedback {
            acc.pageserver_feedback = Some(f);
            if f.ps_flushlsn > acc.state.remote_consistent_lsn && f.ps_flushlsn <= acc.flush_lsn() {
                // Persisted with the next control file write (a hint: losing it
                // only keeps more WAL).
                acc.state.remote_consistent_lsn = f.ps_flushlsn;
            }
        }
        acc
    }

    fn snap(&self) -> watch::Ref<'_, Snapshot> {
        self.snapshot.borrow()
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

    /// Publish the acceptor's state to the watchers (and unlock).
    fn publish(&self, acc: std::sync::MutexGuard<'_, Acceptor<DiskStore>>) {
        let snapshot = Snapshot::of(&acc);
        drop(acc);
        let (commit, term) = (snapshot.commit_lsn, snapshot.term);
        self.snapshot.send_replace(snapshot);
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
        self.snap().store_seg_size
    }

    pub fn system_id(&self) -> u64 {
        self.snap().system_id
    }

    pub fn start_lsn(&self) -> Lsn {
        self.snap().local_start_lsn
    }

    /// The flush LSN and the term of this walkeeper's last WAL.
    pub fn flush_and_epoch(&self) -> (Lsn, Term) {
        let s = self.snap();
        (s.flush_lsn, s.epoch)
    }

    /// WAL at `lsn` below `end` (at most `buf.len()` bytes; blocking: it
    /// reads segment files). `end` must be at or below the commit LSN or the
    /// caller must hold the term (WAL above the commit LSN may be truncated
    /// by a new proposer).
    pub fn read_wal(&self, lsn: Lsn, end: Lsn, buf: &mut [u8]) -> Result<usize, StoreError> {
        let n = buf.len().min(end.0.saturating_sub(lsn.0) as usize);
        if n == 0 {
            return Ok(0);
        }
        wal_storage::read_segment(&self.dir, self.seg_size(), lsn, &mut buf[..n])
    }

    /// Record the replication client's feedback: relayed to the proposer,
    /// and its durable LSN lets WAL below it go. Never waits for a flush.
    pub fn pageserver_feedback(&self, write: Lsn, flush: Lsn, apply: Lsn) {
        *self.feedback.lock().unwrap_or_else(|e| e.into_inner()) = Some(PageserverFeedback {
            current_timeline_size: 0,
            ps_writelsn: write,
            ps_flushlsn: flush,
            ps_applylsn: apply,
            ps_replytime: 0,
        });
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
            self.publish(acc);
            return Ok(0);
        }
        let removed = acc.store.remove_segments_below(horizon);
        self.publish(acc);
        removed
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
        let s = self.snap();
        (s.flush_lsn, s.commit_lsn)
    }

    /// Whether a proposer (a compute's walproposer) is connected.
    pub fn has_proposer(&self) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .proposer
            .is_some()
    }

    /// What HTTP reports: the last published state, the connections and
    /// the latest feedback. Never waits for a flush.
    pub fn status(&self) -> TimelineStatus {
        let s = self.snap().clone();
        let feedback = *self.feedback.lock().unwrap_or_else(|e| e.into_inner());
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        TimelineStatus {
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
            term: s.term,
            epoch: s.epoch,
            term_history: s.term_history,
            flush_lsn: s.flush_lsn,
            commit_lsn: s.commit_lsn,
            truncate_lsn: s.truncate_lsn,
            remote_consistent_lsn: s.remote_consistent_lsn,
            local_start_lsn: s.local_start_lsn,
            timeline_start_lsn: s.timeline_start_lsn,
            pg_version: s.pg_version,
            system_id: s.system_id,
            wal_seg_size: s.wal_seg_size,
            proposer: conns.proposer.clone(),
            replication_clients: conns.replication.iter().map(|(_, a)| a.clone()).collect(),
            pageserver_feedback: feedback.map(|f| FeedbackStatus {
                write_lsn: f.ps_writelsn,
                flush_lsn: f.ps_flushlsn,
                apply_lsn: f.ps_applylsn,
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

/// The file in the data directory that names the walkeeper it belongs to.
pub const ID_FILE_NAME: &str = "walkeeper.id";

/// Checks the id recorded in the data directory, written on first start
/// (a later start with another id is refused: the id names this WAL to
/// proposers).
pub fn check_node_id(datadir: &Path, id: u64) -> anyhow::Result<()> {
    let path = datadir.join(ID_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let have: u64 = s
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold an id", path.display()))?;
            if have != id {
                bail!(
                    "{} belongs to walkeeper {have}, not {id}; start it with --id {have}",
                    datadir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crashsafe::write_file_atomic(&path, format!("{id}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
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
