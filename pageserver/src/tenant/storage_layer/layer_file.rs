//! The on-disk format shared by delta and image layer files.
//!
//! A layer file is immutable once written. It holds values for (key, LSN)
//! pairs, sorted by key then LSN, and an index to find them:
//!
//! ```text
//! [header: 128 bytes][blob]*[index]
//! ```
//!
//! Header (big-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | `u32` magic `0x5A4C4159` ("ZLAY") |
//! | 4 | `u16` format version (1) |
//! | 6 | `u8` kind: 0 delta, 1 image |
//! | 8 | tenant id (16 bytes), 24: timeline id (16 bytes) |
//! | 40 | key range start (18 bytes), 58: key range end (18 bytes) |
//! | 76 | `u64` LSN range start, 84: `u64` LSN range end |
//! | 92 | `u64` index offset, 100: `u64` index entry count |
//! | 108 | `u32` CRC-32C of the index |
//! | 112 | `u32` CRC-32C of header bytes 0..112; 116..128 zero |
//!
//! Blob: `u32 stored length, u8 compression (0 none, 1 zstd), u32 CRC-32C of
//! the stored bytes`, then the stored bytes (a serialized
//! [`crate::value::Value`], zstd-compressed when that saves space).
//!
//! Index entry: key (18 bytes), `u64` LSN, `u64` blob offset (34 bytes).
//!
//! Writing goes to a temporary file that is fsynced and then renamed to its
//! final name (and the directory fsynced): a crash leaves either no layer or a
//! complete one, plus possibly a temp file that startup deletes. Every read
//! verifies the checksums it relies on.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::filename::LayerFileName;
use crate::key::{Key, KEY_SIZE};
use crate::value::Value;

pub const LAYER_MAGIC: u32 = 0x5A4C_4159;
pub const LAYER_FORMAT_VERSION: u16 = 1;
pub const HEADER_SIZE: usize = 128;
const INDEX_ENTRY_SIZE: usize = KEY_SIZE + 16;
const BLOB_HEADER_SIZE: usize = 9;
/// Values at least this large are tried with zstd.
const COMPRESS_MIN: usize = 512;
/// zstd's fastest regular mode: negative levels skip Huffman coding of
/// literals, which dominates the cost for 8 KiB pages. Measured on pgbench
/// WAL: flush about 1.5x faster than level 1 for 5% more bytes on disk.
const ZSTD_LEVEL: i32 = -1;

/// A layer file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("layer file {path}: {reason}")]
    Misuse { path: String, reason: String },
}

/// Kind of layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Delta,
    Image,
}

/// The decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerHeader {
    pub kind: LayerKind,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub key_range: Range<Key>,
    pub lsn_range: Range<Lsn>,
    pub index_offset: u64,
    pub index_count: u64,
    pub index_crc: u32,
}

