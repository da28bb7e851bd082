//! Packed objects for the framework adapters (PyTorch DCP): a streaming
//! item writer that takes buffers without copying them, a parallel item
//! reader that fills caller buffers, and the small object operations a
//! commit needs.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, TryLockError};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyList};
use s3dlio_core::pack::{
    self, Encoding, GroupRequest, Grouping, ItemRead, PackOptions, ReadOptions, Target,
};
use s3dlio_core::store::{Location, PutOptions};

use crate::args::Level;
use crate::buffer::BorrowedBuffer;
use crate::errors::IntoPyResult;
use crate::objects::locate;
use crate::options::write_options;
use crate::runtime::run;

/// A buffer export that may travel to I/O threads inside `Bytes`.
struct SharedBuffer(BorrowedBuffer);

// SAFETY: the export pins the exporter's memory until it is released, and
// `BorrowedBuffer` releases it with the GIL held, from whichever thread
// drops it last.
unsafe impl Send for SharedBuffer {}

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Writes items back to back into one object: `write_item` per item, then
/// `close()` publishes the object; `abort()` (or an exception inside a
/// `with` block) publishes nothing.
#[pyclass(frozen, module = "s3dlio._native")]
pub struct PackWriter {
    uri: String,
    inner: Mutex<Option<pack::PackWriter>>,
}

impl PackWriter {
    fn lock(&self) -> PyResult<MutexGuard<'_, Option<pack::PackWriter>>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "pack writer is in use by another thread",
            )),
        }
    }

    fn closed(&self) -> PyErr {
        PyValueError::new_err(format!("{}: pack writer is closed", self.uri))
    }
}

#[pymethods]
impl PackWriter {
    #[new]
    #[pyo3(signature = (uri, *, compression_level=None, zstd_workers=0, checksum=true, part_size=None, fsync=false, storage_options=None))]
    // The keyword arguments are the public Python signature.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        uri: &str,
        compression_level: Option<Level>,
        zstd_workers: u32,
        checksum: bool,
        part_size: Option<usize>,
        fsync: bool,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let compression_level = crate::args::level(compression_level);
        let write = write_options(compression_level, part_size, fsync)?;
        if zstd_workers > 0 {
            s3dlio_core::limits::threads("zstd_workers", u64::from(zstd_workers)).py()?;
        }
        let loc = locate(uri, storage_options)?;
        let opts = PackOptions {
            level: compression_level,
            zstd_workers,
            checksum,
            piece_size: write.put.part_size,
            put: write.put,
        };
        let writer = run(py, pack::PackWriter::open(&loc.store, &loc.key, opts))?;
        Ok(PackWriter {
            uri: loc.uri(),
            inner: Mutex::new(Some(writer)),
        })
    }

    #[getter]
    fn uri(&self) -> String {
        self.uri.clone()
    }

    /// Append one item made of `segments` (any buffers, written from their
    /// memory without a copy). `byte_group=(segment, width)` stores that
    /// segment (a float array of `width`-byte elements) byte-grouped.
    /// Returns a `PackedItem`: the stored byte range, the logical size,
    /// the CRC32C of the logical bytes and, for a byte-grouped item, the
    /// `(start, length, width, frame)` `read_items` needs to restore it.
    #[pyo3(signature = (segments, byte_group=None))]
    fn write_item(
        &self,
        py: Python<'_>,
        segments: &Bound<'_, PyList>,
        byte_group: Option<(usize, usize)>,
    ) -> PyResult<PyPackedItem> {
        let bytes = shared_segments(segments)?;
        let mut guard = self.lock()?;
        let writer = guard.as_mut().ok_or_else(|| self.closed())?;
        let group = byte_group.map(|(segment, width)| GroupRequest { segment, width });
        Ok(placed_item(run(py, writer.write_item(bytes, group))?))
    }

    /// Whether `write_items` writes from the buffers on the calling thread
    /// (uncompressed, on file://); otherwise it takes them item by item
    /// like `write_item`.
    #[getter]
    fn in_place(&self) -> PyResult<bool> {
        let mut guard = self.lock()?;
        Ok(guard.as_mut().is_some_and(|w| w.writes_in_place()))
    }

    /// Append several items, each a list of segments as for `write_item`
    /// (no byte grouping); returns one `PackedItem` per item. One
    /// call for many items: fewer crossings into native code, and on
    /// file:// small items share one vectored write.
    fn write_items(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyList>,
    ) -> PyResult<Vec<PyPackedItem>> {
        let mut guard = self.lock()?;
        let writer = guard.as_mut().ok_or_else(|| self.closed())?;
        if !writer.writes_in_place() {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                let bytes = shared_segments(segment_list(&item)?)?;
                out.push(placed_item(run(py, writer.write_item(bytes, None))?));
            }
            return Ok(out);
        }
        // Held until the write returns: the bytes are borrowed, not copied.
        let mut held: Vec<Vec<BorrowedBuffer>> = Vec::with_capacity(items.len());
        for item in items.iter() {
            held.push(
                segment_list(&item)?
                    .iter()
                    .map(|seg| BorrowedBuffer::readable(&seg))
                    .collect::<PyResult<_>>()?,
            );
        }
        let slices: Vec<Vec<&[u8]>> = held
            .iter()
            .map(|segs| segs.iter().map(BorrowedBuffer::as_slice).collect())
            .collect();
        let placed = py.detach(|| writer.write_items_in_place(&slices)).py()?;
        Ok(placed.into_iter().map(placed_item).collect())
    }

    /// Publish the object; returns its stored size.
    fn close(&self, py: Python<'_>) -> PyResult<u64> {
        let writer = self.lock()?.take().ok_or_else(|| self.closed())?;
        Ok(run(py, writer.finish())?.size)
    }

    /// Drop what was written; nothing becomes visible.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(writer) = self.lock()?.take() {
            run(py, writer.abort())?;
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
        } else if self.lock()?.is_some() {
            self.close(py)?;
        }
        Ok(false)
    }
}

