//! The proxy's Prometheus metrics (served at `/metrics`).

use std::sync::LazyLock;

use zenith_metrics::{
    exponential_buckets, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Histogram, IntCounter, IntCounterVec, IntGauge,
};

pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("proxy_connections", "Client connections open now")
        .expect("registering proxy_connections")
});

pub static CONNECTIONS_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("proxy_connections_total", "Client connections accepted")
        .expect("registering proxy_connections_total")
});

pub static SESSIONS_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "proxy_sessions_total",
        "Client connections authenticated and spliced to a compute"
    )
    .expect("registering proxy_sessions_total")
});

/// Refused connections by reason: `no_endpoint`, `unknown_endpoint`,
/// `unknown_role`, `wrong_password`, `protocol`, `rate_limited`,
/// `link_timeout`, `compute`, `console`.
pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "proxy_auth_failures_total",
        "Connections refused before reaching a compute, by reason",
        &["reason"]
    )
    .expect("registering proxy_auth_failures_total")
});

pub static WAKEUPS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "proxy_wakeups_total",
        "Connections that found their endpoint suspended and had it started"
    )
    .expect("registering proxy_wakeups_total")
});

pub static WAKEUP_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "proxy_wakeup_seconds",
        "Time to wake a suspended endpoint (the console's start of its compute)",
        exponential_buckets(0.01, 2.0, 12).expect("buckets")
    )
    .expect("registering proxy_wakeup_seconds")
});

/// Bytes spliced, by direction: `to_compute`, `to_client`.
pub static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "proxy_bytes_total",
        "Bytes relayed between clients and computes",
        &["direction"]
    )
    .expect("registering proxy_bytes_total")
});

/// Counts a connection in [`CONNECTIONS`] while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> OpenConnection {
        CONNECTIONS.inc();
        CONNECTIONS_TOTAL.inc();
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        CONNECTIONS.dec();
    }
}

/// Touches every metric so that `/metrics` lists them from the start.
pub fn register_all() {
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&CONNECTIONS_TOTAL);
    LazyLock::force(&SESSIONS_TOTAL);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&WAKEUPS);
    LazyLock::force(&WAKEUP_SECONDS);
    LazyLock::force(&BYTES);
}