impl LayerHeader {
    fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[0..4].copy_from_slice(&LAYER_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&LAYER_FORMAT_VERSION.to_be_bytes());
        h[6] = match self.kind {
            LayerKind::Delta => 0,
            LayerKind::Image => 1,
        };
        h[8..24].copy_from_slice(self.tenant_id.as_array());
        h[24..40].copy_from_slice(self.timeline_id.as_array());
        h[40..58].copy_from_slice(&self.key_range.start.to_bytes());
        h[58..76].copy_from_slice(&self.key_range.end.to_bytes());
        h[76..84].copy_from_slice(&self.lsn_range.start.0.to_be_bytes());
        h[84..92].copy_from_slice(&self.lsn_range.end.0.to_be_bytes());
        h[92..100].copy_from_slice(&self.index_offset.to_be_bytes());
        h[100..108].copy_from_slice(&self.index_count.to_be_bytes());
        h[108..112].copy_from_slice(&self.index_crc.to_be_bytes());
        let crc = crc32c::crc32c(&h[..112]);
        h[112..116].copy_from_slice(&crc.to_be_bytes());
        h
    }

    fn decode(h: &[u8; HEADER_SIZE]) -> Result<LayerHeader, String> {
        let u32at = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[o..o + 8]);
            u64::from_be_bytes(a)
        };
        if u32at(0) != LAYER_MAGIC {
            return Err(format!("bad magic {:08X}", u32at(0)));
        }
        if crc32c::crc32c(&h[..112]) != u32at(112) {
            return Err("header checksum mismatch".into());
        }
        let version = u16::from_be_bytes([h[4], h[5]]);
        if version != LAYER_FORMAT_VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        let kind = match h[6] {
            0 => LayerKind::Delta,
            1 => LayerKind::Image,
            k => return Err(format!("unknown layer kind {k}")),
        };
        let key = |o: usize| {
            let mut a = [0u8; KEY_SIZE];
            a.copy_from_slice(&h[o..o + KEY_SIZE]);
            Key::from_bytes(&a)
        };
        let id = |o: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[o..o + 16]);
            a
        };
        Ok(LayerHeader {
            kind,
            tenant_id: TenantId::from_array(id(8)),
            timeline_id: TimelineId::from_array(id(24)),
            key_range: key(40)..key(58),
            lsn_range: Lsn(u64at(76))..Lsn(u64at(84)),
            index_offset: u64at(92),
            index_count: u64at(100),
            index_crc: u32at(108),
        })
    }
}

/// One value's position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub key: Key,
    pub lsn: Lsn,
    pub offset: u64,
}

/// Writes a layer file. Values must be added in (key, LSN) order.
pub struct LayerWriter {
    file: BufWriter<File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    header: LayerHeader,
    offset: u64,
    index: Vec<IndexEntry>,
    finished: bool,
    /// One zstd context for every value of the file (creating one per value
    /// costs more than compressing a page).
    cctx: Option<zstd::bulk::Compressor<'static>>,
}

impl LayerWriter {
    /// Start writing layer `name` in `dir`.
    pub fn new(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        name: &LayerFileName,
    ) -> Result<LayerWriter, LayerError> {
        let final_path = dir.join(name.to_string());
        let temp_path = dir.join(format!(
            "{name}.{:08x}{}",
            rand_suffix(),
            crashsafe::TEMP_FILE_SUFFIX
        ));
        let io = |source| LayerError::Io {
            path: temp_path.display().to_string(),
            source,
        };
        let mut file = File::create(&temp_path).map_err(io)?;
        file.write_all(&[0u8; HEADER_SIZE]).map_err(io)?;
        Ok(LayerWriter {
            file: BufWriter::with_capacity(1 << 16, file),
            temp_path: temp_path.clone(),
            final_path,
            header: LayerHeader {
                kind: if name.is_delta() {
                    LayerKind::Delta
                } else {
                    LayerKind::Image
                },
                tenant_id,
                timeline_id,
                key_range: name.key_range().clone(),
                lsn_range: name.lsn_range(),
                index_offset: 0,
                index_count: 0,
                index_crc: 0,
            },
            offset: HEADER_SIZE as u64,
            index: Vec::new(),
            finished: false,
            cctx: None,
        })
    }

    fn misuse(&self, reason: String) -> LayerError {
        LayerError::Misuse {
            path: self.final_path.display().to_string(),
            reason,
        }
    }

