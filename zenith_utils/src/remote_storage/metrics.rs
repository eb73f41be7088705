//! `remote_storage_*` metrics: requests by operation and outcome, bytes,
//! latency of each attempt, retries.

use std::sync::LazyLock;

use zenith_metrics::{Histogram, IntCounter, IntCounterVec};

/// What a request does (the `operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Get,
    List,
    Delete,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::Put,
        Operation::Get,
        Operation::List,
        Operation::Delete,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Delete => "delete",
        }
    }
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    zenith_metrics::register_int_counter_vec!(
        "remote_storage_requests_total",
        "Attempts of object storage requests, by operation and outcome (ok, not_found, exists, \
         refused, error, timeout)",
        &["operation", "outcome"]
    )
    .expect("registering remote_storage_requests_total")
});

static BYTES: LazyLock<[IntCounter; 4]> = LazyLock::new(|| {
    let vec = zenith_metrics::register_int_counter_vec!(
        "remote_storage_bytes_total",
        "Bytes written (put) and read (get) in object storage",
        &["operation"]
    )
    .expect("registering remote_storage_bytes_total");
    Operation::ALL.map(|op| vec.with_label_values(&[op.label()]))
});

static SECONDS: LazyLock<[Histogram; 4]> = LazyLock::new(|| {
    let vec = zenith_metrics::register_histogram_vec!(
        "remote_storage_request_seconds",
        "Time of one attempt of an object storage request, by operation",
        &["operation"],
        zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
    )
    .expect("registering remote_storage_request_seconds");
    Operation::ALL.map(|op| vec.with_label_values(&[op.label()]))
});

static RETRIES: LazyLock<[IntCounter; 4]> = LazyLock::new(|| {
    let vec = zenith_metrics::register_int_counter_vec!(
        "remote_storage_retries_total",
        "Object storage requests attempted again after an error that may pass",
        &["operation"]
    )
    .expect("registering remote_storage_retries_total");
    Operation::ALL.map(|op| vec.with_label_values(&[op.label()]))
});

/// Registers every `remote_storage_*` metric (so that they show from the
/// start, at zero).
pub fn register() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&BYTES);
    LazyLock::force(&SECONDS);
    LazyLock::force(&RETRIES);
}

pub(super) fn attempt(op: Operation, outcome: &str, seconds: f64) {
    REQUESTS.with_label_values(&[op.label(), outcome]).inc();
    SECONDS[op as usize].observe(seconds);
}

pub(super) fn bytes(op: Operation, n: usize) {
    BYTES[op as usize].inc_by(n as u64);
}

pub(super) fn retry(op: Operation) {
    RETRIES[op as usize].inc();
}
