//! Byte formats, with no I/O: what s3dlio writes and how to parse it back.
//! Everything here works on memory; the streaming codec ([`crate::codec`])
//! and the pack writer/reader ([`crate::pack`]) move these bytes to and
//! from stores.
//!
//! - [`seekable`]: the seekable zstd container (frames, metadata, seek table).
//! - [`byte_group`]: the byte-grouping filter's plane split/merge.
//! - `grouped`, `raw_planes`: byte-grouped frames (compress, and decode
//!   planes stored raw straight from the stored bytes).
//! - `zstd_raw`: the thin zstd wrappers the grouped frames need.
//! - `zstd_frames`: where a zstd frame ends, from its headers alone.
//! - `pack_frame`: one pack item as a zstd frame.
//! - `out_pool`: recycled output buffers for compressed frames.

use crate::error::{Error, Result};

pub mod byte_group;
pub(crate) mod grouped;
pub(crate) mod out_pool;
pub(crate) mod pack_frame;
mod raw_planes;
pub mod seekable;
pub(crate) mod zstd_frames;
pub(crate) mod zstd_raw;

/// Uncompressed bytes per zstd frame: large enough for a good ratio and few
/// seek-table entries, small enough that a range read decompresses little
/// more than it needs and that `threads + 1` frames in flight stay cheap.
pub const DEFAULT_FRAME_SIZE: usize = 4 << 20;

pub const MIN_LEVEL: i32 = 1;
pub const MAX_LEVEL: i32 = 22;

/// `Ok(level)` for levels 1-22, else `InvalidInput` (Python `ValueError`).
pub fn check_level(level: i32) -> Result<i32> {
    if (MIN_LEVEL..=MAX_LEVEL).contains(&level) {
        Ok(level)
    } else {
        Err(Error::invalid(format!(
            "compression level {level} is out of range: valid levels are \
             {MIN_LEVEL}-{MAX_LEVEL} (or None for no compression)"
        )))
    }
}
