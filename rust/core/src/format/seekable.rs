//! The byte format of a compressed s3dlio object.
//!
//! ```text
//! object  = frame_0 … frame_{n-1}  meta_frame  seek_table_frame
//! ```
//!
//! - **Data frames**: `n ≥ 1` independent zstd frames. Each holds exactly
//!   `frame_size` uncompressed bytes except the last, which holds the rest
//!   (1..=frame_size bytes). An empty object is one frame of 0 bytes, which
//!   every zstd decoder accepts. Frames record their content size and carry
//!   no zstd checksum: the CRC32Cs below cover them.
//! - **Metadata frame**: a zstd skippable frame, so `zstd -d` ignores it.
//!   All integers little-endian:
//!
//!   | bytes | field |
//!   |---|---|
//!   | 4 | magic `0x184D2A51` |
//!   | 4 | payload length = `25 + 4·n` |
//!   | 7 | `b"S3DLIO\x01"` (tag; the last byte is the format version) |
//!   | 8 | logical size (u64): total uncompressed bytes |
//!   | 4 | CRC32C (Castagnoli) of all uncompressed bytes |
//!   | 4 | frame size (u32): uncompressed bytes per frame |
//!   | 1 | zstd level (i8, 1-22) |
//!   | 1 | byte-group width (u8): 0 = no filter, else 2, 4 or 8 (see below) |
//!   | 4·n | CRC32C (u32) of each frame's uncompressed bytes, in frame order |
//!
//! - **Byte-grouped objects** (width `w` ≠ 0): every data frame is itself
//!   a run of zstd frames, one per byte plane of the frame's elements and
//!   one more for a trailing partial element (see [`super::grouped`] and
//!   [`super::byte_group`]). Frame sizes and CRC32Cs are those of the
//!   logical (ungrouped) bytes; `frame_size` is a multiple of `w`. Any
//!   zstd decoder still decodes such an object, but to the grouped bytes:
//!   only s3dlio restores the elements. Readers that predate the filter
//!   refuse these objects by the nonzero width, so format version 1 is
//!   kept: objects without the filter are unchanged.
//! - **Seek table frame**: exactly zstd's `contrib/seekable_format`
//!   (`zstd_seekable_compression_format.md`), so other seekable readers can
//!   use the object too:
//!
//!   | bytes | field |
//!   |---|---|
//!   | 4 | skippable magic `0x184D2A5E` |
//!   | 4 | frame size = `8·n + 9` |
//!   | 8·n | per data frame: compressed size u32, decompressed size u32 |
//!   | 4 | number of frames `n` |
//!   | 1 | descriptor: 0 (no checksum flag, reserved bits 0) |
//!   | 4 | seekable magic `0x8F92EAB1` |
//!
//! The seek table lists data frames only: frame `i` starts at the sum of
//! the compressed sizes before it, and the metadata frame starts at the sum
//! of all of them. The trailer (metadata + seek table) is `50 + 12·n` bytes.
//!
//! **Sniffing** an object reads its tail. No seekable magic at the end means
//! a plain object. With the magic, the seek table must be well formed and
//! the metadata frame must sit immediately before it; a seek table preceded
//! by something that is not our metadata is a foreign seekable archive,
//! read as plain bytes. Anything inconsistent (bad seek-table header, a
//! metadata frame that does not parse, sizes that do not add up to the
//! stored size, frame CRCs that do not combine to the object CRC) is a
//! corrupt object, never silently plain.

use crate::crc::crc32c_combine;

/// Skippable-frame magic of the s3dlio metadata frame.
pub const META_MAGIC: u32 = 0x184D_2A51;
/// Skippable-frame magic of the seek table (zstd seekable format).
pub const SEEK_TABLE_MAGIC: u32 = 0x184D_2A5E;
/// Last four bytes of every seekable zstd object.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Start of the metadata payload; the last byte is the format version.
pub const META_TAG: &[u8; 7] = b"S3DLIO\x01";

