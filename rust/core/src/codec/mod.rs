//! The codec layer between callers and stores: the seekable zstd container
//! (see [`seekable`] for the byte format) and CRC32C over logical bytes.
//!
//! Writers go through [`EncodingWriter`], readers through [`ObjectReader`];
//! both are the same for every backend.

use std::fmt;

use crate::error::{Error, Result};

pub mod crc;
pub mod decoder;
pub mod encoder;
pub mod seekable;

#[cfg(test)]
mod bench;

pub use decoder::ObjectReader;
pub use encoder::{EncodedMeta, EncodingWriter};

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

/// How an object's stored bytes relate to its logical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Stored bytes are the logical bytes.
    None,
    /// The s3dlio seekable zstd container of [`seekable`].
    ZstdSeekable,
}

impl Codec {
    /// The name used in manifests, the CLI and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::ZstdSeekable => "zstd-seekable",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How [`EncodingWriter`] encodes one object.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level 1-22, or `None` to store the bytes as they are.
    pub level: Option<i32>,
    /// Uncompressed bytes per frame (the unit of parallelism and of seeking).
    pub frame_size: usize,
    /// Frames compressed at once; 0 means one per available core.
    pub threads: usize,
    /// Reserved for the byte-grouping filter (element width in bytes). It has
    /// a field in the trailer already so the format need not change when the
    /// filter lands; until then it must be `None`.
    pub byte_group: Option<usize>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            level: None,
            frame_size: DEFAULT_FRAME_SIZE,
            threads: 0,
            byte_group: None,
        }
    }
}

/// The number of worker threads `threads` asks for.
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        for l in 1..=22 {
            assert_eq!(check_level(l).unwrap(), l);
        }
        for l in [0, 23, -1, i32::MIN, i32::MAX] {
            let e = check_level(l).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)));
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid input: compression level {l} is out of range: valid levels are 1-22 (or None for no compression)"
                )
            );
        }
    }

    #[test]
    fn codec_names() {
        assert_eq!(Codec::None.name(), "none");
        assert_eq!(Codec::ZstdSeekable.name(), "zstd-seekable");
        assert_eq!(
            serde_json::to_string(&Codec::ZstdSeekable).unwrap(),
            "\"zstd_seekable\""
        );
        assert_eq!(
            serde_json::from_str::<Codec>("\"none\"").unwrap(),
            Codec::None
        );
    }
}
