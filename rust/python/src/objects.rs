//! Module-level functions on single objects: `put_bytes`, `get_bytes`, …

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use s3dlio_core::codec::{EncodedMeta, ObjectReader};
use s3dlio_core::object;
use s3dlio_core::store::{open_store, Location};

use crate::args::Level;
use crate::buffer::BorrowedBuffer;
use crate::errors::IntoPyResult;
use crate::options::{compression_threads, store_options, with_dtype, write_options};
use crate::runtime::run;

/// The store and key of `uri`, opened per call (so changed options and
/// environment apply to the next call); the core shares the cloud clients
/// of equal resolved configurations (`store::shared`), so an open per call
/// reuses one connection pool.
pub(crate) fn locate(
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Location> {
    open_store(uri, &store_options(storage_options)?).py()
}

pub(crate) fn encoded_dict<'py>(
    py: Python<'py>,
    uri: &str,
    m: &EncodedMeta,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("uri", uri)?;
    d.set_item("size", m.logical_size)?;
    d.set_item("stored_size", m.stored_size)?;
    d.set_item("crc32c", m.crc32c)?;
    d.set_item("codec", m.codec.name())?;
    d.set_item("compression_level", m.level)?;
    d.set_item("byte_group", m.byte_group)?;
    d.set_item("ratio", m.ratio())?;
    Ok(d)
}

/// Write options of the raw APIs: level, `dtype=` (byte grouping for
/// float data) and `compression_threads=`.
fn raw_write_options(
    compression_level: Option<Level>,
    dtype: Option<&Bound<'_, PyAny>>,
    threads: Option<usize>,
    fsync: bool,
) -> PyResult<s3dlio_core::object::WriteOptions> {
    let mut opts = write_options(crate::args::level(compression_level), None, fsync)?;
    opts.encode = with_dtype(opts.encode, dtype)?;
    opts.encode.threads = compression_threads(threads)?;
    Ok(opts)
}

/// Store `data` (any buffer) at `uri`; compressed when a level is given.
/// `dtype` (float data) adds the byte-grouping filter when compressing;
/// `compression_threads` caps the frames compressed at once (None: one
/// per core); `fsync` makes the object durable before returning.
#[pyfunction]
#[pyo3(signature = (uri, data, compression_level=None, storage_options=None, *, dtype=None, compression_threads=None, fsync=false))]
// The keyword arguments are the public Python signature.
#[allow(clippy::too_many_arguments)]
pub fn put_bytes<'py>(
    py: Python<'py>,
    uri: &str,
    data: &Bound<'py, PyAny>,
    compression_level: Option<Level>,
    storage_options: Option<HashMap<String, String>>,
    dtype: Option<&Bound<'py, PyAny>>,
    compression_threads: Option<usize>,
    fsync: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = raw_write_options(compression_level, dtype, compression_threads, fsync)?;
    let loc = locate(uri, storage_options)?;
    let buf = BorrowedBuffer::readable(data)?;
    let slice = buf.as_slice();
    let meta = run(py, object::put_object(&loc, slice, &opts))?;
    drop(buf);
    encoded_dict(py, &loc.uri(), &meta)
}

/// Open `uri` for reading, decoding compressed objects transparently.
pub(crate) fn open_reader(py: Python<'_>, loc: &Location) -> PyResult<ObjectReader> {
    run(py, ObjectReader::open(loc.store.clone(), &loc.key))
}

/// Fill a new `bytes` of the object's logical size straight from the store.
pub(crate) fn read_to_bytes<'py>(
    py: Python<'py>,
    reader: &ObjectReader,
    expected_crc: Option<u32>,
) -> PyResult<Bound<'py, PyBytes>> {
    let len = reader.logical_size() as usize;
    PyBytes::new_with(py, len, |dst| run(py, reader.read_into(dst, expected_crc)))
}

/// The whole object (decompressed and CRC32C-checked when it carries one).
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn get_bytes<'py>(
    py: Python<'py>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let loc = locate(uri, storage_options)?;
    let reader = open_reader(py, &loc)?;
    read_to_bytes(py, &reader, None)
}

/// `length` logical bytes from `offset` (fewer at the end of the object).
#[pyfunction]
#[pyo3(signature = (uri, offset, length, storage_options=None))]
pub fn get_range<'py>(
    py: Python<'py>,
    uri: &str,
    offset: u64,
    length: u64,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let loc = locate(uri, storage_options)?;
    let reader = open_reader(py, &loc)?;
    let end = offset.saturating_add(length);
    let data = run(py, reader.read_range(offset..end))?;
    Ok(PyBytes::new(py, &data))
}

/// Read logical bytes from `offset` into the writable buffer `out`
/// (e.g. a numpy array); returns the number of bytes read.
#[pyfunction]
#[pyo3(signature = (uri, offset, out, storage_options=None))]
pub fn read_into(
    py: Python<'_>,
    uri: &str,
    offset: u64,
    out: &Bound<'_, PyAny>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<usize> {
    let loc = locate(uri, storage_options)?;
    let reader = open_reader(py, &loc)?;
    let mut buf = BorrowedBuffer::writable(out)?;
    let want = buf.len() as u64;
    let size = reader.logical_size();
    if offset > size {
        return Err(PyValueError::new_err(format!(
            "{}: offset {offset} is past the end ({size} bytes)",
            reader.uri()
        )));
    }
    let n = want.min(size - offset) as usize;
    let dst = &mut buf.as_mut_slice()[..n];
    if offset == 0 && n as u64 == size {
        // A full read checks the object's CRC32C as a whole.
        run(py, reader.read_into(dst, None))?;
    } else {
        let data = run(py, reader.read_range(offset..offset + n as u64))?;
        dst.copy_from_slice(&data);
    }
    Ok(n)
}

