//! Streams many items into one object, returning where each landed.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::{DataFrame, GroupRequest, Grouping, PackOptions, PackedItem, GROUP_FRAME};
use crate::crc::{crc32c, crc32c_append, crc32c_combine};
use crate::error::{Error, Result};
use crate::format::grouped::GroupedCompressor;
use crate::format::pack_frame::FrameEncoder;
use crate::store::{BlockingWrite, ObjectMeta, ObjectStore, ObjectWriter};

/// Pieces at least this large get their CRC32C computed on a blocking
/// thread while the store takes the previous piece.
const OFFLOAD_CRC: usize = 1 << 20;

/// In-place writes checksum and hand to the kernel this many bytes at a
/// time: small enough that the bytes the CRC32C pass just read are likely
/// still in the CPU cache when the kernel copies them, large enough that
/// the per-write cost of the file system stays small (64 KiB blocks cost
/// clearly more CPU per byte on ext4; 256 KiB to 16 MiB measured alike).
const IN_PLACE_BLOCK: usize = 1 << 20;

/// Most buffers gathered into one vectored write (Linux's IOV_MAX).
const IN_PLACE_IOVECS: usize = 1024;

/// Writes items back to back into one object. Nothing is visible under the
/// object's name before `finish`; `abort` (or dropping it) leaves nothing.
pub struct PackWriter {
    inner: Option<Box<dyn ObjectWriter>>,
    uri: String,
    opts: PackOptions,
    /// Stored bytes written so far: the offset of the next item.
    position: u64,
    /// Taken while a blocking task compresses with it.
    encoder: Option<FrameEncoder>,
    /// Byte-grouping compressors not in use (made on first need, at most
    /// one per zstd worker).
    grouped: Vec<GroupedCompressor>,
    /// An earlier item failed half-way: the object has a hole, so the only
    /// way on is `abort`.
    failed: bool,
    /// The store uploads over the network (`ObjectStore::is_remote`).
    remote: bool,
}

