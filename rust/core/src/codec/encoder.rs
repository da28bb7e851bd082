//! Streaming encoder: logical bytes in, stored bytes out to any
//! [`ObjectWriter`], CRC32C of the logical bytes on the side.
//!
//! With a level, input is cut into `frame_size` frames that are compressed
//! on tokio's blocking threads, at most `threads` at a time, and written to
//! the inner writer in order, followed by the trailer of [`crate::format::seekable`].
//! With a byte group, each frame is split into byte planes first and every
//! plane is compressed on its own (see [`crate::format::grouped`]).
//!
//! Memory bound per writer (compressed mode): one frame being filled, at
//! most `threads` frames being compressed (each holding its input and an
//! output of up to `compress_bound(frame_size)`), and at most `threads`
//! recycled input buffers: about `(2·threads + 1) × frame_size` plus what
//! the inner writer buffers. Frames cut from a caller's `Bytes` are not
//! copied; they keep the caller's buffer alive until compressed.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use tokio::task::{JoinError, JoinHandle};
use zstd::bulk::Compressor;

use super::{check_level, resolve_threads, Codec, EncodeOptions};
use crate::crc::{crc32c, crc32c_combine};
use crate::error::{Error, Result};
use crate::format::byte_group;
use crate::format::grouped::GroupedCompressor;
use crate::format::out_pool;
use crate::format::seekable::{FrameEntry, Trailer};
use crate::format::zstd_raw::LITERAL_PADDING;
use crate::store::{ObjectMeta, ObjectWriter};

/// Largest accepted frame: the seek table stores sizes as u32, and a
/// compressed frame may be slightly larger than its input.
const MAX_FRAME_SIZE: usize = 1 << 30;

/// Uncompressed writes at least this large get their CRC32C computed on a
/// blocking thread while the inner writer takes the bytes.
const OFFLOAD_CRC: usize = 1 << 20;

/// What one finished write produced.
#[derive(Debug, Clone)]
pub struct EncodedMeta {
    /// Bytes the caller wrote.
    pub logical_size: u64,
    /// Bytes written to the store (frames and trailer).
    pub stored_size: u64,
    /// CRC32C of the logical (uncompressed) bytes.
    pub crc32c: u32,
    pub codec: Codec,
    pub level: Option<i32>,
    /// Element width of the byte-grouping filter, when it was used.
    pub byte_group: Option<usize>,
    /// What the inner writer returned.
    pub object: ObjectMeta,
}

impl EncodedMeta {
    /// Stored bytes per logical byte; 1.0 for an empty object.
    pub fn ratio(&self) -> f64 {
        if self.logical_size == 0 {
            1.0
        } else {
            self.stored_size as f64 / self.logical_size as f64
        }
    }
}

/// Input of one frame: cut from a caller's `Bytes`, or a buffer we filled
/// (handed back afterwards for reuse), or, for byte-grouped frames copied
/// from borrowed memory, the planes themselves: splitting straight from
/// the caller's memory costs what the copy did and spares the compressing
/// thread a pass over the frame.
enum FrameIn {
    Shared(Bytes),
    Owned(Vec<u8>),
    /// `planes[..len]` as [`byte_group::split`] lays them out, followed by
    /// [`LITERAL_PADDING`] spare bytes; `crc` is that of the logical bytes.
    Split {
        planes: Vec<u8>,
        len: usize,
        crc: u32,
    },
}

struct FrameOut {
    compressed: std::io::Result<Bytes>,
    len: usize,
    crc: u32,
    recycled: Option<Vec<u8>>,
}

thread_local! {
    // A compression context is costly to set up at high levels; blocking
    // threads are reused, so each keeps one for the level it last used.
    static CCTX: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    // The same for byte-grouped frames (which also keep a split buffer).
    static GROUPED: RefCell<Option<GroupedCompressor>> = const { RefCell::new(None) };
}

