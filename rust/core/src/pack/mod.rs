//! Packed objects: many items (tensors, blobs) written back to back into one
//! object, each optionally one zstd frame, with a CRC32C per item; and the
//! matching reader, which fetches any set of items from any set of packed
//! objects with coalesced, parallel ranged reads straight into caller
//! buffers. Framework adapters (PyTorch DCP) record where each item landed.

use crate::store::PutOptions;

mod frame;
pub mod reader;
pub mod writer;

pub use reader::{read_items, ItemRead, ReadOptions, Target};
pub use writer::PackWriter;

/// How a [`PackWriter`] stores items.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// zstd level 1-22 (each item one frame), or `None` to store items as they are.
    pub level: Option<i32>,
    /// zstd worker threads per frame; 0 compresses on the calling thread.
    pub zstd_workers: u32,
    /// Compute each item's CRC32C.
    pub checksum: bool,
    /// Unit handed to the store (and to the compressor) at a time.
    pub piece_size: usize,
    pub put: PutOptions,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            level: None,
            zstd_workers: 0,
            checksum: true,
            piece_size: 8 << 20,
            put: PutOptions::default(),
        }
    }
}

/// Where one item landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedItem {
    /// Stored byte range inside the object.
    pub offset: u64,
    pub length: u64,
    /// Logical (uncompressed) size.
    pub size: u64,
    /// CRC32C of the logical bytes, when the writer computes it.
    pub crc32c: Option<u32>,
}

#[cfg(test)]
mod tests;
