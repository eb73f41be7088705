//! The WAL receiver: follows a WAL source that speaks PostgreSQL physical
//! replication (a PostgreSQL 15 primary, or the walkeepers of a timeline,
//! choosing the one with the highest commit LSN) and ingests what it sends
//! into a timeline.
//!
//! Protocol: startup with `replication=true` (trust, cleartext, MD5 or
//! SCRAM-SHA-256 authentication), `IDENTIFY_SYSTEM` (the system identifier
//! must match the timeline's pg_control), `START_REPLICATION [SLOT s] PHYSICAL
//! X/Y` from `last_record_lsn`, then CopyBoth: `w` XLogData is decoded and
//! ingested record by record; `k` keepalives are answered when asked. Standby
//! status updates (`r`) report write = `last_record_lsn` and flush = apply =
//! `remote_consistent_lsn` with remote storage (else `disk_consistent_lsn`),
//! so walkeepers and replication slots keep WAL until the pageserver has it
//! in object storage (in layer files).
//!
//! [`WalReceiver::spawn`] runs the loop on its own thread: it reconnects with
//! exponential backoff, logs an outage once (then a reminder every minute),
//! and freezes the in-memory layer at `checkpoint_distance` and
//! `checkpoint_timeout` for the tenant's background thread to write
//! ([`crate::tenant::tasks`]). An error in the WAL itself or in filing it
//! marks the timeline broken and stops the receiver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::{WalStreamDecoder, WAL_SEGMENT_SIZE};
use tracing::{debug, info, warn};
use zenith_utils::auth::AUTH_TOKEN_ENV;
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_client::{parse_connstr, Config, Connection, CopyBoth};
use zenith_utils::pq_proto::replication::{ReplicationMessage, StandbyStatusUpdate};

use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::timeline::Timeline;
use crate::walingest::WalIngest;

/// Where to get WAL from: a libpq-style `key=value` connection string.
///
/// - A PostgreSQL primary: `host`, `port`, `user`, optional `password` and
///   optional `slot` (the replication slot to stream from; not a libpq key).
/// - Walkeepers: `walkeepers=host:port,host:port,...`, optional `user` and
///   `password`. The receiver streams committed WAL from the walkeeper with
///   the highest commit LSN (what `IDENTIFY_SYSTEM` reports), and switches
///   when it goes away or falls behind another by [`LAGGING_WAL_TIMEOUT`]
///   of silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSource {
    /// How to connect to a primary (with `replication=true`).
    pub config: Config,
    pub slot: Option<String>,
    /// The walkeepers, when the source is a WAL service.
    pub walkeepers: Vec<Config>,
}