    /// Add the value of `key` at `lsn`.
    pub fn put(&mut self, key: Key, lsn: Lsn, value: &Value) -> Result<(), LayerError> {
        if !self.header.key_range.contains(&key) || !self.header.lsn_range.contains(&lsn) {
            return Err(self.misuse(format!("{key} at {lsn} is outside the layer's ranges")));
        }
        if let Some(last) = self.index.last() {
            if (key, lsn) <= (last.key, last.lsn) {
                return Err(self.misuse(format!(
                    "{key} at {lsn} added after {} at {}",
                    last.key, last.lsn
                )));
            }
        }
        let raw = value.ser();
        let (compression, stored): (u8, Bytes) = if raw.len() >= COMPRESS_MIN {
            if self.cctx.is_none() {
                self.cctx = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            let compressed = match self.cctx.as_mut() {
                Some(c) => c.compress(&raw),
                None => zstd::bulk::compress(&raw, ZSTD_LEVEL),
            };
            match compressed {
                Ok(c) if c.len() < raw.len() - raw.len() / 8 => (1, Bytes::from(c)),
                _ => (0, raw),
            }
        } else {
            (0, raw)
        };
        let mut hdr = [0u8; BLOB_HEADER_SIZE];
        hdr[0..4].copy_from_slice(&(stored.len() as u32).to_be_bytes());
        hdr[4] = compression;
        hdr[5..9].copy_from_slice(&crc32c::crc32c(&stored).to_be_bytes());
        let io = |source| LayerError::Io {
            path: self.temp_path.display().to_string(),
            source,
        };
        self.file.write_all(&hdr).map_err(io)?;
        self.file.write_all(&stored).map_err(io)?;
        self.index.push(IndexEntry {
            key,
            lsn,
            offset: self.offset,
        });
        self.offset += (BLOB_HEADER_SIZE + stored.len()) as u64;
        Ok(())
    }

    /// Number of values added so far.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Write the index and header, make the file durable and give it its final name.
    pub fn finish(mut self) -> Result<PathBuf, LayerError> {
        let mut index = Vec::with_capacity(self.index.len() * INDEX_ENTRY_SIZE);
        for e in &self.index {
            index.extend_from_slice(&e.key.to_bytes());
            index.extend_from_slice(&e.lsn.0.to_be_bytes());
            index.extend_from_slice(&e.offset.to_be_bytes());
        }
        self.header.index_offset = self.offset;
        self.header.index_count = self.index.len() as u64;
        self.header.index_crc = crc32c::crc32c(&index);
        let temp = self.temp_path.clone();
        let io = |source| LayerError::Io {
            path: temp.display().to_string(),
            source,
        };
        self.file.write_all(&index).map_err(io)?;
        self.file.flush().map_err(io)?;
        let header = self.header.encode();
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        fail::fail_point!("layer-before-rename");
        crashsafe::rename_durable(&self.temp_path, &self.final_path).map_err(|source| {
            LayerError::Io {
                path: self.final_path.display().to_string(),
                source,
            }
        })?;
        self.finished = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for LayerWriter {
    fn drop(&mut self) {
        // An unfinished layer leaves nothing behind.
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

thread_local! {
    /// One zstd decompression context per thread: creating one per value
    /// costs more than decompressing an 8 KiB page.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompress a zstd frame written by [`LayerWriter`] (which records the
/// content size in the frame header).
fn zstd_decompress(stored: &[u8]) -> std::io::Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n <= 1 << 30 => n as usize,
        _ => return zstd::stream::decode_all(stored),
    };
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(stored, size),
            None => zstd::stream::decode_all(stored),
        }
    })
}

/// An open, verified layer file.
pub struct LayerReader {
    file: File,
    path: PathBuf,
    header: LayerHeader,
    index: Vec<IndexEntry>,
}

impl LayerReader {
    /// Open and verify a layer file (header and index checksums).
    pub fn open(path: &Path) -> Result<LayerReader, LayerError> {
        let p = path.display().to_string();
        let corrupt = |reason: String| LayerError::Corrupt {
            path: p.clone(),
            reason,
        };
        let io = |source| LayerError::Io {
            path: p.clone(),
            source,
        };
        super::reader_cache::note_file_io();
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut h = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut h, 0).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt("shorter than its header".into())
            } else {
                io(e)
            }
        })?;
        let header = LayerHeader::decode(&h).map_err(corrupt)?;
        let index_len = header
            .index_count
            .checked_mul(INDEX_ENTRY_SIZE as u64)
            .filter(|len| header.index_offset.checked_add(*len) == Some(size))
            .ok_or_else(|| {
                corrupt(format!(
                    "index of {} entries does not end the file",
                    header.index_count
                ))
            })?;
        if header.index_offset < HEADER_SIZE as u64 {
            return Err(corrupt("index overlaps the header".into()));
        }
        let mut raw = vec![0u8; index_len as usize];
        file.read_exact_at(&mut raw, header.index_offset)
            .map_err(io)?;
        if crc32c::crc32c(&raw) != header.index_crc {
            return Err(corrupt("index checksum mismatch".into()));
        }
        let mut index = Vec::with_capacity(header.index_count as usize);
        for e in raw.chunks_exact(INDEX_ENTRY_SIZE) {
            let mut k = [0u8; KEY_SIZE];
            k.copy_from_slice(&e[..KEY_SIZE]);
            let mut l = [0u8; 8];
            l.copy_from_slice(&e[KEY_SIZE..KEY_SIZE + 8]);
            let mut o = [0u8; 8];
            o.copy_from_slice(&e[KEY_SIZE + 8..]);
            let entry = IndexEntry {
                key: Key::from_bytes(&k),
                lsn: Lsn(u64::from_be_bytes(l)),
                offset: u64::from_be_bytes(o),
            };
            if entry.offset < HEADER_SIZE as u64 || entry.offset >= header.index_offset {
                return Err(corrupt(format!(
                    "index entry points at offset {}",
                    entry.offset
                )));
            }
            if let Some(prev) = index.last() {
                let prev: &IndexEntry = prev;
                if (prev.key, prev.lsn) >= (entry.key, entry.lsn) {
                    return Err(corrupt("index is not sorted".into()));
                }
            }
            index.push(entry);
        }
        Ok(LayerReader {
            file,
            path: path.to_path_buf(),
            header,
            index,
        })
    }

    pub fn header(&self) -> &LayerHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every (key, LSN) in the file, in order.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Read and verify one value.
    pub fn read_value(&self, entry: &IndexEntry) -> Result<Value, LayerError> {
        super::reader_cache::note_file_io();
        let p = || self.path.display().to_string();
        let corrupt = |reason: String| LayerError::Corrupt { path: p(), reason };
        let mut hdr = [0u8; BLOB_HEADER_SIZE];
        self.file
            .read_exact_at(&mut hdr, entry.offset)
            .map_err(|source| LayerError::Io { path: p(), source })?;
        let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
        let end = entry.offset + BLOB_HEADER_SIZE as u64 + len;
        if end > self.header.index_offset {
            return Err(corrupt(format!(
                "blob at {} runs past the data",
                entry.offset
            )));
        }
        let mut stored = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut stored, entry.offset + BLOB_HEADER_SIZE as u64)
            .map_err(|source| LayerError::Io { path: p(), source })?;
        let crc = u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]);
        if crc32c::crc32c(&stored) != crc {
            return Err(corrupt(format!(
                "checksum mismatch in blob at {}",
                entry.offset
            )));
        }
        let raw = match hdr[4] {
            0 => Bytes::from(stored),
            1 => Bytes::from(
                zstd_decompress(&stored)
                    .map_err(|e| corrupt(format!("blob at {}: zstd: {e}", entry.offset)))?,
            ),
            c => {
                return Err(corrupt(format!(
                    "unknown compression {c} at {}",
                    entry.offset
                )))
            }
        };
        Value::des(&raw).map_err(|e| corrupt(format!("blob at {}: {e}", entry.offset)))
    }

    /// Index entries of `key` with LSN in `lsn_range`, ascending.
    pub fn entries_for(&self, key: Key, lsn_range: Range<Lsn>) -> &[IndexEntry] {
        let lo = self
            .index
            .partition_point(|e| (e.key, e.lsn) < (key, lsn_range.start));
        let hi = self
            .index
            .partition_point(|e| (e.key, e.lsn) < (key, lsn_range.end));
        &self.index[lo..hi.max(lo)]
    }

    /// Values of `key` with LSN in `lsn_range`, ascending by LSN.
    pub fn get_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        self.entries_for(key, lsn_range)
            .iter()
            .map(|e| Ok((e.lsn, self.read_value(e)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ZenithWalRecord;

    fn delta_name() -> LayerFileName {
        LayerFileName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(0x100)..Lsn(0x10000),
        }
    }

    fn write_sample(dir: &Path) -> (PathBuf, Vec<(Key, Lsn, Value)>) {
        let mut vals = Vec::new();
        for k in 0..50u32 {
            let key = Key::MIN.add(k * 3);
            for l in 0..4u64 {
                let lsn = Lsn(0x100 + l * 0x40 + k as u64);
                let v = if l == 0 {
                    Value::Image(Bytes::from(vec![(k % 251) as u8; 8192]))
                } else {
                    Value::WalRecord(ZenithWalRecord::Postgres {
                        will_init: false,
                        rec: Bytes::from(format!("rec {k} {l}")),
                    })
                };
                vals.push((key, lsn, v));
            }
        }
        let mut w = LayerWriter::new(
            dir,
            TenantId::generate(),
            TimelineId::generate(),
            &delta_name(),
        )
        .unwrap();
        for (k, l, v) in &vals {
            w.put(*k, *l, v).unwrap();
        }
        (w.finish().unwrap(), vals)
    }

    #[test]
    fn write_then_read_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (path, vals) = write_sample(dir.path());
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            delta_name().to_string()
        );
        let r = LayerReader::open(&path).unwrap();
        assert_eq!(r.header().kind, LayerKind::Delta);
        assert_eq!(r.index().len(), vals.len());
        for (e, (k, l, v)) in r.index().iter().zip(&vals) {
            assert_eq!((e.key, e.lsn), (*k, *l));
            assert_eq!(&r.read_value(e).unwrap(), v);
        }
        // Range lookups.
        let key = vals[8].0;
        let got = r.get_values(key, Lsn(0)..Lsn(u64::MAX)).unwrap();
        assert_eq!(got.len(), 4);
        let got = r.get_values(key, Lsn(0)..vals[10].1).unwrap();
        assert_eq!(got.len(), 2);
        assert!(r
            .get_values(Key::MIN.add(1), Lsn(0)..Lsn(u64::MAX))
            .unwrap()
            .is_empty());
        // Only the final file remains.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn out_of_order_and_out_of_range_puts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LayerWriter::new(
            dir.path(),
            TenantId::generate(),
            TimelineId::generate(),
            &delta_name(),
        )
        .unwrap();
        let v = Value::Image(Bytes::from_static(b"x"));
        w.put(Key::MIN.add(5), Lsn(0x200), &v).unwrap();
        assert!(w.put(Key::MIN.add(5), Lsn(0x200), &v).is_err());
        assert!(w.put(Key::MIN.add(4), Lsn(0x300), &v).is_err());
        assert!(w.put(Key::MIN.add(6), Lsn(0x50), &v).is_err());
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_sample(dir.path());
        let good = std::fs::read(&path).unwrap();
        // Header, a blob, the index, truncation.
        for (pos, what) in [
            (10usize, "header"),
            (HEADER_SIZE + 20, "blob"),
            (good.len() - 5, "index"),
        ] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let res = LayerReader::open(&path).and_then(|r| {
                for e in r.index() {
                    r.read_value(e)?;
                }
                Ok(())
            });
            assert!(
                matches!(res, Err(LayerError::Corrupt { .. })),
                "{what}: {:?}",
                res.err()
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            LayerReader::open(&path),
            Err(LayerError::Corrupt { .. })
        ));
        std::fs::write(&path, &good[..50]).unwrap();
        assert!(matches!(
            LayerReader::open(&path),
            Err(LayerError::Corrupt { .. })
        ));
    }
}
