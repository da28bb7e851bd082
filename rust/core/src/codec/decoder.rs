//! Reading logical bytes back, whatever the codec: plain objects are passed
//! through, seekable zstd objects are decompressed frame by frame with every
//! frame's CRC32C checked before its bytes are handed out. Byte-grouped
//! frames are decompressed into a scratch buffer and merged back into
//! elements (see [`crate::format::grouped`]) before the check.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use zstd::bulk::Decompressor;

use super::{resolve_threads, Codec};
use crate::crc::{crc32c, crc32c_combine};
use crate::error::{Error, Result};
use crate::format::grouped;
use crate::format::seekable::{parse_tail, Sniff, Trailer};
use crate::store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// First read when sniffing: covers the trailer of objects up to ~5,000
/// frames (20 GiB at 4 MiB frames); bigger trailers take one more read.
const SNIFF_TAIL: u64 = 64 << 10;

/// Frames (or plain parts) fetched ahead of decompression. Bounds read
/// memory at about this many compressed frames plus one decompressed frame
/// per worker thread.
const READ_AHEAD: usize = 8;

/// Unit of parallel ranged reads of plain objects.
const PLAIN_PART: u64 = 8 << 20;

/// Lets the benchmark compare the two read paths.
#[cfg(test)]
pub(crate) static FORCE_COPYING: AtomicBool = AtomicBool::new(false);

/// Logical reads of one object. Cloning is cheap and shares the trailer.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    key: String,
    uri: String,
    stored_size: u64,
    layout: Layout,
    /// CRC32C of a plain object, as the store recorded it when s3dlio
    /// wrote it (`ObjectMeta::plain`): full reads are checked against it.
    recorded_crc32c: Option<u32>,
}

#[derive(Debug)]
enum Layout {
    Plain,
    Seekable {
        logical_size: u64,
        crc32c: u32,
        /// Element width of the byte-grouping filter; 0 = none.
        byte_group: usize,
        frames: Vec<Frame>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    stored_off: u64,
    stored_len: u64,
    logical_off: u64,
    logical_len: usize,
    crc32c: u32,
}

impl Frame {
    fn logical_end(&self) -> u64 {
        self.logical_off + self.logical_len as u64
    }
}

/// Where one frame's decompressed bytes go: `dst` receives the frame's
/// bytes from `skip` on (all of them when `skip == 0` and the lengths match).
struct Part<'a> {
    index: usize,
    skip: usize,
    dst: &'a mut [u8],
}

/// A zeroed buffer of `len` bytes, or an error (never an abort) when the
/// memory is not there: `len` comes from stored bytes.
fn zeroed(uri: &str, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        Error::invalid(format!(
            "{uri}: cannot allocate {len} bytes for this read; read a smaller range"
        ))
    })?;
    out.resize(len, 0);
    Ok(out)
}

/// An object named `*.zst` that starts with a zstd frame written the way
/// ours are (content size, no zstd checksum) but has no valid s3dlio
/// trailer was truncated or had its footer damaged: corrupt, never handed
/// back as its raw bytes.
async fn refuse_headless_zstd(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    uri: &str,
    size: u64,
    tail: &Bytes,
) -> Result<()> {
    if !key.ends_with(".zst") || size < 6 {
        return Ok(());
    }
    let head = if tail.len() as u64 == size {
        tail.slice(..6)
    } else {
        store.get_range(key, 0..6).await?
    };
    if super::seekable::looks_like_our_frame(&head) {
        return Err(Error::corrupt(
            uri,
            "starts with a zstd frame but has no s3dlio seek table at its end \
             (truncated or its footer damaged)",
        ));
    }
    Ok(())
}

impl ObjectReader {
    /// `head`s the object and reads its tail to tell a seekable zstd object
    /// (by its trailer) from a plain one, unless the store recorded that
    /// s3dlio wrote it plain: then the tail read, a round trip before any
    /// data on S3 and Azure, is skipped, and full reads are checked against
    /// the CRC32C recorded with it.
    pub async fn open(store: Arc<dyn ObjectStore>, key: &str) -> Result<Self> {
        Ok(Self::open_with_head(store, key).await?.1)
    }

    /// `open`, also handing back what the store's `head` said (etag, last
    /// modified), for a caller that shows both without a second HEAD.
    pub async fn open_with_head(
        store: Arc<dyn ObjectStore>,
        key: &str,
    ) -> Result<(ObjectMeta, Self)> {
        let meta = store.head(key).await?;
        let reader = Self::open_after_head(store, key, &meta).await?;
        Ok((meta, reader))
    }