const SKIPPABLE_HEADER: usize = 8;
const SEEK_FOOTER: usize = 9;
const SEEK_ENTRY: usize = 8;
/// Tag + logical size + CRC + frame size + level + byte group.
const META_FIXED: usize = 7 + 8 + 4 + 4 + 1 + 1;
const DESCRIPTOR_CHECKSUM: u8 = 0x80;
const DESCRIPTOR_RESERVED: u8 = 0x7C;

/// One data frame as the trailer describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    pub compressed_size: u32,
    pub decompressed_size: u32,
    /// CRC32C of this frame's uncompressed bytes.
    pub crc32c: u32,
}

/// Everything after the data frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub logical_size: u64,
    pub crc32c: u32,
    pub frame_size: u32,
    pub level: i32,
    /// 0 = no byte-grouping filter.
    pub byte_group: u8,
    pub frames: Vec<FrameEntry>,
}

/// What the tail of an object says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// No seek table at the end.
    Plain,
    /// A whole zstd seekable archive that is not ours (its seek table
    /// parses, no s3dlio metadata before it): plain bytes to us.
    Foreign,
    Seekable(Trailer),
    /// The trailer is longer than the tail given: read this many bytes from
    /// the end of the object and parse again.
    NeedTail(u64),
}

/// Bytes of the trailer of an object with `frames` data frames.
pub fn trailer_len(frames: usize) -> u64 {
    meta_frame_len(frames) + seek_table_len(frames)
}

fn meta_frame_len(frames: usize) -> u64 {
    (SKIPPABLE_HEADER + META_FIXED) as u64 + 4 * frames as u64
}

fn seek_table_len(frames: usize) -> u64 {
    (SKIPPABLE_HEADER + SEEK_FOOTER) as u64 + SEEK_ENTRY as u64 * frames as u64
}

impl Trailer {
    /// Sum of the compressed sizes: where the metadata frame starts.
    pub fn data_len(&self) -> u64 {
        self.frames.iter().map(|f| f.compressed_size as u64).sum()
    }

    /// Stored size of the whole object.
    pub fn stored_size(&self) -> u64 {
        self.data_len() + trailer_len(self.frames.len())
    }

    /// The metadata frame followed by the seek table frame.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let n = self.frames.len();
        let count = u32::try_from(n).map_err(|_| format!("{n} frames do not fit a seek table"))?;
        let meta_payload = u32::try_from(META_FIXED + 4 * n)
            .map_err(|_| format!("{n} frames do not fit a metadata frame"))?;
        let seek_payload = u32::try_from(SEEK_ENTRY * n + SEEK_FOOTER)
            .map_err(|_| format!("{n} frames do not fit a seek table"))?;
        let level = i8::try_from(self.level)
            .map_err(|_| format!("level {} does not fit the trailer", self.level))?;

        let mut out = Vec::with_capacity(trailer_len(n) as usize);
        out.extend_from_slice(&META_MAGIC.to_le_bytes());
        out.extend_from_slice(&meta_payload.to_le_bytes());
        out.extend_from_slice(META_TAG);
        out.extend_from_slice(&self.logical_size.to_le_bytes());
        out.extend_from_slice(&self.crc32c.to_le_bytes());
        out.extend_from_slice(&self.frame_size.to_le_bytes());
        out.extend_from_slice(&level.to_le_bytes());
        out.push(self.byte_group);
        for f in &self.frames {
            out.extend_from_slice(&f.crc32c.to_le_bytes());
        }

