//! One byte-grouped data frame, both ways.
//!
//! Stored form: the frame's bytes go through [`super::byte_group::split`],
//! then each plane becomes its own zstd frame, in plane order, followed
//! (only when the frame's length is not a multiple of the width) by one
//! zstd frame holding the bytes after the last whole element. The data
//! frame is the concatenation of those zstd frames, so any zstd decoder
//! turns it into the grouped bytes (`zstd -d` of such an object prints
//! the planes, not the floats), and one `ZSTD_decompressDCtx` call
//! decodes all of it; the plane sizes follow from the frame's length.
//!
//! Per plane, chosen by measurement on real weights and Adam states
//! (bench/bench_compression.py; the survey is in docs/ARCHITECTURE.md):
//! - the exponent planes (the top plane; for fp64 the top two, as its
//!   exponent has 11 bits) are Huffman-coded literals only: LZ matches
//!   found by zstd's fast levels lose ~10% against the literal coder on
//!   exponent bytes, and the higher levels only tie it at 1/100 the speed.
//!   The literal coder runs with level 1's settings at every level: the
//!   higher levels' table search wrote the same bytes, 10-50% slower.
//!   When literals alone shrink a plane below a quarter (sparse or
//!   constant data, where runs matter), a sample of it is also compressed
//!   at the requested level, and if matches clearly win there the whole
//!   plane is compressed that way too and the smaller frame kept;
//! - the plane under the exponent (sign and top mantissa bits) is probed
//!   first and, when zstd stores the probes raw, written as a raw frame
//!   without running the match finder over it (see `looks_raw`);
//! - the other planes (mantissas) go through zstd's fast match finder
//!   with a short minimum match (runs of zero bits in values widened from
//!   a narrower type) at every level. Above level 3, a plane that this
//!   shrank below [`STRONG_BELOW`] (so matches are there to find) is also
//!   compressed at the requested level and the smaller frame kept; near
//!   random planes are not, as levels 9 and 19 saved under 0.05% of the
//!   object on them at 1/10 to 1/500 of the speed. So on float weights a
//!   higher level costs nothing and writes what level 1 writes; it buys
//!   size only where the data has structure for it to find, and never
//!   makes a plane larger than level 1 does.
//!   Near-random planes cost little: zstd stores incompressible blocks
//!   raw after a quick look.

use std::io;

use zstd::zstd_safe::zstd_sys::ZSTD_Sequence;

use super::byte_group;
use super::out_pool;
use super::zstd_raw::{self, Params, RawCCtx, LITERAL_PADDING};

/// Below this stored/plane ratio, the literal-only exponent plane is worth
/// a second try with LZ matches.
const RETRY_BELOW: f64 = 0.25;

/// Bytes of a plane compressed both ways to see whether a retry pays.
const SAMPLE: usize = 128 << 10;

/// Probes of a mantissa plane, and their size, tried before deciding to
/// store it raw; a plane shorter than four times the probes is compressed.
const PROBES: usize = 3;
const PROBE: usize = 128 << 10;

/// How many of the top planes hold exponent bits worth literal coding.
fn exponent_planes(width: usize) -> usize {
    if width == 8 {
        2
    } else {
        1
    }
}

/// Levels up to this one code every plane with the fast settings only.
const FAST_LEVELS: i32 = 3;

/// Above [`FAST_LEVELS`], a mantissa plane that the fast match finder
/// shrank below this fraction is also compressed at the requested level.
const STRONG_BELOW: f64 = 0.5;

/// Sample of a plane compressed with the fast settings and at the
/// requested level before the whole plane is (see `try_strong`): at level
/// 19 the whole plane costs ~40 ms per MiB, the sample ~2.5 ms.
const STRONG_SAMPLE: usize = 64 << 10;

/// The whole plane is compressed at the requested level only when that
/// saved at least 1/STRONG_GAIN of the sample's length against the fast
/// settings (1% of the plane is 0.25-0.5% of the object): a relative gate
/// would pass a run of zeros coded in 19 bytes instead of 20.
const STRONG_GAIN: usize = 100;

