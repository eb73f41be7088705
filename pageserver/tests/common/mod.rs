//! Helpers for tests that run the real PostgreSQL 15 from tmp_install.
#![allow(dead_code)]

pub mod http_client;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use pageserver::config::TenantConf;
use pageserver::tenant::timeline::{RecordLsn, Timeline};
use pageserver::walredo::WalRedoManager;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

/// An empty timeline in `<dir>/timeline`, ready for an import.
pub fn empty_timeline(
    dir: &Path,
    conf: TenantConf,
    walredo: Arc<dyn WalRedoManager>,
) -> Arc<Timeline> {
    Timeline::create(
        &dir.join("timeline"),
        TenantId::generate(),
        TimelineId::generate(),
        conf,
        None,
        RecordLsn {
            last: Lsn(0),
            prev: Lsn(0),
        },
        Lsn(0),
        walredo,
    )
    .expect("creating a timeline")
}

/// The PostgreSQL installation (`POSTGRES_INSTALL_DIR` or `<repo>/tmp_install`).
pub fn pg_install() -> PathBuf {
    let dir = std::env::var_os("POSTGRES_INSTALL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tmp_install"));
    assert!(
        dir.join("bin/initdb").exists(),
        "PostgreSQL is not built in {}: run `make postgres`",
        dir.display()
    );
    dir
}

