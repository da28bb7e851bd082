//! `direct://`: local files read and written with O_DIRECT, so checkpoint
//! traffic neither evicts the page cache nor waits behind it. Rooted at `/`
//! like `file://` (the key `a/b` is `/a/b`), with the same temp-file +
//! rename publication, list and delete semantics (shared with `local.rs`).
//!
//! O_DIRECT wants 4 KiB-aligned buffers, offsets and lengths. Writers stage
//! data in aligned buffers and write whole blocks; only the final partial
//! block is written after clearing O_DIRECT. Reads fetch the aligned span
//! covering the request and hand back the exact bytes without copying;
//! reads into caller memory (`read_into`, `get_range_into`) go through a
//! bounded aligned bounce buffer, since caller buffers and item offsets
//! are rarely 4 KiB-aligned, so their memory stays small whatever the size.
//!
//! A filesystem that refuses O_DIRECT is an error that says so, never a
//! silent switch to buffered I/O, unless the store was built with
//! `direct_fallback`.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::local::{
    blocking, check_file_key, delete_async, file_uri, head_async, in_place, key_path, list_async,
    meta_from_fs, sync_parent, temp_path,
};
use super::{check_range, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::error::{Error, Result};

/// Alignment for buffers, offsets and lengths. 4 KiB satisfies both 512-byte
/// and 4 KiB logical-sector devices, and equals the page size.
const ALIGN: usize = 4096;

/// Largest single pread/pwrite; Linux caps one call just below 2 GiB and a
/// 1 GiB request is already enough to keep a device's queue full.
const MAX_IO: usize = 1 << 30;

/// Largest bounce buffer one read into caller memory holds: reads of any
/// size go through it a block-aligned piece at a time.
const BOUNCE: usize = 4 << 20;

thread_local! {
    /// The last bounce buffer this thread used, kept for its next read:
    /// mapping and faulting in 4 MiB per read costs ~10% of a read's time.
    /// Unmapped when the thread exits (the pack reader's workers live for
    /// one batch of reads), so memory stays one buffer per reading thread.
    static SPARE_BOUNCE: std::cell::RefCell<Option<AlignedBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// A bounce buffer of [`BOUNCE`] bytes: this thread's spare, or a new
/// mapping (whose pages only count once a read touches them, so a small
/// read costs little more than its own size).
fn take_bounce() -> io::Result<AlignedBuf> {
    match SPARE_BOUNCE.with(|s| s.borrow_mut().take()) {
        Some(mut buf) => {
            buf.len = 0;
            Ok(buf)
        }
        None => AlignedBuf::mapped(BOUNCE),
    }
}

/// Keep `buf` as this thread's spare bounce buffer.
fn return_bounce(buf: AlignedBuf) {
    SPARE_BOUNCE.with(|s| *s.borrow_mut() = Some(buf));
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn refused(path: &Path) -> Error {
    Error::invalid(format!(
        "O_DIRECT is not supported on the filesystem holding {} (tmpfs?); \
         use file:// or pass direct_fallback=True",
        path.display()
    ))
}

#[derive(Debug, Clone, Default)]
pub struct DirectStore {
    /// Use buffered I/O where the filesystem refuses O_DIRECT.
    fallback: bool,
    /// Behave as if every filesystem refused O_DIRECT. Current kernels
    /// (6.6+) accept O_DIRECT on tmpfs, so tests cannot rely on a real
    /// refusal being available.
    simulate_refusal: bool,
}

impl DirectStore {
    pub fn new(direct_fallback: bool) -> Self {
        DirectStore {
            fallback: direct_fallback,
            simulate_refusal: false,
        }
    }

    #[cfg(test)]
    fn refusing(direct_fallback: bool) -> Self {
        DirectStore {
            fallback: direct_fallback,
            simulate_refusal: true,
        }
    }

    /// Open `path` with O_DIRECT (creating it exclusively when `create`).
    /// `shown` is the path named in a refusal, so users see their object,
    /// not our temp name.
    fn open(&self, uri: &str, path: &Path, shown: &Path, create: bool) -> Result<File> {
        let mut opts = OpenOptions::new();
        if create {
            opts.write(true).create_new(true);
        } else {
            opts.read(true);
        }
        let first = if self.simulate_refusal {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            opts.clone().custom_flags(libc::O_DIRECT).open(path)
        };
        let err = match first {
            Ok(f) => return Ok(f),
            Err(e) => e,
        };
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::from_io(uri, err));
        }
        // The inode can be created before the flag is refused; the name is
        // our random temp name, so removing it cannot hurt anyone else.
        if create {
            let _ = fs::remove_file(path);
        }
        // EINVAL has other causes (a directory, for one): only blame O_DIRECT
        // when the same open without it succeeds.
        let file = opts.open(path).map_err(|e| Error::from_io(uri, e))?;
        let is_dir = file
            .metadata()
            .map_err(|e| Error::from_io(uri, e))?
            .is_dir();
        if is_dir {
            return Err(Error::NotFound {
                uri: format!("{uri} (a directory, not an object)"),
            });
        }
        if self.fallback {
            return Ok(file);
        }
        drop(file);
        if create {
            let _ = fs::remove_file(path);
        }
        Err(refused(shown))
    }

    async fn open_writer(
        &self,
        key: &str,
        opts: &PutOptions,
        size_hint: Option<usize>,
    ) -> Result<DirectWriter> {
        let uri = self.uri(key);
        check_file_key(&uri, key)?;
        let mut part = round_up(opts.part_size.max(1));
        if let Some(n) = size_hint {
            // A small put needs no full-size staging buffer.
            part = part.min(round_up(n.max(1)));
        }
        let store = self.clone();
        let key = key.to_string();
        let fsync = opts.fsync;
        let max_bufs = opts.concurrency.max(1);
        blocking(&uri.clone(), move || {
            let dest = key_path(&key);
            create_parents(&uri, &dest)?;
            let temp = temp_path(&dest);
            let file = store.open(&uri, &temp, &dest, true)?;
            Ok(DirectWriter {
                io: Arc::new(WriteIo {
                    file,
                    uri,
                    dest: dest.clone(),
                    fallback: store.fallback,
                }),
                key,
                temp: TempGuard(Some(temp)),
                fsync,
                part,
                max_bufs,
                allocated: 0,
                stage: None,
                free: Vec::new(),
                inflight: VecDeque::new(),
                offset: 0,
                poisoned: false,
            })
        })
        .await
    }

    /// Fill `bufs` from `offset` on (see `ObjectStore::read_into`); an
    /// object ending before them is `short(uri, object size)`.
    fn read_into_bufs(
        &self,
        key: &str,
        offset: u64,
        bufs: &mut [&mut [u8]],
        short: impl FnOnce(&str, u64) -> Error,
    ) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if total == 0 {
            return Ok(());
        }
        let uri = self.uri(key);
        let path = key_path(key);
        in_place(|| {
            let file = self.open(&uri, &path, &path, false)?;
            let md = file.metadata().map_err(|e| Error::from_io(&uri, e))?;
            if md.is_dir() {
                return Err(Error::NotFound {
                    uri: format!("{uri} (a directory, not an object)"),
                });
            }
            let range = offset..offset + total;
            check_range(&uri, &range, md.len())?;
            if range.end > md.len() {
                return Err(short(&uri, md.len()));
            }
            let reader = ReadIo {
                file: &file,
                uri: &uri,
                path: &path,
                fallback: self.fallback,
            };
            reader.read_into(offset, bufs)
        })
    }

    /// Bytes `range` of `key`, clipped to its size.
    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let uri = self.uri(key);
        let store = self.clone();
        let path = key_path(key);
        blocking(&uri.clone(), move || {
            let file = store.open(&uri, &path, &path, false)?;
            let md = file.metadata().map_err(|e| Error::from_io(&uri, e))?;
            if md.is_dir() {
                return Err(Error::NotFound {
                    uri: format!("{uri} (a directory, not an object)"),
                });
            }
            let size = md.len();
            let range = match range {
                Some(r) => {
                    check_range(&uri, &r, size)?;
                    r.start..r.end.min(size)
                }
                None => 0..size,
            };
            let reader = ReadIo {
                file: &file,
                uri: &uri,
                path: &path,
                fallback: store.fallback,
            };
            reader.read_range(range)
        })
        .await
    }
}