/// One item of `write_items`: its list of segments.
fn segment_list<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyList>> {
    item.cast::<PyList>()
        .map_err(|_| PyValueError::new_err("write_items takes a list of segment lists"))
}

/// An item's segments as `Bytes` that keep the buffer exports alive for as
/// long as the store holds them.
fn shared_segments(segments: &Bound<'_, PyList>) -> PyResult<Vec<Bytes>> {
    segments
        .iter()
        .map(|seg| {
            Ok(Bytes::from_owner(SharedBuffer(BorrowedBuffer::readable(
                &seg,
            )?)))
        })
        .collect()
}

/// Where `PackWriter.write_item` placed one item: what an adapter records
/// so that `read_items` can fetch and check it again.
#[pyclass(frozen, get_all, name = "PackedItem", module = "s3dlio._native")]
pub struct PyPackedItem {
    /// Stored byte range inside the object.
    offset: u64,
    length: u64,
    /// Logical (uncompressed) size.
    size: u64,
    /// CRC32C of the logical bytes; None when checksums are off.
    crc32c: Option<u32>,
    /// A byte-grouped item's `(start, length, width, frame)`, else None.
    /// A plain tuple: adapters store it in their own metadata as it is.
    grouping: Option<GroupTuple>,
    /// A byte-grouped item's data frames, in order: `(stored length,
    /// CRC32C of the logical bytes)`, each readable alone; empty otherwise.
    frames: Vec<(u64, u32)>,
}

#[pymethods]
impl PyPackedItem {
    fn __repr__(&self) -> String {
        let crc = self
            .crc32c
            .map_or_else(|| "None".to_string(), |c| format!("0x{c:08x}"));
        let grouping = self.grouping.map_or_else(
            || "None".to_string(),
            |(s, l, w, f)| format!("({s}, {l}, {w}, {f})"),
        );
        format!(
            "PackedItem(offset={}, length={}, size={}, crc32c={crc}, grouping={grouping}, \
             frames={})",
            self.offset,
            self.length,
            self.size,
            self.frames.len()
        )
    }
}

fn placed_item(placed: pack::PackedItem) -> PyPackedItem {
    PyPackedItem {
        offset: placed.offset,
        length: placed.length,
        size: placed.size,
        crc32c: placed.crc32c,
        grouping: placed
            .grouping
            .map(|g| (g.start, g.length, g.width, g.frame)),
        frames: placed.frames.iter().map(|f| (f.stored, f.crc32c)).collect(),
    }
}

/// `name` under `base`, refusing names that would leave it (the rule is
/// the core's `Location::child_checked`).
fn child_key(base: &Location, name: &str) -> PyResult<String> {
    base.child_checked(name).py()
}

/// `(start, length, width, frame)` of a byte-grouped item.
type GroupTuple = (u64, u64, usize, usize);

