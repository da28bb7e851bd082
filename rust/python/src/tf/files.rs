//! The state behind TF's random-access and writable file handles.
//!
//! Reads of a plain file come from pieces fetched ahead of TF
//! ([`ReadAhead`]), a compressed file's from decoded windows; while the
//! bytes come in order from byte 0 they keep a CRC32C of everything read,
//! and a read that reaches the end checks it against the one recorded at
//! write time. Writes stream through the core's encoding writer (bounded
//! memory, multipart on object stores) and become visible only on close.

use std::sync::Mutex;

use bytes::Bytes;
use s3dlio_core::codec::crc::crc32c_append;
use s3dlio_core::codec::{Codec, EncodeOptions, EncodingWriter, ObjectReader};
use s3dlio_core::object::{open_writer, WriteOptions};
use s3dlio_core::runtime::block_on;
use s3dlio_core::store::PutOptions;
use s3dlio_core::{Error, Result};

use super::abi::code;
use super::integrity;
use super::read_ahead::ReadAhead;
use super::status::{Failure, OpResult};
use super::target::Target;

/// Bytes decoded per window of a compressed file (and copied per step
/// when an appendable file starts from its old bytes).
const WINDOW: u64 = 8 << 20;
/// Pieces in flight past the one TF reads (see [`ReadAhead`]): on S3 and
/// Azure as many as the raw-HTTP ceiling's threads; on direct:// enough
/// O_DIRECT reads to keep the device's queue busy; elsewhere the kernel
/// reads ahead itself.
const REMOTE_DEPTH: usize = 8;
const DIRECT_DEPTH: usize = 4;
const LOCAL_DEPTH: usize = 1;
/// Appends collected before they are handed to the writer.
const APPEND_BUFFER: usize = 8 << 20;

pub struct ReadFile {
    uri: String,
    reader: ObjectReader,
    size: u64,
    /// CRC32C of the whole logical file, when one was recorded.
    expected: Option<u32>,
    state: Mutex<ReadState>,
}

struct ReadState {
    /// A plain file's bytes, fetched ahead of TF's reads.
    plain: Option<ReadAhead>,
    /// A compressed file's decoded window.
    start: u64,
    window: Bytes,
    crc: CrcSoFar,
}

/// Bytes `0..end` have been read in order; `crc` is theirs.
#[derive(Default)]
struct CrcSoFar {
    end: u64,
    crc: u32,
}

impl ReadFile {
    pub fn open(uri: &str) -> Result<ReadFile> {
        let target = Target::open(uri)?;
        block_on(async {
            let reader = ObjectReader::open(target.loc.store.clone(), target.key()).await?;
            // A closed temporary file not yet renamed has its CRC32C only
            // in this process: reads of it are checked against that.
            let expected = match reader
                .crc32c()
                .or_else(|| integrity::pending_crc(&target.uri()))
            {
                Some(crc) => Some(crc),
                None => integrity::recorded(&target).await?,
            };
            let size = reader.logical_size();
            let plain = (reader.codec() == Codec::None).then(|| {
                let depth = if target.loc.store.is_remote() {
                    REMOTE_DEPTH
                } else if target.local.is_some() {
                    DIRECT_DEPTH
                } else {
                    LOCAL_DEPTH
                };
                let store = target.loc.store.clone();
                ReadAhead::new(store, target.key(), &target.uri(), size, depth)
            });
            Ok(ReadFile {
                uri: target.uri(),
                size,
                reader,
                expected,
                state: Mutex::new(ReadState {
                    plain,
                    start: 0,
                    window: Bytes::new(),
                    crc: CrcSoFar::default(),
                }),
            })
        })?
    }