/// Run a tool from the installation; panics with its stderr on failure.
pub fn pg_tool(tool: &str, args: &[&str]) -> Output {
    let install = pg_install();
    let out = Command::new(install.join("bin").join(tool))
        .args(args)
        .env("ZENITH_ALLOW_ROOT", "1")
        .env("LD_LIBRARY_PATH", install.join("lib"))
        .env_remove("PGDATA")
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// initdb into `<dir>/pgdata`.
pub fn initdb(dir: &Path) -> PathBuf {
    let pgdata = dir.join("pgdata");
    pg_tool(
        "initdb",
        &[
            "-D",
            pgdata.to_str().unwrap(),
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ],
    );
    pgdata
}

/// Waits until the timeline has ingested WAL up to `lsn`.
pub fn wait_for_lsn(tl: &Timeline, lsn: Lsn, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while tl.last_record_lsn() < lsn {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {lsn}, at {}",
            tl.last_record_lsn()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A stock PostgreSQL server on `pgdata`, stopped (fast) when dropped.
pub struct Server {
    pub pgdata: PathBuf,
    pub port: u16,
}

impl Server {
    pub fn start(pgdata: &Path, extra_conf: &[&str]) -> Server {
        Self::start_on(pgdata, free_port(), extra_conf)
    }

    /// Start on a given port (e.g. to restart where clients expect it).
    pub fn start_on(pgdata: &Path, port: u16, extra_conf: &[&str]) -> Server {
        let mut conf = std::fs::read_to_string(pgdata.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
            pgdata.display()
        ));
        for c in extra_conf {
            conf.push_str(c);
            conf.push('\n');
        }
        std::fs::write(pgdata.join("postgresql.conf"), conf).unwrap();
        let log = pgdata.join("server.log");
        let install = pg_install();
        let out = Command::new(install.join("bin/pg_ctl"))
            .args([
                "-D",
                pgdata.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ])
            .env("ZENITH_ALLOW_ROOT", "1")
            .env("LD_LIBRARY_PATH", install.join("lib"))
            .output()
            .expect("running pg_ctl");
        assert!(
            out.status.success(),
            "server on {} did not start; its log:\n{}",
            pgdata.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Server {
            pgdata: pgdata.to_path_buf(),
            port,
        }
    }

    /// Run SQL with psql (stops at the first error).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = pg_tool(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The main fork of table `table` in database `db` (default tablespace).
    pub fn rel_tag(&self, db: &str, table: &str) -> postgres_ffi::relfile::RelTag {
        let relnode = self
            .psql(
                db,
                &format!("SELECT relfilenode FROM pg_class WHERE relname = '{table}'"),
            )
            .parse()
            .unwrap_or_else(|e| panic!("no relation {table} in {db}: {e}"));
        let dbnode = self
            .psql(
                db,
                &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
            )
            .parse()
            .unwrap();
        postgres_ffi::relfile::RelTag {
            spcnode: postgres_ffi::pg_constants::DEFAULTTABLESPACE_OID,
            dbnode,
            relnode,
            forknum: postgres_ffi::pg_constants::MAIN_FORKNUM,
        }
    }

    /// `pg_current_wal_flush_lsn()`.
    pub fn flush_lsn(&self) -> Lsn {
        self.psql("postgres", "SELECT pg_current_wal_flush_lsn()")
            .parse()
            .unwrap()
    }

    pub fn stop(self) {
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                self.pgdata.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(pg_install().join("bin/pg_ctl"))
            .args([
                "-D",
                self.pgdata.to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .env("ZENITH_ALLOW_ROOT", "1")
            .env("LD_LIBRARY_PATH", pg_install().join("lib"))
            .output();
    }
}

/// Ingest the WAL in `<pgdata>/pg_wal` from `start` (the end of the record
/// at `prev`) through the shutdown checkpoint `pg_control` points to, the
/// way the WAL receiver files it, flushing whenever a layer is full. Reads
/// the segments in 1 MiB pieces (the memory tests count this too).
pub fn ingest_wal_from(tl: &Arc<Timeline>, pgdata: &Path, start: Lsn, prev: Lsn) -> usize {
    use postgres_ffi::controlfile::ControlFileData;
    use postgres_ffi::pg_constants::WAL_SEGMENT_SIZE;
    use postgres_ffi::xlog_utils::{parse_xlog_file_name, xlog_file_name};
    use postgres_ffi::WalStreamDecoder;
    use std::io::Read;

    let control =
        ControlFileData::decode(&std::fs::read(pgdata.join("global/pg_control")).unwrap()).unwrap();
    let seg_size = WAL_SEGMENT_SIZE;
    let mut segs: Vec<u64> = std::fs::read_dir(pgdata.join("pg_wal"))
        .unwrap()
        .filter_map(|e| {
            parse_xlog_file_name(&e.unwrap().file_name().to_string_lossy(), seg_size).map(|s| s.0)
        })
        .filter(|s| *s >= start.segment_number(seg_size))
        .collect();
    segs.sort();
    let mut ingest = pageserver::walingest::WalIngest::new(tl).unwrap();
    let writer = tl.writer();
    let mut dec = WalStreamDecoder::new(start, seg_size).with_prev_record(prev);
    let mut records = 0;
    let mut buf = vec![0u8; 1 << 20];
    for segno in segs {
        let mut f = std::fs::File::open(
            pgdata
                .join("pg_wal")
                .join(xlog_file_name(1, segno, seg_size)),
        )
        .unwrap();
        if segno == start.segment_number(seg_size) {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(
                start.segment_offset(seg_size) as u64
            ))
            .unwrap();
        }
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            dec.feed_bytes(&buf[..n]);
            while let Some(raw) = dec
                .poll_decode()
                .unwrap_or_else(|e| panic!("decoding WAL: {e}"))
            {
                let end = raw.end_lsn;
                ingest.ingest_record(tl, &writer, raw).unwrap();
                records += 1;
                if tl.needs_checkpoint() {
                    tl.freeze_and_flush().unwrap();
                }
                if end > control.checkpoint {
                    return records;
                }
            }
        }
    }
    panic!(
        "the WAL ended before the shutdown checkpoint at {}",
        control.checkpoint
    );
}

/// The value of the sample of `name` with exactly `labels` in a `/metrics` body.
pub fn metric_sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let inner = match rest {
            "" => "",
            r => r.strip_prefix('{')?.strip_suffix('}')?,
        };
        let mut found: Vec<(&str, &str)> = inner
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let mut want = labels.to_vec();
        found.sort();
        want.sort();
        (found == want).then(|| value.parse().ok())?
    })
}
