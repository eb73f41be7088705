//! Layers: the immutable files (and the in-memory layer) a timeline's data
//! lives in (docs/architecture.md §7).
//!
//! - [`filename`]: how a layer file's name encodes its key and LSN ranges;
//! - [`layer_file`]: the on-disk format shared by delta and image layers;
//! - [`reader_cache`]: the bounded set of layer files kept open;
//! - [`inmemory_layer`]: the newest WAL, in memory until it is flushed.

pub mod filename;
pub mod inmemory_layer;
pub mod layer_file;
pub mod reader_cache;
