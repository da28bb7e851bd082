//! The O_DIRECT I/O engine: aligned reads of any range ([`ReadIo`]) and
//! block writes at offsets ([`WriteIo`]), with the refusal checks that keep
//! a filesystem without O_DIRECT from silently falling back to buffered I/O.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::aligned::{is_aligned, return_bounce, round_up, take_bounce, AlignedBuf, ALIGN};
use crate::error::{Error, Result};

/// Largest single pread/pwrite; Linux caps one call just below 2 GiB and a
/// 1 GiB request is already enough to keep a device's queue full.
pub(super) const MAX_IO: usize = 1 << 30;

pub(super) fn refused(path: &Path) -> Error {
    Error::invalid(format!(
        "O_DIRECT is not supported on the filesystem holding {} (tmpfs?); \
         use file:// or pass direct_fallback=True",
        path.display()
    ))
}

pub(super) fn is_direct(file: &File) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we own has no memory effects.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_DIRECT != 0)
}

/// Clear O_DIRECT on the open file description (shared by every user of it).
pub(super) fn clear_direct(file: &File) -> io::Result<()> {
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

pub(super) struct ReadIo<'a> {
    pub(super) file: &'a File,
    pub(super) uri: &'a str,
    pub(super) path: &'a Path,
    pub(super) fallback: bool,
}

impl ReadIo<'_> {
    /// Read the aligned span covering `range` and return exactly `range`.
    pub(super) fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
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
    pub(super) fn read_into(&self, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
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
pub(super) struct WriteIo {
    pub(super) file: File,
    pub(super) uri: String,
    /// The final path, named in errors instead of the temp name.
    pub(super) dest: PathBuf,
    pub(super) fallback: bool,
}

impl WriteIo {
    pub(super) fn write_all_at(&self, data: &[u8], offset: u64) -> Result<()> {
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

pub(super) fn pwrite_all(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
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
