//! Packed objects: many items (tensors, blobs) written back to back into one
//! object, each stored as it is, as one zstd frame, or byte-grouped (see
//! [`Grouping`]), with a CRC32C per item; and the matching reader, which
//! fetches any set of items from any set of packed objects with coalesced,
//! parallel ranged reads straight into caller buffers. Framework adapters
//! (PyTorch DCP) record where each item landed and how it is encoded.

use crate::store::PutOptions;

mod grouped_read;
pub mod reader;
pub mod writer;

pub use reader::{read_items, Encoding, ItemRead, ReadOptions, Target};
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

/// Byte grouping asked of one item: its segment number `segment` (a
/// float array of `width`-byte elements) is stored byte-grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRequest {
    pub segment: usize,
    pub width: usize,
}

/// A byte-grouped item's stored form, recorded by the caller so the reader
/// can restore it exactly. The stored bytes are zstd frames back to back:
/// one frame for the logical bytes before `start` (when there are any),
/// then the byte-grouped data frames of the codec's filter (see
/// `format::grouped`), one per `frame` logical bytes of `start..start +
/// length`, then one frame for the bytes after it (when there are any).
/// Any zstd decoder decodes the whole item, but to the planes of the
/// grouped run, not to its floats: only s3dlio restores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// The grouped run's place in the item's logical bytes.
    pub start: u64,
    pub length: u64,
    /// Element size in bytes (2, 4 or 8).
    pub width: usize,
    /// Logical bytes per grouped data frame (a multiple of `width`).
    pub frame: usize,
}

impl Grouping {
    /// `InvalidInput` unless this describes a grouped run the reader can
    /// decode in an item of `size` logical bytes.
    pub fn check(&self, what: &str, size: u64) -> crate::error::Result<()> {
        let end = self.start.checked_add(self.length);
        let problem = if !crate::format::byte_group::supported(self.width) {
            Some(format!("byte-group width {} is not 2, 4 or 8", self.width))
        } else if self.frame == 0 || !self.frame.is_multiple_of(self.width) {
            Some(format!(
                "byte-group frame size {} is not a positive multiple of {}",
                self.frame, self.width
            ))
        } else if end.is_none_or(|e| e > size) {
            Some(format!(
                "byte-grouped run {}+{} lies outside the item's {size} bytes",
                self.start, self.length
            ))
        } else {
            None
        };
        match problem {
            Some(why) => Err(crate::error::Error::invalid(format!("{what}: {why}"))),
            None => Ok(()),
        }
    }
}

/// Logical bytes per byte-grouped data frame: the codec's frame size, for
/// the same ratio and the same bounded memory per compressing thread.
pub const GROUP_FRAME: usize = crate::format::DEFAULT_FRAME_SIZE;

/// One byte-grouped data frame as stored: it decodes alone (as a grouped
/// item of its own, starting at 0), so a reader needing part of an item
/// can fetch only the frames covering that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame {
    /// Stored bytes of the frame; frames lie back to back from the first
    /// data frame's offset.
    pub stored: u64,
    /// CRC32C of the frame's logical bytes.
    pub crc32c: u32,
}

/// Where one item landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedItem {
    /// Stored byte range inside the object.
    pub offset: u64,
    pub length: u64,
    /// Logical (uncompressed) size.
    pub size: u64,
    /// CRC32C of the logical bytes, when the writer computes it.
    pub crc32c: Option<u32>,
    /// How a byte-grouped item is stored (`None`: plain, or one zstd
    /// frame when the writer compresses).
    pub grouping: Option<Grouping>,
    /// A byte-grouped item's data frames, in order (the frame of logical
    /// bytes before the grouped run, when there is one, comes first and is
    /// not listed); empty for other items.
    pub frames: Vec<DataFrame>,
}

#[cfg(test)]
mod tests;
