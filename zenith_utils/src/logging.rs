//! Logging setup shared by every Zenith binary.
//!
//! [`init`] installs a global `tracing` subscriber that writes to stderr
//! (daemons' stderr is redirected to their log file by the control plane),
//! one event per line with a UTC timestamp, level and target, without thread
//! ids. Records of the `log` crate are forwarded to it. ANSI colours are used
//! only when stderr is a terminal.
//!
//! Filtering: `RUST_LOG` (standard `EnvFilter` directives, e.g.
//! `info,pageserver::walreceiver=debug`) overrides the binary's default
//! filter when set and non-empty.
//!
//! Invariant: the subscriber is installed at most once per process; later
//! calls to [`init`] return `Ok(())` without changing anything, also when
//! some other code installed a global subscriber first.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The environment variable that overrides the default filter.
pub const LOG_FILTER_ENV: &str = "RUST_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text lines.
    #[default]
    Plain,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

/// A `--log-format` value that is neither `plain` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"plain\" or \"json\"")]
pub struct LogFormatParseError(pub String);

impl FromStr for LogFormat {
    type Err = LogFormatParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            _ => Err(LogFormatParseError(s.to_string())),
        }
    }
}

/// The logging setup could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?} from {source_name}: {source}")]
    InvalidFilter {
        filter: String,
        /// `RUST_LOG` or "the default filter".
        source_name: &'static str,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

static INITIALIZED: Mutex<bool> = Mutex::new(false);

/// Installs the global subscriber with `format`, filtering with `RUST_LOG`
/// if set and non-empty, else with `default_filter` (e.g. `"info"`).
/// Idempotent: only the first successful call has an effect.
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), LoggingError> {
    // A poisoned lock only means another init panicked; the flag is still valid.
    let mut initialized = INITIALIZED.lock().unwrap_or_else(|e| e.into_inner());
    if *initialized {
        return Ok(());
    }
    let filter = build_filter(
        std::env::var(LOG_FILTER_ENV).ok().as_deref(),
        default_filter,
    )?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_ids(false)
        .with_thread_names(false)
        .with_target(true)
        .with_env_filter(filter);
    // try_init fails only if a global subscriber already exists: then
    // someone else set up logging and there is nothing to do.
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    *initialized = true;
    Ok(())
}

/// The filter from `env_value` when it is set and non-empty, else from
/// `default_filter`.
fn build_filter(env_value: Option<&str>, default_filter: &str) -> Result<EnvFilter, LoggingError> {
    let (filter, source_name) = match env_value.map(str::trim) {
        Some(v) if !v.is_empty() => (v, LOG_FILTER_ENV),
        _ => (default_filter, "the default filter"),
    };
    EnvFilter::try_new(filter).map_err(|source| LoggingError::InvalidFilter {
        filter: filter.to_string(),
        source_name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_and_deserializes() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(
            serde_json::from_str::<LogFormat>("\"json\"").unwrap(),
            LogFormat::Json
        );
        assert_eq!(
            serde_json::to_string(&LogFormat::Plain).unwrap(),
            "\"plain\""
        );
    }

    #[test]
    fn env_value_overrides_default_filter() {
        let f = build_filter(Some("debug"), "info").unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = build_filter(Some("  "), "info").unwrap();
        assert_eq!(f.to_string(), "info");
        let f = build_filter(None, "warn,zenith_utils=trace").unwrap();
        assert!(f.to_string().contains("zenith_utils=trace"));
    }

    #[test]
    fn invalid_filter_is_an_error_naming_its_source() {
        let err = build_filter(Some("info,x=notalevel"), "info").unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
        let err = build_filter(None, "x=notalevel").unwrap_err();
        assert!(err.to_string().contains("default filter"), "{err}");
    }

    #[test]
    fn init_twice_is_a_no_op() {
        init(LogFormat::Plain, "info").unwrap();
        init(LogFormat::Json, "debug").unwrap();
        tracing::info!("logging initialized twice without panicking");
    }
}
