//! Recycled output buffers for compressed frames.
//!
//! Every frame is compressed into a buffer of `compress_bound` bytes that
//! then travels to the store as [`Bytes`]. Allocated fresh, each such
//! buffer is a new mapping whose pages the kernel faults in and zeroes on
//! first write: on the bench's bf16 weights that page clearing was ~10% of
//! a compress's CPU. A buffer taken from here instead comes back, pages
//! already mapped, when the last `Bytes` made from it by [`into_bytes`] is
//! dropped (e.g. once the store has written or joined it).
//!
//! Bounded: at most [`MAX_POOLED`] buffers and [`MAX_POOLED_BYTES`] in all
//! are kept, and none larger than [`MAX_BUFFER`] (frames can be up to
//! 1 GiB); what does not fit is freed as usual.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers smaller than this are not worth recycling.
const MIN_BUFFER: usize = 256 << 10;

/// Buffers larger than this are freed, not kept.
const MAX_BUFFER: usize = 16 << 20;

/// How many buffers, and how many bytes of them, the pool keeps at most.
const MAX_POOLED: usize = 16;
const MAX_POOLED_BYTES: usize = 64 << 20;

/// A bounded set of spare buffers; [`GLOBAL`] is the one the codec uses.
pub(crate) struct Pool(Mutex<Spare>);

struct Spare {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// The encoders' pool.
pub(crate) static GLOBAL: Pool = Pool::new();

/// [`Pool::take`] from [`GLOBAL`].
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    GLOBAL.take(capacity)
}

/// [`Pool::wrap`] into [`GLOBAL`].
pub(crate) fn into_bytes(out: Vec<u8>) -> Bytes {
    GLOBAL.wrap(out)
}

impl Pool {
    pub(crate) const fn new() -> Self {
        Pool(Mutex::new(Spare {
            buffers: Vec::new(),
            bytes: 0,
        }))
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Spare> {
        // The pool holds plain buffers and a count updated with them; a
        // panic elsewhere cannot leave it half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes: a
    /// recycled one when the pool has one large enough.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        if (MIN_BUFFER..=MAX_BUFFER).contains(&capacity) {
            let mut p = self.spare();
            if let Some(i) = p.buffers.iter().position(|b| b.capacity() >= capacity) {
                let buf = p.buffers.swap_remove(i);
                p.bytes -= buf.capacity();
                return buf;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// `out` as `Bytes`. A buffer mostly unused (a frame that compressed
    /// well) is copied into one of its own size and goes back to the pool
    /// at once, so that a store holding many small frames does not pin
    /// frame-sized allocations; otherwise it comes back when the `Bytes`
    /// (and every slice of it) is dropped.
    pub(crate) fn wrap(&'static self, out: Vec<u8>) -> Bytes {
        if out.len() < out.capacity() / 2 {
            let exact = Bytes::copy_from_slice(&out);
            self.give_back(out);
            return exact;
        }
        if out.capacity() < MIN_BUFFER {
            return Bytes::from(out);
        }
        Bytes::from_owner(Pooled(out, self))
    }

    /// Keep `buf` for a later [`Pool::take`] if the pool has room for it.
    fn give_back(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(MIN_BUFFER..=MAX_BUFFER).contains(&cap) {
            return;
        }
        buf.clear();
        let mut p = self.spare();
        if p.buffers.len() < MAX_POOLED && p.bytes + cap <= MAX_POOLED_BYTES {
            p.bytes += cap;
            p.buffers.push(buf);
        }
    }
}

/// The owner behind a pooled `Bytes`: returns its buffer when dropped.
struct Pooled(Vec<u8>, &'static Pool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.1.give_back(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    #[test]
    fn buffers_come_back_when_their_bytes_are_dropped() {
        let pool = pool();
        let mut out = pool.take(1 << 20);
        assert!(out.capacity() >= 1 << 20);
        out.extend((0..900_000u32).map(|i| i as u8));
        let ptr = out.as_ptr();
        let bytes = pool.wrap(out);
        assert_eq!(bytes.len(), 900_000);
        assert_eq!(bytes[899_999], 899_999u32 as u8);
        let slice = bytes.slice(10..20);
        drop(bytes);
        // Still referenced by the slice: not back yet.
        assert!(pool.spare().buffers.is_empty());
        assert_eq!(&slice[..], &(10..20u8).collect::<Vec<_>>()[..]);
        drop(slice);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the same buffer, recycled");
        assert!(again.is_empty());
        assert_eq!(pool.spare().bytes, 0);
    }

    #[test]
    fn mostly_empty_buffers_are_copied_out_and_bounds_hold() {
        let pool = pool();
        let mut out = pool.take(2 << 20);
        out.extend_from_slice(b"small frame");
        let ptr = out.as_ptr();
        let bytes = pool.wrap(out);
        assert_eq!(&bytes[..], b"small frame");
        assert_ne!(bytes.as_ptr(), ptr);
        // The big buffer went back at once.
        assert_eq!(pool.spare().buffers.len(), 1);
        // Bounds: count (many small buffers), total bytes (a few large).
        for (size, n) in [(MIN_BUFFER, MAX_POOLED + 4), (8 << 20, 10)] {
            let held: Vec<Bytes> = (0..n)
                .map(|_| {
                    let mut b = pool.take(size);
                    b.resize(size / 2 + 1, 1);
                    pool.wrap(b)
                })
                .collect();
            drop(held);
        }
        let p = pool.spare();
        assert_eq!(
            p.buffers.len(),
            MAX_POOLED.min(MAX_POOLED_BYTES / (8 << 20))
        );
        assert!(p.buffers.len() <= MAX_POOLED);
        assert!(p.bytes <= MAX_POOLED_BYTES);
        assert_eq!(
            p.bytes,
            p.buffers.iter().map(|b| b.capacity()).sum::<usize>()
        );
        drop(p);
        pool.give_back(Vec::with_capacity(MAX_BUFFER + 1));
        assert!(pool
            .spare()
            .buffers
            .iter()
            .all(|b| b.capacity() <= MAX_BUFFER));
    }
}
