//! A timeline's upload queue: its new layer files, then the indexes that
//! list them, to remote storage in order.
//!
//! The layer set (the one place that installs and removes layers and saves
//! the metadata) schedules the operations: each new layer file is uploaded,
//! then an index of the timeline's layers and metadata. One worker task per
//! timeline runs them one at a time, in the order scheduled, so that:
//!
//! - a layer is uploaded before any index that lists it;
//! - indexes are uploaded in order (their sequence numbers grow);
//! - no object is written twice (every key carries the generation, every
//!   index its sequence number; a retried write of the same bytes passes).
//!
//! An index scheduled while the last queued one has not started replaces it
//! (one upload for the state both describe). A failed operation is retried
//! until it succeeds (an object storage outage stops the queue; it resumes
//! by itself). A layer removed before its upload started is not uploaded,
//! and neither is a queued index that lists it (a later one does not).
//! `remote_consistent_lsn` is the `disk_consistent_lsn` of the last index
//! uploaded. Removed layers leave the next index; their objects stay (remote
//! deletion is the deletion queue's, after generation checks).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{info, warn};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::remote_storage::{RemoteStorage, RemoteStorageError};

use super::index::{index_key, layer_key, Generation, IndexPart, LayerFileMeta, INDEX_VERSION};
use crate::tenant::metadata::TimelineMetadata;
use crate::tenant::storage_layer::filename::LayerFileName;

/// The longest wait between two tries of a failing operation.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Op {
    Layer { name: LayerFileName, path: PathBuf },
    Index { index: IndexPart, seq: u64 },
}

struct State {
    queue: VecDeque<Op>,
    /// The front operation is being run (it stays queued until it is done).
    running: bool,
    /// The index as it will be once every queued operation is done.
    latest: IndexPart,
    next_seq: u64,
}

/// One timeline's remote copy: what is uploaded and what is still queued.
pub struct RemoteTimeline {
    storage: RemoteStorage,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    generation: Generation,
    state: Mutex<State>,
    wake: Notify,
    /// Woken whenever the queue becomes empty.
    idle: Notify,
    remote_consistent_lsn: AtomicU64,
    stopped: AtomicBool,
}

impl std::fmt::Debug for RemoteTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteTimeline({}/{} in {}, generation {})",
            self.tenant_id, self.timeline_id, self.storage, self.generation
        )
    }
}

/// Size and CRC-32C of a layer file, as an index lists it (blocking I/O).
pub fn layer_file_meta(
    path: &std::path::Path,
    generation: Generation,
) -> std::io::Result<LayerFileMeta> {
    let data = std::fs::read(path)?;
    Ok(LayerFileMeta {
        file_size: data.len() as u64,
        crc32c: crc32c::crc32c(&data),
        generation,
    })
}

