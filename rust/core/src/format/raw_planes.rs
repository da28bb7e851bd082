//! Restoring a byte-grouped frame without copying its raw-stored planes.
//!
//! Most planes of float weights are near random and stored as zstd frames
//! of raw blocks (see [`super::grouped`]): decompressing them is a memcpy
//! into a scratch buffer that the merge then reads again. Here each
//! plane's zstd frame is looked at first: when every block is raw, the
//! merge reads the plane's bytes where they lie in the stored frame (for
//! `file://`, the page cache itself, see `store::mapped`); other planes
//! (the exponents) are decompressed into scratch as before. The CRC32C of
//! the merged elements is checked by the caller exactly as on the other
//! path, so damage in a raw block is caught there.
//!
//! Anything unexpected in the layout (a frame this reader does not parse,
//! a count that does not add up) sends the frame down the plain path, one
//! `ZSTD_decompressDCtx` over all of it, which judges and reports it.

use zstd::bulk::Decompressor;

use super::byte_group;
use crate::crc::crc32c_append;

/// zstd's largest block: every raw block of a plane but its last.
const BLOCK: usize = 128 << 10;

const MAGIC: u32 = 0xFD2F_B528;

/// Where plane `k`'s bytes are for the merge.
enum Plane<'a> {
    /// Raw blocks of the stored frame, [`BLOCK`] bytes each but the last.
    Raw(Vec<&'a [u8]>),
    /// Decompressed into the scratch buffer at `k * n`.
    Decoded,
}

/// Decode the grouped frame `raw` into `out` (its logical length) reading
/// raw planes in place. `None` when the frame is not laid out as this
/// module expects or does not decode, for the caller's plain path to
/// decode and report; else the CRC32C of `out`.
pub(crate) fn decompress(
    dctx: &mut Decompressor<'_>,
    raw: &[u8],
    width: usize,
    scratch: &mut Vec<u8>,
    out: &mut [u8],
) -> Option<u32> {
    let len = out.len();
    let n = len / width;
    let whole = n * width;
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    let grouped = &mut scratch[..len];
    let mut planes = Vec::with_capacity(width);
    let mut rest = raw;
    // The planes' frames, then the tail's when the length is not a
    // multiple of the width.
    for k in 0..width + usize::from(len > whole) {
        let size = zstd::zstd_safe::find_frame_compressed_size(rest).ok()?;
        let (frame, after) = (rest.get(..size)?, rest.get(size..)?);
        rest = after;
        let (lo, hi) = if k < width {
            (k * n, (k + 1) * n)
        } else {
            (whole, len)
        };
        if k < width {
            if let Some(blocks) = raw_blocks(frame, n) {
                planes.push(Plane::Raw(blocks));
                continue;
            }
        }
        let got = dctx
            .decompress_to_buffer(frame, &mut grouped[lo..hi])
            .ok()?;
        if got != hi - lo {
            return None;
        }
        if k < width {
            planes.push(Plane::Decoded);
        }
    }
    if !rest.is_empty() {
        return None;
    }
    let mut crc = 0u32;
    let mut e0 = 0;
    let mut b = 0;
    while e0 < n {
        let e1 = (e0 + BLOCK).min(n);
        let mut parts: [&[u8]; 8] = [&[]; 8];
        for (k, plane) in planes.iter().enumerate() {
            parts[k] = match plane {
                Plane::Raw(blocks) => blocks.get(b)?,
                Plane::Decoded => &grouped[k * n + e0..k * n + e1],
            };
        }
        crc = byte_group::merge_planes_crc(&parts[..width], &mut out[e0 * width..e1 * width], crc);
        e0 = e1;
        b += 1;
    }
    out[whole..].copy_from_slice(&grouped[whole..]);
    Some(crc32c_append(crc, &out[whole..]))
}

