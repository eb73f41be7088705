//! The encodings of the "directories" and sizes stored as values (see
//! the module documentation).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::key::*;
use crate::tenant::timeline::TimelineError;

pub(super) fn ser_u32s(items: impl ExactSizeIterator<Item = u32>) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + items.len() * 4);
    b.put_u32(items.len() as u32);
    items.for_each(|v| b.put_u32(v));
    b.freeze()
}

pub(super) fn corrupt(what: &str, key: Key) -> TimelineError {
    TimelineError::Invalid(
        zenith_utils::id::TimelineId::from_array([0; 16]),
        format!("stored {what} under {key} is malformed"),
    )
}

pub(super) fn des_u32s(b: &[u8], key: Key, what: &str) -> Result<Vec<u32>, TimelineError> {
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
    match n {
        Some(n) if b.len() == 4 + n * 4 => Ok(b[4..]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        _ => Err(corrupt(what, key)),
    }
}

/// Databases: (spc, db) → has a relmapper file.
pub type DbDirectory = BTreeMap<(u32, u32), bool>;
/// Relations of one database: (relnode, fork).
pub type RelDirectory = BTreeSet<(u32, u8)>;

pub(super) fn ser_dbdir(d: &DbDirectory) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(d.len() as u32);
    for ((spc, db), m) in d {
        b.put_u32(*spc);
        b.put_u32(*db);
        b.put_u8(*m as u8);
    }
    b.freeze()
}

pub(super) fn des_dbdir(b: &[u8]) -> Result<DbDirectory, TimelineError> {
    let bad = || corrupt("database directory", DBDIR_KEY);
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(bad)?;
    if b.len() != 4 + n * 9 {
        return Err(bad());
    }
    Ok(b[4..]
        .chunks_exact(9)
        .map(|c| {
            (
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                ),
                c[8] != 0,
            )
        })
        .collect())
}

pub(super) fn ser_reldir(d: &RelDirectory) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(d.len() as u32);
    for (rel, fork) in d {
        b.put_u32(*rel);
        b.put_u8(*fork);
    }
    b.freeze()
}

pub(super) fn des_reldir(b: &[u8], key: Key) -> Result<RelDirectory, TimelineError> {
    let bad = || corrupt("relation directory", key);
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(bad)?;
    if b.len() != 4 + n * 5 {
        return Err(bad());
    }
    Ok(b[4..]
        .chunks_exact(5)
        .map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), c[4]))
        .collect())
}

pub(super) fn des_size(b: &[u8], key: Key) -> Result<u32, TimelineError> {
    match b {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(corrupt("size", key)),
    }
}

pub(super) fn ser_size(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}