/// How long a walkeeper may send nothing before the others are asked
/// whether they have more.
pub const LAGGING_WAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long choosing a walkeeper may wait for each one.
const WALKEEPER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl WalSource {
    pub fn parse(connstr: &str) -> anyhow::Result<WalSource> {
        let mut pairs = parse_connstr(connstr)?;
        if let Some((_, list)) = pairs.iter().find(|(k, _)| k == "walkeepers") {
            let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            if let Some((k, _)) = pairs
                .iter()
                .find(|(k, _)| !matches!(k.as_str(), "walkeepers" | "user" | "password"))
            {
                bail!("unsupported key {k:?} with walkeepers (use walkeepers, user, password)");
            }
            let user = get("user").unwrap_or_else(|| "zenith".to_string());
            let mut walkeepers = Vec::new();
            for addr in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                let (host, port) = addr
                    .rsplit_once(':')
                    .with_context(|| format!("walkeeper address {addr:?} is not host:port"))?;
                let port: u16 = port
                    .parse()
                    .with_context(|| format!("walkeeper address {addr:?} has an invalid port"))?;
                let mut c = Config::new(host, port, user.clone()).application_name("pageserver");
                // Walkeepers with auth on take the pageserver's own token
                // (scope walkeeperdata) from its environment, so that it is
                // never stored in the connection string.
                let token = std::env::var(AUTH_TOKEN_ENV).ok().filter(|t| !t.is_empty());
                if let Some(p) = get("password").or(token) {
                    c = c.password(p);
                }
                walkeepers.push(c);
            }
            if walkeepers.is_empty() {
                bail!("walkeepers= lists no walkeeper");
            }
            return Ok(WalSource {
                config: walkeepers[0].clone(),
                slot: None,
                walkeepers,
            });
        }
        if let Some((k, _)) = pairs.iter().find(|(k, _)| {
            !matches!(
                k.as_str(),
                "host" | "port" | "user" | "password" | "slot" | "slot_name"
            )
        }) {
            bail!("unsupported connection string key {k:?} (use host, port, user, password, slot; or walkeepers)");
        }
        let mut slot = None;
        pairs.retain(|(k, v)| {
            let is_slot = k == "slot" || k == "slot_name";
            if is_slot {
                slot = Some(v.clone());
            }
            !is_slot
        });
        let config = Config::from_pairs(pairs)?
            .application_name("pageserver")
            .param("replication", "true");
        Ok(WalSource {
            config,
            slot,
            walkeepers: Vec::new(),
        })
    }

    /// The hosts this source connects to.
    pub fn hosts(&self) -> Vec<&str> {
        if self.walkeepers.is_empty() {
            vec![self.config.host.as_str()]
        } else {
            self.walkeepers.iter().map(|c| c.host.as_str()).collect()
        }
    }

    /// `host:port`, or the walkeepers' addresses, for messages.
    pub fn addr(&self) -> String {
        if self.walkeepers.is_empty() {
            self.config.addr()
        } else {
            let list: Vec<String> = self.walkeepers.iter().map(Config::addr).collect();
            format!("walkeepers {}", list.join(","))
        }
    }
}

/// A walkeeper's connection config for one timeline.
fn walkeeper_config(c: &Config, tl: &Timeline) -> Config {
    c.clone().param(
        "options",
        format!(
            "-c tenant_id={} -c timeline_id={}",
            tl.tenant_id, tl.timeline_id
        ),
    )
}

/// Connect to `c` and ask IDENTIFY_SYSTEM: the connection, the system id
/// and the position (a walkeeper's commit LSN).
async fn identify(c: &Config) -> anyhow::Result<(Connection, String, Lsn)> {
    let mut conn = Connection::connect(c).await?;
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let row = rows.first().context("IDENTIFY_SYSTEM returned no row")?;
    let sysid = row
        .get(0)
        .context("IDENTIFY_SYSTEM returned no system identifier")?
        .to_string();
    let pos = row
        .get(2)
        .context("IDENTIFY_SYSTEM returned no position")?
        .parse::<Lsn>()
        .context("IDENTIFY_SYSTEM position")?;
    Ok((conn, sysid, pos))
}

/// The walkeeper with the highest commit LSN (the first on ties), other
/// than `except`; its connection, system id, commit LSN and index.
async fn choose_walkeeper(
    tl: &Timeline,
    src: &WalSource,
    except: Option<usize>,
) -> anyhow::Result<(Connection, String, Lsn, usize)> {
    let mut best: Option<(Connection, String, Lsn, usize)> = None;
    let mut errors = Vec::new();
    for (i, c) in src.walkeepers.iter().enumerate() {
        if Some(i) == except {
            continue;
        }
        let c = walkeeper_config(c, tl);
        match tokio::time::timeout(WALKEEPER_PROBE_TIMEOUT, identify(&c)).await {
            Ok(Ok((conn, sysid, pos))) => {
                if best.as_ref().is_none_or(|b| pos > b.2) {
                    best = Some((conn, sysid, pos, i));
                }
            }
            Ok(Err(e)) => errors.push(format!("{}: {e:#}", c.addr())),
            Err(_) => errors.push(format!(
                "{}: no answer within {WALKEEPER_PROBE_TIMEOUT:?}",
                c.addr()
            )),
        }
    }
    best.with_context(|| format!("no walkeeper available: {}", errors.join("; ")))
}