/// The blocks of `frame` (one whole zstd frame) when it holds `n` bytes in
/// raw blocks only, each [`BLOCK`] bytes but the last, with no checksum or
/// dictionary; `None` for anything else.
fn raw_blocks(frame: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let magic = u32::from_le_bytes(frame.get(..4)?.try_into().ok()?);
    let descriptor = *frame.get(4)?;
    let size_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let reserved = descriptor & 0x08 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dictionary = descriptor & 0x03 != 0;
    if magic != MAGIC || reserved || checksum || dictionary {
        return None;
    }
    let mut pos = 5 + usize::from(!single_segment);
    let size_len = match (size_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    if size_len > 0 {
        let mut bytes = [0u8; 8];
        bytes[..size_len].copy_from_slice(frame.get(pos..pos + size_len)?);
        let content = u64::from_le_bytes(bytes) + if size_len == 2 { 256 } else { 0 };
        if content != n as u64 {
            return None;
        }
        pos += size_len;
    }
    let mut blocks = Vec::with_capacity(n / BLOCK + 1);
    let mut total = 0;
    loop {
        let h = frame.get(pos..pos + 3)?;
        let header = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        pos += 3;
        let last = header & 1 != 0;
        let raw = (header >> 1) & 3 == 0;
        let size = (header >> 3) as usize;
        if !raw || size > BLOCK || (!last && size != BLOCK) {
            return None;
        }
        blocks.push(frame.get(pos..pos + size)?);
        pos += size;
        total += size;
        if last {
            break;
        }
    }
    (pos == frame.len() && total == n).then_some(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc32c;
    use crate::format::grouped::GroupedCompressor;

    use crate::test_rng::fp32_weights as weights;

    fn stored(data: &[u8], width: usize) -> Vec<u8> {
        GroupedCompressor::new(1)
            .unwrap()
            .compress(data, width)
            .unwrap()
            .0
    }

    /// How many of the frame's planes are raw frames.
    fn raw_count(frame: &[u8], width: usize, len: usize) -> usize {
        let n = len / width;
        let mut rest = frame;
        let mut raw = 0;
        for _ in 0..width {
            let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            raw += usize::from(raw_blocks(&rest[..size], n).is_some());
            rest = &rest[size..];
        }
        raw
    }

    #[test]
    fn bit_exact_through_raw_planes_every_width_and_tail() {
        let data = weights(300_000, 3);
        let mut dctx = Decompressor::new().unwrap();
        let mut scratch = Vec::new();
        for width in [2, 4, 8] {
            for len in [0, 1, 7, 4096, 1 << 20, (1 << 20) + 3, 1_000_001] {
                let src = &data[..len];
                let frame = stored(src, width);
                let mut out = vec![0xA5u8; len];
                let crc = decompress(&mut dctx, &frame, width, &mut scratch, &mut out);
                assert_eq!(crc, Some(crc32c(src)), "width {width} len {len}");
                assert_eq!(out, src, "width {width} len {len}");
            }
        }
        // The fast path really reads planes in place on such data.
        let frame = stored(&data[..1 << 20], 4);
        assert!(raw_count(&frame, 4, 1 << 20) >= 2);
    }

    #[test]
    fn damage_in_a_raw_plane_changes_the_crc() {
        let data = weights(1 << 18, 5);
        let frame = stored(&data, 4);
        assert!(raw_count(&frame, 4, data.len()) > 0);
        let mut dctx = Decompressor::new().unwrap();
        let mut scratch = Vec::new();
        let mut out = vec![0u8; data.len()];
        // A byte in the middle of plane 0's raw blocks.
        let mut bad = frame.clone();
        bad[frame.len() / 8] ^= 0x10;
        let crc = decompress(&mut dctx, &bad, 4, &mut scratch, &mut out);
        assert!(crc.is_some());
        assert_ne!(crc, Some(crc32c(&data)));
    }

    /// Through the whole read path on file:// (mapped views, raw planes
    /// merged in place): bit-exact, and a flipped byte inside a raw plane
    /// on disk is an integrity error naming the object.
    #[tokio::test(flavor = "multi_thread")]
    async fn file_objects_read_through_views_and_damage_is_caught() {
        use crate::codec::{EncodeOptions, EncodingWriter, ObjectReader};
        use crate::error::Error;
        use crate::store::local::LocalStore;
        use crate::store::{ObjectStore, PutOptions};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.zst");
        let key = path.to_str().unwrap().trim_start_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new());
        let frame = 4 << 20;
        let data = weights((9 << 20) / 4, 11);
        let inner = store.writer(&key, &PutOptions::default()).await.unwrap();
        let opts = EncodeOptions {
            level: Some(1),
            frame_size: frame,
            threads: 2,
            byte_group: Some(4),
            byte_group_auto: false,
        };
        let mut w = EncodingWriter::new(inner, store.uri(&key), opts).unwrap();
        w.write(bytes::Bytes::from(data.clone())).await.unwrap();
        w.finish().await.unwrap();

        let r = ObjectReader::open(store.clone(), &key).await.unwrap();
        assert_eq!(r.byte_group(), Some(4));
        let mut out = vec![0u8; data.len()];
        r.read_into(&mut out, Some(crc32c(&data))).await.unwrap();
        assert_eq!(out, data);
        let (a, b) = (frame as u64 + 12, frame as u64 + (1 << 20));
        assert_eq!(
            &r.read_range(a..b).await.unwrap()[..],
            &data[a as usize..b as usize]
        );

        // A view is exactly the bytes a copy would be, clipped alike.
        let stored = std::fs::read(&path).unwrap();
        let n = stored.len() as u64;
        for range in [
            0..1 << 20,
            5..(300 << 10) + 5,
            n - (300 << 10)..n + 10,
            7..9,
        ] {
            let view = store.get_range_view(&key, range.clone()).await.unwrap();
            let end = range.end.min(n) as usize;
            assert_eq!(&view[..], &stored[range.start as usize..end], "{range:?}");
        }

        // Frame 0's plane 2 (sign and top mantissa bits) is stored raw.
        let plane = |at: usize| zstd::zstd_safe::find_frame_compressed_size(&stored[at..]).unwrap();
        let p2 = plane(0) + plane(plane(0));
        let len2 = plane(p2);
        assert!(raw_blocks(&stored[p2..p2 + len2], frame / 4).is_some());
        let mut bad = stored.clone();
        bad[p2 + len2 / 2] ^= 0x04;
        std::fs::write(&path, &bad).unwrap();
        let r = ObjectReader::open(store.clone(), &key).await.unwrap();
        let err = r.read_into(&mut out, None).await.unwrap_err();
        assert!(
            matches!(&err, Error::Integrity { uri, offset: 0, .. } if *uri == store.uri(&key)),
            "{err}"
        );
        let err = r.read_range(0..100).await.unwrap_err();
        assert!(matches!(&err, Error::Integrity { .. }), "{err}");
    }

    #[test]
    fn unexpected_layouts_go_to_the_plain_path() {
        let data = weights(1 << 16, 7);
        let frame = stored(&data, 4);
        let mut dctx = Decompressor::new().unwrap();
        let mut scratch = Vec::new();
        let mut out = vec![0u8; data.len()];
        // Cut short, trailing bytes, one plane missing, wrong width.
        let cut = &frame[..frame.len() - 10];
        assert_eq!(decompress(&mut dctx, cut, 4, &mut scratch, &mut out), None);
        let mut long = frame.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(
            decompress(&mut dctx, &long, 4, &mut scratch, &mut out),
            None
        );
        assert_eq!(
            decompress(&mut dctx, &frame, 8, &mut scratch, &mut out),
            None
        );
        // A plain zstd frame of the whole data is not grouped planes.
        let plain = zstd::bulk::compress(&data, 1).unwrap();
        assert_eq!(
            decompress(&mut dctx, &plain, 4, &mut scratch, &mut out),
            None
        );
        // Raw blocks shorter than zstd's maximum are parsed, not assumed.
        let mut odd = Vec::new();
        odd.extend_from_slice(&MAGIC.to_le_bytes());
        odd.push(0b1010_0000);
        odd.extend_from_slice(&8u32.to_le_bytes());
        for (last, part) in [(0u32, &b"abcd"[..]), (1, &b"efgh"[..])] {
            let h = last | (part.len() as u32) << 3;
            odd.extend_from_slice(&h.to_le_bytes()[..3]);
            odd.extend_from_slice(part);
        }
        assert_eq!(zstd::bulk::decompress(&odd, 8).unwrap(), b"abcdefgh");
        assert!(raw_blocks(&odd, 8).is_none());
    }
}
