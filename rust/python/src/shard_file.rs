//! A read-only, seekable file object over one checkpoint shard. Reads of a
//! compressed shard are checked frame by frame; a pass that reads the shard
//! from start to end is also checked against the manifest's CRC32C.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use s3dlio_core::checkpoint::ShardHandle;
use s3dlio_core::codec::crc::crc32c_append;
use s3dlio_core::Error;

use crate::buffer::BorrowedBuffer;
use crate::errors::to_py;
use crate::runtime::run;

struct Cursor {
    pos: u64,
    /// CRC32C of bytes [0, pos) while every read so far was sequential.
    running_crc: Option<u32>,
    closed: bool,
}

#[pyclass(frozen, module = "s3dlio._native")]
pub struct ShardFile {
    handle: ShardHandle,
    cursor: Mutex<Cursor>,
}

impl ShardFile {
    pub fn new(handle: ShardHandle) -> Self {
        ShardFile {
            handle,
            cursor: Mutex::new(Cursor {
                pos: 0,
                running_crc: Some(0),
                closed: false,
            }),
        }
    }

    fn cursor(&self) -> PyResult<MutexGuard<'_, Cursor>> {
        let guard = match self.cursor.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                return Err(PyRuntimeError::new_err(
                    "shard file is in use by another thread",
                ))
            }
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if guard.closed {
            return Err(PyValueError::new_err("I/O operation on closed shard file"));
        }
        Ok(guard)
    }

    fn size(&self) -> u64 {
        self.handle.meta.size
    }

    /// Account for `data` read at the cursor; at the end of a sequential
    /// pass, compare with the manifest.
    fn advance(&self, cur: &mut Cursor, data: &[u8]) -> PyResult<()> {
        cur.running_crc = cur.running_crc.map(|c| crc32c_append(c, data));
        cur.pos += data.len() as u64;
        if cur.pos == self.size() {
            if let Some(actual) = cur.running_crc {
                let expected = self.handle.meta.crc32c;
                if actual != expected {
                    cur.running_crc = None;
                    return Err(to_py(Error::Integrity {
                        uri: self.handle.reader.uri(),
                        offset: 0,
                        expected,
                        actual,
                    }));
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl ShardFile {
    /// Up to `size` bytes from the cursor (all remaining when negative).
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        let mut cur = self.cursor()?;
        let remaining = self.size() - cur.pos.min(self.size());
        let n = if size < 0 {
            remaining
        } else {
            (size as u64).min(remaining)
        };
        let start = cur.pos;
        let data = run(py, self.handle.reader.read_range(start..start + n))?;
        self.advance(&mut cur, &data)?;
        Ok(PyBytes::new(py, &data))
    }

    /// Fill the writable buffer `buf` from the cursor; returns the count.
    fn readinto(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut cur = self.cursor()?;
        let mut out = BorrowedBuffer::writable(buf)?;
        let remaining = self.size() - cur.pos.min(self.size());
        let n = (out.len() as u64).min(remaining) as usize;
        let dst = &mut out.as_mut_slice()[..n];
        if cur.pos == 0 && n as u64 == self.size() {
            // Whole shard in one call: decode straight into the caller's memory.
            run(
                py,
                self.handle
                    .reader
                    .read_into(dst, Some(self.handle.meta.crc32c)),
            )?;
            cur.pos = self.size();
            cur.running_crc = None;
        } else {
            let start = cur.pos;
            let data = run(py, self.handle.reader.read_range(start..start + n as u64))?;
            dst.copy_from_slice(&data);
            self.advance(&mut cur, &data)?;
        }
        Ok(n)
    }

    #[pyo3(signature = (offset, whence=0))]
    fn seek(&self, offset: i64, whence: i32) -> PyResult<u64> {
        let mut cur = self.cursor()?;
        let base = match whence {
            0 => 0i128,
            1 => cur.pos as i128,
            2 => self.size() as i128,
            other => return Err(PyValueError::new_err(format!("invalid whence {other}"))),
        };
        let target = base + offset as i128;
        if target < 0 {
            return Err(PyValueError::new_err(format!(
                "negative seek position {target}"
            )));
        }
        let target = target as u64;
        if target != cur.pos {
            cur.running_crc = if target == 0 { Some(0) } else { None };
        }
        cur.pos = target;
        Ok(target)
    }

    fn tell(&self) -> PyResult<u64> {
        Ok(self.cursor()?.pos)
    }

    fn readable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        false
    }

    fn close(&self) {
        if let Ok(mut c) = self.cursor.lock() {
            c.closed = true;
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.cursor.lock().map(|c| c.closed).unwrap_or(true)
    }

    /// Logical size of the shard in bytes.
    #[getter]
    fn size_bytes(&self) -> u64 {
        self.size()
    }

    fn __len__(&self) -> usize {
        self.size() as usize
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}