fn compress_frame(input: FrameIn, level: i32, byte_group: Option<usize>) -> FrameOut {
    let (compressed, len, crc) = match (&input, byte_group) {
        (FrameIn::Split { planes, len, crc }, Some(width)) => (
            with_grouped(level, |c| c.compress_split(planes, *len, width)),
            *len,
            *crc,
        ),
        (FrameIn::Shared(b), _) => compress_whole(b, level, byte_group),
        (FrameIn::Owned(v), _) => compress_whole(v, level, byte_group),
        (FrameIn::Split { len, .. }, None) => (
            Err(std::io::Error::other("byte planes without a byte group")),
            *len,
            0,
        ),
    };
    // Recycled once the store is done with it (see out_pool).
    let compressed = compressed.map(out_pool::into_bytes);
    let recycled = match input {
        FrameIn::Owned(v) | FrameIn::Split { planes: v, .. } => Some(v),
        FrameIn::Shared(_) => None,
    };
    FrameOut {
        compressed,
        len,
        crc,
        recycled,
    }
}

/// One frame of logical bytes: (stored form, length, CRC32C).
fn compress_whole(
    data: &[u8],
    level: i32,
    byte_group: Option<usize>,
) -> (std::io::Result<Vec<u8>>, usize, u32) {
    match byte_group {
        // The grouped path checksums while splitting; a failed compression
        // never reaches the CRC, so 0 stands in for it.
        Some(width) => match with_grouped(level, |c| c.compress(data, width)) {
            Ok((bytes, crc)) => (Ok(bytes), data.len(), crc),
            Err(e) => (Err(e), data.len(), 0),
        },
        None => (compress_plain(data, level), data.len(), crc32c(data)),
    }
}

/// `f` with this thread's grouped compressor for `level`.
fn with_grouped<T>(
    level: i32,
    f: impl FnOnce(&mut GroupedCompressor) -> std::io::Result<T>,
) -> std::io::Result<T> {
    GROUPED.with(|slot| {
        let mut slot = slot.borrow_mut();
        let coder = match slot.take() {
            Some(c) if c.level() == level => slot.insert(c),
            _ => slot.insert(GroupedCompressor::new(level)?),
        };
        f(coder)
    })
}

fn compress_plain(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let len = data.len();
    CCTX.with(|slot| {
        let mut slot = slot.borrow_mut();
        let (_, cctx) = match slot.take() {
            Some((l, cctx)) if l == level => slot.insert((l, cctx)),
            _ => slot.insert((level, Compressor::new(level)?)),
        };
        let mut out = out_pool::take(zstd::zstd_safe::compress_bound(len));
        cctx.compress_to_buffer(data, &mut out)?;
        Ok(out)
    })
}

struct Compressing {
    level: i32,
    /// Element width when frames are byte-grouped.
    byte_group: Option<usize>,
    /// The byte group was asked for explicitly: an object that turns out
    /// not to be whole elements is an error at `finish`.
    byte_group_strict: bool,
    frame_size: usize,
    threads: usize,
    /// The frame being filled by `write_slice` / small writes.
    pending: Vec<u8>,
    spare: Vec<Vec<u8>>,
    inflight: VecDeque<JoinHandle<FrameOut>>,
    frames: Vec<FrameEntry>,
}

impl Compressing {
    fn take_pending(&mut self) -> Vec<u8> {
        let mut next = self.spare_buffer();
        next.clear();
        std::mem::replace(&mut self.pending, next)
    }

    /// A recycled frame buffer (its old contents still there) or a new one.
    fn spare_buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.frame_size + LITERAL_PADDING))
    }
}

/// Encodes one object onto an inner [`ObjectWriter`]. Call `finish` to make
/// it visible; dropping it or calling `abort` leaves nothing behind.
pub struct EncodingWriter {
    inner: Box<dyn ObjectWriter>,
    uri: String,
    zstd: Option<Compressing>,
    logical: u64,
    stored: u64,
    crc: u32,
    /// Set after a failed write: the stored stream has a hole, so the only
    /// way on is `abort`.
    failed: bool,
}

impl EncodingWriter {
    pub fn new(inner: Box<dyn ObjectWriter>, uri: String, opts: EncodeOptions) -> Result<Self> {
        let byte_group = opts.effective_byte_group(&uri, None)?;
        let zstd = match opts.level {
            None => None,
            Some(level) => {
                let level = check_level(level)?;
                if opts.frame_size == 0 || opts.frame_size > MAX_FRAME_SIZE {
                    return Err(Error::invalid(format!(
                        "frame size {} is out of range: valid sizes are 1-{MAX_FRAME_SIZE} bytes",
                        opts.frame_size
                    )));
                }
                let threads = resolve_threads(opts.threads);
                Some(Compressing {
                    level,
                    byte_group,
                    byte_group_strict: !opts.byte_group_auto,
                    frame_size: opts.frame_size,
                    threads,
                    pending: Vec::new(),
                    spare: Vec::new(),
                    inflight: VecDeque::with_capacity(threads),
                    frames: Vec::new(),
                })
            }
        };
        Ok(EncodingWriter {
            inner,
            uri,
            zstd,
            logical: 0,
            stored: 0,
            crc: 0,
            failed: false,
        })
    }