    /// The rest of `open`, once `head` has answered.
    async fn open_after_head(
        store: Arc<dyn ObjectStore>,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<Self> {
        let (size, uri) = (meta.size, store.uri(key));
        if meta.plain {
            return Ok(Self::plain(store, key, uri, size, meta.crc32c));
        }
        let mut want = size.min(SNIFF_TAIL);
        // A trailer asks for at most one longer read; a third would mean it
        // keeps changing under us.
        for _ in 0..3 {
            let tail = if want == 0 {
                Bytes::new()
            } else {
                store.get_range(key, size - want..size).await?
            };
            if tail.len() as u64 != want {
                return Err(Error::corrupt(
                    &uri,
                    format!(
                        "read {} bytes of its {want}-byte tail (object changed while opening?)",
                        tail.len()
                    ),
                ));
            }
            match parse_tail(&tail, size).map_err(|reason| Error::corrupt(&uri, reason))? {
                Sniff::Plain => {
                    refuse_headless_zstd(&store, key, &uri, size, &tail).await?;
                    return Ok(Self::plain(store, key, uri, size, None));
                }
                // A whole archive of another writer: its bytes, as they are.
                Sniff::Foreign => return Ok(Self::plain(store, key, uri, size, None)),
                Sniff::Seekable(trailer) => {
                    return Ok(Self::seekable(store, key, uri, size, trailer))
                }
                Sniff::NeedTail(n) if n > want && n <= size => want = n,
                Sniff::NeedTail(n) => {
                    return Err(Error::corrupt(
                        &uri,
                        format!("trailer asks for {n} tail bytes of a {size}-byte object"),
                    ))
                }
            }
        }
        Err(Error::corrupt(&uri, "trailer could not be read"))
    }

    /// A reader for an object the caller knows is plain, of `size` bytes;
    /// full reads are checked against `recorded_crc32c` when given.
    pub async fn open_plain(
        store: Arc<dyn ObjectStore>,
        key: &str,
        size: u64,
        recorded_crc32c: Option<u32>,
    ) -> Result<Self> {
        let uri = store.uri(key);
        Ok(Self::plain(store, key, uri, size, recorded_crc32c))
    }

    fn plain(
        store: Arc<dyn ObjectStore>,
        key: &str,
        uri: String,
        size: u64,
        recorded_crc32c: Option<u32>,
    ) -> Self {
        ObjectReader {
            inner: Arc::new(Inner {
                store,
                key: key.to_string(),
                uri,
                stored_size: size,
                layout: Layout::Plain,
                recorded_crc32c,
            }),
        }
    }

    fn seekable(
        store: Arc<dyn ObjectStore>,
        key: &str,
        uri: String,
        size: u64,
        trailer: Trailer,
    ) -> Self {
        let mut stored_off = 0;
        let mut logical_off = 0;
        let frames = trailer
            .frames
            .iter()
            .map(|f| {
                let frame = Frame {
                    stored_off,
                    stored_len: f.compressed_size as u64,
                    logical_off,
                    logical_len: f.decompressed_size as usize,
                    crc32c: f.crc32c,
                };
                stored_off += frame.stored_len;
                logical_off += frame.logical_len as u64;
                frame
            })
            .collect();
        ObjectReader {
            inner: Arc::new(Inner {
                store,
                key: key.to_string(),
                uri,
                stored_size: size,
                layout: Layout::Seekable {
                    logical_size: trailer.logical_size,
                    crc32c: trailer.crc32c,
                    byte_group: trailer.byte_group as usize,
                    frames,
                },
                recorded_crc32c: None,
            }),
        }
    }

    pub fn codec(&self) -> Codec {
        match self.inner.layout {
            Layout::Plain => Codec::None,
            Layout::Seekable { .. } => Codec::ZstdSeekable,
        }
    }

    pub fn logical_size(&self) -> u64 {
        match self.inner.layout {
            Layout::Plain => self.inner.stored_size,
            Layout::Seekable { logical_size, .. } => logical_size,
        }
    }

    pub fn stored_size(&self) -> u64 {
        self.inner.stored_size
    }

    /// Element width of the byte-grouping filter, when the object uses it.
    pub fn byte_group(&self) -> Option<usize> {
        match self.inner.layout {
            Layout::Seekable { byte_group, .. } if byte_group > 0 => Some(byte_group),
            _ => None,
        }
    }

    /// CRC32C of the logical bytes: the trailer's for a compressed object,
    /// the one the store recorded for a plain object s3dlio wrote
    /// (`ObjectMeta::plain`), else `None`.
    pub fn crc32c(&self) -> Option<u32> {
        match self.inner.layout {
            Layout::Plain => self.inner.recorded_crc32c,
            Layout::Seekable { crc32c, .. } => Some(crc32c),
        }
    }

    pub fn uri(&self) -> String {
        self.inner.uri.clone()
    }

    /// Logical bytes `start..start + dst.len()` into `dst`, as `read_range`
    /// reads them, for a caller that reuses its buffer; a range past the
    /// end of the object is an error.
    pub async fn read_range_into(&self, start: u64, dst: &mut [u8]) -> Result<()> {
        let size = self.logical_size();
        let end = start.saturating_add(dst.len() as u64);
        if end > size {
            return Err(Error::invalid(format!(
                "{}: bytes {start}..{end} asked of an object of {size} bytes",
                self.inner.uri
            )));
        }
        match &self.inner.layout {
            Layout::Plain => self
                .inner
                .store
                .get_range_into(&self.inner.key, start, dst)
                .await
                .map_err(|e| self.inner.shorter(e)),
            Layout::Seekable { .. } => self.fill(start, dst).await,
        }
    }

    /// Logical bytes `range`, the end clipped to the object. Compressed
    /// objects fetch and decompress only the frames that cover it, each
    /// checked against its CRC32C.
    pub async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let size = self.logical_size();
        if range.start > size {
            return Err(Error::invalid(format!(
                "{}: range starts at {} but the object has {size} bytes",
                self.inner.uri, range.start
            )));
        }
        let end = range.end.min(size);
        if end <= range.start {
            return Ok(Bytes::new());
        }
        let len = (end - range.start) as usize;
        let frames = match &self.inner.layout {
            Layout::Plain => {
                let data = self
                    .inner
                    .store
                    .get_range(&self.inner.key, range.start..end)
                    .await
                    .map_err(|e| self.inner.shorter(e))?;
                self.inner.check_len(data.len() as u64, len as u64)?;
                return Ok(data);
            }
            Layout::Seekable { frames, .. } => frames,
        };
        let covering = covering(frames, range.start, end);
        if covering.len() == 1 {
            // One frame: hand out a slice of it instead of copying.
            let i = covering.start;
            let data = Inner::load_frame(self.inner.clone(), i).await?;
            let skip = (range.start - frames[i].logical_off) as usize;
            return Ok(data.slice(skip..skip + len));
        }
        let mut out = zeroed(&self.inner.uri, len)?;
        self.fill(range.start, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// The whole object. Checked against `expected` when given, else (for
    /// compressed objects) against the CRC32C in the trailer.
    pub async fn read_all(&self, expected: Option<u32>) -> Result<Bytes> {
        match &self.inner.layout {
            Layout::Plain => {
                let data = self.inner.store.get(&self.inner.key).await?;
                self.inner
                    .check_len(data.len() as u64, self.inner.stored_size)?;
                if let Some(expected) = expected.or(self.inner.recorded_crc32c) {
                    let actual = crc_of(&self.inner.uri, data.clone()).await?;
                    self.inner.check_crc(expected, actual)?;
                }
                Ok(data)
            }
            Layout::Seekable { logical_size, .. } => {
                let len = usize::try_from(*logical_size).map_err(|_| {
                    Error::invalid(format!(
                        "{}: {logical_size} bytes do not fit in memory",
                        self.inner.uri
                    ))
                })?;
                let mut out = zeroed(&self.inner.uri, len)?;
                self.read_into(&mut out, expected).await?;
                Ok(Bytes::from(out))
            }
        }
    }

    /// The whole object into `dst`, which must be exactly `logical_size`
    /// bytes. Frames are fetched ahead and decompressed in parallel straight
    /// into their slice of `dst`.
    pub async fn read_into(&self, dst: &mut [u8], expected: Option<u32>) -> Result<()> {
        let size = self.logical_size();
        if dst.len() as u64 != size {
            return Err(Error::invalid(format!(
                "{}: destination has {} bytes, the object has {size}",
                self.inner.uri,
                dst.len()
            )));
        }
        match &self.inner.layout {
            Layout::Plain => {
                let expected = expected.or(self.inner.recorded_crc32c);
                let actual = self.read_plain_into(dst, expected.is_some()).await?;
                if let Some(expected) = expected {
                    self.inner.check_crc(expected, actual)?;
                }
                Ok(())
            }
            Layout::Seekable { crc32c, .. } => {
                self.fill(0, dst).await?;
                // Every frame matched its CRC and those combine to the
                // trailer's (checked at open), so that is the data's CRC.
                if let Some(expected) = expected {
                    self.inner.check_crc(expected, *crc32c)?;
                }
                Ok(())
            }
        }
    }

    /// Plain object into `dst` by parallel ranged reads, each written
    /// straight into its slice of `dst` by the store; returns the CRC32C of
    /// the bytes when `want_crc`, else 0.
    async fn read_plain_into(&self, dst: &mut [u8], want_crc: bool) -> Result<u32> {
        let inner = &self.inner;
        let reads = dst
            .chunks_mut(PLAIN_PART as usize)
            .enumerate()
            .map(|(p, chunk)| async move {
                let len = chunk.len() as u64;
                inner
                    .store
                    .get_range_into(&inner.key, p as u64 * PLAIN_PART, chunk)
                    .await
                    .map_err(|e| inner.shorter(e))?;
                // Hardware CRC32C of one part takes well under a millisecond.
                let crc = if want_crc { crc32c(chunk) } else { 0 };
                Ok::<_, Error>((p, crc, len))
            })
            .collect::<Vec<_>>();
        let mut parts = stream::iter(reads)
            .buffer_unordered(READ_AHEAD)
            .try_collect::<Vec<_>>()
            .await?;
        parts.sort_unstable_by_key(|(p, _, _)| *p);
        Ok(parts.into_iter().fold(0u32, |crc, (_, part_crc, len)| {
            crc32c_combine(crc, part_crc, len)
        }))
    }

    /// Logical bytes `start..start + dst.len()` of a compressed object.
    async fn fill(&self, start: u64, dst: &mut [u8]) -> Result<()> {
        let Layout::Seekable { frames, .. } = &self.inner.layout else {
            return Err(Error::invalid("fill on a plain object"));
        };
        let end = start + dst.len() as u64;
        let covering = covering(frames, start, end);
        let mut parts = Vec::with_capacity(covering.len());
        let mut rest = dst;
        for index in covering.clone() {
            let f = &frames[index];
            let lo = start.max(f.logical_off);
            let hi = end.min(f.logical_end());
            let (dst, tail) = rest.split_at_mut((hi - lo) as usize);
            parts.push(Part {
                index,
                skip: (lo - f.logical_off) as usize,
                dst,
            });
            rest = tail;
        }
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        #[cfg(test)]
        let multi_thread = multi_thread && !FORCE_COPYING.load(Ordering::Relaxed);
        if multi_thread && parts.len() > 1 {
            self.fill_in_place(parts)
        } else {
            self.fill_copying(parts).await
        }
    }

    /// Decompress on scoped threads straight into `dst`, with frames fetched
    /// by a task ahead of them. `block_in_place` keeps the runtime going
    /// meanwhile and, being synchronous, means no thread can outlive the
    /// borrow of `dst` even if the caller's future is dropped.
    fn fill_in_place(&self, parts: Vec<Part<'_>>) -> Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<(usize, Bytes)>>(READ_AHEAD);
        let indices: Vec<usize> = parts.iter().map(|p| p.index).collect();
        let inner = self.inner.clone();
        let fetcher = tokio::spawn(async move {
            let mut fetched = stream::iter(indices)
                .map(|i| {
                    let inner = inner.clone();
                    async move { inner.fetch_frame(i).await.map(|raw| (i, raw)) }
                })
                .buffered(READ_AHEAD);
            while let Some(item) = fetched.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });

        let total = parts.len();
        let workers = resolve_threads(0).min(total);
        let decoded = AtomicUsize::new(0);
        // Frames arrive in order, so taking the next frame and the next part
        // under one lock pairs them up.
        let queue = Mutex::new((rx, parts.into_iter()));
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let inner = &*self.inner;
        tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        let fail = |e: Error| {
                            stop.store(true, Ordering::Relaxed);
                            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                            q.0.close();
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        };
                        let mut scratch = Vec::new();
                        let mut dctx = match Decompressor::new() {
                            Ok(d) => d,
                            Err(e) => {
                                return fail(Error::backend(
                                    &inner.uri,
                                    format!("cannot create a zstd decompressor: {e}"),
                                    false,
                                ))
                            }
                        };
                        while !stop.load(Ordering::Relaxed) {
                            let (item, part) = {
                                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                                let item = q.0.blocking_recv();
                                (item, q.1.next())
                            };
                            let (Some(item), Some(part)) = (item, part) else {
                                break;
                            };
                            let done = item.and_then(|(i, raw)| {
                                debug_assert_eq!(i, part.index);
                                inner.decode_part(&mut dctx, &mut scratch, &raw, part)
                            });
                            if let Err(e) = done {
                                return fail(e);
                            }
                            decoded.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            })
        });
        fetcher.abort();
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        // The fetch task ended early without reporting (it panicked): the
        // rest of dst was never written, so this must not pass as success.
        let decoded = decoded.into_inner();
        if decoded != total {
            return Err(Error::backend(
                &self.inner.uri,
                format!("read stopped after {decoded} of {total} frames"),
                true,
            ));
        }
        Ok(())
    }

    /// Fetch and decompress on tokio's blocking threads, then copy into
    /// place: for single frames and current-thread runtimes.
    async fn fill_copying(&self, parts: Vec<Part<'_>>) -> Result<()> {
        let indices: Vec<usize> = parts.iter().map(|p| p.index).collect();
        let mut loaded = stream::iter(indices)
            .map(|i| Inner::load_frame(self.inner.clone(), i))
            .buffered(READ_AHEAD);
        let mut parts = parts.into_iter();
        while let Some(frame) = loaded.try_next().await? {
            let Some(part) = parts.next() else {
                break;
            };
            let n = part.dst.len();
            part.dst.copy_from_slice(&frame[part.skip..part.skip + n]);
        }
        Ok(())
    }
}