/// The `encoding` of an `ItemRead`: False (stored as is), True (one
/// zstd frame) or a byte-grouped item's `(start, length, width, frame)`.
fn parse_encoding(value: &Bound<'_, PyAny>) -> PyResult<Encoding> {
    if let Ok(compressed) = value.extract::<bool>() {
        return Ok(if compressed {
            Encoding::Zstd
        } else {
            Encoding::Plain
        });
    }
    let (start, length, width, frame): GroupTuple = value.extract().map_err(|_| {
        PyValueError::new_err(
            "an item's encoding must be False, True or a (start, length, width, frame) tuple",
        )
    })?;
    Ok(Encoding::Grouped(Grouping {
        start,
        length,
        width,
        frame,
    }))
}

/// One item `read_items` fetches: where its stored bytes are, how they
/// encode the logical bytes, the CRC32C to check and the caller buffers
/// the logical bytes go to.
#[pyclass(frozen, name = "ItemRead", module = "s3dlio._native")]
pub struct PyItemRead {
    /// The packed object's path relative to `read_items`' `base_uri`.
    #[pyo3(get)]
    name: String,
    /// Stored byte range of the item inside the object.
    #[pyo3(get)]
    offset: u64,
    #[pyo3(get)]
    length: u64,
    /// As given (False, True or the grouping tuple), and parsed.
    #[pyo3(get, name = "encoding")]
    encoding_given: Py<PyAny>,
    encoding: Encoding,
    /// CRC32C of the logical bytes; None: unchecked.
    #[pyo3(get)]
    crc32c: Option<u32>,
    /// Names the item in errors.
    #[pyo3(get)]
    label: String,
    /// Writable buffers (filled) and ints (bytes skipped), covering the
    /// logical bytes in order.
    #[pyo3(get)]
    targets: Py<PyList>,
}

