//! The libzstd entry points the byte-grouping filter needs that the
//! `zstd` crate does not wrap: `ZSTD_compress2` into a `Vec`'s spare
//! capacity (appending, no zero-fill), and `ZSTD_compressSequences` /
//! `ZSTD_compressSequencesAndLiterals` with literal-only blocks, which is
//! zstd's Huffman literal coder on its own; plus [`raw_frame_append`], a
//! zstd frame of raw blocks written directly.
//!
//! Literal-only blocks are what the exponent plane wants: its bytes are
//! i.i.d.-like with ~2.7 bits of entropy, so LZ matches (which zstd's fast
//! levels take greedily) cost more than they save, and zstd's per-block
//! Huffman tables come within a fraction of a percent of the order-0
//! entropy at over 1 GB/s. The output is an ordinary zstd frame that any
//! decoder reads.
//!
//! All `unsafe` of the codec lives here.

use std::io;
use std::ptr::NonNull;

use zstd::zstd_safe::zstd_sys as sys;

/// zstd's largest block: one literal-only sequence per block.
const BLOCK: usize = 128 << 10;

/// An owned `ZSTD_CCtx` whose parameters stay set across compressions.
pub(crate) struct RawCCtx(NonNull<sys::ZSTD_CCtx>);

// A ZSTD_CCtx has no thread affinity; it is used by one thread at a time
// (`&mut self`).
unsafe impl Send for RawCCtx {}

impl Drop for RawCCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ZSTD_createCCtx and is freed once.
        unsafe {
            sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

fn check(code: usize) -> io::Result<usize> {
    // SAFETY: pure functions on an integer; the name is a static C string.
    unsafe {
        if sys::ZSTD_isError(code) != 0 {
            let name = std::ffi::CStr::from_ptr(sys::ZSTD_getErrorName(code));
            return Err(io::Error::other(format!(
                "zstd: {}",
                name.to_string_lossy()
            )));
        }
    }
    Ok(code)
}

/// Parameters of a [`RawCCtx`], applied once at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// Everything from the level.
    Level(i32),
    /// The level, with a fast match finder looking for short matches in a
    /// large table: for mantissa planes, where matches are rare runs
    /// (values widened from a narrower type) and most blocks end up as
    /// raw or Huffman-coded literals anyway.
    Runs {
        level: i32,
        hash_log: i32,
        min_match: i32,
    },
    /// `ZSTD_compressSequences` with explicit block delimiters, for
    /// literal-only frames; the level sets the literal coder's effort.
    Literals(i32),
}

impl RawCCtx {
    pub(crate) fn new(params: Params) -> io::Result<Self> {
        // SAFETY: returns NULL on allocation failure, checked below.
        let ptr = unsafe { sys::ZSTD_createCCtx() };
        let mut cctx = RawCCtx(
            NonNull::new(ptr).ok_or_else(|| io::Error::other("zstd: cannot allocate a context"))?,
        );
        use sys::ZSTD_cParameter as P;
        match params {
            Params::Level(level) => cctx.set(P::ZSTD_c_compressionLevel, level)?,
            Params::Runs {
                level,
                hash_log,
                min_match,
            } => {
                cctx.set(P::ZSTD_c_compressionLevel, level)?;
                cctx.set(P::ZSTD_c_strategy, sys::ZSTD_strategy::ZSTD_fast as i32)?;
                cctx.set(P::ZSTD_c_hashLog, hash_log)?;
                cctx.set(P::ZSTD_c_minMatch, min_match)?;
            }
            Params::Literals(level) => {
                cctx.set(P::ZSTD_c_compressionLevel, level)?;
                // ZSTD_c_blockDelimiters = ZSTD_sf_explicitBlockDelimiters.
                cctx.set(P::ZSTD_c_experimentalParam11, 1)?;
            }
        }
        cctx.set(P::ZSTD_c_checksumFlag, 0)?;
        cctx.set(P::ZSTD_c_contentSizeFlag, 1)?;
        Ok(cctx)
    }

    fn set(&mut self, param: sys::ZSTD_cParameter, value: i32) -> io::Result<()> {
        // SAFETY: valid context; zstd validates the value.
        check(unsafe { sys::ZSTD_CCtx_setParameter(self.0.as_ptr(), param, value) }).map(|_| ())
    }

    /// Compress `src` as one zstd frame appended to `out`; returns its size.
    pub(crate) fn compress_append(&mut self, src: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let bound = zstd::zstd_safe::compress_bound(src.len());
        out.reserve(bound);
        let start = out.len();
        // SAFETY: dst is the vector's spare capacity (at least `bound`
        // bytes, uninitialized, written only by zstd); on success zstd
        // wrote exactly `n` bytes there, so extending the length by `n`
        // exposes initialized bytes only.
        let n = check(unsafe {
            sys::ZSTD_compress2(
                self.0.as_ptr(),
                out.as_mut_ptr().add(start).cast(),
                out.capacity() - start,
                src.as_ptr().cast(),
                src.len(),
            )
        })?;
        unsafe { out.set_len(start + n) };
        Ok(n)
    }

