//! Whole-object operations on URIs, shared by the Python module and the CLI:
//! every byte passes through the codec, so compression and CRC32C behave
//! the same on every backend.

use std::ops::Range;
use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::codec::{EncodeOptions, EncodedMeta, EncodingWriter, ObjectReader};
use crate::error::{Error, Result};
use crate::store::{Location, PutOptions};

/// Read size for streaming file uploads and downloads.
const CHUNK: usize = 8 << 20;
/// Bytes one download step asks the store for: large enough that object
/// stores fetch it as several parallel ranged GETs, small enough to keep
/// memory bounded.
const DOWNLOAD_WINDOW: u64 = 64 << 20;

/// Encoding of one write: compression level and put options.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub encode: EncodeOptions,
    pub put: PutOptions,
}

impl WriteOptions {
    /// Refuse out-of-range settings before anything is allocated or
    /// written: level, compression threads (0 = one per core), part size,
    /// concurrency.
    pub fn check(&self) -> Result<()> {
        if let Some(level) = self.encode.level {
            crate::codec::check_level(level)?;
        }
        if self.encode.threads != 0 {
            crate::limits::threads("compression_threads", self.encode.threads as u64)?;
        }
        crate::limits::part_size("part_size", self.put.part_size as u64)?;
        crate::limits::threads("concurrency", self.put.concurrency as u64)?;
        Ok(())
    }

    pub fn with_level(level: Option<i32>) -> Self {
        WriteOptions {
            encode: EncodeOptions {
                level,
                ..Default::default()
            },
            put: PutOptions::default(),
        }
    }
}

/// A streaming encoded writer on `loc`.
pub async fn open_writer(loc: &Location, opts: &WriteOptions) -> Result<EncodingWriter> {
    opts.check()?;
    let put = PutOptions {
        plain: opts.encode.level.is_none(),
        ..opts.put.clone()
    };
    let inner = loc.store.writer(&loc.key, &put).await?;
    EncodingWriter::new(inner, loc.uri(), opts.encode.clone())
}

/// Store `data` at `loc`, compressed when a level is set.
pub async fn put_object(loc: &Location, data: &[u8], opts: &WriteOptions) -> Result<EncodedMeta> {
    let mut opts = sized(loc, opts, data.len() as u64)?;
    let in_parts = loc
        .store
        .single_put_limit(&opts.put)
        .is_some_and(|limit| data.len() as u64 >= limit);
    if opts.encode.level.is_none() && in_parts {
        // Known before the first byte goes: a store that uploads it in
        // parts can record it with the object where it would otherwise
        // keep none (S3 multipart). Other writes need no extra pass.
        opts.put.crc32c = Some(crate::crc::crc32c(data));
    }
    let mut w = open_writer(loc, &opts).await?;
    for chunk in data.chunks(CHUNK.max(1)) {
        if let Err(e) = w.write_slice(chunk).await {
            w.abort().await?;
            return Err(e);
        }
    }
    w.finish().await
}

/// The logical (decompressed, verified) bytes of the object at `loc`.
pub async fn get_object(loc: &Location) -> Result<Bytes> {
    ObjectReader::open(loc.store.clone(), &loc.key)
        .await?
        .read_all(None)
        .await
}

/// Logical bytes `range` of the object at `loc`.
pub async fn get_object_range(loc: &Location, range: Range<u64>) -> Result<Bytes> {
    ObjectReader::open(loc.store.clone(), &loc.key)
        .await?
        .read_range(range)
        .await
}

/// `opts` for an object of `size` bytes: an automatic byte group that does
/// not fit is off, an explicit one that does not fit is an error.
fn sized(loc: &Location, opts: &WriteOptions, size: u64) -> Result<WriteOptions> {
    Ok(WriteOptions {
        encode: opts.encode.for_size(&loc.uri(), size)?,
        put: opts.put.clone(),
    })
}