/// Create the missing parents of `path`. A new directory survives a crash
/// only once the entry naming it is synced, so each new directory's parent is
/// fsynced (the object's own directory is synced again after the rename).
fn create_parents(uri: &str, path: &Path) -> Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut p = parent;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(up) => p = up,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(parent).map_err(|e| Error::from_io(uri, e))?;
    for dir in missing.iter().rev() {
        sync_parent(uri, dir)?;
    }
    Ok(())
}

fn is_direct(file: &File) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we own has no memory effects.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_DIRECT != 0)
}

/// Clear O_DIRECT on the open file description (shared by every user of it).
fn clear_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own have no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_DIRECT != 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn is_aligned(data: &[u8], offset: u64) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN)
        && data.len().is_multiple_of(ALIGN)
        && offset.is_multiple_of(ALIGN as u64)
}

/// A heap buffer aligned for O_DIRECT. Only the first `len` bytes are ever
/// exposed, so the rest may stay uninitialised (no memset of large reads).
struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    /// Mapped with mmap (see [`AlignedBuf::mapped`]) rather than allocated.
    mapped: bool,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the initialised prefix.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `cap` must be a non-zero multiple of ALIGN.
    fn new(cap: usize) -> io::Result<Self> {
        debug_assert!(cap > 0 && cap.is_multiple_of(ALIGN));
        let layout = Layout::from_size_align(cap, ALIGN)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate an aligned {cap}-byte I/O buffer"),
            )
        })?;
        Ok(AlignedBuf {
            ptr,
            cap,
            len: 0,
            mapped: false,
        })
    }

    /// An anonymous mapping of `cap` bytes (page-aligned), unmapped on
    /// drop. For short-lived buffers made over and over (read bounce
    /// buffers): once glibc has freed one large block it serves blocks of
    /// that size from its per-thread heaps, which keep freed memory, so a
    /// burst of reads on many threads would leave RSS high; a mapping
    /// hands its pages back to the kernel at once.
    fn mapped(cap: usize) -> io::Result<Self> {
        debug_assert!(cap > 0 && cap.is_multiple_of(ALIGN));
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(AlignedBuf {
            ptr,
            cap,
            len: 0,
            mapped: true,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `append` or `pread`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Copy as much of `data` as fits; returns how much did.
    fn append(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        // SAFETY: `len + n <= cap`, and `data` cannot overlap our allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    /// pread into the buffer at `at..cap`; grows `len` to cover what arrived.
    fn pread_at(&mut self, file: &File, at: usize, max: usize, offset: u64) -> io::Result<usize> {
        let n = max.min(self.cap - at);
        // SAFETY: the destination lies inside our allocation.
        let got = unsafe {
            libc::pread(
                file.as_raw_fd(),
                self.ptr.as_ptr().add(at).cast(),
                n,
                offset as libc::off_t,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        self.len = self.len.max(at + got);
        Ok(got)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in `mapped` with exactly this length. A failed
            // munmap can only leak the mapping; nothing to report it to.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
            return;
        }
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, ALIGN),
            )
        }
    }
}

struct ReadIo<'a> {
    file: &'a File,
    uri: &'a str,
    path: &'a Path,
    fallback: bool,
}

