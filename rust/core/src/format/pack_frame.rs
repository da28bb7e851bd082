//! One zstd frame per item, streamed: the form torch's `stream.zstd`
//! extension reads (it decompresses exactly one frame from the item's byte
//! range). Large items are compressed by zstd's own worker threads, which
//! still produce a single frame.

use bytes::Bytes;
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, InBuffer, OutBuffer};

use crate::error::{Error, Result};

/// Compressed output is handed to the store in chunks of about this size.
const OUT_CHUNK: usize = 1 << 20;

fn zstd_error(uri: &str, what: &str, code: usize) -> Error {
    Error::backend(
        uri,
        format!("zstd {what} failed: {}", zstd_safe::get_error_name(code)),
        false,
    )
}

/// A reusable compression context producing one frame per item.
pub(crate) struct FrameEncoder {
    cctx: CCtx<'static>,
    uri: String,
    /// The output chunk being filled.
    out: Vec<u8>,
}

impl FrameEncoder {
    /// `workers` >= 2 lets zstd compress each frame on that many threads.
    /// One worker is taken as none: zstd would only move the work to one
    /// other thread, copying the input into its job buffers on the way
    /// (measured: 48% more CPU per byte at level 3 on float tensors, and
    /// slower), with nothing running in parallel.
    pub(crate) fn new(uri: &str, level: i32, workers: u32) -> Result<Self> {
        let workers = if workers < 2 { 0 } else { workers };
        let mut cctx = CCtx::try_create()
            .ok_or_else(|| Error::backend(uri, "cannot allocate a zstd context", false))?;
        for param in [
            CParameter::CompressionLevel(level),
            // The content checksum lets any zstd reader (torch's stock one
            // included) notice a damaged compressed item.
            CParameter::ChecksumFlag(true),
            CParameter::ContentSizeFlag(true),
            CParameter::NbWorkers(workers),
        ] {
            cctx.set_parameter(param)
                .map_err(|c| zstd_error(uri, "setup", c))?;
        }
        Ok(FrameEncoder {
            cctx,
            uri: uri.to_string(),
            out: Vec::new(),
        })
    }

    /// Start a frame of exactly `size` logical bytes.
    pub(crate) fn begin(&mut self, size: u64) -> Result<()> {
        self.cctx
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(|c| zstd_error(&self.uri, "reset", c))?;
        self.cctx
            .set_pledged_src_size(Some(size))
            .map_err(|c| zstd_error(&self.uri, "setup", c))?;
        self.out.clear();
        Ok(())
    }

    /// Compress `input`; full output chunks are appended to `done`.
    pub(crate) fn feed(&mut self, input: &[u8], done: &mut Vec<Bytes>) -> Result<()> {
        let mut src = InBuffer::around(input);
        while src.pos() < input.len() {
            self.step(&mut src, EndDirective::ZSTD_e_continue, done)?;
        }
        Ok(())
    }

    /// Close the frame; the rest of its output is appended to `done`.
    pub(crate) fn end(&mut self, done: &mut Vec<Bytes>) -> Result<()> {
        let mut src = InBuffer::around(&[]);
        while self.step(&mut src, EndDirective::ZSTD_e_end, done)? != 0 {}
        if !self.out.is_empty() {
            done.push(Bytes::from(std::mem::take(&mut self.out)));
        }
        Ok(())
    }

    /// One `compress_stream2` call into the current chunk; returns zstd's
    /// "bytes left to flush" hint.
    fn step(
        &mut self,
        src: &mut InBuffer<'_>,
        op: EndDirective,
        done: &mut Vec<Bytes>,
    ) -> Result<usize> {
        if self.out.capacity() - self.out.len() < OUT_CHUNK / 4 {
            if !self.out.is_empty() {
                done.push(Bytes::from(std::mem::take(&mut self.out)));
            }
            self.out = Vec::with_capacity(OUT_CHUNK);
        }
        let filled = self.out.len();
        let mut dst = OutBuffer::around_pos(&mut self.out, filled);
        let left = self
            .cctx
            .compress_stream2(&mut dst, src, op)
            .map_err(|c| zstd_error(&self.uri, "compression", c))?;
        Ok(left)
    }
}

