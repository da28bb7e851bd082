//! Memory O_DIRECT accepts: 4 KiB-aligned heap buffers and mappings, and
//! the per-thread bounce buffer reads into caller memory go through.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Alignment for buffers, offsets and lengths. 4 KiB satisfies both 512-byte
/// and 4 KiB logical-sector devices, and equals the page size.
pub(super) const ALIGN: usize = 4096;

/// Largest bounce buffer one read into caller memory holds: reads of any
/// size go through it a block-aligned piece at a time.
pub(super) const BOUNCE: usize = 4 << 20;

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
pub(super) fn take_bounce() -> io::Result<AlignedBuf> {
    match SPARE_BOUNCE.with(|s| s.borrow_mut().take()) {
        Some(mut buf) => {
            buf.len = 0;
            Ok(buf)
        }
        None => AlignedBuf::mapped(BOUNCE),
    }
}

/// Keep `buf` as this thread's spare bounce buffer.
pub(super) fn return_bounce(buf: AlignedBuf) {
    SPARE_BOUNCE.with(|s| *s.borrow_mut() = Some(buf));
}

pub(super) fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

pub(super) fn is_aligned(data: &[u8], offset: u64) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN)
        && data.len().is_multiple_of(ALIGN)
        && offset.is_multiple_of(ALIGN as u64)
}

/// A heap buffer aligned for O_DIRECT. Only the first `len` bytes are ever
/// exposed, so the rest may stay uninitialised (no memset of large reads).
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    pub(super) cap: usize,
    pub(super) len: usize,
    /// Mapped with mmap (see [`AlignedBuf::mapped`]) rather than allocated.
    mapped: bool,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the initialised prefix.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `cap` must be a non-zero multiple of ALIGN.
    pub(super) fn new(cap: usize) -> io::Result<Self> {
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
    pub(super) fn mapped(cap: usize) -> io::Result<Self> {
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

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `append` or `pread`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Copy as much of `data` as fits; returns how much did.
    pub(super) fn append(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        // SAFETY: `len + n <= cap`, and `data` cannot overlap our allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    /// pread into the buffer at `at..cap`; grows `len` to cover what arrived.
    pub(super) fn pread_at(
        &mut self,
        file: &File,
        at: usize,
        max: usize,
        offset: u64,
    ) -> io::Result<usize> {
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
