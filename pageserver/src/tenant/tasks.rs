//! Background work of a tenant, on two threads per tenant:
//!
//! - the **flush** thread writes frozen in-memory layers to layer files.
//!   Ingest (the WAL receiver) only freezes the open layer when it is full
//!   and wakes it ([`Wakeup`]); ingest waits only when frozen layers pile
//!   up ([`MAX_FROZEN_LAYERS`]), so memory stays bounded if flushing falls
//!   behind. A failed flush is logged at ERROR, counted in
//!   `pageserver_flush_errors_total` and retried on the next pass: never
//!   silent, never permanent.
//! - the **maintenance** thread compacts, creates image layers when their
//!   thresholds are reached, and runs GC every `gc_period`. It runs beside
//!   the flushes: an image layer that takes minutes to write delays neither
//!   ingest nor flushing (compaction and images hold the timeline's
//!   maintenance lock, flushes its flush lock).
//!
//! Each thread also makes a pass at least every [`PASS_INTERVAL`], so a
//! layer frozen by a checkpoint timeout gets written without a wakeup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{branch_points, Tenant};

/// How often a pass runs without a wakeup.
pub const PASS_INTERVAL: Duration = Duration::from_secs(1);

/// Frozen layers of one timeline ingest may leave to this thread before it
/// waits for a flush.
pub const MAX_FROZEN_LAYERS: usize = 2;

static FLUSH_ERRORS: std::sync::LazyLock<zenith_metrics::IntCounter> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_counter!(
            "pageserver_flush_errors_total",
            "Flushes of in-memory layers that failed (each is retried)"
        )
        .expect("registering pageserver_flush_errors_total")
    });

/// Registers `pageserver_flush_errors_total` (see [`crate::register_metrics`]).
pub(crate) fn register_metrics() {
    std::sync::LazyLock::force(&FLUSH_ERRORS);
}

/// A flag and a condition variable: ingest sets it, the tenant's thread
/// waits for it.
#[derive(Default)]
pub struct Wakeup {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wakeup {
    /// Asks for a pass now.
    pub fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits for a wakeup or `timeout`.
    fn wait(&self, timeout: Duration) {
        let g = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |w| !*w)
            .unwrap_or_else(|e| e.into_inner());
        *g = false;
    }
}

/// The running background threads of a tenant.
pub struct TenantTasks {
    stop: Arc<AtomicBool>,
    flush_wakeup: Arc<Wakeup>,
    maintenance_wakeup: Arc<Wakeup>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// GC settings of the maintenance thread: (period, horizon, pitr interval).
pub type GcSchedule = (Duration, u64, Duration);

impl TenantTasks {
    /// Starts the threads. They hold the tenant weakly and end when the
    /// tenant is gone or [`stop`](Self::stop) is called. `flush_wakeup` is
    /// the one the tenant's timelines wake.
    pub fn spawn(
        tenant: Weak<Tenant>,
        flush_wakeup: Arc<Wakeup>,
        gc: Option<GcSchedule>,
    ) -> std::io::Result<TenantTasks> {
        let stop = Arc::new(AtomicBool::new(false));
        let maintenance_wakeup = Arc::new(Wakeup::default());
        let short = tenant
            .upgrade()
            .map(|t| t.id.to_string()[..8].to_string())
            .unwrap_or_default();
        let mut threads = Vec::new();
        {
            let (t, stop, w, m) = (
                tenant.clone(),
                Arc::clone(&stop),
                Arc::clone(&flush_wakeup),
                Arc::clone(&maintenance_wakeup),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flush-{short}"))
                    .spawn(move || flush_loop(t, w, m, stop))?,
            );
        }
        {
            let (stop, m) = (Arc::clone(&stop), Arc::clone(&maintenance_wakeup));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("maint-{short}"))
                    .spawn(move || maintenance_loop(tenant, m, stop, gc))?,
            );
        }
        Ok(TenantTasks {
            stop,
            flush_wakeup,
            maintenance_wakeup,
            threads,
        })
    }

    /// Stops the threads after their current pass.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.flush_wakeup.wake();
        self.maintenance_wakeup.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for TenantTasks {
    fn drop(&mut self) {
        self.stop();
    }
}

fn flush_loop(
    tenant: Weak<Tenant>,
    wakeup: Arc<Wakeup>,
    maintenance: Arc<Wakeup>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        wakeup.wait(PASS_INTERVAL);
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Some(tenant) = tenant.upgrade() else {
            break;
        };
        let mut flushed = false;
        for tl in tenant.list_timelines() {
            if tl.is_deleted() || tl.frozen_layer_count() == 0 {
                continue;
            }
            match tl.flush_frozen() {
                Ok(()) => flushed = true,
                Err(e) => {
                    FLUSH_ERRORS.inc();
                    error!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                           "flushing frozen layers failed (retried on the next pass): {e}");
                }
            }
        }
        if flushed {
            maintenance.wake();
        }
    }
}

fn maintenance_loop(
    tenant: Weak<Tenant>,
    wakeup: Arc<Wakeup>,
    stop: Arc<AtomicBool>,
    gc: Option<GcSchedule>,
) {
    let mut last_gc = Instant::now();
    while !stop.load(Ordering::Acquire) {
        wakeup.wait(PASS_INTERVAL);
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Some(tenant) = tenant.upgrade() else {
            break;
        };
        let timelines = tenant.list_timelines();
        for tl in &timelines {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if !tl.is_deleted() {
                tl.maintain_layers(&branch_points(&timelines, tl.timeline_id));
            }
        }
        if let Some((period, horizon, pitr)) = gc {
            if last_gc.elapsed() >= period {
                last_gc = Instant::now();
                match tenant.gc_iteration(horizon, pitr) {
                    Ok(n) if n > 0 => info!(tenant_id = %tenant.id, removed = n, "background GC"),
                    Ok(_) => {}
                    Err(e) => warn!(tenant_id = %tenant.id, "background GC failed: {e:#}"),
                }
            }
        }
    }
}
