//! Read-only views of a file's bytes through a memory map, for readers
//! that only look at the bytes briefly (the decoders of compressed
//! objects): mapping page-cache pages costs a fraction of copying them
//! out with `pread` (~31 vs ~16 GB/s on the development machine), and
//! allocates nothing.
//!
//! A mapping of a file that another process truncates faults (SIGBUS)
//! when the missing pages are touched. s3dlio never truncates or rewrites
//! a published object (writes go to a temp file renamed over it, which
//! leaves the mapped inode intact), and views live only while one frame
//! is decoded; see docs/ARCHITECTURE.md, "Restore from local files".

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Pages of `len` bytes of a file from `offset` on, mapped read-only and
/// populated (page tables filled from the page cache, reading what is not
/// cached) before the mapping is handed out.
pub(crate) struct MappedRange {
    base: NonNull<u8>,
    map_len: usize,
    /// Offset of the first wanted byte inside the mapping.
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned exclusively by this value.
unsafe impl Send for MappedRange {}
// SAFETY: shared access only reads.
unsafe impl Sync for MappedRange {}

impl MappedRange {
    /// Map `len > 0` bytes of `file` at `offset`; the caller has checked
    /// that the file holds them.
    pub(crate) fn new(file: &File, offset: u64, len: usize) -> std::io::Result<Self> {
        debug_assert!(len > 0);
        let page = page_size();
        let skip = (offset % page as u64) as usize;
        let map_len = skip + len;
        let at = libc::off_t::try_from(offset - skip as u64)
            .map_err(|_| std::io::Error::other(format!("offset {offset} is too large to map")))?;
        // SAFETY: a fresh read-only shared mapping of an open file; no
        // existing memory is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                at,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))?;
        Ok(MappedRange {
            base,
            map_len,
            skip,
            len,
        })
    }
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `skip + len == map_len` bytes are mapped readable.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.skip), self.len) }
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with exactly this length. A failed munmap
        // can only leak the mapping; nothing to report it to.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(1)
}