impl Inner {
    fn frames(&self) -> &[Frame] {
        match &self.layout {
            Layout::Plain => &[],
            Layout::Seekable { frames, .. } => frames,
        }
    }

    fn check_len(&self, got: u64, want: u64) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(Error::corrupt(
                &self.uri,
                format!("expected {want} bytes, read {got} (truncated or changed while reading?)"),
            ))
        }
    }

    /// A read inside the size this reader was opened with, refused as
    /// past the end: the object is shorter than that (cut short, or
    /// replaced while being read). Damage, not a bad request.
    fn shorter(&self, e: Error) -> Error {
        match e {
            Error::InvalidInput(reason) => Error::corrupt(
                &self.uri,
                format!(
                    "shorter than its recorded {} stored bytes (truncated or changed while reading?): {reason}",
                    self.stored_size
                ),
            ),
            other => other,
        }
    }

    fn check_crc(&self, expected: u32, actual: u32) -> Result<()> {
        if expected == actual {
            Ok(())
        } else {
            Err(Error::Integrity {
                uri: self.uri.clone(),
                offset: 0,
                expected,
                actual,
            })
        }
    }

    /// The stored bytes of frame `i`.
    async fn fetch_frame(&self, i: usize) -> Result<Bytes> {
        let f = self.frames()[i];
        let raw = self
            .store
            .get_range_view(&self.key, f.stored_off..f.stored_off + f.stored_len)
            .await
            .map_err(|e| self.shorter(e))?;
        if raw.len() as u64 != f.stored_len {
            return Err(Error::corrupt(
                &self.uri,
                format!(
                    "frame {i}: read {} of its {} stored bytes at offset {}",
                    raw.len(),
                    f.stored_len,
                    f.stored_off
                ),
            ));
        }
        Ok(raw)
    }

    /// Frame `i` fetched, decompressed on a blocking thread and verified.
    async fn load_frame(this: Arc<Inner>, i: usize) -> Result<Bytes> {
        let raw = this.fetch_frame(i).await?;
        let worker = this.clone();
        tokio::task::spawn_blocking(move || {
            DCTX.with(|slot| {
                let mut slot = slot.borrow_mut();
                let (dctx, scratch) = match slot.take() {
                    Some(state) => slot.insert(state),
                    None => slot.insert((
                        Decompressor::new().map_err(|e| {
                            Error::backend(
                                &worker.uri,
                                format!("cannot create a zstd decompressor: {e}"),
                                false,
                            )
                        })?,
                        Vec::new(),
                    )),
                };
                let mut out = vec![0u8; worker.frames()[i].logical_len];
                worker.decode_frame(dctx, scratch, i, &raw, &mut out)?;
                Ok(Bytes::from(out))
            })
        })
        .await
        .map_err(|e| Error::backend(&this.uri, format!("decoding task failed: {e}"), false))?
    }

    /// Decompress `raw` (frame `part.index`) into `part.dst`.
    fn decode_part(
        &self,
        dctx: &mut Decompressor<'_>,
        scratch: &mut Vec<u8>,
        raw: &[u8],
        part: Part<'_>,
    ) -> Result<()> {
        let f = &self.frames()[part.index];
        if part.skip == 0 && part.dst.len() == f.logical_len {
            return self.decode_frame(dctx, scratch, part.index, raw, part.dst);
        }
        let mut whole = vec![0u8; f.logical_len];
        self.decode_frame(dctx, scratch, part.index, raw, &mut whole)?;
        let n = part.dst.len();
        part.dst.copy_from_slice(&whole[part.skip..part.skip + n]);
        Ok(())
    }

    /// Decompress frame `i` into `out` (exactly its logical length) and
    /// check its CRC32C. `scratch` is where byte-grouped frames are
    /// decompressed before their planes are merged into `out`.
    fn decode_frame(
        &self,
        dctx: &mut Decompressor<'_>,
        scratch: &mut Vec<u8>,
        i: usize,
        raw: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let f = &self.frames()[i];
        let decoded = match &self.layout {
            Layout::Seekable { byte_group, .. } if *byte_group > 0 => {
                grouped::decompress(dctx, raw, *byte_group, scratch, out)
            }
            _ => dctx.decompress_to_buffer(raw, out).map(|n| (n, None)),
        };
        let (n, merged_crc) = decoded.map_err(|e| {
            Error::corrupt(
                &self.uri,
                format!(
                    "frame {i} (stored bytes {}..{}) does not decompress: {e}",
                    f.stored_off,
                    f.stored_off + f.stored_len
                ),
            )
        })?;
        if n != f.logical_len {
            return Err(Error::corrupt(
                &self.uri,
                format!(
                    "frame {i} decompressed to {n} bytes, the seek table says {}",
                    f.logical_len
                ),
            ));
        }
        let actual = merged_crc.unwrap_or_else(|| crc32c(out));
        if actual != f.crc32c {
            return Err(Error::Integrity {
                uri: self.uri.clone(),
                offset: f.logical_off,
                expected: f.crc32c,
                actual,
            });
        }
        Ok(())
    }
}