/// Decompresses one frame into a sequence of caller buffers.
pub(crate) struct FrameDecoder {
    dctx: DCtx<'static>,
}

/// How one call to [`FrameDecoder::decode`] went.
pub(crate) struct Decoded {
    /// Input bytes consumed.
    pub read: usize,
    /// Output bytes written into the buffer.
    pub written: usize,
    /// The frame ended (and its checksum matched).
    pub finished: bool,
}

impl FrameDecoder {
    pub(crate) fn new(uri: &str) -> Result<Self> {
        let dctx = DCtx::try_create()
            .ok_or_else(|| Error::backend(uri, "cannot allocate a zstd context", false))?;
        Ok(FrameDecoder { dctx })
    }

    pub(crate) fn begin(&mut self, uri: &str) -> Result<()> {
        self.dctx
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .map(|_| ())
            .map_err(|c| zstd_error(uri, "reset", c))
    }

    /// Decompress from `input` into `out` as far as either allows.
    /// Damaged input is `Corrupt`, naming `what`.
    pub(crate) fn decode(&mut self, what: &str, input: &[u8], out: &mut [u8]) -> Result<Decoded> {
        let mut src = InBuffer::around(input);
        let mut dst = OutBuffer::around(out);
        let hint = self
            .dctx
            .decompress_stream(&mut dst, &mut src)
            .map_err(|c| {
                Error::corrupt(
                    what,
                    format!(
                        "zstd frame cannot be decoded: {}",
                        zstd_safe::get_error_name(c)
                    ),
                )
            })?;
        Ok(Decoded {
            read: src.pos(),
            written: dst.pos(),
            finished: hint == 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(data: &[u8], pieces: usize, workers: u32) -> Vec<u8> {
        let mut enc = FrameEncoder::new("memory:///t", 3, workers).unwrap();
        let mut out = Vec::new();
        for round in 0..2 {
            enc.begin(data.len() as u64).unwrap();
            let mut done = Vec::new();
            for chunk in data.chunks(pieces.max(1)) {
                enc.feed(chunk, &mut done).unwrap();
            }
            enc.end(&mut done).unwrap();
            let frame: Vec<u8> = done.concat();
            if round == 1 {
                out = frame;
            }
        }
        out
    }

    #[test]
    fn one_frame_any_decoder_reads() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i / 7 % 251) as u8).collect();
        for workers in [0, 2] {
            let frame = encode(&data, 700_000, workers);
            // Exactly one frame, with its content size.
            assert_eq!(
                zstd_safe::get_frame_content_size(&frame).unwrap(),
                Some(data.len() as u64)
            );
            assert_eq!(
                zstd_safe::find_frame_compressed_size(&frame).unwrap(),
                frame.len()
            );
            assert_eq!(zstd::bulk::decompress(&frame, data.len()).unwrap(), data);
        }
        let empty = encode(&[], 1, 0);
        assert!(zstd::bulk::decompress(&empty, 0).unwrap().is_empty());
    }

    #[test]
    fn decoder_fills_scattered_buffers_and_rejects_damage() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let frame = encode(&data, 10_000, 0);
        let mut dec = FrameDecoder::new("x").unwrap();
        dec.begin("x").unwrap();
        let (mut a, mut b) = (vec![0u8; 333], vec![0u8; data.len() - 333]);
        let mut consumed = 0;
        let mut filled = 0;
        let mut finished = false;
        while !finished {
            let out: &mut [u8] = if filled < a.len() {
                &mut a[filled..]
            } else {
                &mut b[filled - 333..]
            };
            let d = dec.decode("x", &frame[consumed..], out).unwrap();
            consumed += d.read;
            filled += d.written;
            finished = d.finished;
        }
        assert_eq!(consumed, frame.len());
        assert_eq!([a, b].concat(), data);

        let mut bad = frame.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        dec.begin("x").unwrap();
        let mut out = vec![0u8; data.len()];
        let mut pos = (0, 0);
        let err = loop {
            match dec.decode("x", &bad[pos.0..], &mut out[pos.1..]) {
                Ok(d) if d.finished => panic!("damaged frame decoded"),
                Ok(d) => pos = (pos.0 + d.read, pos.1 + d.written),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