    /// Fill `dst` from `offset`; returns the count copied, which is short
    /// (with OUT_OF_RANGE) only at the end of the file.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> (usize, OpResult<()>) {
        let mut done = 0usize;
        let r = self.read_counted(offset, dst, &mut done);
        (done, r)
    }

    fn read_counted(&self, offset: u64, dst: &mut [u8], done: &mut usize) -> OpResult<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ReadState {
            plain,
            start,
            window,
            crc,
        } = &mut *st;
        while *done < dst.len() {
            let pos = offset + *done as u64;
            if pos >= self.size {
                break;
            }
            let bytes = match plain {
                Some(pieces) => {
                    let read_end = (offset + dst.len() as u64).min(self.size);
                    pieces.bytes_at(pos, read_end, &mut |at, data| self.track_crc(crc, at, data))?
                }
                None => {
                    if pos < *start || pos >= *start + window.len() as u64 {
                        *window = self.decode_window(crc, pos, (dst.len() - *done) as u64)?;
                        *start = pos;
                    }
                    &window[(pos - *start) as usize..]
                }
            };
            let n = bytes.len().min(dst.len() - *done);
            dst[*done..*done + n].copy_from_slice(&bytes[..n]);
            *done += n;
        }
        if *done < dst.len() {
            return Err(Failure::new(
                code::OUT_OF_RANGE,
                format!(
                    "{}: read {} of {} bytes at offset {offset}: the file has {} bytes",
                    self.uri,
                    *done,
                    dst.len(),
                    self.size
                ),
            ));
        }
        Ok(())
    }

    /// The logical bytes of a compressed file from `pos`, at least `want`
    /// of them (or to the end), decoded in one go.
    fn decode_window(&self, crc: &mut CrcSoFar, pos: u64, want: u64) -> OpResult<Bytes> {
        let end = (pos + want.max(WINDOW)).min(self.size);
        let data = block_on(self.reader.read_range(pos..end))??;
        if data.len() as u64 != end - pos {
            return Err(Error::corrupt(
                &self.uri,
                format!("read {} bytes at {pos}, expected {}", data.len(), end - pos),
            )
            .into());
        }
        self.track_crc(crc, pos, &data)?;
        Ok(data)
    }

    fn track_crc(&self, so_far: &mut CrcSoFar, pos: u64, data: &[u8]) -> OpResult<()> {
        if pos != so_far.end {
            return Ok(());
        }
        so_far.crc = crc32c_append(so_far.crc, data);
        so_far.end += data.len() as u64;
        match self.expected {
            Some(expected) if so_far.end == self.size && so_far.crc != expected => {
                Err(Error::Integrity {
                    uri: self.uri.clone(),
                    offset: 0,
                    expected,
                    actual: so_far.crc,
                }
                .into())
            }
            _ => Ok(()),
        }
    }
}

pub struct WriteFile {
    state: Mutex<WriteState>,
}

struct WriteState {
    target: Target,
    writer: Option<EncodingWriter>,
    /// Appends not yet handed to an object store's writer (unused on
    /// direct://, whose writer buffers them itself).
    pending: Vec<u8>,
    written: u64,
    /// Stored as written (no compression, so no trailer holding the CRC).
    plain: bool,
    /// The write options, to tell which objects went up in parts.
    put: PutOptions,
    /// The outcome of the first close, repeated by later ones.
    closed: Option<std::result::Result<(), String>>,
}