/// How long one wait for the WAL source may last before the receiver
/// checks for stop and sends its status.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// While the WAL source stays unavailable, a reminder at WARN this often.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// Why streaming stopped.
#[derive(Debug)]
enum StreamError {
    /// The WAL source cannot be reached or went away (connect, login, I/O,
    /// an error it sent, a protocol violation): retried with backoff.
    Source(anyhow::Error),
    /// The WAL could not be decoded or filed, or the timeline could not
    /// flush: retrying the same WAL would fail the same way. The timeline
    /// is marked broken and the receiver stops.
    Ingest(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StreamError {
    /// Anything not classified at its source is the source's problem.
    fn from(e: E) -> Self {
        StreamError::Source(e.into())
    }
}

fn ingest_err(e: impl Into<anyhow::Error>) -> StreamError {
    StreamError::Ingest(e.into())
}

static INGEST_ERRORS: std::sync::LazyLock<zenith_metrics::IntCounter> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_counter!(
            "pageserver_wal_ingest_errors_total",
            "WAL that could not be decoded or filed (each one breaks its timeline)"
        )
        .expect("registering pageserver_wal_ingest_errors_total")
    });

/// Registers `pageserver_wal_ingest_errors_total` (see [`crate::register_metrics`]).
pub(crate) fn register_metrics() {
    std::sync::LazyLock::force(&INGEST_ERRORS);
}