impl RemoteTimeline {
    /// Starts the upload worker on `runtime`, from `remote` (the newest
    /// remote index, if any: its layers are known to be uploaded) and the
    /// timeline's local `layers` and `metadata`: local layers the remote
    /// index does not list with the same size and checksum are uploaded,
    /// then a first index. Blocking (it reads the local layers).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        storage: RemoteStorage,
        runtime: &tokio::runtime::Handle,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        generation: Generation,
        remote: Option<(IndexPart, Generation, u64)>,
        layers: Vec<(LayerFileName, PathBuf)>,
        metadata: TimelineMetadata,
    ) -> std::io::Result<Arc<RemoteTimeline>> {
        let (remote_lsn, next_seq, remote_layers) = match remote {
            // A later sequence number in our own generation continues it.
            Some((index, g, seq)) if g == generation => {
                (index.disk_consistent_lsn, seq + 1, index.layers)
            }
            Some((index, _, _)) => (index.disk_consistent_lsn, 0, index.layers),
            None => (Lsn(0), 0, Default::default()),
        };
        let mut latest = IndexPart {
            version: INDEX_VERSION,
            disk_consistent_lsn: metadata.disk_consistent_lsn,
            metadata,
            layers: Default::default(),
        };
        let mut queue = VecDeque::new();
        for (name, path) in layers {
            let mut meta = layer_file_meta(&path, generation)?;
            let key = name.to_string();
            match remote_layers.get(&key) {
                Some(r) if r.file_size == meta.file_size && r.crc32c == meta.crc32c => {
                    meta.generation = r.generation;
                }
                _ => queue.push_back(Op::Layer {
                    name: name.clone(),
                    path,
                }),
            }
            latest.layers.insert(key, meta);
        }
        let rt = Arc::new(RemoteTimeline {
            storage,
            tenant_id,
            timeline_id,
            generation,
            state: Mutex::new(State {
                queue,
                running: false,
                latest,
                next_seq,
            }),
            wake: Notify::new(),
            idle: Notify::new(),
            remote_consistent_lsn: AtomicU64::new(remote_lsn.0),
            stopped: AtomicBool::new(false),
        });
        rt.push_index(&mut rt.lock());
        runtime.spawn(Arc::clone(&rt).run());
        Ok(rt)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// `disk_consistent_lsn` of the last index in remote storage.
    pub fn remote_consistent_lsn(&self) -> Lsn {
        Lsn(self.remote_consistent_lsn.load(Ordering::Acquire))
    }

    /// Operations not done yet.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Layer files were installed (`added`, with their metadata) and
    /// removed: upload the new ones, then an index without the removed.
    pub fn schedule_layer_change(
        &self,
        added: Vec<(LayerFileName, PathBuf, LayerFileMeta)>,
        removed: &[LayerFileName],
        metadata: &TimelineMetadata,
    ) {
        let mut s = self.lock();
        for name in removed {
            s.latest.layers.remove(&name.to_string());
        }
        for (name, path, meta) in added {
            s.latest.layers.insert(name.to_string(), meta);
            s.queue.push_back(Op::Layer { name, path });
        }
        s.latest.metadata = metadata.clone();
        s.latest.disk_consistent_lsn = metadata.disk_consistent_lsn;
        self.push_index(&mut s);
    }

    /// The metadata was saved: upload an index with it.
    pub fn schedule_metadata(&self, metadata: &TimelineMetadata) {
        let mut s = self.lock();
        s.latest.metadata = metadata.clone();
        s.latest.disk_consistent_lsn = metadata.disk_consistent_lsn;
        self.push_index(&mut s);
    }

    /// Queues an index of `latest`, replacing a queued index that has not
    /// started.
    fn push_index(&self, s: &mut State) {
        let index = s.latest.clone();
        let not_started = s.queue.len() > usize::from(s.running);
        if let Some(Op::Index { index: queued, .. }) = s.queue.back_mut().filter(|_| not_started) {
            *queued = index;
        } else {
            let seq = s.next_seq;
            s.next_seq += 1;
            s.queue.push_back(Op::Index { index, seq });
        }
        self.wake.notify_one();
    }

    /// Waits until every operation scheduled so far is done (tests, and a
    /// shutdown that waits for its uploads).
    pub async fn wait_uploaded(&self) {
        loop {
            let idle = self.idle.notified();
            if self.lock().queue.is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Stops the worker after its current operation; what is queued stays
    /// undone (a restart uploads it again from the local layers).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let wake = self.wake.notified();
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            let next = {
                let mut s = self.lock();
                let op = s.queue.front().cloned();
                s.running = op.is_some();
                op
            };
            let Some(op) = next else {
                self.idle.notify_waiters();
                wake.await;
                continue;
            };
            match self.execute(&op).await {
                Ok(()) => {
                    failures = 0;
                    let mut s = self.lock();
                    s.queue.pop_front();
                    s.running = false;
                    if let Op::Index { index, .. } = &op {
                        self.remote_consistent_lsn
                            .fetch_max(index.disk_consistent_lsn.0, Ordering::AcqRel);
                    }
                }
                Err(UploadError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && self.is_removed(&op) =>
                {
                    // Removed (compaction, GC) before it was uploaded. The
                    // queued indexes that still list it are dropped too: the
                    // last queued index (scheduled with the removal) does not
                    // list it, and only the newest index matters.
                    let mut s = self.lock();
                    s.queue.pop_front();
                    s.running = false;
                    if let Op::Layer { name, .. } = &op {
                        let name = name.to_string();
                        s.queue.retain(|o| match o {
                            Op::Index { index, .. } => !index.layers.contains_key(&name),
                            Op::Layer { .. } => true,
                        });
                    }
                }
                Err(e) => {
                    self.lock().running = false;
                    failures += 1;
                    let wait = Duration::from_millis(100u64 << failures.min(7)).min(MAX_RETRY_WAIT);
                    warn!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id,
                        "upload failed ({failures} in a row), trying again in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A layer upload whose layer the latest index no longer lists.
    fn is_removed(&self, op: &Op) -> bool {
        match op {
            Op::Layer { name, .. } => !self.lock().latest.layers.contains_key(&name.to_string()),
            Op::Index { .. } => false,
        }
    }

    async fn execute(&self, op: &Op) -> Result<(), UploadError> {
        match op {
            Op::Layer { name, path } => {
                let key = layer_key(self.tenant_id, self.timeline_id, name, self.generation)?;
                let data = tokio::fs::read(path)
                    .await
                    .map_err(|source| UploadError::Read {
                        path: path.clone(),
                        source,
                    })?;
                self.storage.put_new(&key, Bytes::from(data)).await?;
            }
            Op::Index { index, seq } => {
                let key = index_key(self.tenant_id, self.timeline_id, self.generation, *seq)?;
                self.storage
                    .put_new(&key, Bytes::from(index.to_json()))
                    .await?;
                info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id,
                    "uploaded index {seq} at {}", index.disk_consistent_lsn);
            }
        }
        Ok(())
    }
}

/// An upload that did not happen (retried by the worker).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] RemoteStorageError),
}
