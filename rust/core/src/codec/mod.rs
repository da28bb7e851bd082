//! The streaming codec between callers and stores: it writes and reads
//! the seekable zstd container (see [`seekable`] for the byte format, and
//! [`crate::format`] for the other formats it uses), with CRC32C over
//! logical bytes and the optional byte-grouping filter for float arrays
//! ([`byte_group`]).
//!
//! Writers go through [`EncodingWriter`], readers through [`ObjectReader`];
//! both are the same for every backend.

use std::fmt;

use crate::error::{Error, Result};

/// Kept under its old path for callers that name `codec::crc`.
pub use crate::crc;
pub mod decoder;
pub mod encoder;

#[cfg(test)]
pub(crate) mod bench;

/// The formats and limits under their old `codec::` paths.
pub use crate::format::{
    byte_group, check_level, seekable, DEFAULT_FRAME_SIZE, MAX_LEVEL, MIN_LEVEL,
};
pub use decoder::ObjectReader;
pub use encoder::{EncodedMeta, EncodingWriter};

/// The encoding settings every binding accepts: a level 1-22 or none, and
/// `byte_grouping=True` only with a level (the filter feeds zstd).
pub fn check_encoding(level: Option<i32>, byte_grouping: Option<bool>) -> Result<()> {
    if let Some(level) = level {
        check_level(level)?;
    }
    if byte_grouping == Some(true) && level.is_none() {
        return Err(Error::invalid(
            "byte_grouping=True needs compression: pass compression_level (1-22)",
        ));
    }
    Ok(())
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
    /// Byte-grouping filter: the element size in bytes (2 for fp16/bf16, 4
    /// for fp32, 8 for fp64) of the float array being written, or `None`
    /// for plain zstd frames. Needs a level. See [`byte_group`].
    pub byte_group: Option<usize>,
    /// The width in `byte_group` was picked automatically from a dtype,
    /// not asked for: where it does not fit (no level, a frame size or an
    /// object size that is not a multiple of it) the filter is quietly
    /// off instead of an error. A stream whose length only turns out not
    /// to be a multiple at the end keeps the filter; its last partial
    /// element is stored ungrouped.
    pub byte_group_auto: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            level: None,
            frame_size: DEFAULT_FRAME_SIZE,
            threads: 0,
            byte_group: None,
            byte_group_auto: false,
        }
    }
}

impl EncodeOptions {
    /// The byte-grouping width these options give an object of
    /// `known_size` bytes (`None` while the size is unknown): `Some(w)`
    /// when the filter applies, `None` when it is off, and an error naming
    /// `uri` for an explicit request that cannot be honoured.
    pub fn effective_byte_group(
        &self,
        uri: &str,
        known_size: Option<u64>,
    ) -> Result<Option<usize>> {
        let Some(width) = self.byte_group else {
            return Ok(None);
        };
        let problem = if !byte_group::supported(width) {
            Some(format!(
                "byte_group={width} is not a supported element size (2, 4 or 8 bytes)"
            ))
        } else if self.level.is_none() {
            Some(format!(
                "byte_group={width} needs compression (a compression level)"
            ))
        } else if !self.frame_size.is_multiple_of(width) {
            Some(format!(
                "frame size {} is not a multiple of byte_group={width}",
                self.frame_size
            ))
        } else {
            known_size
                .filter(|size| size % width as u64 != 0)
                .map(|size| {
                    format!(
                        "{size} bytes are not a whole number of {width}-byte elements \
                     (byte_group={width}); store it without byte grouping"
                    )
                })
        };
        match problem {
            None => Ok(Some(width)),
            Some(_) if self.byte_group_auto => Ok(None),
            Some(why) => Err(Error::invalid(format!("{uri}: {why}"))),
        }
    }

    /// These options with the byte-grouping filter as a caller's
    /// `byte_grouping` setting decides, for data whose float element width
    /// is `width` (`None`: not a 2-, 4- or 8-byte float; `dtype` names the
    /// data's type for the message): `Some(false)` never groups, `None`
    /// groups float data when it fits (automatic), `Some(true)` requires a
    /// float width and is an error without one. The one rule for every
    /// binding.
    pub fn with_byte_grouping(
        &self,
        byte_grouping: Option<bool>,
        width: Option<usize>,
        dtype: Option<&str>,
    ) -> Result<EncodeOptions> {
        let mut opts = self.clone();
        match byte_grouping {
            Some(false) => opts.byte_group = None,
            None => {
                opts.byte_group = width;
                opts.byte_group_auto = true;
            }
            Some(true) => {
                let Some(w) = width else {
                    return Err(Error::invalid(match dtype {
                        None => "byte_grouping=True needs dtype= (the element type of the data)"
                            .to_string(),
                        Some(d) => format!(
                            "byte_grouping=True needs a 2-, 4- or 8-byte float dtype; {d} is not one"
                        ),
                    }));
                };
                opts.byte_group = Some(w);
                opts.byte_group_auto = false;
            }
        }
        Ok(opts)
    }

    /// These options for an object of `size` bytes: an automatic byte
    /// group that does not fit is turned off; an explicit one that does
    /// not fit is an error (before anything is written).
    pub fn for_size(&self, uri: &str, size: u64) -> Result<EncodeOptions> {
        let mut opts = self.clone();
        opts.byte_group = self.effective_byte_group(uri, Some(size))?;
        Ok(opts)
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
    fn encoding_checks() {
        check_encoding(None, None).unwrap();
        check_encoding(Some(3), Some(true)).unwrap();
        assert!(check_encoding(Some(0), None)
            .unwrap_err()
            .to_string()
            .contains("compression level 0 is out of range"));
        let err = check_encoding(None, Some(true)).unwrap_err();
        assert!(
            err.to_string()
                .contains("byte_grouping=True needs compression"),
            "{err}"
        );
    }

    #[test]
    fn byte_grouping_rules() {
        let base = EncodeOptions {
            level: Some(3),
            ..Default::default()
        };
        let off = base
            .with_byte_grouping(Some(false), Some(2), Some("bfloat16"))
            .unwrap();
        assert_eq!(off.byte_group, None);
        let auto = base
            .with_byte_grouping(None, Some(4), Some("float32"))
            .unwrap();
        assert_eq!((auto.byte_group, auto.byte_group_auto), (Some(4), true));
        let auto_int = base.with_byte_grouping(None, None, Some("int64")).unwrap();
        assert_eq!(auto_int.byte_group, None);
        let forced = base
            .with_byte_grouping(Some(true), Some(8), Some("float64"))
            .unwrap();
        assert_eq!(
            (forced.byte_group, forced.byte_group_auto),
            (Some(8), false)
        );
        let err = base
            .with_byte_grouping(Some(true), None, Some("int8"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("needs a 2-, 4- or 8-byte float dtype; int8 is not one"),
            "{err}"
        );
        let err = base.with_byte_grouping(Some(true), None, None).unwrap_err();
        assert!(err.to_string().contains("needs dtype="), "{err}");
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
