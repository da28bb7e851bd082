//! Where a zstd frame ends, read from its headers alone (RFC 8878 §3.1.1):
//! the frame header's size, then each block header's size and type, then
//! the optional content checksum. No byte of the content is decoded, so a
//! reader can cut a run of frames apart before decoding them in parallel,
//! even when the bytes arrive in several buffers.

/// The magic number that opens every zstd frame.
const MAGIC: u32 = 0xFD2F_B528;

/// zstd's largest block.
const MAX_BLOCK: usize = 128 << 10;

/// What the headers say about the frame at the start of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameEnd {
    /// The frame is this many bytes long (more than may be at hand).
    At(usize),
    /// The bytes end inside a header: more are needed to know.
    Short,
    /// Not a zstd frame: a wrong magic number, a reserved bit or block
    /// type, a block larger than zstd writes.
    Bad,
}

/// Bytes logically back to back, held in several buffers.
pub(crate) struct Spans<'a>(pub &'a [&'a [u8]]);

impl Spans<'_> {
    /// `N` bytes at `at`, or `None` where the spans end first.
    fn read<const N: usize>(&self, mut at: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        let mut filled = 0;
        for span in self.0 {
            if at >= span.len() {
                at -= span.len();
                continue;
            }
            let take = (span.len() - at).min(N - filled);
            out[filled..filled + take].copy_from_slice(&span[at..at + take]);
            filled += take;
            at = 0;
            if filled == N {
                return Some(out);
            }
        }
        None
    }
}

/// The length of the zstd frame that starts `start` bytes into `bytes`.
pub(crate) fn frame_end(bytes: &Spans<'_>, start: usize) -> FrameEnd {
    let Some(head) = bytes.read::<5>(start) else {
        return FrameEnd::Short;
    };
    if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) != MAGIC {
        return FrameEnd::Bad;
    }
    let descriptor = head[4];
    if descriptor & 0x08 != 0 {
        return FrameEnd::Bad;
    }
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dictionary_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let size_len = match (descriptor >> 6, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let mut pos = start + 5 + usize::from(!single_segment) + dictionary_len + size_len;
    loop {
        let Some(h) = bytes.read::<3>(pos) else {
            return FrameEnd::Short;
        };
        let header = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        let size = (header >> 3) as usize;
        let stored = match (header >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return FrameEnd::Bad,
        };
        if size > MAX_BLOCK {
            return FrameEnd::Bad;
        }
        pos += 3 + stored;
        if header & 1 != 0 {
            break;
        }
    }
    FrameEnd::At(pos - start + if checksum { 4 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift32;

    fn frames() -> Vec<Vec<u8>> {
        let mut rng = XorShift32::new(7);
        let noise: Vec<u8> = (0..300_000).map(|_| rng.next_u32() as u8).collect();
        let text = b"checkpoint ".repeat(40_000);
        let mut out = Vec::new();
        for data in [&noise[..], &text[..], &[][..], &noise[..100]] {
            for level in [1, 3, 19] {
                out.push(zstd::bulk::compress(data, level).expect("compress"));
                let mut c = zstd::bulk::Compressor::new(level).expect("context");
                c.include_checksum(true).expect("checksum flag");
                c.include_contentsize(false).expect("size flag");
                out.push(c.compress(data).expect("compress"));
            }
        }
        out
    }

    #[test]
    fn agrees_with_zstd_on_whole_frames() {
        for frame in frames() {
            let want = zstd::zstd_safe::find_frame_compressed_size(&frame).expect("zstd's size");
            let mut padded = frame.clone();
            padded.extend_from_slice(b"next frame");
            assert_eq!(frame_end(&Spans(&[&padded]), 0), FrameEnd::At(want));
        }
    }

    #[test]
    fn frames_cut_across_buffers_read_the_same() {
        for frame in frames() {
            let whole = frame_end(&Spans(&[&frame]), 0);
            for cut in [1, 4, 5, 6, 9, frame.len() / 2, frame.len() - 1] {
                let cut = cut.min(frame.len());
                let (a, b) = frame.split_at(cut);
                assert_eq!(frame_end(&Spans(&[a, &[], b]), 0), whole, "cut at {cut}");
                let mut after = b"lead".to_vec();
                after.extend_from_slice(a);
                assert_eq!(frame_end(&Spans(&[&after, b]), 4), whole, "cut at {cut}");
            }
        }
    }

    #[test]
    fn cut_headers_are_short_and_damage_is_bad() {
        let frame = zstd::bulk::compress(&[5u8; 1000], 3).expect("compress");
        assert_eq!(frame_end(&Spans(&[&frame[..3]]), 0), FrameEnd::Short);
        assert_eq!(frame_end(&Spans(&[]), 0), FrameEnd::Short);
        let mut wrong_magic = frame.clone();
        wrong_magic[0] ^= 1;
        assert_eq!(frame_end(&Spans(&[&wrong_magic]), 0), FrameEnd::Bad);
        let mut reserved = frame.clone();
        reserved[4] |= 0x08;
        assert_eq!(frame_end(&Spans(&[&reserved]), 0), FrameEnd::Bad);
    }
}