impl ReadIo<'_> {
    /// Read the aligned span covering `range` and return exactly `range`.
    fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let base = range.start - range.start % ALIGN as u64;
        let want = (range.end - base) as usize;
        let mut buf = AlignedBuf::new(round_up(want)).map_err(|e| self.io_err(e))?;
        self.fill(&mut buf, base, want, range.end)?;
        let skip = (range.start - base) as usize;
        Ok(Bytes::from_owner(buf).slice(skip..want))
    }

    /// Fill `bufs` in order with the bytes from `offset` on (all inside the
    /// file), one bounce buffer's worth of aligned span at a time.
    fn read_into(&self, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let end = offset + total;
        let mut bounce = take_bounce().map_err(|e| self.io_err(e))?;
        let (mut index, mut within) = (0usize, 0usize);
        let mut pos = offset;
        while pos < end {
            let base = pos - pos % ALIGN as u64;
            let want = ((end - base) as usize).min(bounce.cap);
            bounce.len = 0;
            self.fill(&mut bounce, base, want, base + want as u64)?;
            let mut chunk = &bounce.as_slice()[(pos - base) as usize..want];
            pos = base + want as u64;
            while !chunk.is_empty() {
                let buf = &mut bufs[index];
                let take = (buf.len() - within).min(chunk.len());
                buf[within..within + take].copy_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                within += take;
                if within == buf.len() {
                    index += 1;
                    within = 0;
                }
            }
        }
        return_bounce(bounce);
        Ok(())
    }

    /// pread `want` bytes from the aligned offset `base` into `buf` (empty,
    /// with room for them); `end` is the end of the bytes the caller wants,
    /// for the message when the file shrank under us.
    fn fill(&self, buf: &mut AlignedBuf, base: u64, want: usize, end: u64) -> Result<()> {
        let mut done = 0usize;
        while done < want {
            let direct = is_direct(self.file).map_err(|e| self.io_err(e))?;
            if direct && !done.is_multiple_of(ALIGN) {
                // Only a short read can leave us unaligned; finish buffered
                // rather than fail on alignment.
                clear_direct(self.file).map_err(|e| self.io_err(e))?;
            }
            // Whole blocks up to the end of what is wanted, not the whole buffer.
            let max = (round_up(want) - done).min(MAX_IO);
            match buf.pread_at(self.file, done, max, base + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && direct
                        && done.is_multiple_of(ALIGN) =>
                {
                    if !self.fallback {
                        return Err(refused(self.path));
                    }
                    clear_direct(self.file).map_err(|e| self.io_err(e))?;
                }
                Err(e) => return Err(self.io_err(e)),
            }
        }
        if done < want {
            return Err(Error::backend(
                self.uri,
                format!(
                    "file shrank while being read: wanted bytes up to {end}, it ends at {}",
                    base + done as u64
                ),
                true,
            ));
        }
        Ok(())
    }

    fn io_err(&self, e: io::Error) -> Error {
        Error::from_io(self.uri, e)
    }
}