        out.extend_from_slice(&SEEK_TABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&seek_payload.to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.compressed_size.to_le_bytes());
            out.extend_from_slice(&f.decompressed_size.to_le_bytes());
        }
        out.extend_from_slice(&count.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        Ok(out)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Classify an object of `object_size` stored bytes from its last
/// `tail.len()` bytes. `Err` is the reason the object is corrupt.
pub fn parse_tail(tail: &[u8], object_size: u64) -> Result<Sniff, String> {
    if tail.len() as u64 > object_size {
        return Err(format!(
            "read {} tail bytes of a {object_size}-byte object",
            tail.len()
        ));
    }
    let t = tail.len();
    if t < 4 || u32_at(tail, t - 4) != SEEKABLE_MAGIC {
        return Ok(Sniff::Plain);
    }
    if object_size < (SKIPPABLE_HEADER + SEEK_FOOTER) as u64 {
        return Err(format!(
            "ends with the seekable magic but is only {object_size} bytes"
        ));
    }
    if t < SKIPPABLE_HEADER + SEEK_FOOTER {
        return Ok(Sniff::NeedTail(object_size.min(4096)));
    }

    let n = u32_at(tail, t - SEEK_FOOTER) as usize;
    let descriptor = tail[t - 5];
    if descriptor & DESCRIPTOR_RESERVED != 0 {
        return Err(format!(
            "seek table descriptor {descriptor:#04x} has reserved bits set"
        ));
    }
    let entry = if descriptor & DESCRIPTOR_CHECKSUM != 0 {
        SEEK_ENTRY + 4
    } else {
        SEEK_ENTRY
    };
    let seek_len = (SKIPPABLE_HEADER + SEEK_FOOTER) as u64 + entry as u64 * n as u64;
    if seek_len > object_size {
        return Err(format!(
            "seek table of {n} frames ({seek_len} bytes) is larger than the object ({object_size} bytes)"
        ));
    }
    // Ask for our whole trailer at once so a second read suffices.
    let wanted = (seek_len + meta_frame_len(n)).min(object_size);
    if seek_len > t as u64 {
        return Ok(Sniff::NeedTail(wanted));
    }
    let seek_len = seek_len as usize;
    let seek = &tail[t - seek_len..];
    if u32_at(seek, 0) != SEEK_TABLE_MAGIC
        || u32_at(seek, 4) as usize != seek_len - SKIPPABLE_HEADER
    {
        return Err(format!(
            "seek table header does not match its footer ({n} frames)"
        ));
    }

    // Is the frame before the seek table ours?
    let meta_len = meta_frame_len(n);
    if seek_len as u64 + meta_len > object_size {
        return foreign_or_garbled(tail);
    }
    if wanted > t as u64 {
        return Ok(Sniff::NeedTail(wanted));
    }
    let meta_len = meta_len as usize;
    let meta = &tail[t - seek_len - meta_len..t - seek_len];
    let looks_ours = u32_at(meta, 0) == META_MAGIC || meta[8..14] == META_TAG[..6];
    if !looks_ours {
        return foreign_or_garbled(tail);
    }
    if u32_at(meta, 0) != META_MAGIC
        || u32_at(meta, 4) as usize != meta_len - SKIPPABLE_HEADER
        || &meta[8..15] != META_TAG
    {
        return Err(format!(
            "s3dlio metadata frame is damaged or does not match the seek table ({n} frames)"
        ));
    }
    if entry != SEEK_ENTRY {
        return Err("s3dlio objects never set the seek table checksum flag".to_string());
    }

    let p = &meta[8..];
    let logical_size = u64_at(p, 7);
    let crc32c = u32_at(p, 15);
    let frame_size = u32_at(p, 19);
    let level = p[23] as i8 as i32;
    let byte_group = p[24];
    let frames: Vec<FrameEntry> = (0..n)
        .map(|i| FrameEntry {
            compressed_size: u32_at(seek, SKIPPABLE_HEADER + i * SEEK_ENTRY),
            decompressed_size: u32_at(seek, SKIPPABLE_HEADER + i * SEEK_ENTRY + 4),
            crc32c: u32_at(p, META_FIXED + 4 * i),
        })
        .collect();
    let trailer = Trailer {
        logical_size,
        crc32c,
        frame_size,
        level,
        byte_group,
        frames,
    };
    validate(&trailer, object_size)?;
    Ok(Sniff::Seekable(trailer))
}

/// zstd's frame magic.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Uncompressed bytes of one zstd block at most: every block costs at
/// least 4 stored bytes (3 of header, 1 for an RLE byte), which bounds how
/// many logical bytes a frame of given stored size can hold.
const MAX_BLOCK: u64 = 128 << 10;
const MIN_BLOCK_COST: u64 = 4;

/// The least stored bytes a zstd frame (or run of frames) holding
/// `logical` bytes can take.
pub fn min_stored(logical: u64) -> u64 {
    logical.div_ceil(MAX_BLOCK) * MIN_BLOCK_COST
}

/// The first bytes of an object look like a data frame our encoder
/// writes: zstd magic, a frame content size, no zstd checksum.
pub fn looks_like_our_frame(head: &[u8]) -> bool {
    if head.len() < 5 || u32_at(head, 0) != ZSTD_MAGIC {
        return false;
    }
    let descriptor = head[4];
    let checksum = descriptor & 0x04 != 0;
    let has_size = descriptor >> 6 != 0 || descriptor & 0x20 != 0;
    has_size && !checksum
}

/// A seek table not preceded by our metadata: a foreign seekable archive,
/// unless our tag shows up in the tail, which means our own
/// trailer was damaged.
fn foreign_or_garbled(tail: &[u8]) -> Result<Sniff, String> {
    if tail.windows(6).any(|w| w == &META_TAG[..6]) {
        return Err("s3dlio metadata frame before the seek table is damaged".to_string());
    }
    Ok(Sniff::Foreign)
}

/// Internal consistency of a parsed trailer against the stored size.
fn validate(t: &Trailer, object_size: u64) -> Result<(), String> {
    let n = t.frames.len();
    if !(super::MIN_LEVEL..=super::MAX_LEVEL).contains(&t.level) {
        return Err(format!("trailer records level {}", t.level));
    }
    if t.byte_group != 0 && !super::byte_group::supported(t.byte_group as usize) {
        return Err(format!(
            "uses a byte-grouping filter of width {}, which this version of s3dlio cannot decode",
            t.byte_group
        ));
    }
    if t.byte_group != 0 && !t.frame_size.is_multiple_of(t.byte_group as u32) {
        return Err(format!(
            "frame size {} is not a multiple of the byte-group width {}",
            t.frame_size, t.byte_group
        ));
    }
    if t.frame_size == 0 {
        return Err("trailer records a frame size of 0".to_string());
    }
    if n == 0 {
        return Err("seek table lists no frames".to_string());
    }
    let mut logical = 0u64;
    for (i, f) in t.frames.iter().enumerate() {
        let ok = if i + 1 < n {
            f.decompressed_size == t.frame_size
        } else if n == 1 {
            f.decompressed_size <= t.frame_size
        } else {
            (1..=t.frame_size).contains(&f.decompressed_size)
        };
        if !ok {
            return Err(format!(
                "frame {i} holds {} bytes, frame size is {}",
                f.decompressed_size, t.frame_size
            ));
        }
        // A lying trailer must not size an allocation: no frame holds more
        // than zstd's best ratio allows for its stored bytes.
        if u64::from(f.compressed_size) < min_stored(u64::from(f.decompressed_size)) {
            return Err(format!(
                "frame {i} claims {} bytes in {} stored bytes, more than zstd can hold",
                f.decompressed_size, f.compressed_size
            ));
        }
        logical += f.decompressed_size as u64;
    }
    if logical != t.logical_size {
        return Err(format!(
            "frames hold {logical} bytes, metadata says {}",
            t.logical_size
        ));
    }
    let stored = t.stored_size();
    if stored != object_size {
        return Err(format!(
            "stored size is {object_size} bytes, seek table accounts for {stored}"
        ));
    }
    let combined = t.frames.iter().fold(0u32, |crc, f| {
        crc32c_combine(crc, f.crc32c, f.decompressed_size as u64)
    });
    if combined != t.crc32c {
        return Err(format!(
            "frame CRC32Cs combine to {combined:08x}, metadata says {:08x}",
            t.crc32c
        ));
    }
    Ok(())
}