impl WriteFile {
    /// A new file at `uri`; with `append`, starting with the bytes of the
    /// file already there (rewritten, as objects cannot grow in place).
    pub fn create(uri: &str, level: Option<i32>, append: bool) -> Result<WriteFile> {
        let target = Target::open(uri)?;
        // A CRC32C left for the rename of an earlier file here is not this one's.
        integrity::forget(&target.uri());
        let opts = WriteOptions {
            encode: EncodeOptions {
                level,
                ..Default::default()
            },
            put: PutOptions {
                // direct:// files are durable once closed, like its other writers.
                fsync: target.local.is_some(),
                ..Default::default()
            },
        };
        let mut state = block_on(async {
            let old = if append {
                match ObjectReader::open(target.loc.store.clone(), target.key()).await {
                    Ok(r) => Some(r),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let writer = open_writer(&target.loc, &opts).await?;
            let mut state = WriteState {
                target,
                writer: Some(writer),
                pending: Vec::new(),
                written: 0,
                plain: level.is_none(),
                put: opts.put.clone(),
                closed: None,
            };
            if let Some(old) = old {
                state.copy_from(&old).await?;
            }
            Ok(state)
        })??;
        if state.target.local.is_none() {
            // direct:// appends go straight to its writer (see `append`).
            state.pending.reserve(APPEND_BUFFER);
        }
        Ok(WriteFile {
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn append(&self, data: &[u8]) -> OpResult<()> {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Err(Failure::new(
                code::FAILED_PRECONDITION,
                format!("{}: append after close", st.target.uri()),
            ));
        }
        st.written += data.len() as u64;
        if st.target.local.is_some() {
            // direct:// copies into its own aligned buffers, small appends
            // included: straight there, no buffer of ours in between.
            return st.send_slice(data);
        }
        // TF hands a whole tensor to one append (gigabytes for a large
        // variable): it goes on in buffer-sized pieces, so memory stays
        // bounded by the buffer and the writer's own bound.
        let mut rest = data;
        while !rest.is_empty() {
            let room = APPEND_BUFFER - st.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            st.pending.extend_from_slice(now);
            rest = later;
            if st.pending.len() == APPEND_BUFFER {
                let chunk = std::mem::replace(&mut st.pending, Vec::with_capacity(APPEND_BUFFER));
                st.send(Bytes::from(chunk))?;
            }
        }
        Ok(())
    }

    pub fn tell(&self) -> i64 {
        self.lock().written as i64
    }

    /// Objects become visible on close only: flush and sync have nothing
    /// to push earlier, and after close they are no-ops as TF expects.
    pub fn close(&self) -> OpResult<()> {
        let mut st = self.lock();
        if let Some(outcome) = &st.closed {
            return outcome
                .clone()
                .map_err(|msg| Failure::new(code::FAILED_PRECONDITION, msg));
        }
        let r = st.finish();
        st.closed = Some(r.as_ref().map(|_| ()).map_err(|f| f.msg.clone()));
        r
    }
}

impl WriteState {
    fn send(&mut self, chunk: Bytes) -> OpResult<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(self.failed_earlier());
        };
        let r = block_on(w.write(chunk))?;
        self.sent(r)
    }

    fn send_slice(&mut self, data: &[u8]) -> OpResult<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(self.failed_earlier());
        };
        let r = block_on(w.write_slice(data))?;
        self.sent(r)
    }

    fn failed_earlier(&self) -> Failure {
        Failure::new(
            code::FAILED_PRECONDITION,
            format!("{}: an earlier write failed", self.target.uri()),
        )
    }

    fn sent(&mut self, r: Result<()>) -> OpResult<()> {
        if let Err(e) = r {
            // The stored stream has a hole now: drop it, nothing becomes visible.
            if let Some(w) = self.writer.take() {
                let _ = block_on(w.abort());
            }
            return Err(e.into());
        }
        Ok(())
    }

    fn finish(&mut self) -> OpResult<()> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.send(Bytes::from(rest))?;
        }
        let Some(w) = self.writer.take() else {
            return Err(self.failed_earlier());
        };
        let meta = block_on(w.finish())??;
        if self.plain {
            integrity::record(&self.target, meta.crc32c, meta.logical_size, &self.put)?;
        }
        Ok(())
    }

    /// Start with the logical bytes of `old` (an appendable file).
    async fn copy_from(&mut self, old: &ObjectReader) -> Result<()> {
        let size = old.logical_size();
        let mut pos = 0;
        let mut crc = 0;
        while pos < size {
            let end = (pos + WINDOW).min(size);
            let data = old.read_range(pos..end).await?;
            crc = crc32c_append(crc, &data);
            self.written += data.len() as u64;
            pos += data.len() as u64;
            if data.is_empty() {
                return Err(Error::corrupt(old.uri(), "ended early while appending"));
            }
            if let Some(w) = self.writer.as_mut() {
                w.write(data).await?;
            }
        }
        if let (Some(expected), true) = (old.crc32c(), size > 0) {
            if expected != crc {
                return Err(Error::Integrity {
                    uri: old.uri(),
                    offset: 0,
                    expected,
                    actual: crc,
                });
            }
        }
        Ok(())
    }
}