/// Level of the retry of a very compressible exponent plane with LZ
/// matches (higher levels then also try their own, see `try_strong`).
const LZ_RETRY_LEVEL: i32 = 1;

/// Level whose literal coder settings the exponent planes get at every
/// level (see the module docs).
const LITERAL_LEVEL: i32 = 1;

/// Mantissa-plane parameters of the fast pass, the same at every level:
/// zstd's fast strategy with a short minimum match in a large table. At
/// level 3 zstd's own defaults (dfast, min match 5) came out larger and
/// slower on fp32 mantissa planes, and levels above found nothing more on
/// near-random mantissas.
fn fast_mantissa_params() -> Params {
    Params::Runs {
        level: 1,
        hash_log: 16,
        min_match: 4,
    }
}

/// Compresses byte-grouped frames at one level; keeps its contexts and
/// scratch buffer between frames.
pub(crate) struct GroupedCompressor {
    level: i32,
    literals: RawCCtx,
    mantissa: RawCCtx,
    /// Made on first need, plain zstd at level 1: the retry of a very
    /// compressible exponent plane with matches.
    plain: Option<RawCCtx>,
    /// Made on first need, plain zstd at the requested level above
    /// [`FAST_LEVELS`]: the second try of planes where matches pay.
    strong: Option<RawCCtx>,
    split: Vec<u8>,
    seqs: Vec<ZSTD_Sequence>,
    /// Output of the raw-plane probes.
    probe: Vec<u8>,
}

impl GroupedCompressor {
    pub(crate) fn new(level: i32) -> io::Result<Self> {
        Ok(GroupedCompressor {
            level,
            literals: RawCCtx::new(Params::Literals(LITERAL_LEVEL))?,
            mantissa: RawCCtx::new(fast_mantissa_params())?,
            plain: None,
            strong: None,
            split: Vec::new(),
            seqs: Vec::new(),
            probe: Vec::new(),
        })
    }

    pub(crate) fn level(&self) -> i32 {
        self.level
    }

    /// The stored form of `frame` grouped by `width` (2, 4 or 8), and the
    /// CRC32C of `frame` (computed while splitting it).
    pub(crate) fn compress(&mut self, frame: &[u8], width: usize) -> io::Result<(Vec<u8>, u32)> {
        let len = frame.len();
        // Taken out for the call so the contexts can be borrowed meanwhile.
        let mut split = std::mem::take(&mut self.split);
        // Padding after the planes lets the literal coder read its input
        // in place (see compress_padded_literals_append).
        if split.len() < len + LITERAL_PADDING {
            split.resize(len + LITERAL_PADDING, 0);
        }
        let crc = byte_group::split_crc(frame, width, &mut split[..len]);
        let result = self.compress_split(&split, len, width);
        self.split = split;
        result.map(|out| (out, crc))
    }

    /// The stored form of a frame already split: `padded[..len]` are its
    /// planes as [`byte_group::split`] lays them out; at least
    /// [`LITERAL_PADDING`] more bytes of `padded` let the exponent planes
    /// be coded in place (without them, they are copied first).
    pub(crate) fn compress_split(
        &mut self,
        padded: &[u8],
        len: usize,
        width: usize,
    ) -> io::Result<Vec<u8>> {
        let grouped = &padded[..len];
        let n = len / width;
        let bound = width * zstd::zstd_safe::compress_bound(n)
            + zstd::zstd_safe::compress_bound(len - n * width);
        let mut out = out_pool::take(bound);
        for k in 0..width {
            let plane = &grouped[k * n..(k + 1) * n];
            if k + exponent_planes(width) >= width {
                let at = out.len();
                let lit = self.literals.compress_padded_literals_append(
                    &padded[k * n..],
                    n,
                    &mut out,
                    &mut self.seqs,
                )?;
                if n > 0 && (lit as f64) < RETRY_BELOW * n as f64 && self.matches_pay(plane)? {
                    let lz = self.plain()?.compress_append(plane, &mut out)?;
                    let best = keep_smaller(&mut out, at, lit, lz);
                    self.try_strong(plane, &mut out, at, best)?;
                }
            } else if k + exponent_planes(width) + 1 == width && self.looks_raw(plane)? {
                zstd_raw::raw_frame_append(plane, &mut out);
            } else {
                self.compress_mantissa(plane, &mut out)?;
            }
        }
        if len > n * width {
            self.mantissa
                .compress_append(&grouped[n * width..], &mut out)?;
        }
        // Made into Bytes by out_pool::into_bytes, which also keeps a
        // mostly empty buffer from being pinned by inner writers.
        Ok(out)
    }