thread_local! {
    // Blocking threads are reused; keep one decompression context each.
    // (with the scratch buffer byte-grouped frames decompress into).
    static DCTX: std::cell::RefCell<Option<(Decompressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Indices of the frames overlapping logical bytes `start..end` (non-empty).
fn covering(frames: &[Frame], start: u64, end: u64) -> Range<usize> {
    let first = frames.partition_point(|f| f.logical_end() <= start);
    let last = frames.partition_point(|f| f.logical_off < end);
    first..last.max(first)
}

/// CRC32C of `data`, off the async threads when it is large.
async fn crc_of(uri: &str, data: Bytes) -> Result<u32> {
    if data.len() < (1 << 20) {
        return Ok(crc32c(&data));
    }
    tokio::task::spawn_blocking(move || crc32c(&data))
        .await
        .map_err(|e| Error::backend(uri, format!("checksum task failed: {e}"), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encoder::tests::floats;
    use crate::codec::{EncodeOptions, EncodingWriter};
    use crate::store::memory::MemoryStore;
    use crate::store::PutOptions;

    const FRAME: usize = 4096;

    async fn put_encoded(store: &Arc<MemoryStore>, key: &str, data: &[u8], level: Option<i32>) {
        let inner = store.writer(key, &PutOptions::default()).await.unwrap();
        let opts = EncodeOptions {
            level,
            frame_size: FRAME,
            threads: 2,
            byte_group: None,
            byte_group_auto: false,
        };
        let mut w = EncodingWriter::new(inner, store.uri(key), opts).unwrap();
        for chunk in data.chunks(3001) {
            w.write_slice(chunk).await.unwrap();
        }
        w.finish().await.unwrap();
    }

    fn dyn_store(store: &Arc<MemoryStore>) -> Arc<dyn ObjectStore> {
        store.clone()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ranges_across_frame_boundaries() {
        let store = MemoryStore::new();
        let data = floats(7 * FRAME + 1000, 11);
        put_encoded(&store, "r.zst", &data, Some(3)).await;
        let r = ObjectReader::open(dyn_store(&store), "r.zst")
            .await
            .unwrap();
        assert_eq!(r.logical_size(), data.len() as u64);
        assert!(r.uri().ends_with("r.zst"));
        let n = data.len() as u64;
        let f = FRAME as u64;
        let cases = [
            0..0,
            0..1,
            0..f,
            0..f + 1,
            f - 1..f + 1,
            f..2 * f,
            f + 5..3 * f - 5,
            3 * f - 1..6 * f + 1,
            n - 1..n,
            n - 1000..n,
            7 * f..n,
            0..n,
            5..n + 100,
            n..n,
            n..n + 10,
        ];
        put_encoded(&store, "r.bin", &data, None).await;
        let plain = ObjectReader::open(dyn_store(&store), "r.bin")
            .await
            .unwrap();
        for range in cases {
            let got = r.read_range(range.clone()).await.unwrap();
            let end = range.end.min(n) as usize;
            let start = (range.start as usize).min(end);
            assert_eq!(&got[..], &data[start..end], "range {range:?}");
            // Into a reused buffer, compressed and plain: the same bytes,
            // and a range past the end is an error rather than clipped.
            for reader in [&r, &plain] {
                let mut dst = vec![0xAA; (range.end - range.start) as usize];
                let into = reader.read_range_into(range.start, &mut dst).await;
                if range.end <= n {
                    into.unwrap();
                    assert_eq!(&dst[..], &data[start..end], "into {range:?}");
                } else {
                    assert!(matches!(into, Err(Error::InvalidInput(_))), "{range:?}");
                }
            }
        }
        assert!(matches!(
            r.read_range(n + 1..n + 2).await,
            Err(Error::InvalidInput(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn read_into_and_expected_crc() {
        let store = MemoryStore::new();
        let data = floats(9 * FRAME + 17, 12);
        put_encoded(&store, "i.zst", &data, Some(1)).await;
        let r = ObjectReader::open(dyn_store(&store), "i.zst")
            .await
            .unwrap();
        let mut dst = vec![0u8; data.len()];
        r.read_into(&mut dst, Some(crc32c(&data))).await.unwrap();
        assert_eq!(dst, data);
        let mut dst = vec![0u8; data.len()];
        r.read_into(&mut dst, None).await.unwrap();
        assert_eq!(dst, data);
        let err = r
            .read_into(&mut dst, Some(crc32c(&data) ^ 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Integrity { uri, .. } if uri.ends_with("i.zst")),
            "{err}"
        );
        let err = r.read_all(Some(0xDEAD)).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }));
        let mut short = vec![0u8; data.len() - 1];
        assert!(matches!(
            r.read_into(&mut short, None).await,
            Err(Error::InvalidInput(_))
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn current_thread_runtime_reads_too() {
        let store = MemoryStore::new();
        let data = floats(5 * FRAME + 3, 13);
        put_encoded(&store, "c.zst", &data, Some(2)).await;
        let r = ObjectReader::open(dyn_store(&store), "c.zst")
            .await
            .unwrap();
        assert_eq!(&r.read_all(None).await.unwrap()[..], &data[..]);
        let got = r.read_range(100..4 * FRAME as u64).await.unwrap();
        assert_eq!(&got[..], &data[100..4 * FRAME]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plain_objects() {
        let store = MemoryStore::new();
        let data = floats(20 << 20, 14);
        put_encoded(&store, "p.bin", &data, None).await;
        let r = ObjectReader::open(dyn_store(&store), "p.bin")
            .await
            .unwrap();
        assert_eq!(r.codec(), Codec::None);
        assert_eq!(r.crc32c(), None);
        assert_eq!(r.logical_size(), data.len() as u64);
        assert_eq!(r.stored_size(), data.len() as u64);
        assert_eq!(
            &r.read_all(Some(crc32c(&data))).await.unwrap()[..],
            &data[..]
        );
        assert!(matches!(
            r.read_all(Some(1)).await,
            Err(Error::Integrity { .. })
        ));
        let mut dst = vec![0u8; data.len()];
        r.read_into(&mut dst, Some(crc32c(&data))).await.unwrap();
        assert_eq!(dst, data);
        let got = r.read_range(10..(9 << 20)).await.unwrap();
        assert_eq!(&got[..], &data[10..9 << 20]);

        let small = ObjectReader::open_plain(dyn_store(&store), "p.bin", data.len() as u64, None)
            .await
            .unwrap();
        assert_eq!(&small.read_range(0..5).await.unwrap()[..], &data[..5]);

        // Plain bytes that happen to end with the seekable magic but carry no
        // valid seek table are corrupt, not silently plain.
        let mut fake = b"hello".to_vec();
        fake.extend_from_slice(&crate::format::seekable::SEEKABLE_MAGIC.to_le_bytes());
        store
            .put("fake", Bytes::from(fake), &PutOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            ObjectReader::open(dyn_store(&store), "fake").await,
            Err(Error::Corrupt { .. })
        ));
        // A foreign seekable archive (seek table, no s3dlio metadata) is plain.
        let frame = zstd::bulk::compress(b"foreign", 3).unwrap();
        let mut foreign = frame.clone();
        foreign.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        foreign.extend_from_slice(&17u32.to_le_bytes());
        foreign.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        foreign.extend_from_slice(&7u32.to_le_bytes());
        foreign.extend_from_slice(&1u32.to_le_bytes());
        foreign.push(0);
        foreign.extend_from_slice(&crate::format::seekable::SEEKABLE_MAGIC.to_le_bytes());
        store
            .put(
                "foreign.zst",
                Bytes::from(foreign.clone()),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let r = ObjectReader::open(dyn_store(&store), "foreign.zst")
            .await
            .unwrap();
        assert_eq!(r.codec(), Codec::None);
        assert_eq!(&r.read_all(None).await.unwrap()[..], &foreign[..]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn empty_objects() {
        let store = MemoryStore::new();
        for (key, level) in [("e.zst", Some(3)), ("e.bin", None)] {
            put_encoded(&store, key, &[], level).await;
            let r = ObjectReader::open(dyn_store(&store), key).await.unwrap();
            assert_eq!(r.logical_size(), 0);
            assert_eq!(
                r.codec(),
                if level.is_some() {
                    Codec::ZstdSeekable
                } else {
                    Codec::None
                }
            );
            assert!(r.read_all(Some(0)).await.unwrap().is_empty());
            assert!(r.read_range(0..10).await.unwrap().is_empty());
            r.read_into(&mut [], Some(0)).await.unwrap();
        }
        let r = ObjectReader::open(dyn_store(&store), "e.zst")
            .await
            .unwrap();
        assert_eq!(r.crc32c(), Some(0));
        assert!(r.stored_size() > 0);
    }

    /// Callers spawn these futures on the multi-thread runtime.
    #[allow(dead_code)]
    fn futures_are_send(
        r: ObjectReader,
        w: EncodingWriter,
        w2: &'static mut EncodingWriter,
        dst: &'static mut [u8],
    ) {
        fn is_send<T: Send>(_: &T) {}
        is_send(&w2.write_slice(&[]));
        is_send(&r);
        is_send(&r.read_into(dst, None));
        is_send(&r.read_range(0..1));
        is_send(&r.read_all(None));
        is_send(&ObjectReader::open(dyn_store(&MemoryStore::new()), "k"));
        is_send(&w.finish());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missing_object_is_not_found() {
        let store = MemoryStore::new();
        assert!(ObjectReader::open(dyn_store(&store), "nope")
            .await
            .unwrap_err()
            .is_not_found());
    }

    /// Flip every byte of the stored object in turn (sampled for speed):
    /// each read either fails naming the uri or returns exactly the data.
    #[tokio::test(flavor = "multi_thread")]
    async fn flipped_bytes_never_give_wrong_data() {
        let store = MemoryStore::new();
        let data = floats(4 * FRAME + 100, 15);
        put_encoded(&store, "src.zst", &data, Some(3)).await;
        let stored = store.get("src.zst").await.unwrap();
        let uri_of = |k: &str| store.uri(k);
        let mut detected = 0;
        let step = (stored.len() / 600).max(1);
        for pos in (0..stored.len())
            .step_by(step)
            .chain(stored.len() - 60..stored.len())
        {
            let mut bad = stored.to_vec();
            bad[pos] ^= 0x5A;
            let key = "bad.zst";
            store
                .put(key, Bytes::from(bad.clone()), &PutOptions::default())
                .await
                .unwrap();
            let outcome = async {
                let r = ObjectReader::open(dyn_store(&store), key).await?;
                let all = r.read_all(None).await?;
                let mid = r
                    .read_range(FRAME as u64 - 10..2 * FRAME as u64 + 10)
                    .await?;
                Ok::<_, Error>((r.codec(), all, mid))
            }
            .await;
            match outcome {
                Err(Error::Integrity { uri, .. }) | Err(Error::Corrupt { uri, .. }) => {
                    assert_eq!(uri, uri_of(key));
                    detected += 1;
                }
                Err(other) => panic!("flip at {pos}: unexpected error {other}"),
                Ok((Codec::ZstdSeekable, all, mid)) => {
                    assert_eq!(&all[..], &data[..], "flip at {pos} gave wrong data");
                    assert_eq!(&mid[..], &data[FRAME - 10..2 * FRAME + 10]);
                }
                Ok((Codec::None, all, _)) => {
                    // Only a flip in the final magic can hide the trailer; the
                    // object then reads as its stored bytes, never mis-decoded
                    // ones (callers that know the codec or CRC catch this).
                    assert!(pos >= stored.len() - 4, "flip at {pos} made it look plain");
                    assert_eq!(&all[..], &bad[..], "flip at {pos}");
                }
            }
        }
        assert!(detected > 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn flipped_frame_byte_is_integrity_or_corrupt() {
        let store = MemoryStore::new();
        let data = floats(3 * FRAME, 16);
        put_encoded(&store, "x.zst", &data, Some(1)).await;
        let stored = store.get("x.zst").await.unwrap();
        // Middle of the second frame's compressed bytes.
        let Ok(crate::format::seekable::Sniff::Seekable(t)) =
            crate::format::seekable::parse_tail(&stored, stored.len() as u64)
        else {
            panic!("not seekable")
        };
        let f0 = t.frames[0].compressed_size as usize;
        let pos = f0 + t.frames[1].compressed_size as usize / 2;
        let mut bad = stored.to_vec();
        bad[pos] ^= 1;
        store
            .put("x.zst", Bytes::from(bad), &PutOptions::default())
            .await
            .unwrap();
        let r = ObjectReader::open(dyn_store(&store), "x.zst")
            .await
            .unwrap();
        // Frame 0 is intact and still readable on its own.
        assert_eq!(&r.read_range(0..100).await.unwrap()[..], &data[..100]);
        for err in [
            r.read_all(None).await.unwrap_err(),
            r.read_range(FRAME as u64..FRAME as u64 + 1)
                .await
                .unwrap_err(),
        ] {
            match err {
                Error::Integrity { uri, offset, .. } => {
                    assert_eq!(uri, store.uri("x.zst"));
                    assert_eq!(offset, FRAME as u64);
                }
                Error::Corrupt { uri, .. } => assert_eq!(uri, store.uri("x.zst")),
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn big_trailer_needs_second_tail_read() {
        let store = MemoryStore::new();
        // 6,000 one-byte-ish frames: trailer ~72 KiB, more than the first read.
        let data = floats(6000 * 16, 17);
        let inner = store.writer("t.zst", &PutOptions::default()).await.unwrap();
        let opts = EncodeOptions {
            level: Some(1),
            frame_size: 16,
            threads: 2,
            byte_group: None,
            byte_group_auto: false,
        };
        let mut w = EncodingWriter::new(inner, store.uri("t.zst"), opts).unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        let meta = w.finish().await.unwrap();
        assert!(meta.ratio() > 1.0);
        let r = ObjectReader::open(dyn_store(&store), "t.zst")
            .await
            .unwrap();
        assert_eq!(r.codec(), Codec::ZstdSeekable);
        assert_eq!(&r.read_all(None).await.unwrap()[..], &data[..]);
        assert_eq!(
            &r.read_range(999..1234).await.unwrap()[..],
            &data[999..1234]
        );
    }
}
