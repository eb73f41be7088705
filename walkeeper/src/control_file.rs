//! The control file: one timeline's [`AcceptorState`] on disk.
//!
//! Layout (docs/walkeeper_protocol.md, "Control file"), little-endian:
//!
//! ```text
//! magic    u32   0x434B_575A ("ZWKC" on disk)
//! version  u32   1
//! length   u32   bytes of the JSON body that follows
//! body     JSON  the AcceptorState
//! crc      u32   crc32c of everything above
//! ```
//!
//! It is replaced atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new file, and a torn
//! or corrupted one is refused by the checksum instead of being half-read.

use std::path::Path;

use crate::acceptor::AcceptorState;

pub const CONTROL_FILE_NAME: &str = "walkeeper.control";
pub const CONTROL_MAGIC: u32 = 0x434B_575A;
pub const CONTROL_VERSION: u32 = 1;
/// A control file is a few hundred bytes; anything this large is not one.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlFileError {
    #[error("control file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control file is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("control file has magic {0:#010x}, not a walkeeper control file")]
    BadMagic(u32),
    #[error("control file version {0} is not supported (this walkeeper reads version {CONTROL_VERSION})")]
    BadVersion(u32),
    #[error("control file body length {len} does not match the file size {file}")]
    BadLength { len: usize, file: usize },
    #[error("control file checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("control file body: {0}")]
    Body(#[from] serde_json::Error),
}

pub fn encode(state: &AcceptorState) -> Vec<u8> {
    let body = serde_json::to_vec(state).expect("the acceptor state serializes");
    let mut buf = Vec::with_capacity(16 + body.len());
    buf.extend_from_slice(&CONTROL_MAGIC.to_le_bytes());
    buf.extend_from_slice(&CONTROL_VERSION.to_le_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

pub fn decode(buf: &[u8]) -> Result<AcceptorState, ControlFileError> {
    if buf.len() < 16 {
        return Err(ControlFileError::TooShort(buf.len()));
    }
    let magic = u32_at(buf, 0);
    if magic != CONTROL_MAGIC {
        return Err(ControlFileError::BadMagic(magic));
    }
    let version = u32_at(buf, 4);
    if version != CONTROL_VERSION {
        return Err(ControlFileError::BadVersion(version));
    }
    let len = u32_at(buf, 8) as usize;
    if len > MAX_BODY || 12 + len + 4 != buf.len() {
        return Err(ControlFileError::BadLength {
            len,
            file: buf.len(),
        });
    }
    let stored = u32_at(buf, 12 + len);
    let computed = crc32c::crc32c(&buf[..12 + len]);
    if stored != computed {
        return Err(ControlFileError::BadChecksum { stored, computed });
    }
    Ok(serde_json::from_slice(&buf[12..12 + len])?)
}

fn io_err(path: &Path, source: std::io::Error) -> ControlFileError {
    ControlFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Read `dir/walkeeper.control`; `Ok(None)` if there is none.
pub fn load(dir: &Path) -> Result<Option<AcceptorState>, ControlFileError> {
    let path = dir.join(CONTROL_FILE_NAME);
    match std::fs::read(&path) {
        Ok(buf) => decode(&buf).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path, e)),
    }
}

/// Durably replace `dir/walkeeper.control` with `state`.
pub fn store(dir: &Path, state: &AcceptorState) -> Result<(), ControlFileError> {
    let path = dir.join(CONTROL_FILE_NAME);
    zenith_utils::crashsafe::write_file_atomic_mode(&path, &encode(state), 0o600)
        .map_err(|e| io_err(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use zenith_utils::id::{TenantId, TimelineId};
    use zenith_utils::lsn::Lsn;

    fn state() -> AcceptorState {
        let mut s = AcceptorState::new(
            TenantId::from_array([7; 16]),
            TimelineId::from_array([9; 16]),
        );
        s.term = 5;
        s.term_history = vec![(1, Lsn(0x100_0028)), (5, Lsn(0x200_0000))];
        s.commit_lsn = Lsn(0x1ff_0000);
        s.proposer_id = [3; 16];
        s
    }

    #[test]
    fn round_trip_and_atomic_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        store(dir.path(), &state()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state()));
        let mut next = state();
        next.term = 6;
        store(dir.path(), &next).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(next));
        // Nothing but the control file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![CONTROL_FILE_NAME]);
    }

    #[test]
    fn every_damage_is_refused() {
        let good = encode(&state());
        assert!(matches!(
            decode(&good[..10]),
            Err(ControlFileError::TooShort(10))
        ));
        let mut b = good.clone();
        b[0] ^= 1;
        assert!(matches!(decode(&b), Err(ControlFileError::BadMagic(_))));
        let mut b = good.clone();
        b[4] = 2;
        assert!(matches!(decode(&b), Err(ControlFileError::BadVersion(2))));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(ControlFileError::BadLength { .. })
        ));
        for i in 12..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x20;
            assert!(
                matches!(decode(&b), Err(ControlFileError::BadChecksum { .. })),
                "byte {i}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&buf);
        }

        #[test]
        fn truncation_is_always_refused(cut in 0usize..200) {
            let good = encode(&state());
            let cut = cut.min(good.len() - 1);
            prop_assert!(decode(&good[..cut]).is_err());
        }
    }
}