/// What in-flight block writes share with the writer.
struct WriteIo {
    file: File,
    uri: String,
    /// The final path, named in errors instead of the temp name.
    dest: PathBuf,
    fallback: bool,
}

impl WriteIo {
    fn write_all_at(&self, data: &[u8], offset: u64) -> Result<()> {
        loop {
            let err = match pwrite_all(&self.file, data, offset) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let direct = is_direct(&self.file).unwrap_or(false);
            // EINVAL on an aligned O_DIRECT write means the filesystem took
            // the flag at open but will not honour it.
            if err.raw_os_error() == Some(libc::EINVAL) && direct && is_aligned(data, offset) {
                if !self.fallback {
                    return Err(refused(&self.dest));
                }
                clear_direct(&self.file).map_err(|e| Error::from_io(&self.uri, e))?;
                continue;
            }
            return Err(Error::from_io(&self.uri, err));
        }
    }
}

fn pwrite_all(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        let n = data.len().min(MAX_IO);
        match file.write_at(&data[..n], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the device accepted no more bytes",
                ))
            }
            Ok(w) => {
                data = &data[w..];
                offset += w as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the temp file when dropped, unless it was published.
struct TempGuard(Option<PathBuf>);

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
struct DirectWriter {
    io: Arc<WriteIo>,
    key: String,
    temp: TempGuard,
    fsync: bool,
    part: usize,
    max_bufs: usize,
    allocated: usize,
    /// The buffer being filled; its first byte belongs at `offset`.
    stage: Option<AlignedBuf>,
    free: Vec<AlignedBuf>,
    inflight: VecDeque<JoinHandle<Result<AlignedBuf>>>,
    offset: u64,
    /// A block write failed: the file has a hole, nothing may be published.
    poisoned: bool,
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
    async fn publish(mut self, exclusive: bool) -> Result<(ObjectMeta, bool)> {
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
                super::local::refuse_special(uri, &io.dest)?;
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
        self.check_usable()?;
        let mut data = &buf[..];
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

#[async_trait]
impl ObjectStore for DirectStore {
    fn uri(&self, key: &str) -> String {
        file_uri("direct", key)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        let mut w = self.open_writer(key, opts, Some(data.len())).await?;
        w.write(data).await?;
        Ok(w.publish(false).await?.0)
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(self.open_writer(key, opts, None).await?))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read(key, Some(range)).await
    }

    async fn get_range_into(&self, key: &str, offset: u64, dst: &mut [u8]) -> Result<()> {
        let want = dst.len() as u64;
        self.read_into_bufs(key, offset, &mut [dst], |uri, size| {
            Error::corrupt(
                uri,
                format!(
                    "expected {want} bytes at {offset}, the object ends at {size} \
                     (truncated or changed while reading?)"
                ),
            )
        })
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.read(key, None).await
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.read_into_bufs(key, offset, bufs, |uri, size| {
            Error::invalid(format!(
                "{uri}: wanted bytes {offset}..{} but the object ends at {size}",
                offset + total
            ))
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        head_async(self.uri(key), key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        list_async(self.uri(prefix), prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        delete_async(self.uri(key), key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            fsync: true,
            ..PutOptions::default()
        };
        let mut w = self.open_writer(key, &opts, Some(data.len())).await?;
        w.write(data).await?;
        Ok(w.publish(true).await?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SIZES: [usize; 6] = [0, 1, 4095, 4096, 4097, (1 << 20) + 3];

    fn is_tmpfs(path: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string and st a valid out-pointer.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast)]
        let tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
        tmpfs
    }

    /// A scratch dir on a disk filesystem: the system temp dir unless it is
    /// tmpfs, else the workspace target dir.
    fn scratch() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let root = if is_tmpfs(&tmp) {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/direct-test-tmp");
            fs::create_dir_all(&p).unwrap();
            p
        } else {
            tmp
        };
        tempfile::Builder::new()
            .prefix("s3dlio-direct-")
            .tempdir_in(root)
            .unwrap()
    }

    fn key_of(path: &Path) -> String {
        path.to_str().unwrap().trim_start_matches('/').to_string()
    }

    /// Position-dependent bytes, so a block written at the wrong offset shows.
    fn pattern(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::test_rng::XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..n).map(|_| rng.next_u64() as u8).collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Reads into caller memory larger than the bounce buffer, at
    /// unaligned offsets and buffer edges, come back exact; a read past
    /// the end is InvalidInput (read_into) or Corrupt (get_range_into).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_into_goes_through_bounded_bounce_buffers() {
        let dir = scratch();
        let key = key_of(&dir.path().join("big.bin"));
        let store = DirectStore::new(false);
        let data = pattern(2 * BOUNCE + 3 * ALIGN + 123, 11);
        store
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        for (offset, sizes) in [
            (0usize, vec![data.len()]),
            (4093, vec![1, BOUNCE + 5, 0, 7, BOUNCE]),
            (ALIGN * 3, vec![BOUNCE - ALIGN * 2, BOUNCE + 1]),
        ] {
            let mut owned: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
            let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
            store
                .read_into(&key, offset as u64, &mut bufs)
                .await
                .unwrap();
            let got = owned.concat();
            assert!(got == data[offset..offset + got.len()], "at {offset}");
            let mut one = vec![0u8; got.len()];
            store
                .get_range_into(&key, offset as u64, &mut one)
                .await
                .unwrap();
            assert!(one == got);
        }
        let mut past = vec![0u8; 200];
        let at = data.len() as u64 - 100;
        let err = store
            .read_into(&key, at, &mut [&mut past])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let err = store.get_range_into(&key, at, &mut past).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn uri_is_rooted_at_slash() {
        assert_eq!(
            DirectStore::new(false).uri("tmp/x/obj"),
            "direct:///tmp/x/obj"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_get_roundtrip_all_sizes() {
        let dir = scratch();
        let store = DirectStore::new(false);
        for (i, &n) in SIZES.iter().enumerate() {
            let key = key_of(&dir.path().join(format!("sub/obj-{n}")));
            let data = pattern(n, i as u64);
            let meta = store
                .put(&key, Bytes::from(data.clone()), &PutOptions::default())
                .await
                .unwrap();
            assert_eq!(meta.size, n as u64);
            assert_eq!(meta.key, key);
            assert_eq!(fs::metadata(key_path(&key)).unwrap().len(), n as u64);
            let got = store.get(&key).await.unwrap();
            assert_eq!(got.len(), n);
            assert!(got[..] == data[..], "size {n} differs");
            assert_eq!(store.head(&key).await.unwrap().size, n as u64);
        }
        assert_eq!(entries(&dir.path().join("sub")).len(), SIZES.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streaming_writer_odd_chunks() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let chunks = [1usize, 7, 4093, 5000, 3, 8192, 12289, 4096, 999];
        // Small parts with several in flight, one part, and the default.
        let configs = [(8192, 3), (4096 * 3 + 1, 1), (8 << 20, 4)];
        for (c, &(part_size, concurrency)) in configs.iter().enumerate() {
            for (i, &n) in SIZES.iter().enumerate() {
                let key = key_of(&dir.path().join(format!("w{c}/obj-{n}")));
                let data = pattern(n, 100 + i as u64);
                let opts = PutOptions {
                    fsync: false,
                    part_size,
                    concurrency,
                    ..PutOptions::default()
                };
                let mut w = store.writer(&key, &opts).await.unwrap();
                let mut pos = 0;
                let mut k = 0;
                while pos < n {
                    let end = (pos + chunks[k % chunks.len()]).min(n);
                    w.write(Bytes::copy_from_slice(&data[pos..end]))
                        .await
                        .unwrap();
                    pos = end;
                    k += 1;
                }
                w.write(Bytes::new()).await.unwrap();
                // Nothing is visible before finish.
                assert!(store.head(&key).await.unwrap_err().is_not_found());
                let meta = w.finish().await.unwrap();
                assert_eq!(meta.size, n as u64);
                let got = store.get(&key).await.unwrap();
                assert!(got[..] == data[..], "config {c} size {n} differs");
            }
            assert_eq!(
                entries(&dir.path().join(format!("w{c}"))).len(),
                SIZES.len()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_range_unaligned() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let n = (1usize << 20) + 3;
        let data = pattern(n, 7);
        let key = key_of(&dir.path().join("r"));
        store
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        let n64 = n as u64;
        let ranges = [
            0..0,
            0..1,
            1..2,
            1..4097,
            4095..4097,
            4096..8192,
            4097..8193,
            12345..654321,
            0..n64,
            n64 - 1..n64,
            n64 - 5000..n64 + 100,
            n64..n64,
            n64..n64 + 10,
        ];
        for r in ranges {
            let got = store.get_range(&key, r.clone()).await.unwrap();
            let (s, e) = (r.start as usize, (r.end as usize).min(n));
            assert!(got[..] == data[s..e], "range {r:?}");
        }
        let err = store.get_range(&key, n64 + 1..n64 + 2).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        #[allow(clippy::reversed_empty_ranges)]
        let err = store.get_range(&key, 10..5).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        // A small file read through a range that starts mid-block.
        let small = key_of(&dir.path().join("small"));
        store
            .put(
                &small,
                Bytes::from_static(b"hello world"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            &store.get_range(&small, 6..100).await.unwrap()[..],
            b"world"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_and_drop_leave_nothing() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let opts = PutOptions {
            fsync: false,
            part_size: 8192,
            concurrency: 2,
            ..PutOptions::default()
        };
        let key = key_of(&dir.path().join("a"));
        let mut w = store.writer(&key, &opts).await.unwrap();
        w.write(Bytes::from(pattern(50_001, 1))).await.unwrap();
        assert_eq!(
            entries(dir.path()).len(),
            1,
            "temp file exists while writing"
        );
        w.abort().await.unwrap();
        assert!(entries(dir.path()).is_empty());

        let mut w = store.writer(&key, &opts).await.unwrap();
        w.write(Bytes::from(pattern(50_001, 2))).await.unwrap();
        drop(w);
        assert!(entries(dir.path()).is_empty());
        assert!(store.get(&key).await.unwrap_err().is_not_found());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_and_reader_really_use_o_direct() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("d"));
        let w = store
            .open_writer(&key, &PutOptions::default(), None)
            .await
            .unwrap();
        assert!(is_direct(&w.io.file).unwrap(), "writer fd lacks O_DIRECT");
        // Cross-check through the kernel's own view of the descriptor.
        let fdinfo =
            fs::read_to_string(format!("/proc/self/fdinfo/{}", w.io.file.as_raw_fd())).unwrap();
        let flags = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i64::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_DIRECT as i64, 0, "{fdinfo}");
        drop(w);

        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let f = store.open("direct:///f", &path, &path, false).unwrap();
        assert!(is_direct(&f).unwrap(), "reader fd lacks O_DIRECT");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_path_and_overwrite() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("deep/er/f"));
        let opts = PutOptions {
            fsync: true,
            part_size: 4096,
            concurrency: 2,
            ..PutOptions::default()
        };
        for (i, &n) in SIZES.iter().enumerate() {
            let data = pattern(n, 50 + i as u64);
            let mut w = store.writer(&key, &opts).await.unwrap();
            w.write(Bytes::from(data.clone())).await.unwrap();
            assert_eq!(w.finish().await.unwrap().size, n as u64);
            assert!(store.get(&key).await.unwrap()[..] == data[..], "size {n}");
        }
        assert_eq!(entries(&dir.path().join("deep/er")), vec!["f".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_if_absent_is_exclusive() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("m/COMMITTED"));
        assert!(store
            .put_if_absent(&key, Bytes::from_static(b"first"))
            .await
            .unwrap());
        assert!(!store
            .put_if_absent(&key, Bytes::from_static(b"second"))
            .await
            .unwrap());
        assert_eq!(&store.get(&key).await.unwrap()[..], b"first");
        assert_eq!(
            entries(&dir.path().join("m")),
            vec!["COMMITTED".to_string()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_head_delete() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let base = key_of(dir.path());
        for name in ["ab/x", "ab/y/z", "abc", "b"] {
            store
                .put(
                    &format!("{base}/{name}"),
                    Bytes::from_static(b"12345"),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
        // A leftover temp file from a crashed writer is not an object.
        fs::write(dir.path().join("ab/x.tmp-deadbeef0"), b"junk").unwrap();
        let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list(&format!("{base}/a")).await.unwrap()),
            vec![
                format!("{base}/ab/x"),
                format!("{base}/ab/y/z"),
                format!("{base}/abc")
            ]
        );
        assert_eq!(
            keys(store.list(&format!("{base}/ab/")).await.unwrap()),
            vec![format!("{base}/ab/x"), format!("{base}/ab/y/z")]
        );
        assert!(store
            .list(&format!("{base}/nope/"))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.head(&format!("{base}/abc")).await.unwrap().size, 5);
        assert!(store
            .head(&format!("{base}/ab"))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store
            .get(&format!("{base}/ab"))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store
            .get(&format!("{base}/none"))
            .await
            .unwrap_err()
            .is_not_found());
        store.delete(&format!("{base}/abc")).await.unwrap();
        assert!(store
            .delete(&format!("{base}/abc"))
            .await
            .unwrap_err()
            .is_not_found());
        let err = store
            .put(
                &format!("{base}/dir/"),
                Bytes::new(),
                &PutOptions::default(),
            )
            .await;
        assert!(matches!(err, Err(Error::InvalidInput(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusal_is_an_error_unless_fallback() {
        let dir = scratch();
        let key = key_of(&dir.path().join("x/obj"));
        let err = DirectStore::refusing(false)
            .put(&key, Bytes::from_static(b"abc"), &PutOptions::default())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidInput(_)), "{msg}");
        assert!(msg.contains("O_DIRECT is not supported"), "{msg}");
        assert!(msg.contains("direct_fallback=True"), "{msg}");
        assert!(
            msg.contains(&format!("{}/x/obj", dir.path().display())),
            "{msg}"
        );
        assert!(
            entries(&dir.path().join("x")).is_empty(),
            "temp file left behind"
        );

        let fb = DirectStore::refusing(true);
        for (i, &n) in SIZES.iter().enumerate() {
            let data = pattern(n, 200 + i as u64);
            let opts = PutOptions {
                fsync: false,
                part_size: 4096,
                concurrency: 2,
                ..PutOptions::default()
            };
            let w = fb.open_writer(&key, &opts, None).await.unwrap();
            assert!(!is_direct(&w.io.file).unwrap());
            let mut w: Box<dyn ObjectWriter> = Box::new(w);
            for c in data.chunks(777) {
                w.write(Bytes::copy_from_slice(c)).await.unwrap();
            }
            w.finish().await.unwrap();
            assert!(fb.get(&key).await.unwrap()[..] == data[..], "size {n}");
            if n > 10 {
                assert!(fb.get_range(&key, 3..n as u64 - 2).await.unwrap()[..] == data[3..n - 2]);
            }
        }
        // Reads are refused too without the fallback.
        let err = DirectStore::refusing(false).get(&key).await.unwrap_err();
        assert!(
            err.to_string().contains("O_DIRECT is not supported"),
            "{err}"
        );
    }

    /// /dev/shm is tmpfs. Kernels before 6.6 refuse O_DIRECT there, newer
    /// ones accept it: either way the store must be correct or say why not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tmpfs_errors_clearly_or_works() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() || !is_tmpfs(shm) {
            eprintln!("no tmpfs at /dev/shm; skipped");
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("s3dlio-direct-")
            .tempdir_in(shm)
            .unwrap();
        let key = key_of(&dir.path().join("obj"));
        let data = pattern(4097, 9);
        match DirectStore::new(false)
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
        {
            Ok(_) => {
                eprintln!("this kernel supports O_DIRECT on tmpfs");
                assert!(DirectStore::new(false).get(&key).await.unwrap()[..] == data[..]);
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("O_DIRECT is not supported"), "{msg}");
                assert!(msg.contains("/dev/shm"), "{msg}");
                assert!(entries(dir.path()).is_empty());
            }
        }
        let fb = DirectStore::new(true);
        fb.put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        assert!(fb.get(&key).await.unwrap()[..] == data[..]);
        assert!(fb.get_range(&key, 4095..4097).await.unwrap()[..] == data[4095..]);
    }

    /// `cargo test --release -p s3dlio-core direct_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn direct_throughput_vs_buffered() {
        const TOTAL: usize = 1 << 30;
        const CHUNK: usize = 8 << 20;
        let dir = scratch();
        let chunk = Bytes::from(pattern(CHUNK, 3));
        let gib = |secs: f64| TOTAL as f64 / secs / (1u64 << 30) as f64;

        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("direct.bin"));
        let t = Instant::now();
        let mut w = store.writer(&key, &PutOptions::default()).await.unwrap();
        for _ in 0..TOTAL / CHUNK {
            w.write(chunk.clone()).await.unwrap();
        }
        w.finish().await.unwrap();
        let direct = t.elapsed().as_secs_f64();

        let path = dir.path().join("buffered.bin");
        let c = chunk.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = File::create(&path).unwrap();
            for _ in 0..TOTAL / CHUNK {
                f.write_all(&c).unwrap();
            }
            f.sync_all().unwrap();
        })
        .await
        .unwrap();
        let buffered = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let got = store.get(&key).await.unwrap();
        let direct_read = t.elapsed().as_secs_f64();
        assert_eq!(got.len(), TOTAL);
        drop(got);

        eprintln!(
            "1 GiB write: direct:// {direct:.2}s ({:.2} GiB/s), buffered+fsync {buffered:.2}s ({:.2} GiB/s); \
             direct:// get {direct_read:.2}s ({:.2} GiB/s)",
            gib(direct),
            gib(buffered),
            gib(direct_read)
        );
    }
}