impl PackWriter {
    pub async fn open(store: &Arc<dyn ObjectStore>, key: &str, opts: PackOptions) -> Result<Self> {
        let uri = store.uri(key);
        let encoder = match opts.level {
            Some(level) => Some(FrameEncoder::new(
                &uri,
                crate::format::check_level(level)?,
                opts.zstd_workers,
            )?),
            None => None,
        };
        if opts.piece_size == 0 {
            return Err(Error::invalid("piece size must be positive"));
        }
        let inner = store.writer(key, &opts.put).await?;
        Ok(PackWriter {
            inner: Some(inner),
            uri,
            opts,
            position: 0,
            encoder,
            grouped: Vec::new(),
            failed: false,
            remote: store.is_remote(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Append one item made of `segments` (its logical bytes, in order).
    /// With `group`, that segment is stored byte-grouped (the writer must
    /// compress); the returned item records how, for the reader.
    pub async fn write_item(
        &mut self,
        segments: Vec<Bytes>,
        group: Option<GroupRequest>,
    ) -> Result<PackedItem> {
        if self.failed {
            return Err(Error::invalid(format!(
                "{}: an earlier item failed; the object can only be aborted",
                self.uri
            )));
        }
        let offset = self.position;
        let size: u64 = segments.iter().map(|s| s.len() as u64).sum();
        let grouping = match group {
            Some(g) => Some((g.segment, self.grouping(&segments, g, size)?)),
            None => None,
        };
        let result = match grouping {
            Some((index, g)) => self.write_grouped(segments, index, g).await,
            None if self.opts.level.is_some() => self
                .write_compressed(segments, size)
                .await
                .map(|crc| (crc, Vec::new())),
            None => self
                .write_plain(segments)
                .await
                .map(|crc| (crc, Vec::new())),
        };
        match result {
            Ok((crc, frames)) => Ok(PackedItem {
                offset,
                length: self.position - offset,
                size,
                crc32c: crc,
                grouping: grouping.map(|(_, g)| g),
                frames,
            }),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Whether [`write_items_in_place`](Self::write_items_in_place) can be
    /// used: items stored as they are (no compression), on a backend that
    /// appends borrowed memory from the calling thread (`file://`).
    pub fn writes_in_place(&mut self) -> bool {
        self.opts.level.is_none()
            && !self.failed
            && self.inner.as_mut().is_some_and(|w| w.blocking().is_some())
    }

    /// Append `items` (each its logical bytes as segments, in order), stored
    /// as they are, from the caller's memory on the calling thread: blocking
    /// code only, never inside the runtime. Small items are gathered into
    /// one vectored write; each block's CRC32C is computed just before the
    /// kernel copies it, while it is still in cache.
    pub fn write_items_in_place(&mut self, items: &[Vec<&[u8]>]) -> Result<Vec<PackedItem>> {
        if self.failed {
            return Err(Error::invalid(format!(
                "{}: an earlier item failed; the object can only be aborted",
                self.uri
            )));
        }
        if self.opts.level.is_some() {
            return Err(Error::invalid(format!(
                "{}: compressed items cannot be written in place",
                self.uri
            )));
        }
        let checksum = self.opts.checksum;
        let start = self.position;
        let uri = &self.uri;
        let sink = self
            .inner
            .as_mut()
            .ok_or_else(|| Error::invalid(format!("{uri}: writer already closed")))?
            .blocking()
            .ok_or_else(|| Error::invalid(format!("{uri}: this store cannot write in place")))?;
        let result = write_in_place(sink, items, start, checksum);
        match result {
            Ok(placed) => {
                self.position = placed.last().map_or(start, |p| p.offset + p.length);
                Ok(placed)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Publish the object.
    pub async fn finish(mut self) -> Result<ObjectMeta> {
        let inner = self.take_inner()?;
        if self.failed {
            inner.abort().await?;
            return Err(Error::invalid(format!(
                "{}: an earlier item failed; nothing was published",
                self.uri
            )));
        }
        inner.finish().await
    }

    /// Drop everything written; nothing becomes visible.
    pub async fn abort(mut self) -> Result<()> {
        match self.inner.take() {
            Some(inner) => inner.abort().await,
            None => Ok(()),
        }
    }

    fn take_inner(&mut self) -> Result<Box<dyn ObjectWriter>> {
        self.inner
            .take()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", self.uri)))
    }

    fn inner(&mut self) -> Result<&mut Box<dyn ObjectWriter>> {
        self.inner
            .as_mut()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", self.uri)))
    }

    async fn put(&mut self, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.inner()?.write(data).await?;
        self.position += len;
        Ok(())
    }

    /// Stored bytes are the logical bytes; each piece's CRC32C is computed
    /// while the store writes it, or, on remote stores, first and handed
    /// over with it: they checksum what they upload (S3's
    /// `x-amz-checksum-crc32c`) and need not read the bytes again.
    async fn write_plain(&mut self, segments: Vec<Bytes>) -> Result<Option<u32>> {
        let checksum = self.opts.checksum;
        let mut crc = 0u32;
        for piece in pieces(segments, self.opts.piece_size) {
            let len = piece.len() as u64;
            if !checksum {
                self.put(piece).await?;
            } else if self.remote {
                let piece_crc = crc32c(&piece);
                crc = crc32c_combine(crc, piece_crc, len);
                self.inner()?.write_with_crc(piece, piece_crc).await?;
                self.position += len;
            } else if piece.len() >= OFFLOAD_CRC {
                let copy = piece.clone();
                let task = tokio::task::spawn_blocking(move || crc32c(&copy));
                self.put(piece).await?;
                let piece_crc = task.await.map_err(|e| self.task_failed(e))?;
                crc = crc32c_combine(crc, piece_crc, len);
            } else {
                crc = crc32c_combine(crc, crc32c(&piece), len);
                self.put(piece).await?;
            }
        }
        Ok(checksum.then_some(crc))
    }

    /// One zstd frame: each piece is compressed on a blocking thread while
    /// the store writes the previous piece's output.
    async fn write_compressed(&mut self, segments: Vec<Bytes>, size: u64) -> Result<Option<u32>> {
        let checksum = self.opts.checksum;
        let mut encoder = self.encoder.take().ok_or_else(|| {
            Error::invalid(format!(
                "{}: compressor lost by an earlier failure",
                self.uri
            ))
        })?;
        encoder.begin(size)?;
        let mut crc = 0u32;
        let mut ready: Vec<Bytes> = Vec::new();
        let mut queue = pieces(segments, self.opts.piece_size).into_iter();
        loop {
            let next = queue.next();
            let last = next.is_none();
            let task = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let mut piece_crc = None;
                let res = match next {
                    Some(piece) => {
                        if checksum {
                            piece_crc = Some((crc32c(&piece), piece.len() as u64));
                        }
                        encoder.feed(&piece, &mut out)
                    }
                    None => encoder.end(&mut out),
                };
                (encoder, res.map(|_| (out, piece_crc)))
            });
            // Overlap: the previous output goes out while this piece compresses.
            for chunk in std::mem::take(&mut ready) {
                self.put(chunk).await?;
            }
            let (back, res) = task.await.map_err(|e| self.task_failed(e))?;
            encoder = back;
            let (out, piece_crc) = res?;
            if let Some((c, len)) = piece_crc {
                crc = crc32c_combine(crc, c, len);
            }
            ready = out;
            if last {
                break;
            }
        }
        for chunk in ready {
            self.put(chunk).await?;
        }
        self.encoder = Some(encoder);
        Ok(checksum.then_some(crc))
    }

    /// Where the grouped run of `group` lies in the item (checked before
    /// anything is written).
    fn grouping(&self, segments: &[Bytes], group: GroupRequest, size: u64) -> Result<Grouping> {
        if self.opts.level.is_none() {
            return Err(Error::invalid(format!(
                "{}: byte grouping needs compression (a compression level)",
                self.uri
            )));
        }
        let Some(seg) = segments.get(group.segment) else {
            return Err(Error::invalid(format!(
                "{}: byte-grouped segment {} of an item with {} segments",
                self.uri,
                group.segment,
                segments.len()
            )));
        };
        let start: u64 = segments[..group.segment]
            .iter()
            .map(|s| s.len() as u64)
            .sum();
        let grouping = Grouping {
            start,
            length: seg.len() as u64,
            width: group.width,
            frame: GROUP_FRAME,
        };
        grouping.check(&self.uri, size)?;
        Ok(grouping)
    }

    /// A byte-grouped item: the segments before the grouped one as one
    /// zstd frame, the grouped segment as grouped data frames compressed
    /// on up to `zstd_workers` blocking threads at once (written in order
    /// as they complete), the segments after it as one zstd frame.
    async fn write_grouped(
        &mut self,
        mut segments: Vec<Bytes>,
        index: usize,
        g: Grouping,
    ) -> Result<(Option<u32>, Vec<DataFrame>)> {
        let checksum = self.opts.checksum;
        let after = segments.split_off(index + 1);
        let run = segments.pop().unwrap_or_default();
        let mut crc = 0u32;
        if g.start > 0 {
            let head = self.write_compressed(segments, g.start).await?;
            crc = head.unwrap_or(0);
        }
        let workers = (self.opts.zstd_workers as usize).max(1);
        let level = self.opts.level.unwrap_or(crate::format::MIN_LEVEL);
        let mut frames = Vec::new();
        let mut chunks = (0..run.len())
            .step_by(g.frame)
            .map(|at| run.slice(at..(at + g.frame).min(run.len())));
        let mut running: VecDeque<tokio::task::JoinHandle<_>> = VecDeque::new();
        loop {
            while running.len() < workers {
                let Some(chunk) = chunks.next() else { break };
                let compressor = match self.grouped.pop() {
                    Some(c) => c,
                    None => GroupedCompressor::new(level).map_err(|e| self.codec_failed(e))?,
                };
                let width = g.width;
                running.push_back(tokio::task::spawn_blocking(move || {
                    let mut compressor = compressor;
                    let out = compressor.compress(&chunk, width);
                    (compressor, out, chunk.len() as u64)
                }));
            }
            let Some(task) = running.pop_front() else {
                break;
            };
            let (compressor, out, len) = task.await.map_err(|e| self.task_failed(e))?;
            self.grouped.push(compressor);
            let (stored, chunk_crc) = out.map_err(|e| self.codec_failed(e))?;
            crc = crc32c_combine(crc, chunk_crc, len);
            frames.push(DataFrame {
                stored: stored.len() as u64,
                crc32c: chunk_crc,
            });
            self.put(crate::format::out_pool::into_bytes(stored))
                .await?;
        }
        let tail: u64 = after.iter().map(|s| s.len() as u64).sum();
        if tail > 0 {
            let tail_crc = self.write_compressed(after, tail).await?;
            crc = crc32c_combine(crc, tail_crc.unwrap_or(0), tail);
        }
        Ok((checksum.then_some(crc), frames))
    }

    fn codec_failed(&self, e: std::io::Error) -> Error {
        Error::backend(
            &self.uri,
            format!("byte-grouped compression failed: {e}"),
            false,
        )
    }

    fn task_failed(&self, e: tokio::task::JoinError) -> Error {
        Error::backend(&self.uri, format!("encoding task failed: {e}"), false)
    }
}

/// The body of [`PackWriter::write_items_in_place`]: items placed from
/// `start`, their bytes gathered into vectored writes of about
/// `IN_PLACE_BLOCK` bytes, each block checksummed right before it is
/// written.
fn write_in_place(
    sink: &mut dyn BlockingWrite,
    items: &[Vec<&[u8]>],
    start: u64,
    checksum: bool,
) -> Result<Vec<PackedItem>> {
    let total: u64 = items.iter().flatten().map(|s| s.len() as u64).sum();
    sink.reserve(total)?;
    let mut placed = Vec::with_capacity(items.len());
    let mut gathered: Vec<&[u8]> = Vec::new();
    let mut gathered_bytes = 0usize;
    let mut position = start;
    for segments in items {
        let mut crc = 0u32;
        let mut size = 0u64;
        for segment in segments {
            for block in segment.chunks(IN_PLACE_BLOCK) {
                if checksum {
                    crc = crc32c_append(crc, block);
                }
                gathered.push(block);
                gathered_bytes += block.len();
                if gathered_bytes >= IN_PLACE_BLOCK || gathered.len() == IN_PLACE_IOVECS {
                    sink.write_all_vectored(&gathered)?;
                    gathered.clear();
                    gathered_bytes = 0;
                }
            }
            size += segment.len() as u64;
        }
        placed.push(PackedItem {
            offset: position,
            length: size,
            size,
            crc32c: checksum.then_some(crc),
            grouping: None,
            frames: Vec::new(),
        });
        position += size;
    }
    if !gathered.is_empty() {
        sink.write_all_vectored(&gathered)?;
    }
    Ok(placed)
}

/// `segments` cut into pieces of at most `size` bytes (no copies).
fn pieces(segments: Vec<Bytes>, size: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    for mut seg in segments {
        while seg.len() > size {
            out.push(seg.split_to(size));
        }
        if !seg.is_empty() {
            out.push(seg);
        }
    }
    out
}