    /// One mantissa plane appended to `out`: the fast pass, and above
    /// [`FAST_LEVELS`] where that found enough matches, the requested
    /// level too, keeping the smaller frame.
    fn compress_mantissa(&mut self, plane: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let at = out.len();
        let fast = self.mantissa.compress_append(plane, out)?;
        if (fast as f64) < STRONG_BELOW * plane.len() as f64 {
            self.try_strong(plane, out, at, fast)?;
        }
        Ok(())
    }

    /// Above [`FAST_LEVELS`], compress `plane` (whose frame of `size`
    /// bytes starts at `out[at]`) again at the requested level and keep
    /// the smaller frame, if a sample says that pays (by 1% of its bytes,
    /// against the fast match finder); at or below, nothing.
    fn try_strong(
        &mut self,
        plane: &[u8],
        out: &mut Vec<u8>,
        at: usize,
        size: usize,
    ) -> io::Result<()> {
        if self.level <= FAST_LEVELS {
            return Ok(());
        }
        if self.strong.is_none() {
            self.strong = Some(RawCCtx::new(Params::Level(self.level))?);
        }
        let Some(strong) = self.strong.as_mut() else {
            return Err(io::Error::other("zstd context was not created"));
        };
        if plane.len() >= 2 * STRONG_SAMPLE {
            // The middle of the plane, both ways: the first tries are
            // cheap, a slow level over a whole plane is not.
            let mid = (plane.len() - STRONG_SAMPLE) / 2;
            let sample = &plane[mid..mid + STRONG_SAMPLE];
            let mut scratch = std::mem::take(&mut self.probe);
            scratch.clear();
            let fast = self.mantissa.compress_append(sample, &mut scratch);
            let slow = strong.compress_append(sample, &mut scratch);
            self.probe = scratch;
            if fast?.saturating_sub(slow?) < STRONG_SAMPLE / STRONG_GAIN {
                return Ok(());
            }
        }
        let again = strong.compress_append(plane, out)?;
        keep_smaller(out, at, size, again);
        Ok(())
    }

    fn plain(&mut self) -> io::Result<&mut RawCCtx> {
        if self.plain.is_none() {
            self.plain = Some(RawCCtx::new(Params::Level(LZ_RETRY_LEVEL))?);
        }
        self.plain
            .as_mut()
            .ok_or_else(|| io::Error::other("zstd context was not created"))
    }

    /// Whether `plane` would be stored as it is anyway: zstd, given a
    /// probe from its start, middle and end, stores each raw (saves
    /// nothing). Such a plane (the low bytes of bf16/fp16, sign and
    /// mantissa) then skips the match finder and symbol counts, which
    /// found nothing there at a tenth of the whole frame's time.
    fn looks_raw(&mut self, plane: &[u8]) -> io::Result<bool> {
        if plane.len() < 2 * PROBES * PROBE {
            return Ok(false);
        }
        let mut scratch = std::mem::take(&mut self.probe);
        let step = (plane.len() - PROBE) / (PROBES - 1);
        let mut raw = true;
        for i in 0..PROBES {
            let at = i * step;
            scratch.clear();
            let n = self
                .mantissa
                .compress_append(&plane[at..at + PROBE], &mut scratch)?;
            if n <= PROBE {
                raw = false;
                break;
            }
        }
        self.probe = scratch;
        Ok(raw)
    }

