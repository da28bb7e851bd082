//! The state behind TF's random-access and writable file handles.
//!
//! Reads fetch ranged windows ahead of TF's small reads and, while the
//! windows run contiguously from byte 0, keep a CRC32C of everything read:
//! a read that reaches the end checks it against the one recorded at write
//! time. Writes stream through the core's encoding writer (bounded memory,
//! multipart on object stores) and become visible only on close.

use std::sync::Mutex;

use bytes::Bytes;
use s3dlio_core::codec::crc::crc32c_append;
use s3dlio_core::codec::{Codec, EncodeOptions, EncodingWriter, ObjectReader};
use s3dlio_core::object::{open_writer, WriteOptions};
use s3dlio_core::runtime::block_on;
use s3dlio_core::store::{ObjectStoreExt, PutOptions};
use s3dlio_core::{Error, Result};

use super::abi::code;
use super::integrity;
use super::status::{Failure, OpResult};
use super::target::Target;

/// Bytes fetched per read-ahead window (and the size from which a read of a
/// plain file skips the window and lands straight in TF's buffer).
const READ_AHEAD: u64 = 8 << 20;
/// The window on direct://: filled by [`PIECE`]-sized O_DIRECT reads in
/// flight at once, so TF's run of small reads (the index, small tensors)
/// waits on a few deep fetches rather than one 8 MiB read at a time.
const DIRECT_READ_AHEAD: u64 = 32 << 20;
/// One O_DIRECT read of a split fetch on direct://.
const PIECE: u64 = 8 << 20;
/// O_DIRECT reads in flight per fetch: one cold read waits on the device
/// alone, several keep its queue busy. Memory in flight stays at
/// `PARALLEL_READS * PIECE`.
const PARALLEL_READS: usize = 4;
/// The window on S3 and Azure: the ranged driver splits it into 8 MiB GETs
/// sent in parallel, where one 8 MiB window is one GET waited for alone
/// (TF restores tensor by tensor, mostly smaller than a window).
const REMOTE_READ_AHEAD: u64 = 64 << 20;
/// Appends collected before they are handed to the writer.
const APPEND_BUFFER: usize = 8 << 20;

pub struct ReadFile {
    uri: String,
    reader: ObjectReader,
    /// Where a plain file's bytes are, for reads straight into TF's buffer.
    target: Target,
    size: u64,
    /// CRC32C of the whole logical file, when one was recorded.
    expected: Option<u32>,
    state: Mutex<ReadState>,
}

#[derive(Default)]
struct ReadState {
    start: u64,
    window: Bytes,
    /// On direct://, the window after this one, being read meanwhile.
    ahead: Option<Ahead>,
    /// Bytes `0..crc_end` have been fetched in order; `crc` is theirs.
    crc_end: u64,
    crc: u32,
}

/// A direct:// window read in the background while TF works through the
/// one before it: TF reads a checkpoint front to back, and a window read
/// only when TF reaches it left the disk idle meanwhile (TF's own local
/// reads have the kernel's read-ahead).
struct Ahead {
    start: u64,
    end: u64,
    task: tokio::task::JoinHandle<Result<Vec<u8>>>,
}

impl Drop for ReadState {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.task.abort();
        }
    }
}