    /// Append `buf`. Frames cut from it are compressed without copying.
    pub async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.usable()?;
        let r = self.write_bytes(buf).await;
        self.failed = r.is_err();
        r
    }

    /// Append a copy of `buf`, for callers holding borrowed memory.
    pub async fn write_slice(&mut self, buf: &[u8]) -> Result<()> {
        self.usable()?;
        let r = if self.zstd.is_some() {
            self.write_copied(buf).await
        } else if self.inner.prefers_slices() {
            self.pass_through_slice(buf).await
        } else {
            // The owned copy lets the CRC of a large buffer run beside the write.
            self.write_bytes(Bytes::copy_from_slice(buf)).await
        };
        self.failed = r.is_err();
        r
    }

    /// Compress what is left, write the trailer and commit the object.
    pub async fn finish(self) -> Result<EncodedMeta> {
        self.finish_checked(None).await
    }

    /// [`finish`](Self::finish), committing only when the logical bytes
    /// written have the CRC32C `source` expects (`(crc, uri)` of the object
    /// they were copied from); else nothing becomes visible and the error is
    /// the source's `Integrity`. A copy checks its stream with the CRC32C
    /// the encoder keeps anyway instead of a second pass over every byte.
    pub async fn finish_checked(mut self, source: Option<(u32, String)>) -> Result<EncodedMeta> {
        if let Err(e) = self.usable().and_then(|()| self.whole_elements()) {
            let _ = self.inner.abort().await;
            return Err(e);
        }
        if let Err(e) = self.flush_all().await {
            let _ = self.inner.abort().await;
            return Err(e);
        }
        if let Some((expected, uri)) = source.filter(|(expected, _)| *expected != self.crc) {
            self.inner.abort().await?;
            return Err(Error::Integrity {
                uri,
                offset: 0,
                expected,
                actual: self.crc,
            });
        }
        let object = self.inner.finish().await?;
        let (codec, level, byte_group) = match &self.zstd {
            None => (Codec::None, None, None),
            Some(z) => (Codec::ZstdSeekable, Some(z.level), z.byte_group),
        };
        Ok(EncodedMeta {
            logical_size: self.logical,
            stored_size: self.stored,
            crc32c: self.crc,
            codec,
            level,
            byte_group,
            object,
        })
    }

    /// Drop everything written so far; nothing becomes visible.
    pub async fn abort(mut self) -> Result<()> {
        if let Some(z) = self.zstd.as_mut() {
            // Blocking tasks cannot be cancelled; their output is discarded.
            z.inflight.clear();
        }
        self.inner.abort().await
    }

    /// An explicitly byte-grouped object must be whole elements.
    fn whole_elements(&self) -> Result<()> {
        let Some(z) = &self.zstd else { return Ok(()) };
        match z.byte_group {
            Some(width) if z.byte_group_strict && !self.logical.is_multiple_of(width as u64) => {
                Err(Error::invalid(format!(
                    "{}: {} bytes are not a whole number of {width}-byte elements \
                     (byte_group={width}); nothing was stored",
                    self.uri, self.logical
                )))
            }
            _ => Ok(()),
        }
    }

    fn usable(&self) -> Result<()> {
        if self.failed {
            Err(Error::invalid(format!(
                "{}: an earlier write failed; the writer can only be aborted",
                self.uri
            )))
        } else {
            Ok(())
        }
    }

    async fn write_bytes(&mut self, mut buf: Bytes) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(frame_size) = self.zstd.as_ref().map(|z| z.frame_size) else {
            return self.pass_through(buf).await;
        };
        self.logical += buf.len() as u64;
        while !buf.is_empty() {
            let Some(z) = self.zstd.as_mut() else { break };
            if z.pending.is_empty() && buf.len() >= frame_size {
                let frame = buf.split_to(frame_size);
                self.submit(FrameIn::Shared(frame)).await?;
            } else {
                if z.pending.capacity() == 0 {
                    z.pending.reserve_exact(frame_size);
                }
                let take = (frame_size - z.pending.len()).min(buf.len());
                z.pending.extend_from_slice(&buf[..take]);
                buf.advance(take);
                if z.pending.len() == frame_size {
                    let frame = z.take_pending();
                    self.submit(FrameIn::Owned(frame)).await?;
                }
            }
        }
        Ok(())
    }

    async fn write_copied(&mut self, mut buf: &[u8]) -> Result<()> {
        self.logical += buf.len() as u64;
        while !buf.is_empty() {
            let Some(z) = self.zstd.as_mut() else { break };
            if let (Some(width), true) = (
                z.byte_group,
                z.pending.is_empty() && buf.len() >= z.frame_size,
            ) {
                // A whole frame: split it into planes on the way in
                // instead of copying it as it is.
                let len = z.frame_size;
                let mut planes = z.spare_buffer();
                // Recycled buffers keep their length: no zero-filling of
                // bytes about to be overwritten.
                planes.resize(len + LITERAL_PADDING, 0);
                let crc = byte_group::split_crc(&buf[..len], width, &mut planes[..len]);
                buf = &buf[len..];
                self.submit(FrameIn::Split { planes, len, crc }).await?;
                continue;
            }
            if z.pending.capacity() == 0 {
                z.pending.reserve_exact(z.frame_size);
            }
            let take = (z.frame_size - z.pending.len()).min(buf.len());
            z.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if z.pending.len() == z.frame_size {
                let frame = z.take_pending();
                self.submit(FrameIn::Owned(frame)).await?;
            }
        }
        Ok(())
    }

    async fn pass_through(&mut self, buf: Bytes) -> Result<()> {
        let len = buf.len();
        let piece_crc = if len >= OFFLOAD_CRC {
            let copy = buf.clone();
            let crc = tokio::task::spawn_blocking(move || crc32c(&copy));
            self.inner.write(buf).await?;
            crc.await.map_err(|e| self.task_failed(e))?
        } else {
            let crc = crc32c(&buf);
            self.inner.write(buf).await?;
            crc
        };
        self.crc = crc32c_combine(self.crc, piece_crc, len as u64);
        self.logical += len as u64;
        self.stored += len as u64;
        Ok(())
    }

    /// `pass_through` of borrowed memory, for a store writer that copies it
    /// where it needs it anyway (`ObjectWriter::prefers_slices`).
    async fn pass_through_slice(&mut self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        self.inner.write_slice(buf).await?;
        self.crc = crc32c_combine(self.crc, crc32c(buf), len as u64);
        self.logical += len as u64;
        self.stored += len as u64;
        Ok(())
    }

    /// Queue one frame for compression, keeping at most `threads` in flight.
    async fn submit(&mut self, frame: FrameIn) -> Result<()> {
        self.emit_finished().await?;
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        // Wait for the oldest frame before starting this one, but write it
        // out only after this one started, so compression overlaps the
        // inner write even with one thread.
        let oldest = if z.inflight.len() >= z.threads {
            z.inflight.pop_front()
        } else {
            None
        };
        let done = match oldest {
            Some(handle) => Some(handle.await.map_err(|e| self.task_failed(e))?),
            None => None,
        };
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        let (level, byte_group) = (z.level, z.byte_group);
        z.inflight.push_back(tokio::task::spawn_blocking(move || {
            compress_frame(frame, level, byte_group)
        }));
        if let Some(out) = done {
            self.emit(out).await?;
        }
        Ok(())
    }

    /// Write out frames at the head of the queue that are already done.
    async fn emit_finished(&mut self) -> Result<()> {
        loop {
            let Some(z) = self.zstd.as_mut() else {
                return Ok(());
            };
            let ready = z.inflight.front().is_some_and(|h| h.is_finished());
            if !ready {
                return Ok(());
            }
            let Some(handle) = z.inflight.pop_front() else {
                return Ok(());
            };
            let out = handle.await.map_err(|e| self.task_failed(e))?;
            self.emit(out).await?;
        }
    }

    async fn emit(&mut self, out: FrameOut) -> Result<()> {
        let compressed = out.compressed.map_err(|e| {
            Error::backend(&self.uri, format!("zstd compression failed: {e}"), false)
        })?;
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        if let Some(buf) = out.recycled {
            if z.spare.len() < z.threads {
                z.spare.push(buf);
            }
        }
        let compressed_size = u32::try_from(compressed.len()).map_err(|_| {
            Error::invalid(format!(
                "{}: a compressed frame of {} bytes does not fit the seek table",
                self.uri,
                compressed.len()
            ))
        })?;
        z.frames.push(FrameEntry {
            compressed_size,
            // Frames are at most MAX_FRAME_SIZE, which fits u32.
            decompressed_size: out.len as u32,
            crc32c: out.crc,
        });
        self.crc = crc32c_combine(self.crc, out.crc, out.len as u64);
        self.stored += compressed.len() as u64;
        self.inner.write(compressed).await
    }

    /// Everything but the inner `finish`: last frame, queue, trailer.
    async fn flush_all(&mut self) -> Result<()> {
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        // An empty object still gets one (empty) frame: some zstd decoders
        // reject input made of skippable frames only.
        let nothing_yet = z.frames.is_empty() && z.inflight.is_empty();
        if !z.pending.is_empty() || nothing_yet {
            let frame = std::mem::take(&mut z.pending);
            self.submit(FrameIn::Owned(frame)).await?;
        }
        while let Some(handle) = self.zstd.as_mut().and_then(|z| z.inflight.pop_front()) {
            let out = handle.await.map_err(|e| self.task_failed(e))?;
            self.emit(out).await?;
        }
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        let trailer = Trailer {
            logical_size: self.logical,
            crc32c: self.crc,
            frame_size: z.frame_size as u32,
            level: z.level,
            // Widths are 2, 4 or 8 (checked in `new`).
            byte_group: z.byte_group.map_or(0, |w| w as u8),
            frames: std::mem::take(&mut z.frames),
        };
        let bytes = trailer
            .encode()
            .map_err(|reason| Error::invalid(format!("{}: {reason}", self.uri)))?;
        self.stored += bytes.len() as u64;
        self.inner.write(Bytes::from(bytes)).await
    }

    fn task_failed(&self, e: JoinError) -> Error {
        Error::backend(&self.uri, format!("encoding task failed: {e}"), false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::ObjectReader;
    use crate::store::memory::MemoryStore;
    use crate::store::{ObjectStore, PutOptions};

    pub(crate) fn floats(n: usize, seed: u64) -> Vec<u8> {
        // Float-like bytes: smooth values with noisy low mantissa bits, so
        // they compress somewhat, as real weights do.
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut out = Vec::with_capacity(n + 4);
        let mut i = 0u64;
        while out.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((i as f32) * 0.001).sin() * 0.02 + ((x >> 40) as f32) * 1e-9;
            out.extend_from_slice(&v.to_le_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    async fn encode(
        store: &Arc<MemoryStore>,
        key: &str,
        data: &[u8],
        opts: EncodeOptions,
        piece: usize,
    ) -> EncodedMeta {
        let inner = store.writer(key, &PutOptions::default()).await.unwrap();
        let mut w = EncodingWriter::new(inner, store.uri(key), opts).unwrap();
        for (i, chunk) in data.chunks(piece.max(1)).enumerate() {
            if i % 2 == 0 {
                w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            } else {
                w.write_slice(chunk).await.unwrap();
            }
        }
        w.finish().await.unwrap()
    }

    fn opts(level: Option<i32>, frame_size: usize, threads: usize) -> EncodeOptions {
        EncodeOptions {
            level,
            frame_size,
            threads,
            byte_group: None,
            byte_group_auto: false,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn roundtrip_every_level() {
        let store = MemoryStore::new();
        let data = floats(50_000, 1);
        for level in 1..=22 {
            let key = format!("l{level}.zst");
            let meta = encode(&store, &key, &data, opts(Some(level), 16 << 10, 2), 7000).await;
            assert_eq!(meta.logical_size, data.len() as u64);
            assert_eq!(meta.crc32c, crc32c(&data));
            assert_eq!(meta.codec, Codec::ZstdSeekable);
            assert_eq!(meta.level, Some(level));
            assert_eq!(meta.stored_size, meta.object.size);
            let r = ObjectReader::open(store.clone(), &key).await.unwrap();
            assert_eq!(r.codec(), Codec::ZstdSeekable);
            assert_eq!(r.crc32c(), Some(crc32c(&data)));
            assert_eq!(r.stored_size(), meta.stored_size);
            assert_eq!(
                &r.read_all(None).await.unwrap()[..],
                &data[..],
                "level {level}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_levels_and_options_are_rejected() {
        let store = MemoryStore::new();
        for level in [0, 23, -1] {
            let inner = store.writer("x", &PutOptions::default()).await.unwrap();
            let err = EncodingWriter::new(inner, "memory:///x".into(), opts(Some(level), 4096, 1))
                .err()
                .unwrap();
            assert!(matches!(err, Error::InvalidInput(_)));
            assert!(err.to_string().contains(&format!(
                "compression level {level} is out of range: valid levels are 1-22 (or None for no compression)"
            )));
        }
        let inner = store.writer("x", &PutOptions::default()).await.unwrap();
        let mut o = opts(Some(3), 4096, 1);
        o.byte_group = Some(3);
        assert!(matches!(
            EncodingWriter::new(inner, "memory:///x".into(), o),
            Err(Error::InvalidInput(_))
        ));
        let inner = store.writer("x", &PutOptions::default()).await.unwrap();
        assert!(matches!(
            EncodingWriter::new(inner, "memory:///x".into(), opts(Some(3), 0, 1)),
            Err(Error::InvalidInput(_))
        ));
        // Nothing was written by the rejected writers.
        assert!(store.head("x").await.unwrap_err().is_not_found());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plain_pass_through() {
        let store = MemoryStore::new();
        let data = floats(3 << 20, 2);
        let meta = encode(&store, "p.bin", &data, opts(None, 4096, 1), 1 << 20).await;
        assert_eq!(meta.codec, Codec::None);
        assert_eq!(meta.level, None);
        assert_eq!(meta.stored_size, data.len() as u64);
        assert_eq!(meta.crc32c, crc32c(&data));
        assert_eq!(meta.ratio(), 1.0);
        assert_eq!(&store.get("p.bin").await.unwrap()[..], &data[..]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn zeros_compress_and_ratio_is_sane() {
        let store = MemoryStore::new();
        let data = vec![0u8; 8 << 20];
        let meta = encode(&store, "z.zst", &data, opts(Some(3), 1 << 20, 0), 3 << 20).await;
        assert!(meta.ratio() < 0.01, "ratio {}", meta.ratio());
        assert!(meta.stored_size > 0);
        let noisy = floats(1 << 20, 3);
        let meta = encode(&store, "f.zst", &noisy, opts(Some(1), 1 << 18, 0), 1 << 16).await;
        assert!(
            meta.ratio() > 0.1 && meta.ratio() < 1.01,
            "ratio {}",
            meta.ratio()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn borrowed_whole_frames_are_split_on_the_way_in() {
        // write_slice of several whole frames takes the split-on-copy path
        // (after a partial frame is completed first); the frames it makes
        // are the same as those of the copying path, and the object reads
        // back bit-exact with every frame's CRC32C checked.
        let store = MemoryStore::new();
        let frame = 64 << 10;
        let data = floats(5 * frame + 4 * 321, 8);
        let grouped = |threads| EncodeOptions {
            byte_group: Some(4),
            ..opts(Some(1), frame, threads)
        };
        for threads in [1, 2] {
            let inner = store.writer("s.zst", &PutOptions::default()).await.unwrap();
            let mut w =
                EncodingWriter::new(inner, "memory:///s.zst".into(), grouped(threads)).unwrap();
            w.write_slice(&data[..1000]).await.unwrap();
            w.write_slice(&data[1000..4 * frame + 4000]).await.unwrap();
            w.write(Bytes::copy_from_slice(&data[4 * frame + 4000..]))
                .await
                .unwrap();
            let meta = w.finish().await.unwrap();
            assert_eq!(meta.crc32c, crc32c(&data));
            assert_eq!(meta.byte_group, Some(4));
            let r = ObjectReader::open(store.clone(), "s.zst").await.unwrap();
            assert_eq!(&r.read_all(Some(meta.crc32c)).await.unwrap()[..], &data[..]);
            // Pieces that never hold a whole frame go the copying way.
            let copied = encode(&store, "c.zst", &data, grouped(threads), 999).await;
            let (a, b) = (
                store.get("s.zst").await.unwrap(),
                store.get("c.zst").await.unwrap(),
            );
            assert_eq!(a, b, "threads {threads}");
            assert_eq!(copied.stored_size, meta.stored_size);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn frames_are_independent_and_sized() {
        let store = MemoryStore::new();
        let data = floats(10 * 4096 + 123, 4);
        encode(&store, "f.zst", &data, opts(Some(5), 4096, 3), 999).await;
        let stored = store.get("f.zst").await.unwrap();
        let Ok(crate::format::seekable::Sniff::Seekable(t)) =
            crate::format::seekable::parse_tail(&stored, stored.len() as u64)
        else {
            panic!("not a seekable object")
        };
        assert_eq!(t.frames.len(), 11);
        assert_eq!(t.frame_size, 4096);
        assert_eq!(t.frames[10].decompressed_size, 123);
        let mut off = 0usize;
        for (i, f) in t.frames.iter().enumerate() {
            let raw = &stored[off..off + f.compressed_size as usize];
            let out = zstd::bulk::decompress(raw, 4096).unwrap();
            assert_eq!(&out[..], &data[i * 4096..i * 4096 + out.len()]);
            assert_eq!(crc32c(&out), f.crc32c);
            off += f.compressed_size as usize;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pieces_larger_than_frames_one_thread() {
        let store = MemoryStore::new();
        let data = floats(20 * 4096 + 5, 8);
        // Pieces of 10,000 bytes over 4 KiB frames mix zero-copy frames with
        // frames stitched together from pieces.
        let meta = encode(&store, "big.zst", &data, opts(Some(2), 4096, 1), 10_000).await;
        assert_eq!(meta.crc32c, crc32c(&data));
        let r = ObjectReader::open(store.clone(), "big.zst").await.unwrap();
        assert_eq!(&r.read_all(None).await.unwrap()[..], &data[..]);
    }

    struct FailingWriter;

    #[async_trait::async_trait]
    impl ObjectWriter for FailingWriter {
        async fn write(&mut self, _buf: Bytes) -> Result<()> {
            Err(Error::backend("memory:///f", "disk on fire", true))
        }
        async fn finish(self: Box<Self>) -> Result<ObjectMeta> {
            panic!("finish after a failed write")
        }
        async fn abort(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn failed_inner_write_poisons_the_writer() {
        for level in [None, Some(3)] {
            let mut w = EncodingWriter::new(
                Box::new(FailingWriter),
                "memory:///f".into(),
                opts(level, 16, 1),
            )
            .unwrap();
            // Compressed writes reach the inner writer a frame or two later.
            let mut first_err = None;
            for _ in 0..4 {
                if let Err(e) = w.write(Bytes::from(vec![1u8; 64])).await {
                    first_err = Some(e);
                    break;
                }
            }
            assert!(matches!(first_err, Some(Error::Backend { .. })));
            assert!(matches!(
                w.write_slice(b"more").await,
                Err(Error::InvalidInput(_))
            ));
            assert!(w.finish().await.is_err());
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn abort_leaves_nothing() {
        let store = MemoryStore::new();
        let inner = store.writer("a.zst", &PutOptions::default()).await.unwrap();
        let mut w = EncodingWriter::new(inner, store.uri("a.zst"), opts(Some(3), 4096, 2)).unwrap();
        w.write(Bytes::from(floats(100_000, 5))).await.unwrap();
        w.abort().await.unwrap();
        assert!(store.head("a.zst").await.unwrap_err().is_not_found());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plain_zstd_cli_decompresses_our_objects() {
        if std::process::Command::new("zstd")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("zstd CLI not installed; skipping");
            return;
        }
        let store = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [
            ("multi", floats(5 * 4096 + 17, 6)),
            ("one", floats(100, 7)),
            ("empty", Vec::new()),
        ] {
            encode(&store, name, &data, opts(Some(3), 4096, 2), 1000).await;
            let path = dir.path().join(format!("{name}.zst"));
            std::fs::write(&path, store.get(name).await.unwrap()).unwrap();
            let out = std::process::Command::new("zstd")
                .args(["-d", "-c", "-q"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, data, "{name}");
        }
    }
}
