//! Borrow the memory of any buffer-protocol object (bytes, bytearray,
//! memoryview, numpy arrays of any dtype) without copying it into a
//! Python `bytes`. pyo3's typed `PyBuffer<u8>` rejects non-byte formats,
//! so this requests a plain contiguous byte view instead.

use std::os::raw::c_int;

use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

/// A held buffer export; released (with the GIL held) on drop.
pub struct BorrowedBuffer {
    view: Box<ffi::Py_buffer>,
}

impl BorrowedBuffer {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        let flags: c_int = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `view` is a valid, zeroed Py_buffer the call fills in.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            let cause = PyErr::take(obj.py());
            let kind = if writable { "a writable" } else { "a" };
            let err = PyTypeError::new_err(format!(
                "expected {kind} C-contiguous buffer (bytes, bytearray, memoryview or numpy array), got {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ));
            if let Some(cause) = cause {
                err.set_cause(obj.py(), Some(cause));
            }
            return Err(err);
        }
        Ok(BorrowedBuffer { view })
    }

    pub fn readable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, false)
    }

    pub fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let b = Self::get(obj, true)?;
        if b.view.readonly != 0 {
            return Err(PyBufferError::new_err("buffer is read-only"));
        }
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    /// The bytes. Valid while `self` lives; callers pass the slice into
    /// `Python::detach`, which returns before `self` is dropped.
    pub fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the export guarantees `len` readable bytes at `buf` until release.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: requested with PyBUF_WRITABLE and checked not read-only.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf as *mut u8, self.len()) }
    }
}

impl Drop for BorrowedBuffer {
    fn drop(&mut self) {
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut *self.view) });
    }
}
