//! Tenants and their timelines on disk.
//!
//! Layout under the pageserver's workdir:
//! `tenants/<tenant id>/timelines/<timeline id>/metadata` plus the
//! timeline's layer files beside it.

pub mod bulk;
pub mod compaction;
pub mod gc;
pub mod images;
pub mod layer_map;
pub mod lsn_by_time;
pub mod metadata;
pub mod mgr;
pub mod storage_layer;
pub mod tasks;
pub mod timeline;
