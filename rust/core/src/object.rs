//! Whole-object operations on URIs, shared by the Python module and the CLI:
//! every byte passes through the codec, so compression and CRC32C behave
//! the same on every backend.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

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
    if let Some(level) = opts.encode.level {
        crate::codec::check_level(level)?;
    }
    let inner = loc.store.writer(&loc.key, &opts.put).await?;
    EncodingWriter::new(inner, loc.uri(), opts.encode.clone())
}

/// Store `data` at `loc`, compressed when a level is set.
pub async fn put_object(loc: &Location, data: &[u8], opts: &WriteOptions) -> Result<EncodedMeta> {
    let opts = sized(loc, opts, data.len() as u64)?;
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
    let mut out = dest.store.writer(&dest.key, &PutOptions::default()).await?;
    let size = reader.logical_size();
    let window = |pos: u64| pos..(pos + DOWNLOAD_WINDOW).min(size);
    let mut crc = 0u32;
    // The next window is fetched while the current one is written, so the
    // store and the disk work at the same time (two windows in memory).
    let mut piece = if size > 0 {
        match reader.read_range(window(0)).await {
            Ok(p) => Some(p),
            Err(e) => {
                out.abort().await?;
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut pos = window(0).end;
    while let Some(current) = piece.take() {
        crc = crate::codec::crc::crc32c_append(crc, &current);
        let next = (pos < size).then(|| window(pos));
        let fetch = async {
            match &next {
                Some(r) => reader.read_range(r.clone()).await.map(Some),
                None => Ok(None),
            }
        };
        let (written, fetched) = tokio::join!(out.write(current), fetch);
        match written.and(fetched) {
            Ok(p) => piece = p,
            Err(e) => {
                out.abort().await?;
                return Err(e);
            }
        }
        if let Some(r) = next {
            pos = r.end;
        }
    }
    if let Some(expected) = reader.crc32c() {
        if expected != crc {
            out.abort().await?;
            return Err(Error::Integrity {
                uri: reader.uri(),
                offset: 0,
                expected,
                actual: crc,
            });
        }
    }
    out.finish().await?;
    Ok(size)
}