/// Connect, stream and ingest until `stop` is set or the connection fails.
///
/// Runs on the receiver's own thread, in a current-thread runtime that
/// serves only this connection: ingest and flushes block that thread (and
/// so pause reading from the source, which is the backpressure we want),
/// never a shared async worker.
async fn stream_once(
    tl: &Arc<Timeline>,
    src: &WalSource,
    stop: &AtomicBool,
    connected: &mut bool,
) -> Result<(), StreamError> {
    let (conn, sysid, chosen) = if src.walkeepers.is_empty() {
        let mut conn = Connection::connect(&src.config).await?;
        let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
        let sysid = rows
            .first()
            .and_then(|r| r.get(0))
            .context("IDENTIFY_SYSTEM returned no system identifier")?
            .to_string();
        (conn, sysid, None)
    } else {
        let (conn, sysid, pos, i) = choose_walkeeper(tl, src, None).await?;
        debug!(walkeeper = %src.walkeepers[i].addr(), commit_lsn = %pos, "walkeeper chosen");
        (conn, sysid, Some(i))
    };
    let control = DatadirReader::new(tl, tl.last_record_lsn())
        .control_file()
        .map_err(ingest_err)?;
    let ours = ControlFileData::decode(&control)
        .map_err(ingest_err)?
        .system_identifier;
    // A walkeeper that no compute has greeted yet does not know it (0).
    if sysid != ours.to_string() && !(chosen.is_some() && sysid == "0") {
        return Err(StreamError::Source(anyhow::anyhow!(
            "the WAL source is system {sysid}, but this timeline belongs to system {ours}"
        )));
    }
    let start = tl.last_record_lsn();
    let slot = src
        .slot
        .as_ref()
        .map(|s| format!("SLOT {s} "))
        .unwrap_or_default();
    let source_addr = match chosen {
        Some(i) => src.walkeepers[i].addr(),
        None => src.addr(),
    };
    let mut stream = conn
        .copy_both(&format!("START_REPLICATION {slot}PHYSICAL {start}"))
        .await
        .context("START_REPLICATION")?;
    if !*connected {
        info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, %start, "streaming WAL from {source_addr}");
        *connected = true;
    }
    let rl = tl.record_lsn();
    let mut decoder = WalStreamDecoder::new(start, WAL_SEGMENT_SIZE);
    if rl.prev == Lsn(0) {
        // Metadata written before the flush point's previous record was
        // kept: the first record's prev-link cannot be checked.
        warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, %start, "previous record unknown; not checking the first record's prev-link");
    } else {
        decoder = decoder.with_prev_record(rl.prev);
    }
    let mut ingest = WalIngest::new(tl).map_err(ingest_err)?;
    let writer = tl.writer();
    let conf_timeout = tl.checkpoint_timeout();
    let mut last_flush = Instant::now();
    let mut last_status = Instant::now() - Duration::from_secs(10);
    let mut last_data = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut reply = false;
        if let Some(current) = chosen {
            if last_data.elapsed() >= LAGGING_WAL_TIMEOUT {
                // Quiet for a while: does another walkeeper have more?
                last_data = Instant::now();
                if let Ok((_, _, pos, other)) = choose_walkeeper(tl, src, Some(current)).await {
                    if pos > decoder.available() {
                        return Err(anyhow::anyhow!(
                            "walkeeper {source_addr} sends nothing while {} has WAL up to {pos}; switching",
                            src.walkeepers[other].addr()
                        )
                        .into());
                    }
                }
            }
        }
        // recv is cancel safe: a timeout loses nothing.
        if let Ok(data) = tokio::time::timeout(POLL_INTERVAL, stream.recv()).await {
            let Some(data) = data? else {
                return Err(anyhow::anyhow!("the WAL source ended replication").into());
            };
            match ReplicationMessage::parse(&data)? {
                ReplicationMessage::XLogData(x) => {
                    if x.wal_start != decoder.available() {
                        return Err(anyhow::anyhow!(
                            "XLogData at {}, expected {}",
                            x.wal_start,
                            decoder.available()
                        )
                        .into());
                    }
                    decoder.feed_bytes(&x.data);
                    last_data = Instant::now();
                    while let Some(rec) = decoder.poll_decode().map_err(ingest_err)? {
                        let at = rec.start_lsn;
                        ingest.ingest_record(tl, &writer, rec).map_err(|e| {
                            ingest_err(e.context(format!("filing the WAL record at {at}")))
                        })?;
                    }
                }
                ReplicationMessage::PrimaryKeepalive(k) => {
                    reply = k.reply_requested;
                    // A caught-up sender that asks for a reply may be
                    // shutting down: it waits until we report everything
                    // flushed, so make it durable now.
                    if reply
                        && tl.last_record_lsn() >= k.wal_end
                        && tl.disk_consistent_lsn() < k.wal_end
                    {
                        tl.freeze_and_flush().map_err(ingest_err)?;
                        last_flush = Instant::now();
                    }
                }
                other => debug!("ignoring replication message {:?}", char::from(other.tag())),
            }
        }
        if tl.needs_checkpoint()
            || (last_flush.elapsed() >= conf_timeout && tl.open_layer_size() > 0)
        {
            // Freeze; the tenant's background thread writes the layer (and
            // compacts, makes images): ingest does not wait for that.
            tl.checkpoint_from_ingest(stop).map_err(ingest_err)?;
            last_flush = Instant::now();
            reply = true;
        }
        if reply || last_status.elapsed() >= Duration::from_secs(1) {
            send_status(&mut stream, tl).await?;
            last_status = Instant::now();
        }
    }
    Ok(())
}

/// Standby status update: write = `last_record_lsn`, flush = apply = the
/// LSN up to which the WAL is no longer needed: `remote_consistent_lsn` with
/// remote storage (walkeepers keep WAL that is not in object storage yet),
/// else `disk_consistent_lsn` (a replication slot keeps WAL until it is in
/// layer files).
async fn send_status(stream: &mut CopyBoth, tl: &Timeline) -> anyhow::Result<()> {
    let flush = tl
        .remote()
        .map_or_else(|| tl.disk_consistent_lsn(), |r| r.remote_consistent_lsn());
    let status = ReplicationMessage::StandbyStatusUpdate(StandbyStatusUpdate {
        write_lsn: tl.last_record_lsn(),
        flush_lsn: flush,
        apply_lsn: flush,
        send_time: postgres_ffi::xlog_utils::to_pg_timestamp(std::time::SystemTime::now()),
        reply_requested: false,
    });
    let mut buf = BytesMut::with_capacity(34);
    status.write(&mut buf);
    stream.queue(buf.freeze())?;
    stream.flush().await?;
    Ok(())
}