#[pymethods]
impl PyItemRead {
    /// `encoding`: False (stored as is), True (one zstd frame) or the
    /// `(start, length, width, frame)` a byte-grouped item was written
    /// with (`PackedItem.grouping`).
    #[new]
    #[pyo3(signature = (name, offset, length, encoding, crc32c, label, targets))]
    fn new(
        name: String,
        offset: u64,
        length: u64,
        encoding: &Bound<'_, PyAny>,
        crc32c: Option<u32>,
        label: String,
        targets: &Bound<'_, PyList>,
    ) -> PyResult<Self> {
        Ok(PyItemRead {
            name,
            offset,
            length,
            encoding: parse_encoding(encoding)?,
            encoding_given: encoding.clone().unbind(),
            crc32c,
            label,
            targets: targets.clone().unbind(),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "ItemRead(name={:?}, offset={}, length={}, label={:?})",
            self.name, self.offset, self.length, self.label
        )
    }
}

/// An `ItemRead` with its targets resolved to held buffers.
struct ParsedItem {
    key: String,
    offset: u64,
    length: u64,
    encoding: Encoding,
    crc32c: Option<u32>,
    label: String,
    /// Per target: an index into the held buffers, or a byte count to skip.
    targets: Vec<Result<usize, usize>>,
}

/// Read items of packed objects under `base_uri` into caller buffers.
///
/// `items` holds `ItemRead`s: the object's name relative to `base_uri`,
/// the stored byte range, the encoding, the CRC32C of the logical bytes
/// (None: unchecked), a label naming the item in errors, and targets that
/// cover the logical bytes in order with writable buffers (filled) or
/// ints (bytes to skip).
#[pyfunction]
#[pyo3(signature = (base_uri, items, thread_count=8, part_size=None, storage_options=None))]
pub fn read_items(
    py: Python<'_>,
    base_uri: &str,
    items: &Bound<'_, PyList>,
    thread_count: usize,
    part_size: Option<usize>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<()> {
    let loc = locate(base_uri, storage_options)?;
    let mut opts = ReadOptions {
        threads: thread_count,
        ..Default::default()
    };
    opts.threads = s3dlio_core::limits::threads("thread_count", thread_count as u64).py()?;
    if let Some(p) = part_size {
        opts.part_size = s3dlio_core::limits::part_size("part_size", p as u64).py()?;
    }
    let mut buffers: Vec<BorrowedBuffer> = Vec::new();
    let mut parsed = Vec::with_capacity(items.len());
    for item in items.iter() {
        let item = item.cast::<PyItemRead>().map_err(|_| {
            PyTypeError::new_err(format!(
                "each item must be an s3dlio._native.ItemRead, not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let item = item.get();
        let targets = item.targets.bind(py);
        let mut slots = Vec::with_capacity(targets.len());
        for target in targets.iter() {
            if target.is_instance_of::<PyInt>() {
                slots.push(Err(target.extract::<usize>()?));
            } else {
                buffers.push(BorrowedBuffer::writable(&target)?);
                slots.push(Ok(buffers.len() - 1));
            }
        }
        parsed.push(ParsedItem {
            key: child_key(&loc, &item.name)?,
            offset: item.offset,
            length: item.length,
            encoding: item.encoding,
            crc32c: item.crc32c,
            label: item.label.clone(),
            targets: slots,
        });
    }
    check_disjoint(&buffers)?;
    let mut slices: Vec<Option<&mut [u8]>> =
        buffers.iter_mut().map(|b| Some(b.as_mut_slice())).collect();
    let mut reads = Vec::with_capacity(parsed.len());
    for p in parsed {
        let mut targets = Vec::with_capacity(p.targets.len());
        for slot in p.targets {
            targets.push(match slot {
                Ok(i) => Target::Into(slices[i].take().unwrap_or_default()),
                Err(n) => Target::Skip(n),
            });
        }
        reads.push(ItemRead {
            key: p.key,
            offset: p.offset,
            length: p.length,
            encoding: p.encoding,
            crc32c: p.crc32c,
            label: p.label,
            targets,
        });
    }
    let store = loc.store.clone();
    py.detach(|| pack::read_items(store, reads, &opts)).py()
}

/// Refuse target buffers that share memory: they would be filled from two
/// places at once.
fn check_disjoint(buffers: &[BorrowedBuffer]) -> PyResult<()> {
    let mut spans: Vec<(usize, usize)> = buffers
        .iter()
        .filter(|b| b.len() > 0)
        .map(|b| {
            let start = b.as_slice().as_ptr() as usize;
            (start, start + b.len())
        })
        .collect();
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(PyValueError::new_err(
            "read targets overlap: each buffer must be distinct memory",
        ));
    }
    Ok(())
}

/// Store `data` at `uri`. With `exclusive`, only if nothing is there yet
/// (returns False when something was); `fsync` makes it durable first.
#[pyfunction]
#[pyo3(signature = (uri, data, *, exclusive=false, fsync=false, storage_options=None))]
pub fn put_object(
    py: Python<'_>,
    uri: &str,
    data: &Bound<'_, PyAny>,
    exclusive: bool,
    fsync: bool,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<bool> {
    let loc = locate(uri, storage_options)?;
    let bytes = Bytes::copy_from_slice(BorrowedBuffer::readable(data)?.as_slice());
    let (store, key) = (loc.store.clone(), loc.key.clone());
    run(py, async move {
        if exclusive {
            store.put_if_absent(&key, bytes).await
        } else {
            let opts = PutOptions {
                fsync,
                ..Default::default()
            };
            store.put(&key, bytes, &opts).await.map(|_| true)
        }
    })
}

/// Objects under `uri` smaller than this are written with one request
/// (writers given `part_size`); None where writes are not requests.
#[pyfunction]
#[pyo3(signature = (uri, part_size=None, storage_options=None))]
pub fn single_put_limit(
    uri: &str,
    part_size: Option<usize>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Option<u64>> {
    let put = write_options(None, part_size, false)?.put;
    Ok(locate(uri, storage_options)?.store.single_put_limit(&put))
}

/// The canonical URI of `uri` (plain paths become absolute `file://`);
/// ValueError for schemes this build cannot open.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn resolve_uri(
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<String> {
    Ok(locate(uri, storage_options)?.uri())
}

/// `check_encoding(compression_level, byte_grouping)`: the core's rule for
/// encoding settings (`ValueError` naming what is wrong), for adapters
/// that validate their arguments before anything is written.
#[pyfunction]
#[pyo3(signature = (compression_level, byte_grouping))]
pub fn check_encoding(
    compression_level: Option<Level>,
    byte_grouping: Option<bool>,
) -> PyResult<()> {
    s3dlio_core::codec::check_encoding(crate::args::level(compression_level), byte_grouping).py()
}

/// CRC32C of each `block`-byte run of `data` (the last run may be
/// shorter). Recorded beside a stored-as-is item, they let a reader that
/// needs only part of it read whole blocks and check each one, where the
/// item's own CRC32C covers only a read of all of it.
#[pyfunction]
#[pyo3(signature = (data, block))]
pub fn block_crc32c(py: Python<'_>, data: &Bound<'_, PyAny>, block: usize) -> PyResult<Vec<u32>> {
    if block == 0 {
        return Err(PyValueError::new_err("block must be a positive byte count"));
    }
    let held = BorrowedBuffer::readable(data)?;
    let bytes = held.as_slice();
    Ok(py.detach(|| bytes.chunks(block).map(s3dlio_core::crc::crc32c).collect()))
}