    /// Compress `src` as one zstd frame of literal-only blocks appended to
    /// `out` (the context must be `Params::Literals`); returns its size.
    pub(crate) fn compress_literals_append(
        &mut self,
        src: &[u8],
        out: &mut Vec<u8>,
        seqs: &mut Vec<sys::ZSTD_Sequence>,
    ) -> io::Result<usize> {
        literal_sequences(src.len(), seqs);
        let bound = zstd::zstd_safe::compress_bound(src.len());
        out.reserve(bound);
        let start = out.len();
        // SAFETY: as in compress_append; `seqs` describes exactly `src`
        // (the literal lengths add up to src.len()) with explicit block
        // delimiters of at most one block each, which is what the
        // Literals context was set up for.
        let n = check(unsafe {
            sys::ZSTD_compressSequences(
                self.0.as_ptr(),
                out.as_mut_ptr().add(start).cast(),
                out.capacity() - start,
                seqs.as_ptr(),
                seqs.len(),
                src.as_ptr().cast(),
                src.len(),
            )
        })?;
        unsafe { out.set_len(start + n) };
        Ok(n)
    }

    /// [`Self::compress_literals_append`] of `padded[..len]`, the same
    /// frame, but through `ZSTD_compressSequencesAndLiterals`, which codes
    /// the literals where they lie instead of first copying each block
    /// into the context. That entry point reads up to 8 bytes past the
    /// literals (hence `padded`, which must be at least `len + 8` long, or
    /// the copying path is taken) and cannot emit a raw block, so a plane
    /// that Huffman coding would expand goes the copying way too.
    pub(crate) fn compress_padded_literals_append(
        &mut self,
        padded: &[u8],
        len: usize,
        out: &mut Vec<u8>,
        seqs: &mut Vec<sys::ZSTD_Sequence>,
    ) -> io::Result<usize> {
        if padded.len() < len + LITERAL_PADDING || len == 0 {
            return self.compress_literals_append(&padded[..len], out, seqs);
        }
        literal_sequences(len, seqs);
        let bound = zstd::zstd_safe::compress_bound(len);
        out.reserve(bound);
        let start = out.len();
        // SAFETY: dst as in compress_append; `seqs` describes exactly
        // `len` literal bytes with explicit block delimiters, the literal
        // buffer is `padded` (readable for its whole length, at least
        // len + 8 bytes as zstd requires), and the Literals context has
        // no checksum and no sequence validation, as this entry point
        // requires.
        let code = unsafe {
            sys::ZSTD_compressSequencesAndLiterals(
                self.0.as_ptr(),
                out.as_mut_ptr().add(start).cast(),
                out.capacity() - start,
                seqs.as_ptr(),
                seqs.len(),
                padded.as_ptr().cast(),
                len,
                padded.len(),
                len,
            )
        };
        // SAFETY: pure function on an integer.
        if unsafe { sys::ZSTD_isError(code) } != 0 {
            // A block that would not shrink (no raw blocks here): redo the
            // frame with the entry point that can store it raw. The
            // context resets itself at the start of the next frame.
            return self.compress_literals_append(&padded[..len], out, seqs);
        }
        // SAFETY: zstd wrote exactly `code` bytes into the spare capacity.
        unsafe { out.set_len(start + code) };
        Ok(code)
    }
}

/// Bytes `ZSTD_compressSequencesAndLiterals` may read past the literals.
pub(crate) const LITERAL_PADDING: usize = 8;

/// The sequences of a literal-only frame of `len` bytes: one block
/// delimiter (offset 0, match length 0) per block, its literal length the
/// whole block, so no matches at all.
fn literal_sequences(len: usize, seqs: &mut Vec<sys::ZSTD_Sequence>) {
    seqs.clear();
    let mut left = len;
    loop {
        let lit = left.min(BLOCK);
        seqs.push(sys::ZSTD_Sequence {
            offset: 0,
            litLength: lit as u32,
            matchLength: 0,
            rep: 0,
        });
        left -= lit;
        if left == 0 {
            break;
        }
    }
}