/// Stream a local file to `loc` with bounded memory.
pub async fn upload_file(path: &Path, loc: &Location, opts: &WriteOptions) -> Result<EncodedMeta> {
    let shown = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| Error::from_io(&shown, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::from_io(&shown, e))?
        .len();
    let opts = sized(loc, opts, size)?;
    let mut w = open_writer(loc, &opts).await?;
    loop {
        let task = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let res = read_full(&mut file, &mut buf);
            (file, buf, res)
        });
        let (f, mut buf, res) = match task.await {
            Ok(t) => t,
            Err(e) => {
                w.abort().await?;
                return Err(Error::backend(
                    &shown,
                    format!("read task failed: {e}"),
                    false,
                ));
            }
        };
        file = f;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                w.abort().await?;
                return Err(Error::from_io(&shown, e));
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if let Err(e) = w.write(Bytes::from(buf)).await {
            w.abort().await?;
            return Err(e);
        }
    }
    w.finish().await
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Stream the object at `loc` into a local file (temp + rename), verifying
/// its CRC32C when it carries one. Returns the logical size.
pub async fn download_file(loc: &Location, path: &Path) -> Result<u64> {
    let reader = ObjectReader::open(loc.store.clone(), &loc.key).await?;
    let dest = crate::store::open_store(&path.to_string_lossy(), &Default::default())?;
    // Without a level the codec passes bytes through untouched.
    let meta = copy_object(&reader, &dest, &WriteOptions::default(), &|_| {}).await?;
    Ok(meta.logical_size)
}

/// Copy the logical bytes `reader` yields to `dst`, encoded by `opts`,
/// checking the source's CRC32C before the copy becomes visible.
/// `progress` hears the size of each step once it is written.
pub async fn copy_object(
    reader: &ObjectReader,
    dst: &Location,
    opts: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EncodedMeta> {
    let opts = sized(dst, opts, reader.logical_size())?;
    let out = open_writer(dst, &opts).await?;
    copy_into(reader, out, progress).await
}

/// Copy the stored bytes of an object, whatever their encoding, to `dst`
/// as they are: `reader` is opened with [`ObjectReader::open_plain`] on
/// them. The copy is marked plain ([`PutOptions::plain`]) only when the
/// source was (`source_plain`): `open_writer` would mark any write without
/// a level, and these bytes may be a compressed object's.
pub async fn copy_stored(
    reader: &ObjectReader,
    dst: &Location,
    source_plain: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EncodedMeta> {
    let put = PutOptions {
        plain: source_plain,
        ..PutOptions::default()
    };
    let inner = dst.store.writer(&dst.key, &put).await?;
    let out = EncodingWriter::new(inner, dst.uri(), EncodeOptions::default())?;
    copy_into(reader, out, progress).await
}

/// Stream `reader` into `out` and finish it once the logical bytes match
/// the source's CRC32C (the encoder keeps theirs), or abort it on any
/// error: nothing partial or unverified becomes visible.
async fn copy_into(
    reader: &ObjectReader,
    mut out: EncodingWriter,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EncodedMeta> {
    if let Err(e) = stream(reader, &mut out, progress).await {
        out.abort().await?;
        return Err(e);
    }
    let source = reader.crc32c().map(|crc| (crc, reader.uri()));
    out.finish_checked(source).await
}

/// Every logical byte of `reader` into `sink`, one window at a time (on
/// object stores a window is fetched as parallel ranged GETs). The next
/// window is fetched while the current one is written, so source and
/// destination work at the same time (two windows in memory).
async fn stream(
    reader: &ObjectReader,
    sink: &mut EncodingWriter,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let size = reader.logical_size();
    // Windows are read into reused memory: the allocator maps a fresh
    // 64 MiB buffer anew for every window and each of its pages faults in
    // (262,144 minor faults per GiB downloaded; ~33,000 with reuse).
    let fetch = |pos: u64, mut buf: BytesMut| async move {
        let len = (pos + DOWNLOAD_WINDOW).min(size) - pos;
        buf.resize(len as usize, 0);
        reader.read_range_into(pos, &mut buf).await?;
        Ok::<_, Error>(buf.freeze())
    };
    let mut pos = 0u64;
    let mut spare = BytesMut::new();
    let mut piece = if size > 0 {
        fetch(0, BytesMut::new()).await?
    } else {
        Bytes::new()
    };
    while pos < size {
        let end = pos + piece.len() as u64;
        let next = std::mem::take(&mut spare);
        let ahead = async {
            if end < size {
                fetch(end, next).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (written, fetched) = tokio::join!(sink.write(piece.clone()), ahead);
        written?;
        progress(end - pos);
        pos = end;
        // Back to us unless the sink still holds it (frames being
        // compressed, parts in flight): then the next window gets new memory.
        spare = piece.try_into_mut().unwrap_or_default();
        match fetched? {
            Some(next) => piece = next,
            None => break,
        }
    }
    Ok(())
}
