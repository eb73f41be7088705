//! The open layer files of the whole pageserver, bounded.
//!
//! A [`LayerReader`] holds an open file descriptor and the layer's whole
//! index in memory. Layers would otherwise keep both for as long as they
//! exist (a week of PITR history is thousands of layers: EMFILE at the
//! default `ulimit -n` of 1024, and index memory growing with every layer).
//! Readers are therefore kept here, at most [`capacity`] of them, and the
//! least recently used is closed when another one is opened. A read holds
//! its reader (`Arc`) while it uses it, so eviction never closes a file
//! under a read: the file is closed when the last holder lets go.
//!
//! Capacity is `max_open_layer_files` (default 256); [`init`] sets it once.
//!
//! Async code (the page service's cached path) must never open, read or
//! verify a file: it [`peek`](ReaderCache::peek)s, and hands a miss to the
//! blocking pool. [`forbid_file_io`] marks such a stretch of code on the
//! current thread; file I/O of layer files inside one is counted
//! ([`file_io_while_forbidden`], `pageserver_file_io_on_async_worker_total`)
//! so that tests can prove there is none.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::layer_file::{LayerError, LayerReader};

/// Default capacity ([`init`] overrides it).
pub const DEFAULT_CAPACITY: usize = crate::config::DEFAULT_MAX_OPEN_LAYER_FILES;

struct Inner {
    capacity: usize,
    /// Layer id → (reader, last use tick).
    open: HashMap<u64, (Arc<LayerReader>, u64)>,
    tick: u64,
}

/// The cache (see the module documentation).
pub struct ReaderCache {
    inner: Mutex<Inner>,
}

static CACHE: OnceLock<ReaderCache> = OnceLock::new();

/// Sets the capacity before first use; later calls have no effect.
pub fn init(capacity: usize) {
    let _ = CACHE.set(ReaderCache::new(capacity));
}

/// The process-wide cache.
pub fn get() -> &'static ReaderCache {
    CACHE.get_or_init(|| ReaderCache::new(DEFAULT_CAPACITY))
}

/// How many readers the cache keeps open.
pub fn capacity() -> usize {
    get()
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .capacity
}

/// A number no other layer object of this process has (the cache key).
pub fn new_layer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

static OPEN_GAUGE: std::sync::LazyLock<zenith_metrics::IntGauge> = std::sync::LazyLock::new(|| {
    zenith_metrics::register_int_gauge!(
        "pageserver_open_layer_files",
        "Layer files kept open (with their index in memory) by the reader cache"
    )
    .expect("registering pageserver_open_layer_files")
});

static FORBIDDEN_IO: std::sync::LazyLock<zenith_metrics::IntCounter> = std::sync::LazyLock::new(
    || {
        zenith_metrics::register_int_counter!(
            "pageserver_file_io_on_async_worker_total",
            "Layer file opens and reads done where file I/O is forbidden (an async worker's cached read path); always 0"
        )
        .expect("registering pageserver_file_io_on_async_worker_total")
    },
);

thread_local! {
    static IO_FORBIDDEN: Cell<bool> = const { Cell::new(false) };
}

/// While alive, layer file I/O on this thread is counted as a defect (see
/// the module documentation).
pub struct NoFileIo {
    was: bool,
}

impl Drop for NoFileIo {
    fn drop(&mut self) {
        IO_FORBIDDEN.with(|f| f.set(self.was));
    }
}

/// Marks the current thread as one that must not do layer file I/O until
/// the guard is dropped.
pub fn forbid_file_io() -> NoFileIo {
    NoFileIo {
        was: IO_FORBIDDEN.with(|f| f.replace(true)),
    }
}

/// Called by every layer file open and read: counts those done where file
/// I/O is forbidden.
pub(crate) fn note_file_io() {
    if IO_FORBIDDEN.with(|f| f.get()) {
        FORBIDDEN_IO.inc();
        if cfg!(debug_assertions) {
            tracing::error!("layer file I/O where it is forbidden (an async worker's cached read)");
        }
    }
}

/// How many layer file opens and reads were done where file I/O is
/// forbidden, since the process started.
pub fn file_io_while_forbidden() -> u64 {
    FORBIDDEN_IO.get()
}

/// Registers this module's metrics (so that they are listed from the start).
pub fn register_metrics() {
    std::sync::LazyLock::force(&FORBIDDEN_IO);
    std::sync::LazyLock::force(&OPEN_GAUGE);
}

impl ReaderCache {
    pub fn new(capacity: usize) -> ReaderCache {
        ReaderCache {
            inner: Mutex::new(Inner {
                capacity: capacity.max(1),
                open: HashMap::new(),
                tick: 0,
            }),
        }
    }

    /// The reader of layer `id` if it is open: no file I/O, for async code.
    pub fn peek(&self, id: u64) -> Option<Arc<LayerReader>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        let (r, used) = g.open.get_mut(&id)?;
        *used = tick;
        Some(Arc::clone(r))
    }

    /// The reader of layer `id` at `path`, opening (and verifying) the
    /// file if it is not open (blocking). The file is opened outside the
    /// cache's lock.
    pub fn reader(&self, id: u64, path: &Path) -> Result<Arc<LayerReader>, LayerError> {
        if let Some(r) = self.peek(id) {
            return Ok(r);
        }
        let r = Arc::new(LayerReader::open(path)?);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        // Another read may have opened it meanwhile: keep one.
        let r = Arc::clone(&g.open.entry(id).or_insert((r, tick)).0);
        while g.open.len() > g.capacity {
            let Some(oldest) = g
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            g.open.remove(&oldest);
        }
        OPEN_GAUGE.set(g.open.len() as i64);
        Ok(r)
    }

    /// Forgets layer `id` (removed from its timeline): its file closes when
    /// the last read holding it is done.
    pub fn forget(&self, id: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.open.remove(&id);
        OPEN_GAUGE.set(g.open.len() as i64);
    }

    /// Closes every reader nobody holds (what a restart leaves: a cold
    /// cache).
    #[cfg(test)]
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.open.clear();
        OPEN_GAUGE.set(0);
    }

    /// Readers kept open now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
