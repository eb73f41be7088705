//! `index_part.json`: a timeline's objects in remote storage at one point,
//! and the object keys (docs/remote_storage.md).
//!
//! Keys, under the storage's root:
//!
//! - `tenants/<tenant>/timelines/<timeline>/<layer file name>-<generation>`:
//!   a layer file, as uploaded by the attachment of that generation;
//! - `tenants/<tenant>/timelines/<timeline>/index_part.json-<generation>-<seq>`:
//!   an index, `seq` counting the indexes one attachment uploads.
//!
//! Generations and sequence numbers are 8 and 16 lower-case hex digits, so
//! keys sort in upload order. No object is ever written twice: a new state
//! is a new index. The newest index of a timeline is the one with the
//! highest (generation, seq) at or below the reader's own generation.
//!
//! The index is JSON with a `version`; every version ever written stays
//! readable (`index_v1.json` beside this file is the test vector of
//! version 1) and an unknown version is an error, never a guess.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::remote_storage::{RemotePath, RemoteStorageError};

use crate::tenant::metadata::TimelineMetadata;
use crate::tenant::storage_layer::filename::LayerFileName;

/// The version [`IndexPart::to_json`] writes.
pub const INDEX_VERSION: u32 = 1;
/// File name of an index, before its `-<generation>-<seq>` suffix.
pub const INDEX_FILE_NAME: &str = "index_part.json";

/// The number of one attachment of a tenant to a pageserver: every attach
/// and every restart gets a higher one (issued by the control plane), and
/// every object key carries the generation that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A layer file as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFileMeta {
    /// Bytes of the file: a download of another size is refused.
    pub file_size: u64,
    /// CRC-32C of the whole file: a download that differs is refused.
    pub crc32c: u32,
    /// The generation that uploaded it (its key's suffix).
    pub generation: Generation,
}

/// A timeline's state in remote storage: its layer files and its metadata.
/// Every layer it lists was uploaded before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPart {
    pub version: u32,
    /// Every WAL record up to here is in the listed layers.
    pub disk_consistent_lsn: Lsn,
    /// The timeline metadata as of `disk_consistent_lsn`.
    pub metadata: TimelineMetadata,
    /// By layer file name.
    pub layers: BTreeMap<String, LayerFileMeta>,
}

/// An index that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {key}: not JSON of an index: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error(
        "index {key}: version {version} is unknown (this pageserver reads 1 to {INDEX_VERSION})"
    )]
    UnknownVersion { key: String, version: u64 },
    #[error("index {key}: layer name {name:?} is not a layer file name")]
    BadLayerName { key: String, name: String },
    #[error(transparent)]
    Key(#[from] RemoteStorageError),
}

impl IndexPart {
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, integers and maps always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_else(|e| unreachable!("index to JSON: {e}"))
    }

    /// Parses an index downloaded from `key` (for messages), checking the
    /// version first and every layer name.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<IndexPart, IndexError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u64,
        }
        let corrupt = |source| IndexError::Corrupt {
            key: key.to_string(),
            source,
        };
        let v: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
        if v.version == 0 || v.version > u64::from(INDEX_VERSION) {
            return Err(IndexError::UnknownVersion {
                key: key.to_string(),
                version: v.version,
            });
        }
        let index: IndexPart = serde_json::from_slice(bytes).map_err(corrupt)?;
        if let Some(name) = index
            .layers
            .keys()
            .find(|n| LayerFileName::parse(n).is_none())
        {
            return Err(IndexError::BadLayerName {
                key: key.to_string(),
                name: name.clone(),
            });
        }
        Ok(index)
    }
}

/// `tenants/<tenant>/timelines/<timeline>`.
pub fn timeline_prefix(
    tenant: TenantId,
    timeline: TimelineId,
) -> Result<RemotePath, RemoteStorageError> {
    RemotePath::new(format!("tenants/{tenant}/timelines/{timeline}"))
}

pub fn layer_key(
    tenant: TenantId,
    timeline: TimelineId,
    name: &LayerFileName,
    generation: Generation,
) -> Result<RemotePath, RemoteStorageError> {
    timeline_prefix(tenant, timeline)?.join(&format!("{name}-{generation}"))
}

pub fn index_key(
    tenant: TenantId,
    timeline: TimelineId,
    generation: Generation,
    seq: u64,
) -> Result<RemotePath, RemoteStorageError> {
    timeline_prefix(tenant, timeline)?.join(&format!("{INDEX_FILE_NAME}-{generation}-{seq:016x}"))
}

