//! The streaming O_DIRECT writer: staging buffers written as whole blocks
//! by blocking tasks, the unaligned tail written buffered, and the temp
//! file published by rename (or link, for `put_if_absent`).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::aligned::{AlignedBuf, ALIGN};
use super::engine::{clear_direct, WriteIo};
use crate::error::{Error, Result};
use crate::store::posix::{blocking, meta_from_fs, sync_parent};
use crate::store::{ObjectMeta, ObjectWriter};

/// Removes the temp file when dropped, unless it was published.
pub(super) struct TempGuard(pub(super) Option<PathBuf>);

impl TempGuard {
    fn take(&mut self) -> TempGuard {
        TempGuard(self.0.take())
    }

    fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        // unlink is one quick syscall, acceptable even on an async thread.
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Streaming O_DIRECT writer. Holds at most `concurrency` staging buffers of
/// `part_size` (rounded up to 4 KiB); full buffers are written by blocking
/// tasks while the caller fills the next one.
pub(super) struct DirectWriter {
    pub(super) io: Arc<WriteIo>,
    pub(super) key: String,
    pub(super) temp: TempGuard,
    pub(super) fsync: bool,
    pub(super) part: usize,
    pub(super) max_bufs: usize,
    pub(super) allocated: usize,
    /// The buffer being filled; its first byte belongs at `offset`.
    pub(super) stage: Option<AlignedBuf>,
    pub(super) free: Vec<AlignedBuf>,
    pub(super) inflight: VecDeque<JoinHandle<Result<AlignedBuf>>>,
    pub(super) offset: u64,
    /// A block write failed: the file has a hole, nothing may be published.
    pub(super) poisoned: bool,
}

impl DirectWriter {
    fn uri(&self) -> &str {
        &self.io.uri
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::backend(
                self.uri(),
                "an earlier write failed; this writer can only be aborted",
                false,
            ));
        }
        if self.temp.path().is_none() {
            return Err(Error::invalid(format!(
                "{}: writer already closed",
                self.uri()
            )));
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<Option<AlignedBuf>> {
        let Some(handle) = self.inflight.pop_front() else {
            return Ok(None);
        };
        // If this future is dropped mid-await the block's fate is unknown,
        // so the writer stays poisoned unless the block is seen to succeed.
        let was_poisoned = std::mem::replace(&mut self.poisoned, true);
        let res = match handle.await {
            Ok(r) => r,
            Err(e) => Err(Error::backend(
                self.uri(),
                format!("I/O task failed: {e}"),
                false,
            )),
        };
        match res {
            Ok(mut buf) => {
                self.poisoned = was_poisoned;
                buf.len = 0;
                Ok(Some(buf))
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    async fn next_buffer(&mut self) -> Result<AlignedBuf> {
        if let Some(buf) = self.free.pop() {
            return Ok(buf);
        }
        if self.allocated < self.max_bufs {
            let buf = AlignedBuf::new(self.part).map_err(|e| Error::from_io(self.uri(), e))?;
            self.allocated += 1;
            return Ok(buf);
        }
        match self.reap_one().await? {
            Some(buf) => Ok(buf),
            None => Err(Error::backend(
                self.uri(),
                "internal error: no staging buffer available",
                false,
            )),
        }
    }

    fn submit_stage(&mut self) {
        let Some(buf) = self.stage.take() else {
            return;
        };
        let io = Arc::clone(&self.io);
        let offset = self.offset;
        self.offset += buf.len as u64;
        self.inflight
            .push_back(tokio::task::spawn_blocking(move || {
                io.write_all_at(buf.as_slice(), offset)?;
                Ok(buf)
            }));
    }

    /// Wait for every in-flight block; the first failure wins.
    async fn drain(&mut self) -> Result<()> {
        let mut first = None;
        while !self.inflight.is_empty() {
            match self.reap_one().await {
                Ok(Some(buf)) => self.free.push(buf),
                Ok(None) => break,
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Write the tail, make the data durable and move the temp file to its
    /// final name. With `exclusive`, an existing object wins: `Ok(false)`.
    pub(super) async fn publish(mut self, exclusive: bool) -> Result<(ObjectMeta, bool)> {
        self.check_usable()?;
        self.drain().await?;
        let stage = self.stage.take();
        let mut temp = self.temp.take();
        let io = Arc::clone(&self.io);
        let (key, fsync, offset) = (self.key.clone(), self.fsync, self.offset);
        // The blocking task owns the temp guard from here on, so a cancelled
        // `finish` still either publishes a complete file or removes it.
        blocking(self.uri(), move || {
            let uri = io.uri.as_str();
            let mut size = offset;
            if let Some(buf) = stage {
                let data = buf.as_slice();
                let whole = data.len() - data.len() % ALIGN;
                if whole > 0 {
                    io.write_all_at(&data[..whole], offset)?;
                }
                if whole < data.len() {
                    // O_DIRECT cannot write a partial block; the tail goes
                    // through the page cache and the sync below flushes it.
                    clear_direct(&io.file).map_err(|e| Error::from_io(uri, e))?;
                    io.write_all_at(&data[whole..], offset + whole as u64)?;
                }
                size += data.len() as u64;
            }
            let on_disk = io
                .file
                .metadata()
                .map_err(|e| Error::from_io(uri, e))?
                .len();
            if on_disk != size {
                io.file.set_len(size).map_err(|e| Error::from_io(uri, e))?;
            }
            // O_DIRECT bypasses the cache but does not persist allocation or
            // size metadata: sync always, durability is why direct:// exists.
            let synced = if fsync {
                io.file.sync_all()
            } else {
                io.file.sync_data()
            };
            synced.map_err(|e| Error::from_io(uri, e))?;
            let Some(temp_path) = temp.path().map(Path::to_path_buf) else {
                return Err(Error::invalid(format!("{uri}: writer already closed")));
            };
            let created = if exclusive {
                // link(2) fails with EEXIST atomically; the guard then
                // removes the temp name either way.
                match fs::hard_link(&temp_path, &io.dest) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(Error::from_io(uri, e)),
                }
            } else {
                crate::store::posix::refuse_special(uri, &io.dest)?;
                fs::rename(&temp_path, &io.dest).map_err(|e| Error::from_io(uri, e))?;
                temp.disarm();
                true
            };
            drop(temp);
            if created {
                sync_parent(uri, &io.dest)?;
            }
            let md = fs::metadata(&io.dest).map_err(|e| Error::from_io(uri, e))?;
            let mut meta = meta_from_fs(&key, &md);
            if created {
                meta.size = size;
            }
            Ok((meta, created))
        })
        .await
    }
}

#[async_trait]
impl ObjectWriter for DirectWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.write_slice(&buf).await
    }

    /// Owned or borrowed, the bytes are copied into an aligned staging
    /// buffer: O_DIRECT needs that alignment.
    async fn write_slice(&mut self, buf: &[u8]) -> Result<()> {
        self.check_usable()?;
        let mut data = buf;
        while !data.is_empty() {
            let mut stage = match self.stage.take() {
                Some(s) => s,
                None => self.next_buffer().await?,
            };
            let n = stage.append(data);
            data = &data[n..];
            let full = stage.is_full();
            self.stage = Some(stage);
            if full {
                self.submit_stage();
            }
        }
        Ok(())
    }

    fn prefers_slices(&self) -> bool {
        true
    }

    async fn finish(self: Box<Self>) -> Result<ObjectMeta> {
        Ok(self.publish(false).await?.0)
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        // In-flight blocks may still be writing; wait so nothing touches the
        // file after abort returns. Their errors no longer matter.
        let _ = self.drain().await;
        let mut temp = self.temp.take();
        let uri = self.uri().to_string();
        blocking(self.uri(), move || {
            if let Some(path) = temp.path() {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::from_io(uri, e)),
                }
            }
            temp.disarm();
            Ok(())
        })
        .await
    }
}
