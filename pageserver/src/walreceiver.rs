//! The WAL receiver: follows a WAL source that speaks PostgreSQL physical
//! replication (a PostgreSQL 15 primary, later a walkeeper) and ingests what
//! it sends into a timeline.
//!
//! Protocol: startup with `replication=true` (trust, cleartext, MD5 or
//! SCRAM-SHA-256 authentication), `IDENTIFY_SYSTEM` (the system identifier
//! must match the timeline's pg_control), `START_REPLICATION [SLOT s] PHYSICAL
//! X/Y` from `last_record_lsn`, then CopyBoth: `w` XLogData is decoded and
//! ingested record by record; `k` keepalives are answered when asked. Standby
//! status updates (`r`) report write = `last_record_lsn` and flush = apply =
//! `disk_consistent_lsn`, so a replication slot keeps WAL until the pageserver
//! has it in layer files.
//!
//! [`WalReceiver::spawn`] runs the loop on its own thread: it reconnects with
//! exponential backoff, logs an outage once (and its end), and flushes the
//! in-memory layer at `checkpoint_distance` and `checkpoint_timeout`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zenith_utils::pq_proto::error_response_text;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::{WalStreamDecoder, WAL_SEGMENT_SIZE};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tracing::{debug, info, warn};
use zenith_utils::lsn::Lsn;

use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::timeline::Timeline;
use crate::walingest::WalIngest;

/// Where to get WAL from: a libpq-style `key=value` connection string with
/// `host`, `port`, `user`, optional `password` and optional `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSource {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub slot: Option<String>,
}

impl WalSource {
    pub fn parse(connstr: &str) -> anyhow::Result<WalSource> {
        let mut s = WalSource {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: None,
            slot: None,
        };
        for part in connstr.split_whitespace() {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                anyhow!("invalid connection string part {part:?}: expected key=value")
            })?;
            match k {
                "host" => s.host = v.to_string(),
                "port" => s.port = v.parse().with_context(|| format!("invalid port {v:?}"))?,
                "user" => s.user = v.to_string(),
                "password" => s.password = Some(v.to_string()),
                "slot" | "slot_name" => s.slot = Some(v.to_string()),
                _ => bail!("unsupported connection string key {k:?} (use host, port, user, password, slot)"),
            }
        }
        Ok(s)
    }
}

/// The backend messages a replication client sees.
#[derive(Debug)]
enum Msg {
    /// `R`: authentication request code and data.
    Auth(i32, Bytes),
    ReadyForQuery,
    /// `D`: columns (None = NULL).
    DataRow(Vec<Option<String>>),
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    Other,
}

/// Parse one backend message from `buf`; `Ok(None)` if incomplete.
fn parse_msg(buf: &mut BytesMut) -> anyhow::Result<Option<Msg>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=1 << 30).contains(&len) {
        bail!("invalid message length {len} from the WAL source");
    }
    if buf.len() < 1 + len {
        return Ok(None);
    }
    buf.advance(5);
    let mut body = buf.split_to(len - 4).freeze();
    let short = || anyhow!("truncated message from the WAL source");
    Ok(Some(match tag {
        b'E' => bail!("WAL source error: {}", error_response_text(&body)),
        b'R' => {
            if body.len() < 4 {
                return Err(short());
            }
            let code = body.get_i32();
            Msg::Auth(code, body)
        }
        b'Z' => Msg::ReadyForQuery,
        b'D' => {
            if body.len() < 2 {
                return Err(short());
            }
            let n = body.get_u16();
            let mut cols = Vec::with_capacity(n as usize);
            for _ in 0..n {
                if body.len() < 4 {
                    return Err(short());
                }
                let l = body.get_i32();
                if l < 0 {
                    cols.push(None);
                } else {
                    if body.len() < l as usize {
                        return Err(short());
                    }
                    cols.push(Some(
                        String::from_utf8_lossy(&body.split_to(l as usize)).into_owned(),
                    ));
                }
            }
            Msg::DataRow(cols)
        }
        b'W' => Msg::CopyBothResponse,
        b'd' => Msg::CopyData(body),
        b'c' => Msg::CopyDone,
        _ => Msg::Other,
    }))
}