impl ReadFile {
    pub fn open(uri: &str) -> Result<ReadFile> {
        let target = Target::open(uri)?;
        block_on(async {
            let reader = ObjectReader::open(target.loc.store.clone(), target.key()).await?;
            let expected = match reader.crc32c() {
                Some(crc) => Some(crc),
                None => integrity::recorded(&target).await?,
            };
            Ok(ReadFile {
                uri: target.uri(),
                size: reader.logical_size(),
                reader,
                target,
                expected,
                state: Mutex::new(ReadState::default()),
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
        let done_ref = done;
        let mut done = *done_ref;
        while done < dst.len() {
            let pos = offset + done as u64;
            if pos >= self.size {
                break;
            }
            let mut win_end = st.start + st.window.len() as u64;
            if (pos < st.start || pos >= win_end)
                && st
                    .ahead
                    .as_ref()
                    .is_some_and(|a| (a.start..a.end).contains(&pos))
            {
                self.take_ahead(&mut st)?;
                win_end = st.start + st.window.len() as u64;
            }
            let outside = pos < st.start || pos >= win_end;
            let want = (dst.len() - done) as u64;
            if outside && want >= READ_AHEAD && self.reader.codec() == Codec::None {
                // TF reads a whole tensor in one call: a large read of a
                // plain file goes straight into TF's buffer, without a
                // window of its size next to it.
                let end = (pos + want).min(self.size);
                let into = &mut dst[done..done + (end - pos) as usize];
                if self.target.local.is_some() {
                    self.fetch_parallel(pos, into)?;
                } else {
                    block_on(
                        self.target
                            .loc
                            .store
                            .get_range_into(self.target.key(), pos, into),
                    )??;
                }
                self.track_crc(&mut st, pos, into)?;
                done += into.len();
                *done_ref = done;
                if self.target.local.is_some() {
                    self.read_ahead(&mut st, end)?;
                }
                continue;
            }
            if outside && self.target.local.is_some() && self.reader.codec() == Codec::None {
                let end = (pos + want.max(DIRECT_READ_AHEAD)).min(self.size);
                let mut data = vec![0u8; (end - pos) as usize];
                self.fetch_parallel(pos, &mut data)?;
                self.track_crc(&mut st, pos, &data)?;
                st.start = pos;
                st.window = Bytes::from(data);
                self.read_ahead(&mut st, end)?;
            } else if outside {
                let ahead = if self.target.loc.store.is_remote() {
                    REMOTE_READ_AHEAD
                } else {
                    READ_AHEAD
                };
                let end = (pos + want.max(ahead)).min(self.size);
                let data = block_on(self.reader.read_range(pos..end))??;
                if data.len() as u64 != end - pos {
                    return Err(Error::corrupt(
                        &self.uri,
                        format!("read {} bytes at {pos}, expected {}", data.len(), end - pos),
                    )
                    .into());
                }
                self.track_crc(&mut st, pos, &data)?;
                st.start = pos;
                st.window = data;
            }
            let from = (pos - st.start) as usize;
            let n = (st.window.len() - from).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&st.window[from..from + n]);
            done += n;
            *done_ref = done;
        }
        if done < dst.len() {
            return Err(Failure::new(
                code::OUT_OF_RANGE,
                format!(
                    "{}: read {done} of {} bytes at offset {offset}: the file has {} bytes",
                    self.uri,
                    dst.len(),
                    self.size
                ),
            ));
        }
        Ok(())
    }

    /// Fill `dst` with the stored bytes from `pos` (a plain file on
    /// direct://, all inside it), see [`fetch_pieces`].
    fn fetch_parallel(&self, pos: u64, dst: &mut [u8]) -> OpResult<()> {
        let store = self.target.loc.store.clone();
        block_on(fetch_pieces(&store, self.target.key(), &self.uri, pos, dst))??;
        Ok(())
    }

    /// Start reading the direct:// window from `from` in the background,
    /// unless one is already on its way or the file ends there.
    fn read_ahead(&self, st: &mut ReadState, from: u64) -> OpResult<()> {
        if from >= self.size || self.reader.codec() != Codec::None {
            return Ok(());
        }
        if st.ahead.as_ref().is_some_and(|a| a.start == from) {
            return Ok(());
        }
        if let Some(stale) = st.ahead.take() {
            stale.task.abort();
        }
        let end = (from + DIRECT_READ_AHEAD).min(self.size);
        let store = self.target.loc.store.clone();
        let key = self.target.key().to_string();
        let uri = self.uri.clone();
        let task = s3dlio_core::runtime::runtime()?.spawn(async move {
            let mut data = vec![0u8; (end - from) as usize];
            fetch_pieces(&store, &key, &uri, from, &mut data).await?;
            Ok(data)
        });
        st.ahead = Some(Ahead {
            start: from,
            end,
            task,
        });
        Ok(())
    }

    /// Make the window read ahead the current one (waiting for it), and
    /// start reading the one after it.
    fn take_ahead(&self, st: &mut ReadState) -> OpResult<()> {
        let Some(ahead) = st.ahead.take() else {
            return Ok(());
        };
        let data = block_on(ahead.task)?.map_err(|e| {
            Error::backend(&self.uri, format!("read-ahead task failed: {e}"), false)
        })??;
        self.track_crc(st, ahead.start, &data)?;
        st.start = ahead.start;
        st.window = Bytes::from(data);
        self.read_ahead(st, ahead.end)
    }

    fn track_crc(&self, st: &mut ReadState, pos: u64, data: &[u8]) -> OpResult<()> {
        if pos != st.crc_end {
            return Ok(());
        }
        st.crc = crc32c_append(st.crc, data);
        st.crc_end += data.len() as u64;
        match self.expected {
            Some(expected) if st.crc_end == self.size && st.crc != expected => {
                Err(Error::Integrity {
                    uri: self.uri.clone(),
                    offset: 0,
                    expected,
                    actual: st.crc,
                }
                .into())
            }
            _ => Ok(()),
        }
    }
}

/// Fill `dst` with the stored bytes of `key` from `pos` by
/// [`PIECE`]-sized reads, up to [`PARALLEL_READS`] of them in flight,
/// each copied into place as it arrives.
async fn fetch_pieces(
    store: &std::sync::Arc<dyn s3dlio_core::store::ObjectStore>,
    key: &str,
    uri: &str,
    pos: u64,
    dst: &mut [u8],
) -> Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};

    let end = pos + dst.len() as u64;
    // Pieces end on PIECE boundaries of the file, so all but the first
    // start aligned and each O_DIRECT read covers no extra block.
    let mut ranges = Vec::new();
    let mut at = pos;
    while at < end {
        let next = ((at / PIECE + 1) * PIECE).min(end);
        ranges.push(at..next);
        at = next;
    }
    let mut pieces = stream::iter(ranges)
        .map(|r| async move {
            let data = store.get_range(key, r.clone()).await?;
            Ok::<_, Error>((r, data))
        })
        .buffered(PARALLEL_READS);
    while let Some((r, data)) = pieces.try_next().await? {
        if data.len() as u64 != r.end - r.start {
            return Err(Error::corrupt(
                uri,
                format!(
                    "read {} bytes at {}, expected {}",
                    data.len(),
                    r.start,
                    r.end - r.start
                ),
            ));
        }
        let from = (r.start - pos) as usize;
        dst[from..from + data.len()].copy_from_slice(&data);
    }
    Ok(())
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
            let end = (pos + READ_AHEAD).min(size);
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