/// A running WAL receiver thread.
pub struct WalReceiver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalReceiver {
    /// Follow `src` into `tl` until stopped.
    pub fn spawn(tl: Arc<Timeline>, src: WalSource) -> std::io::Result<WalReceiver> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("walreceiver-{}", tl.timeline_id))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                                        "cannot start the WAL receiver's runtime: {e}");
                        return;
                    }
                };
                let mut backoff = Duration::from_millis(100);
                // Since when, and how many attempts, the source has failed.
                let mut outage: Option<(Instant, u64)> = None;
                let mut last_reminder = Instant::now();
                let mut connected = false;
                while !stop2.load(Ordering::Relaxed) {
                    match runtime.block_on(stream_once(&tl, &src, &stop2, &mut connected)) {
                        Ok(()) => break,
                        Err(StreamError::Ingest(e)) => {
                            INGEST_ERRORS.inc();
                            tl.set_broken(format!("WAL ingest failed: {e:#}"));
                            break;
                        }
                        Err(StreamError::Source(e)) => {
                            if connected {
                                // It was streaming: this is a new outage.
                                outage = None;
                                backoff = Duration::from_millis(100);
                            }
                            match &mut outage {
                                None => {
                                    warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                                          "WAL source {} unavailable, retrying: {e:#}", src.addr());
                                    outage = Some((Instant::now(), 1));
                                    last_reminder = Instant::now();
                                }
                                Some((since, attempts)) => {
                                    *attempts += 1;
                                    if last_reminder.elapsed() >= OUTAGE_REMINDER {
                                        warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                                              "WAL source {} still unavailable after {}s and {attempts} attempts: {e:#}",
                                              src.addr(), since.elapsed().as_secs());
                                        last_reminder = Instant::now();
                                    } else {
                                        debug!("WAL source still unavailable: {e:#}");
                                    }
                                }
                            }
                            connected = false;
                        }
                    }
                    let deadline = Instant::now() + backoff;
                    while Instant::now() < deadline && !stop2.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                if tl.broken_reason().is_none() {
                    if let Err(e) = tl.freeze_and_flush() {
                        tl.set_broken(format!("flushing at WAL receiver stop: {e}"));
                    }
                }
            })?;
        Ok(WalReceiver {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and wait for the thread (it flushes the in-memory layer).
    /// Whether its thread still runs (it ends when told to stop, or when
    /// the timeline is marked broken).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WalReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connection_strings() {
        let s = WalSource::parse("host=127.0.0.1 port=15432 user=u password=p slot=ps").unwrap();
        assert_eq!(s.config.port, 15432);
        assert_eq!(s.config.password.as_deref(), Some("p"));
        assert_eq!(s.slot.as_deref(), Some("ps"));
        assert!(s
            .config
            .params
            .contains(&("replication".to_string(), "true".to_string())));
        assert!(WalSource::parse("host").is_err());
        assert!(WalSource::parse("port=x").is_err());
        assert!(WalSource::parse("sslmode=require").is_err());
        assert!(WalSource::parse("dbname=x").is_err());
        let w = WalSource::parse("walkeepers=127.0.0.1:1,localhost:2 password=p").unwrap();
        assert_eq!(w.walkeepers.len(), 2);
        assert_eq!(w.walkeepers[1].port, 2);
        assert_eq!(w.walkeepers[0].password.as_deref(), Some("p"));
        assert_eq!(w.addr(), "walkeepers 127.0.0.1:1,localhost:2");
        assert!(WalSource::parse("walkeepers=127.0.0.1").is_err());
        assert!(WalSource::parse("walkeepers=").is_err());
        assert!(WalSource::parse("walkeepers=a:1 slot=x").is_err());
    }
}