/// A blocking PostgreSQL protocol connection (just what replication needs).
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn send(&mut self, f: impl FnOnce(&mut BytesMut) -> std::io::Result<()>) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        f(&mut out)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Next backend message; `Ok(None)` on a read timeout.
    fn recv(&mut self) -> anyhow::Result<Option<Msg>> {
        loop {
            if let Some(m) = parse_msg(&mut self.buf)? {
                return Ok(Some(m));
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => bail!("WAL source closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv_wait(&mut self) -> anyhow::Result<Msg> {
        loop {
            if let Some(m) = self.recv()? {
                return Ok(m);
            }
        }
    }

    fn connect(src: &WalSource) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect((src.host.as_str(), src.port))
            .with_context(|| format!("connecting to {}:{}", src.host, src.port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut c = Conn {
            stream,
            buf: BytesMut::new(),
        };
        let params = [
            ("user", src.user.as_str()),
            ("replication", "true"),
            ("application_name", "pageserver"),
        ];
        c.send(|b| frontend::startup_message(params.iter().copied(), b))?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let password = || {
                src.password
                    .clone()
                    .ok_or_else(|| anyhow!("the WAL source asks for a password"))
            };
            match c.recv_wait()? {
                Msg::Auth(0, _) => {}
                Msg::Auth(3, _) => {
                    let p = password()?;
                    c.send(|b| frontend::password_message(p.as_bytes(), b))?;
                }
                Msg::Auth(5, salt) => {
                    let salt: [u8; 4] = salt[..].try_into().map_err(|_| anyhow!("bad MD5 salt"))?;
                    let h = md5_hash(src.user.as_bytes(), password()?.as_bytes(), salt);
                    c.send(|b| frontend::password_message(h.as_bytes(), b))?;
                }
                Msg::Auth(10, mechs) => {
                    if !mechs.split(|&c| c == 0).any(|m| m == b"SCRAM-SHA-256") {
                        bail!("the WAL source offers no supported SASL mechanism");
                    }
                    let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    let msg = s.message().to_vec();
                    scram = Some(s);
                    c.send(|b| frontend::sasl_initial_response("SCRAM-SHA-256", &msg, b))?;
                }
                Msg::Auth(11, data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| anyhow!("unexpected SASL continue"))?;
                    s.update(&data)?;
                    let msg = s.message().to_vec();
                    c.send(|b| frontend::sasl_response(&msg, b))?;
                }
                Msg::Auth(12, data) => {
                    scram
                        .take()
                        .ok_or_else(|| anyhow!("unexpected SASL final"))?
                        .finish(&data)?;
                }
                Msg::Auth(code, _) => {
                    bail!("unsupported authentication method {code} requested by the WAL source")
                }
                Msg::ReadyForQuery => return Ok(c),
                _ => {}
            }
        }
    }

    /// Run a simple query; returns the text columns of the rows.
    fn query(&mut self, q: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        self.send(|b| frontend::query(q, b))?;
        let mut rows = Vec::new();
        loop {
            match self.recv_wait()? {
                Msg::DataRow(cols) => rows.push(cols),
                Msg::ReadyForQuery => return Ok(rows),
                _ => {}
            }
        }
    }
}

fn pg_now() -> i64 {
    postgres_ffi::xlog_utils::to_pg_timestamp(std::time::SystemTime::now())
}

/// Connect, stream and ingest until `stop` is set or the connection fails.
fn stream_once(
    tl: &Arc<Timeline>,
    src: &WalSource,
    stop: &AtomicBool,
    connected: &mut bool,
) -> anyhow::Result<()> {
    let mut c = Conn::connect(src)?;
    let rows = c.query("IDENTIFY_SYSTEM")?;
    let sysid = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    let control = DatadirReader::new(tl, tl.last_record_lsn()).control_file()?;
    let ours = ControlFileData::decode(&control)?.system_identifier;
    if sysid != ours.to_string() {
        bail!("the WAL source is system {sysid}, but this timeline belongs to system {ours}");
    }
    let start = tl.last_record_lsn();
    let slot = src
        .slot
        .as_ref()
        .map(|s| format!("SLOT {s} "))
        .unwrap_or_default();
    c.send(|b| frontend::query(&format!("START_REPLICATION {slot}PHYSICAL {start}"), b))?;
    loop {
        match c.recv_wait()? {
            Msg::CopyBothResponse => break,
            Msg::Other => {}
            m => bail!("unexpected answer to START_REPLICATION: {m:?}"),
        }
    }
    if !*connected {
        info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, %start, "streaming WAL from {}:{}", src.host, src.port);
        *connected = true;
    }
    let rl = tl.record_lsn();
    let mut decoder = WalStreamDecoder::new(start, WAL_SEGMENT_SIZE).with_prev_record(rl.prev);
    let mut ingest = WalIngest::new(tl)?;
    let writer = tl.writer();
    let conf_timeout = tl.checkpoint_timeout();
    let mut last_flush = Instant::now();
    let mut last_status = Instant::now() - Duration::from_secs(10);
    while !stop.load(Ordering::Relaxed) {
        let mut reply = false;
        match c.recv()? {
            None => {}
            Some(Msg::CopyData(body)) => {
                let mut d = &body[..];
                match d.first() {
                    Some(b'w') => {
                        d.advance(1);
                        if d.len() < 24 {
                            bail!("short XLogData message");
                        }
                        let data_start = Lsn(d.get_u64());
                        let _wal_end = d.get_u64();
                        let _send_time = d.get_i64();
                        if data_start != decoder.available() {
                            bail!("XLogData at {data_start}, expected {}", decoder.available());
                        }
                        decoder.feed_bytes(d);
                        while let Some(rec) = decoder.poll_decode()? {
                            ingest.ingest_record(tl, &writer, rec)?;
                        }
                    }
                    Some(b'k') => {
                        if d.len() >= 18 {
                            let wal_end =
                                Lsn(u64::from_be_bytes(d[1..9].try_into().unwrap_or([0; 8])));
                            reply = d[17] != 0;
                            // A caught-up sender that asks for a reply may be
                            // shutting down: it waits until we report everything
                            // flushed, so make it durable now.
                            if reply
                                && tl.last_record_lsn() >= wal_end
                                && tl.disk_consistent_lsn() < wal_end
                            {
                                tl.freeze_and_flush()?;
                                last_flush = Instant::now();
                            }
                        }
                    }
                    _ => debug!("ignoring unknown replication message"),
                }
            }
            Some(Msg::CopyDone) => bail!("the WAL source ended replication"),
            Some(_) => {}
        }
        if tl.needs_checkpoint()
            || (last_flush.elapsed() >= conf_timeout && tl.open_layer_size() > 0)
        {
            tl.freeze_and_flush()?;
            // Inline: while an image layer is built, ingest waits, which
            // keeps L0 layers from piling up across image and branch LSNs
            // (compaction would merge them into L1 layers GC cannot drop).
            tl.maintain_layers();
            last_flush = Instant::now();
            reply = true;
        }
        if reply || last_status.elapsed() >= Duration::from_secs(1) {
            let write = tl.last_record_lsn();
            let flush = tl.disk_consistent_lsn();
            let mut msg = BytesMut::with_capacity(34);
            msg.extend_from_slice(b"r");
            msg.extend_from_slice(&write.0.to_be_bytes());
            msg.extend_from_slice(&flush.0.to_be_bytes());
            msg.extend_from_slice(&flush.0.to_be_bytes());
            msg.extend_from_slice(&pg_now().to_be_bytes());
            msg.extend_from_slice(&[0]);
            c.send(|b| {
                frontend::CopyData::new(&msg[..])
                    .map_err(std::io::Error::other)?
                    .write(b);
                Ok(())
            })?;
            last_status = Instant::now();
        }
    }
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
                let mut backoff = Duration::from_millis(100);
                let mut in_outage = false;
                let mut connected = false;
                while !stop2.load(Ordering::Relaxed) {
                    match stream_once(&tl, &src, &stop2, &mut connected) {
                        Ok(()) => break,
                        Err(e) => {
                            if !in_outage {
                                warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                                      "WAL source {}:{} unavailable, retrying: {e:#}", src.host, src.port);
                                in_outage = true;
                            } else {
                                debug!("WAL source still unavailable: {e:#}");
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
                if let Err(e) = tl.freeze_and_flush() {
                    warn!("flushing at WAL receiver stop: {e}");
                }
            })?;
        Ok(WalReceiver {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and wait for the thread (it flushes the in-memory layer).
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
        assert_eq!(s.port, 15432);
        assert_eq!(s.password.as_deref(), Some("p"));
        assert_eq!(s.slot.as_deref(), Some("ps"));
        assert!(WalSource::parse("host").is_err());
        assert!(WalSource::parse("port=x").is_err());
        assert!(WalSource::parse("dbname=x").is_err());
    }
}
