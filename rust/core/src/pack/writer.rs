//! Streams many items into one object, returning where each landed.

use std::sync::Arc;

use bytes::Bytes;

use super::frame::FrameEncoder;
use super::{PackOptions, PackedItem};
use crate::codec::crc::{crc32c, crc32c_combine};
use crate::error::{Error, Result};
use crate::store::{ObjectMeta, ObjectStore, ObjectWriter};

/// Pieces at least this large get their CRC32C computed on a blocking
/// thread while the store takes the previous piece.
const OFFLOAD_CRC: usize = 1 << 20;

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
    /// An earlier item failed half-way: the object has a hole, so the only
    /// way on is `abort`.
    failed: bool,
}

impl PackWriter {
    pub async fn open(store: &Arc<dyn ObjectStore>, key: &str, opts: PackOptions) -> Result<Self> {
        let uri = store.uri(key);
        let encoder = match opts.level {
            Some(level) => Some(FrameEncoder::new(
                &uri,
                crate::codec::check_level(level)?,
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
            failed: false,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Append one item made of `segments` (its logical bytes, in order).
    pub async fn write_item(&mut self, segments: Vec<Bytes>) -> Result<PackedItem> {
        if self.failed {
            return Err(Error::invalid(format!(
                "{}: an earlier item failed; the object can only be aborted",
                self.uri
            )));
        }
        let offset = self.position;
        let size: u64 = segments.iter().map(|s| s.len() as u64).sum();
        let result = if self.opts.level.is_some() {
            self.write_compressed(segments, size).await
        } else {
            self.write_plain(segments).await
        };
        match result {
            Ok(crc) => Ok(PackedItem {
                offset,
                length: self.position - offset,
                size,
                crc32c: crc,
            }),
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
    /// while the store writes it.
    async fn write_plain(&mut self, segments: Vec<Bytes>) -> Result<Option<u32>> {
        let checksum = self.opts.checksum;
        let mut crc = 0u32;
        for piece in pieces(segments, self.opts.piece_size) {
            let len = piece.len() as u64;
            if !checksum {
                self.put(piece).await?;
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

    fn task_failed(&self, e: tokio::task::JoinError) -> Error {
        Error::backend(&self.uri, format!("encoding task failed: {e}"), false)
    }
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