/// Append to `out` a zstd frame that stores `src` as raw blocks: what
/// zstd itself emits for incompressible data, without looking for matches
/// or counting symbols first. Returns the frame's size.
pub(crate) fn raw_frame_append(src: &[u8], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.reserve(src.len() + 12 + 3 * (src.len() / BLOCK + 1));
    // Magic number, then the frame header descriptor: single segment
    // (bit 5: no window descriptor, the window is the content), no
    // checksum, no dictionary, and the content size in 4 bytes (bits 7-6
    // = 2) or, past 4 GiB, 8 bytes (= 3).
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    match u32::try_from(src.len()) {
        Ok(size) => {
            out.push(0b1010_0000);
            out.extend_from_slice(&size.to_le_bytes());
        }
        Err(_) => {
            out.push(0b1110_0000);
            out.extend_from_slice(&(src.len() as u64).to_le_bytes());
        }
    }
    let mut blocks = src.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        // An empty frame is one empty last block.
        out.extend_from_slice(&raw_block_header(0, true));
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        out.extend_from_slice(&raw_block_header(block.len(), last));
        out.extend_from_slice(block);
    }
    out.len() - start
}

/// Block header: bit 0 last block, bits 1-2 type (0 = raw), bits 3-23 size.
fn raw_block_header(size: usize, last: bool) -> [u8; 3] {
    let h = (size as u32) << 3 | u32::from(last);
    let b = h.to_le_bytes();
    [b[0], b[1], b[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skewed(len: usize) -> Vec<u8> {
        // Exponent-like bytes: a handful of values, geometric-ish.
        let mut x = 12345u32;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                120 + ((x >> 16) % 64).trailing_zeros().min(7) as u8
            })
            .collect()
    }

    #[test]
    fn literal_frames_decode_with_plain_zstd() {
        let mut cctx = RawCCtx::new(Params::Literals(1)).unwrap();
        let mut seqs = Vec::new();
        for len in [0usize, 1, 1000, BLOCK, BLOCK + 1, 5 * BLOCK + 77] {
            let src = skewed(len);
            let mut out = b"prefix".to_vec();
            let n = cctx
                .compress_literals_append(&src, &mut out, &mut seqs)
                .unwrap();
            assert_eq!(out.len(), 6 + n);
            assert_eq!(&out[..6], b"prefix");
            let back = zstd::bulk::decompress(&out[6..], len.max(1)).unwrap();
            assert_eq!(back, src, "len {len}");
            if len >= BLOCK {
                assert!(n < len / 2, "skewed bytes compress: {n} of {len}");
            }
        }
    }

    #[test]
    fn in_place_literal_frames_match_the_copying_ones() {
        let mut cctx = RawCCtx::new(Params::Literals(3)).unwrap();
        let mut seqs = Vec::new();
        let random: Vec<u8> = (0..3 * BLOCK as u32 + 5)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for src in [skewed(0), skewed(5), skewed(5 * BLOCK + 77), random] {
            let len = src.len();
            let mut padded = src.clone();
            padded.extend_from_slice(&[0xAA; LITERAL_PADDING]);
            let mut a = Vec::new();
            let mut b = Vec::new();
            let na = cctx
                .compress_literals_append(&src, &mut a, &mut seqs)
                .unwrap();
            let nb = cctx
                .compress_padded_literals_append(&padded, len, &mut b, &mut seqs)
                .unwrap();
            // Incompressible blocks fall back to the copying path, which
            // stores them raw: never larger than the copying path's frame.
            assert!(nb <= na + 4, "len {len}: {nb} vs {na}");
            assert_eq!(b.len(), nb);
            assert_eq!(zstd::bulk::decompress(&b, len.max(1)).unwrap(), src);
            // Without the padding the copying path is used.
            let mut c = Vec::new();
            cctx.compress_padded_literals_append(&src, len, &mut c, &mut seqs)
                .unwrap();
            assert_eq!(c, a);
        }
    }

    #[test]
    fn raw_frames_decode_with_plain_zstd() {
        for len in [0usize, 1, BLOCK, BLOCK + 1, 3 * BLOCK + 77] {
            let src = skewed(len);
            let mut out = b"xy".to_vec();
            let n = raw_frame_append(&src, &mut out);
            assert_eq!(out.len(), 2 + n);
            assert_eq!(n, 9 + 3 * len.div_ceil(BLOCK).max(1) + len);
            assert_eq!(zstd::bulk::decompress(&out[2..], len.max(1)).unwrap(), src);
        }
    }

    #[test]
    fn level_and_runs_frames_decode() {
        let src = skewed(300_000);
        for params in [
            Params::Level(3),
            Params::Runs {
                level: 1,
                hash_log: 16,
                min_match: 4,
            },
        ] {
            let mut cctx = RawCCtx::new(params).unwrap();
            let mut out = Vec::new();
            let a = cctx.compress_append(&src, &mut out).unwrap();
            let b = cctx.compress_append(&src[..1000], &mut out).unwrap();
            assert_eq!(out.len(), a + b);
            // Two concatenated frames decode to the concatenation.
            let back = zstd::bulk::decompress(&out, 301_000).unwrap();
            assert_eq!(&back[..300_000], &src[..]);
            assert_eq!(&back[300_000..], &src[..1000]);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(RawCCtx::new(Params::Runs {
            level: 1,
            hash_log: 99,
            min_match: 4
        })
        .is_err());
    }
}