    /// Whether LZ matches beat literals by 10% on a sample of `plane`
    /// (all of it when it is small): worth compressing it twice.
    fn matches_pay(&mut self, plane: &[u8]) -> io::Result<bool> {
        if plane.len() <= SAMPLE {
            return Ok(true);
        }
        let sample = &plane[..SAMPLE];
        let mut scratch = Vec::new();
        let lit = self
            .literals
            .compress_literals_append(sample, &mut scratch, &mut self.seqs)?;
        let lz = self.plain()?.compress_append(sample, &mut scratch)?;
        Ok((lz as f64) < 0.9 * lit as f64)
    }
}

/// `out` ends with two candidate frames of one plane, `first` bytes at
/// `at` and then `second` bytes: keep the smaller (the first on a tie).
/// Returns its size.
fn keep_smaller(out: &mut Vec<u8>, at: usize, first: usize, second: usize) -> usize {
    if second < first {
        out.copy_within(at + first..at + first + second, at);
        out.truncate(at + second);
        second
    } else {
        out.truncate(at + first);
        first
    }
}

/// Decode one grouped data frame (`raw`) into `out`, whose length is the
/// frame's logical length. `scratch` holds the grouped bytes in between
/// (raw-stored planes are merged from `raw` itself, see `raw_planes`).
/// Returns the number of bytes the zstd frames decoded to, which the
/// caller checks against `out.len()`, and when that matches, the CRC32C
/// of `out` (computed while merging).
pub(crate) fn decompress(
    dctx: &mut zstd::bulk::Decompressor<'_>,
    raw: &[u8],
    width: usize,
    scratch: &mut Vec<u8>,
    out: &mut [u8],
) -> io::Result<(usize, Option<u32>)> {
    if let Some(crc) = super::raw_planes::decompress(dctx, raw, width, scratch, out) {
        return Ok((out.len(), Some(crc)));
    }
    let len = out.len();
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    let grouped = &mut scratch[..len];
    let n = dctx.decompress_to_buffer(raw, grouped)?;
    let crc = (n == len).then(|| byte_group::merge_crc(grouped, width, out));
    Ok((n, crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::{fp32_weights, XorShift32};

    fn floats(n: usize, seed: u32) -> Vec<u8> {
        let mut rng = XorShift32::new(seed);
        (0..n)
            .flat_map(|i| (((i as f32) * 0.01).sin() * 0.05 + rng.centered() * 1e-3).to_le_bytes())
            .collect()
    }

    fn roundtrip(c: &mut GroupedCompressor, frame: &[u8], width: usize) -> usize {
        let (stored, crc) = c.compress(frame, width).unwrap();
        assert_eq!(crc, crate::crc::crc32c(frame));
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let mut scratch = Vec::new();
        let mut out = vec![0u8; frame.len()];
        let (n, back_crc) = decompress(&mut d, &stored, width, &mut scratch, &mut out).unwrap();
        assert_eq!(n, frame.len());
        assert_eq!(back_crc, Some(crc));
        assert_eq!(out, frame, "width {width} len {}", frame.len());
        stored.len()
    }

    #[test]
    fn roundtrip_widths_levels_and_tails() {
        let data = floats(100_000, 3);
        for level in [1, 3, 9, 19] {
            let mut c = GroupedCompressor::new(level).unwrap();
            assert_eq!(c.level(), level);
            for width in [2, 4, 8] {
                for len in [0, 1, 7, 8, 4096, 4097, 399_999, 400_000] {
                    roundtrip(&mut c, &data[..len], width);
                }
            }
        }
    }

    #[test]
    fn grouping_beats_plain_zstd_on_floats() {
        let data = floats(1 << 20, 5);
        let mut c = GroupedCompressor::new(1).unwrap();
        let grouped = roundtrip(&mut c, &data, 4);
        let plain = zstd::bulk::compress(&data, 1).unwrap().len();
        assert!(
            (grouped as f64) < 0.95 * plain as f64,
            "grouped {grouped} vs plain {plain}"
        );
    }

    #[test]
    fn sparse_top_plane_retries_with_matches() {
        // Mostly zeros with a few values: the literal-only top plane would
        // cost >= 1 bit per byte; the plain-level retry gets far below.
        let mut data = vec![0u8; 1 << 20];
        for i in (0..data.len()).step_by(4096) {
            data[i..i + 4].copy_from_slice(&1.5f32.to_le_bytes());
        }
        let mut c = GroupedCompressor::new(3).unwrap();
        let stored = roundtrip(&mut c, &data, 4);
        assert!(stored < data.len() / 200, "stored {stored}");
        assert!(c.plain.is_some());
    }

    #[test]
    fn random_sign_plane_is_stored_raw_and_runs_are_not() {
        // bf16-like: random low bytes (sign and mantissa) under a skewed
        // exponent byte; the low plane is stored raw, a frame header and
        // block headers over its bytes.
        let n: usize = 2 << 20;
        let mut rng = XorShift32::new(7);
        let data: Vec<u8> = (0..n)
            .flat_map(|i| {
                let x = rng.next_u32();
                // Random sign, two exponent values.
                [x as u8, (60 + (i % 7 == 0) as u8) | (x >> 8) as u8 & 0x80]
            })
            .collect();
        let mut c = GroupedCompressor::new(1).unwrap();
        let stored = roundtrip(&mut c, &data, 2);
        let (frames, _) = c.compress(&data, 2).unwrap();
        let raw_len = 4 + 1 + 4 + 3 * n.div_ceil(128 << 10) + n;
        assert_eq!(&frames[..5], &[0x28, 0xB5, 0x2F, 0xFD, 0b1010_0000]);
        assert!(
            stored > raw_len && stored < raw_len + n / 4,
            "stored {stored}"
        );
        // Low bytes that repeat (values widened from a narrower type) are
        // compressed, not stored raw.
        let widened: Vec<u8> = data.chunks(2).flat_map(|e| [e[0] & 0xF0, e[1]]).collect();
        assert!(roundtrip(&mut c, &widened, 2) < n * 9 / 10);
    }

    /// Float-like data sets with different structure in the mantissas.
    fn level_test_data() -> Vec<(&'static str, Vec<u8>, usize)> {
        // Weights-like: random mantissas, exponents spread over a few
        // binades (the top plane stays above RETRY_BELOW).
        let noisy = fp32_weights(1 << 20, 11);
        // fp32 widened from bf16: the two low planes are all zeros.
        let widened: Vec<u8> = noisy.chunks(4).flat_map(|e| [0, 0, e[2], e[3]]).collect();
        // Small integers and halves as fp32: mantissas with few distinct
        // values, repeated, which a stronger match search packs tighter.
        let mut rng = XorShift32::new(99);
        let counts: Vec<u8> = (0..1 << 20)
            .flat_map(|i: u32| {
                ((i / 64 % 4000) as f32 * 0.5 + (rng.next_u32() % 3) as f32).to_le_bytes()
            })
            .collect();
        vec![
            ("noisy", noisy, 4),
            ("widened", widened, 4),
            ("counts", counts, 4),
        ]
    }

    #[test]
    fn higher_levels_are_never_larger_on_the_test_data() {
        let mut data_sets = level_test_data();
        data_sets.push(("sine", floats(1 << 20, 5), 4));
        for (name, data, width) in data_sets {
            let mut sizes = Vec::new();
            for level in [1, 3, 9, 19] {
                let mut c = GroupedCompressor::new(level).unwrap();
                sizes.push(roundtrip(&mut c, &data, width));
            }
            assert!(
                sizes.windows(2).all(|w| w[1] <= w[0]),
                "{name}: sizes at levels 1, 3, 9, 19: {sizes:?}"
            );
        }
    }

    #[test]
    fn high_levels_cost_nothing_on_near_random_mantissas() {
        // Noisy floats: no mantissa plane shrinks below STRONG_BELOW, so
        // level 19 writes exactly what level 1 writes and never creates
        // the strong context.
        let (_, data, width) = &level_test_data()[0];
        let (one, _) = GroupedCompressor::new(1)
            .unwrap()
            .compress(data, *width)
            .unwrap();
        for level in [3, 9, 19] {
            let mut c = GroupedCompressor::new(level).unwrap();
            let (stored, _) = c.compress(data, *width).unwrap();
            assert_eq!(stored, one, "level {level}");
            assert!(c.strong.is_none(), "level {level} ran the strong pass");
        }
    }

    #[test]
    fn high_levels_pay_where_mantissas_have_structure() {
        let (_, data, width) = &level_test_data()[2];
        let one = roundtrip(&mut GroupedCompressor::new(1).unwrap(), data, *width);
        let mut c = GroupedCompressor::new(19).unwrap();
        let high = roundtrip(&mut c, data, *width);
        assert!(c.strong.is_some());
        assert!(
            (high as f64) < 0.95 * one as f64,
            "level 19 {high} vs level 1 {one}"
        );
    }

    #[test]
    fn stored_frames_are_plain_zstd_of_the_grouped_bytes() {
        let data = floats(10_001, 9);
        let mut c = GroupedCompressor::new(1).unwrap();
        let (stored, _) = c.compress(&data[..40_003], 4).unwrap();
        let decoded = zstd::bulk::decompress(&stored, 40_003).unwrap();
        let mut grouped = vec![0u8; 40_003];
        byte_group::split(&data[..40_003], 4, &mut grouped);
        assert_eq!(decoded, grouped);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// CPU time of this thread: steady on a machine shared with others.
    struct Instant(f64);

    impl Instant {
        fn now() -> Self {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid out pointer for clock_gettime.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            Instant(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
        }

        fn elapsed(&self) -> std::time::Duration {
            std::time::Duration::from_secs_f64(Instant::now().0 - self.0)
        }
    }

    trait Compress {
        fn compress(&self, c: &mut GroupedCompressor, width: usize) -> Vec<u8>;
    }

    impl Compress for [u8] {
        fn compress(&self, c: &mut GroupedCompressor, width: usize) -> Vec<u8> {
            c.compress(self, width).unwrap().0
        }
    }

    /// Where the time goes per frame:
    /// `S3DLIO_BENCH_FILE=weights.bin S3DLIO_BENCH_WIDTH=4 cargo test --release
    /// -p s3dlio-core grouped::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; needs S3DLIO_BENCH_FILE"]
    fn plane_timing() {
        let Some((data, width)) = crate::codec::bench::bench_file() else {
            return;
        };
        let frame = 4 << 20;
        // Per plane kind, one core's CPU time.
        {
            let mut lit = RawCCtx::new(Params::Literals(LITERAL_LEVEL)).unwrap();
            let mut man = RawCCtx::new(fast_mantissa_params()).unwrap();
            let mut seqs = Vec::new();
            let mut buf = vec![0u8; frame];
            let (mut t_split, mut t_lit, mut t_man) = (0.0, 0.0, 0.0);
            let mut out = Vec::new();
            for chunk in data.chunks(frame) {
                let g = &mut buf[..chunk.len()];
                let t = Instant::now();
                byte_group::split_crc(chunk, width, g);
                t_split += t.elapsed().as_secs_f64();
                let n = chunk.len() / width;
                for k in 0..width {
                    out.clear();
                    let t = Instant::now();
                    if k + exponent_planes(width) >= width {
                        lit.compress_literals_append(&g[k * n..(k + 1) * n], &mut out, &mut seqs)
                            .unwrap();
                        t_lit += t.elapsed().as_secs_f64();
                    } else {
                        man.compress_append(&g[k * n..(k + 1) * n], &mut out)
                            .unwrap();
                        t_man += t.elapsed().as_secs_f64();
                    }
                }
            }
            let mb = data.len() as f64 / 1e6;
            println!(
                "per MB of input, ms: split+crc {:.3}, exponent planes {:.3}, mantissa planes {:.3}",
                t_split * 1e3 / mb,
                t_lit * 1e3 / mb,
                t_man * 1e3 / mb
            );
        }
        for level in [1, 3] {
            let mut c = GroupedCompressor::new(level).unwrap();
            let mut split_s = 0.0;
            let mut buf = vec![0u8; frame];
            let t = Instant::now();
            let mut stored = 0;
            for chunk in data.chunks(frame) {
                let s = Instant::now();
                byte_group::split(chunk, width, &mut buf[..chunk.len()]);
                split_s += s.elapsed().as_secs_f64();
                stored += c.compress(chunk, width).unwrap().0.len();
            }
            let total = t.elapsed().as_secs_f64() - split_s;
            let crc = Instant::now();
            let _ = crate::crc::crc32c(&data);
            let crc_s = crc.elapsed().as_secs_f64();
            let mut out = vec![1u8; frame];
            let m = Instant::now();
            for _ in 0..data.len() / frame {
                byte_group::merge(&buf, width, &mut out);
            }
            let merge_s = m.elapsed().as_secs_f64();
            let frames: Vec<Vec<u8>> = data
                .chunks(frame)
                .map(|c| c.compress(&mut GroupedCompressor::new(level).unwrap(), width))
                .collect();
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            let mut scratch = vec![0u8; frame];
            let mut out = vec![0u8; frame];
            let t = Instant::now();
            let mut zstd_s = 0.0;
            for (raw, c) in frames.iter().zip(data.chunks(frame)) {
                let z = Instant::now();
                d.decompress_to_buffer(&raw[..], &mut scratch[..c.len()])
                    .unwrap();
                zstd_s += z.elapsed().as_secs_f64();
                byte_group::merge(&scratch[..c.len()], width, &mut out[..c.len()]);
            }
            let dec_s = t.elapsed().as_secs_f64();
            let mb = data.len() as f64 / 1e6;
            println!(
                "level {level}: decode {:.0} MB/s (zstd part {:.0} MB/s)",
                mb / dec_s,
                mb / zstd_s
            );
            println!(
                "level {level}: ratio {:.4} compress {:.0} MB/s (split {:.0} MB/s, crc {:.0} MB/s, merge ~{:.0} MB/s)",
                stored as f64 / data.len() as f64,
                mb / total,
                mb / split_s,
                mb / crc_s,
                mb / merge_s
            );
        }
    }
    /// What each zstd setting buys per plane, and at what CPU cost: the
    /// measurement behind the per-plane choices (docs/ARCHITECTURE.md).
    /// `S3DLIO_BENCH_FILE=weights.bin S3DLIO_BENCH_WIDTH=4 cargo test
    /// --release -p s3dlio-core grouped::timing::plane_settings -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "timing; needs S3DLIO_BENCH_FILE"]
    fn plane_settings() {
        let Some((data, width)) = crate::codec::bench::bench_file() else {
            return;
        };
        let frame = 4 << 20;
        let mut settings: Vec<(String, Params)> = [1, 9, 19]
            .map(|l| (format!("literals {l}"), Params::Literals(l)))
            .into();
        settings.push(("fast runs".into(), fast_mantissa_params()));
        for l in [1, 3, 9, 19] {
            settings.push((format!("level {l}"), Params::Level(l)));
        }
        let mut seqs = Vec::new();
        let mut buf = vec![0u8; frame + LITERAL_PADDING];
        let mut out = Vec::new();
        let plane_mb = (data.len() / width) as f64 / 1e6;
        for k in 0..width {
            for (name, params) in &settings {
                let mut cctx = RawCCtx::new(*params).unwrap();
                let (mut size, mut secs) = (0usize, 0.0);
                for chunk in data.chunks(frame) {
                    byte_group::split(chunk, width, &mut buf[..chunk.len()]);
                    let n = chunk.len() / width;
                    out.clear();
                    let t = Instant::now();
                    size += match params {
                        Params::Literals(_) => cctx
                            .compress_padded_literals_append(&buf[k * n..], n, &mut out, &mut seqs)
                            .unwrap(),
                        _ => cctx
                            .compress_append(&buf[k * n..(k + 1) * n], &mut out)
                            .unwrap(),
                    };
                    secs += t.elapsed().as_secs_f64();
                }
                println!(
                    "plane {k} {name:11} stored/object {:.5} {:6.0} MB of plane per CPU-s",
                    size as f64 / data.len() as f64,
                    plane_mb / secs
                );
            }
        }
    }
}