/// (generation, seq) of an index key's file name; `None` for other objects.
pub fn parse_index_name(file_name: &str) -> Option<(Generation, u64)> {
    let rest = file_name.strip_prefix(INDEX_FILE_NAME)?.strip_prefix('-')?;
    let (g, s) = rest.split_once('-')?;
    let hex = |t: &str, n| {
        t.len() == n
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(g, 8) || !hex(s, 16) {
        return None;
    }
    Some((
        Generation(u32::from_str_radix(g, 16).ok()?),
        u64::from_str_radix(s, 16).ok()?,
    ))
}

/// Of the keys, the index an attachment of generation `mine` starts from:
/// the highest (generation, seq) at or below `mine`. Indexes of later
/// generations (a newer attachment elsewhere) are never read.
pub fn newest_index<'a>(
    keys: impl IntoIterator<Item = &'a RemotePath>,
    mine: Generation,
) -> Option<(&'a RemotePath, Generation, u64)> {
    keys.into_iter()
        .filter_map(|k| parse_index_name(k.file_name()).map(|(g, s)| (k, g, s)))
        .filter(|(_, g, _)| *g <= mine)
        .max_by_key(|(_, g, s)| (*g, *s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("index_v1.json");

    fn tenant() -> TenantId {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    fn timeline() -> TimelineId {
        "fedcba9876543210fedcba9876543210".parse().unwrap()
    }

    #[test]
    fn version_1_stays_readable() {
        let index = IndexPart::from_json("v1", V1.as_bytes()).unwrap();
        assert_eq!(index.version, 1);
        assert_eq!(index.disk_consistent_lsn, Lsn(0x0169_60E9));
        assert_eq!(index.metadata.disk_consistent_lsn, Lsn(0x0169_60E9));
        assert_eq!(index.layers.len(), 2);
        let (name, meta) = index.layers.iter().next().unwrap();
        assert!(LayerFileName::parse(name).is_some());
        assert_eq!(meta.generation, Generation(1));
        // What this version writes reads back the same.
        assert_eq!(IndexPart::from_json("rt", &index.to_json()).unwrap(), index);
    }

    #[test]
    fn bad_indexes_are_errors_that_say_why() {
        let cases = [
            ("", "not JSON"),
            ("{\"version\": 1}", "not JSON of an index"),
            (
                "{\"version\": 2, \"whatever\": true}",
                "version 2 is unknown",
            ),
            ("{\"version\": 0}", "version 0 is unknown"),
            (&V1[..V1.len() / 2], "not JSON"),
        ];
        for (text, why) in cases {
            let err = IndexPart::from_json("k", text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let mut index = IndexPart::from_json("v1", V1.as_bytes()).unwrap();
        let meta = index.layers.values().next().unwrap().clone();
        index.layers.insert("../../etc/passwd".into(), meta);
        let err = IndexPart::from_json("k", &index.to_json()).unwrap_err();
        assert!(matches!(err, IndexError::BadLayerName { .. }), "{err}");
    }

    #[test]
    fn keys_carry_generation_and_sequence_and_sort_in_upload_order() {
        let k = |g, s| index_key(tenant(), timeline(), Generation(g), s).unwrap();
        assert_eq!(
            k(1, 10).as_str(),
            "tenants/0123456789abcdef0123456789abcdef/timelines/fedcba9876543210fedcba9876543210/\
             index_part.json-00000001-000000000000000a"
        );
        assert!(k(1, 10) < k(1, 11) && k(1, 0xffff) < k(2, 0));
        assert_eq!(
            parse_index_name(k(3, 7).file_name()),
            Some((Generation(3), 7))
        );
        for other in [
            "index_part.json",
            "index_part.json-1-2",
            "index_part.json-0000000G-0000000000000000",
            "index_part.json-00000001-000000000000000A",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000001",
        ] {
            assert_eq!(parse_index_name(other), None, "{other}");
        }
        let layer = LayerFileName::parse(
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016960E9",
        )
        .unwrap();
        assert!(layer_key(tenant(), timeline(), &layer, Generation(2))
            .unwrap()
            .as_str()
            .ends_with("__0000000001696070-00000000016960E9-00000002"));
    }

    #[test]
    fn an_attachment_reads_the_newest_index_at_or_below_its_generation() {
        let keys: Vec<RemotePath> = [(1, 0), (1, 5), (2, 1), (4, 0), (4, 3)]
            .iter()
            .map(|&(g, s)| index_key(tenant(), timeline(), Generation(g), s).unwrap())
            .collect();
        let pick = |mine| newest_index(&keys, Generation(mine)).map(|(_, g, s)| (g.0, s));
        assert_eq!(pick(0), None);
        assert_eq!(pick(1), Some((1, 5)));
        assert_eq!(pick(3), Some((2, 1)), "generation 4 is a newer attachment");
        assert_eq!(pick(9), Some((4, 3)));
    }
}
