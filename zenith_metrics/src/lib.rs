//! Prometheus metrics shared by every Zenith daemon.
//!
//! A thin layer over the [`prometheus`] crate: metrics are registered in
//! prometheus' process-wide default registry with the re-exported
//! `register_*!` macros, and [`gather_text`] renders that registry in the
//! Prometheus text exposition format (version 0.0.4), to be served as
//! `/metrics` with content type [`METRICS_CONTENT_TYPE`] by each daemon's
//! HTTP server. There is no HTTP server here.
//!
//! On Linux the default registry also carries the standard process metrics
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...) through prometheus' `process` feature.
//!
//! Conventions: metric names are `snake_case`, prefixed with the daemon
//! (`pageserver_`, `walkeeper_`, `proxy_`), with units as suffixes
//! (`_seconds`, `_bytes`, `_total` for counters). Register each metric once,
//! in a `once_cell::sync::Lazy` static next to the code it measures;
//! registering the same name twice is an error.
//!
//! ```
//! use zenith_metrics::{register_int_counter, IntCounter};
//!
//! let requests: IntCounter =
//!     register_int_counter!("doc_example_requests_total", "Requests served").unwrap();
//! requests.inc();
//! assert!(zenith_metrics::gather_text().unwrap().contains("doc_example_requests_total 1"));
//! ```

pub use prometheus;
pub use prometheus::core::{Collector, Desc};
pub use prometheus::proto::MetricFamily;
pub use prometheus::{
    default_registry, exponential_buckets, linear_buckets, register, Counter, CounterVec, Encoder,
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramTimer, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder, DEFAULT_BUCKETS,
};
pub use prometheus::{
    histogram_opts, labels, opts, register_counter, register_counter_vec, register_gauge,
    register_gauge_vec, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

/// Histogram buckets for latencies from microseconds to seconds: 10 µs to
/// 10 s, about three per decade (a GetPage answered from memory takes tens
/// of µs; one that waits for WAL or runs redo, milliseconds to seconds).
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of [`gather_text`]'s output.
pub const METRICS_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Metrics could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
    #[error("encoded metrics are not UTF-8: {0}")]
    NotUtf8(#[from] std::string::FromUtf8Error),
}

/// Snapshot of every metric family in the default registry.
pub fn gather() -> Vec<MetricFamily> {
    prometheus::gather()
}

/// Renders metric families in the Prometheus text exposition format.
pub fn encode_text(families: &[MetricFamily]) -> Result<String, MetricsError> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(families, &mut buf)?;
    Ok(String::from_utf8(buf)?)
}

/// The whole default registry in the Prometheus text exposition format: the
/// body of a `/metrics` response.
pub fn gather_text() -> Result<String, MetricsError> {
    encode_text(&gather())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_is_text_exposition_0_0_4() {
        assert_eq!(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4");
    }

    #[test]
    fn registered_counter_appears_in_text_output() {
        let counter =
            register_int_counter!("zenith_metrics_test_requests_total", "Test requests").unwrap();
        counter.inc_by(3);
        let text = gather_text().unwrap();
        assert!(
            text.contains("# HELP zenith_metrics_test_requests_total Test requests\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE zenith_metrics_test_requests_total counter\n"));
        assert!(text.contains("\nzenith_metrics_test_requests_total 3\n"));
    }

    #[test]
    fn labelled_metrics_and_histograms_are_rendered() {
        let gauge = register_int_gauge_vec!(
            "zenith_metrics_test_open_files",
            "Open files by kind",
            &["kind"]
        )
        .unwrap();
        gauge.with_label_values(&["layer"]).set(7);
        let hist = register_histogram!(
            "zenith_metrics_test_wait_seconds",
            "Wait time",
            exponential_buckets(0.001, 10.0, 3).unwrap()
        )
        .unwrap();
        hist.observe(0.005);
        let text = gather_text().unwrap();
        assert!(text.contains("zenith_metrics_test_open_files{kind=\"layer\"} 7\n"));
        assert!(text.contains("zenith_metrics_test_wait_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("zenith_metrics_test_wait_seconds_count 1\n"));
    }

    #[test]
    fn latency_buckets_ascend_from_microseconds_to_seconds() {
        let b = LATENCY_BUCKETS_SECONDS;
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert!(b[0] <= 0.000_01 && *b.last().unwrap() >= 10.0);
        // Accepted by the prometheus crate as they are.
        Histogram::with_opts(HistogramOpts::new("b", "b").buckets(b.to_vec())).unwrap();
    }

    #[test]
    fn registering_a_name_twice_is_an_error() {
        register_int_gauge!("zenith_metrics_test_dup", "first").unwrap();
        assert!(register_int_gauge!("zenith_metrics_test_dup", "second").is_err());
    }

    #[test]
    fn encoding_nothing_is_empty_and_a_private_registry_works() {
        assert_eq!(encode_text(&[]).unwrap(), "");
        let registry = Registry::new();
        let c = IntCounter::new("private_total", "not in the default registry").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc();
        let text = encode_text(&registry.gather()).unwrap();
        assert!(text.contains("private_total 1\n"));
        assert!(!gather_text().unwrap().contains("private_total"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported_on_linux() {
        let text = gather_text().unwrap();
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_open_fds"));
    }
}