/// Size, stored size, codec, ratio and CRC32C of one object.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn stat<'py>(
    py: Python<'py>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let loc = locate(uri, storage_options)?;
    let store = loc.store.clone();
    let key = loc.key.clone();
    let (meta, reader) = run(py, ObjectReader::open_with_head(store, &key))?;
    let d = PyDict::new(py);
    d.set_item("uri", loc.uri())?;
    d.set_item("size", reader.logical_size())?;
    d.set_item("stored_size", meta.size)?;
    d.set_item("codec", reader.codec().name())?;
    d.set_item("byte_group", reader.byte_group())?;
    d.set_item(
        "ratio",
        s3dlio_core::checkpoint::manifest::ratio(meta.size, reader.logical_size()),
    )?;
    d.set_item("crc32c", reader.crc32c().or(meta.crc32c))?;
    d.set_item("etag", meta.etag)?;
    d.set_item(
        "last_modified",
        meta.last_modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
    )?;
    Ok(d)
}

/// URIs of every object under the prefix `uri`.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn list(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Vec<String>> {
    let loc = locate(uri, storage_options)?;
    let objects = run(py, loc.store.list(&loc.key))?;
    Ok(objects.iter().map(|m| loc.store.uri(&m.key)).collect())
}

#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn delete(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<()> {
    let loc = locate(uri, storage_options)?;
    run(py, loc.store.delete(&loc.key))
}

/// Stream a local file to `uri` with bounded memory (keywords as for
/// `put_bytes`).
#[pyfunction]
#[pyo3(signature = (path, uri, compression_level=None, storage_options=None, *, dtype=None, compression_threads=None, fsync=false))]
// The keyword arguments are the public Python signature.
#[allow(clippy::too_many_arguments)]
pub fn upload<'py>(
    py: Python<'py>,
    path: PathBuf,
    uri: &str,
    compression_level: Option<Level>,
    storage_options: Option<HashMap<String, String>>,
    dtype: Option<&Bound<'py, PyAny>>,
    compression_threads: Option<usize>,
    fsync: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = raw_write_options(compression_level, dtype, compression_threads, fsync)?;
    let loc = locate(uri, storage_options)?;
    let meta = run(py, object::upload_file(&path, &loc, &opts))?;
    encoded_dict(py, &loc.uri(), &meta)
}

/// Stream `uri` into a local file; returns its logical size.
#[pyfunction]
#[pyo3(signature = (uri, path, storage_options=None))]
pub fn download(
    py: Python<'_>,
    uri: &str,
    path: PathBuf,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<u64> {
    let loc = locate(uri, storage_options)?;
    run(py, object::download_file(&loc, &path))
}

/// A streaming writer to one object: `write(data)` any number of times,
/// then `close()` to publish it. Leaving a `with` block by an exception
/// (or `abort()`) publishes nothing.
#[pyclass(frozen, module = "s3dlio._native")]
pub struct ObjectStreamWriter {
    uri: String,
    inner: std::sync::Mutex<Option<s3dlio_core::codec::EncodingWriter>>,
}

impl ObjectStreamWriter {
    fn take(&self) -> PyResult<Option<s3dlio_core::codec::EncodingWriter>> {
        match self.inner.try_lock() {
            Ok(mut g) => Ok(g.take()),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner().take()),
            Err(std::sync::TryLockError::WouldBlock) => Err(
                pyo3::exceptions::PyRuntimeError::new_err("writer is in use by another thread"),
            ),
        }
    }
}

#[pymethods]
impl ObjectStreamWriter {
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buf = BorrowedBuffer::readable(data)?;
        let Some(mut w) = self.take()? else {
            return Err(PyValueError::new_err(format!(
                "{}: writer is closed",
                self.uri
            )));
        };
        let slice = buf.as_slice();
        match run(py, w.write_slice(slice)) {
            Ok(()) => {
                *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
                Ok(slice.len())
            }
            Err(e) => {
                run(py, w.abort())?;
                Err(e)
            }
        }
    }

    /// Publish the object; returns its size, stored size, CRC32C and ratio.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(w) = self.take()? else {
            return Err(PyValueError::new_err(format!(
                "{}: writer is already closed",
                self.uri
            )));
        };
        let meta = run(py, w.finish())?;
        encoded_dict(py, &self.uri, &meta)
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(w) = self.take()? {
            run(py, w.abort())?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.abort(py)?;
        } else if self.inner.lock().map(|g| g.is_some()).unwrap_or(false) {
            self.close(py)?;
        }
        Ok(false)
    }
}

/// Open a streaming writer on `uri` (keywords as for `put_bytes`).
#[pyfunction]
#[pyo3(signature = (uri, compression_level=None, storage_options=None, *, dtype=None, compression_threads=None, fsync=false))]
pub fn open_writer(
    py: Python<'_>,
    uri: &str,
    compression_level: Option<Level>,
    storage_options: Option<HashMap<String, String>>,
    dtype: Option<&Bound<'_, PyAny>>,
    compression_threads: Option<usize>,
    fsync: bool,
) -> PyResult<ObjectStreamWriter> {
    let opts = raw_write_options(compression_level, dtype, compression_threads, fsync)?;
    let loc = locate(uri, storage_options)?;
    let w = run(py, object::open_writer(&loc, &opts))?;
    Ok(ObjectStreamWriter {
        uri: loc.uri(),
        inner: std::sync::Mutex::new(Some(w)),
    })
}
