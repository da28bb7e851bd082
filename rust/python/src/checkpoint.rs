//! `PyCheckpointStore` and the writer, stream and reader objects it hands out.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use s3dlio_core::checkpoint::{
    CheckpointReader, CheckpointStore, CheckpointWriter, Manifest, ShardMeta, ShardStream, Strategy,
};

use crate::args::{Epoch, Level, Rank, Step, WorldSize};
use crate::buffer::BorrowedBuffer;
use crate::errors::IntoPyResult;
use crate::json::{from_json, to_json};
use crate::objects::read_to_bytes;
use crate::options::{compression_threads, store_options, write_options};
use crate::runtime::run;
use s3dlio_core::codec::EncodeOptions;

/// One committed checkpoint, as `list_checkpoints()` reports it.
#[pyclass(frozen, get_all, module = "s3dlio._native")]
pub struct CheckpointInfo {
    step: u64,
    epoch: u64,
    framework: String,
    world_size: u32,
    generation: u64,
    /// Logical (uncompressed) bytes over all ranks.
    logical_size: u64,
    stored_size: u64,
    /// stored_size / logical_size.
    ratio: f64,
    /// Commit time, seconds since the Unix epoch.
    created: f64,
    user_meta: Py<PyAny>,
}

#[pymethods]
impl CheckpointInfo {
    fn __repr__(&self) -> String {
        format!(
            "CheckpointInfo(step={}, epoch={}, framework={:?}, world_size={}, logical_size={}, stored_size={}, ratio={:.4})",
            self.step, self.epoch, self.framework, self.world_size, self.logical_size, self.stored_size, self.ratio
        )
    }
}

fn info(py: Python<'_>, m: &Manifest) -> PyResult<CheckpointInfo> {
    Ok(CheckpointInfo {
        step: m.step,
        epoch: m.epoch,
        framework: m.framework.clone(),
        world_size: m.world_size,
        generation: m.generation,
        logical_size: m.logical_size,
        stored_size: m.stored_size,
        ratio: m.ratio(),
        created: m.created_unix,
        user_meta: from_json(py, &m.user_meta)?.unbind(),
    })
}

fn shard_dict<'py>(py: Python<'py>, s: &ShardMeta) -> PyResult<Bound<'py, PyDict>> {
    let value = serde_json::to_value(s).map_err(|e| PyValueError::new_err(e.to_string()))?;
    from_json(py, &value)?
        .cast_into::<PyDict>()
        .map_err(Into::into)
}

fn manifest_dict<'py>(py: Python<'py>, m: &Manifest) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(m).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let d = from_json(py, &value)?;
    d.set_item("ratio", m.ratio())?;
    Ok(d)
}

fn shard_from_py(obj: &Bound<'_, PyAny>) -> PyResult<ShardMeta> {
    let value = to_json(Some(obj))?;
    serde_json::from_value(value).map_err(|e| {
        PyValueError::new_err(format!(
            "not a shard record as returned by save_distributed_shard/finalize(): {e}"
        ))
    })
}

fn check_step(Step(step): Step) -> PyResult<u64> {
    u64::try_from(step).map_err(|_| PyValueError::new_err(format!("step must be >= 0, got {step}")))
}

fn check_epoch(Epoch(epoch): Epoch) -> PyResult<u64> {
    u64::try_from(epoch)
        .map_err(|_| PyValueError::new_err(format!("epoch must be >= 0, got {epoch}")))
}

/// One save's encoding: the store's, with the byte-grouping filter as
/// `byte_grouping` decides (the rule is the core's
/// `EncodeOptions::with_byte_grouping`); `dtype` gives the element width.
fn shard_encode(
    base: &EncodeOptions,
    byte_grouping: Option<bool>,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<EncodeOptions> {
    let dtype = dtype.filter(|d| !d.is_none());
    let width = match dtype {
        Some(d) => crate::dtype::float_width(d)?,
        None => None,
    };
    let shown = match dtype {
        Some(d) => Some(d.str()?.to_string()),
        None => None,
    };
    base.with_byte_grouping(byte_grouping, width, shown.as_deref())
        .py()
}

/// Checkpoints under one base URI.
#[pyclass(frozen, module = "s3dlio._native")]
pub struct PyCheckpointStore {
    inner: CheckpointStore,
    /// `byte_grouping=`: None = automatic for float dtypes, True/False.
    byte_grouping: Option<bool>,
}

#[pymethods]
impl PyCheckpointStore {
    #[new]
    #[pyo3(signature = (uri, strategy="flat", multipart_threshold=None, compression_level=None, *, part_size=None, fsync=true, storage_options=None, byte_grouping=None, compression_threads=None))]
    // The keyword arguments are the public Python signature.
    #[allow(clippy::too_many_arguments)]
    fn new(
        uri: &str,
        strategy: &str,
        multipart_threshold: Option<usize>,
        compression_level: Option<Level>,
        part_size: Option<usize>,
        fsync: bool,
        storage_options: Option<HashMap<String, String>>,
        byte_grouping: Option<bool>,
        compression_threads: Option<usize>,
    ) -> PyResult<Self> {
        let strategy = Strategy::parse(strategy).py()?;
        let compression_level = crate::args::level(compression_level);
        s3dlio_core::codec::check_encoding(compression_level, byte_grouping).py()?;
        let mut write = write_options(compression_level, part_size, fsync)?;
        write.encode.threads = self::compression_threads(compression_threads)?;
        if let Some(t) = multipart_threshold {
            if t == 0 {
                return Err(PyValueError::new_err(
                    "multipart_threshold must be positive",
                ));
            }
            write.put.multipart_threshold = t;
        }
        let inner =
            CheckpointStore::open(uri, strategy, write, &store_options(storage_options)?).py()?;
        Ok(PyCheckpointStore {
            inner,
            byte_grouping,
        })
    }

    #[getter]
    fn uri(&self) -> String {
        self.inner.uri()
    }

    /// Save `data` as a single-rank checkpoint and commit it. `dtype`
    /// (float data) selects the byte-grouping filter as `byte_grouping`
    /// says.
    #[pyo3(signature = (step, epoch, framework, data, user_meta=None, *, overwrite=false, dtype=None))]
    // The keyword arguments are the public Python signature.
    #[allow(clippy::too_many_arguments)]
    fn save(
        &self,
        py: Python<'_>,
        step: Step,
        epoch: Epoch,
        framework: &str,
        data: &Bound<'_, PyAny>,
        user_meta: Option<&Bound<'_, PyAny>>,
        overwrite: bool,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<CheckpointInfo> {
        let (step, epoch) = (check_step(step)?, check_epoch(epoch)?);
        let meta = to_json(user_meta)?;
        let encode = shard_encode(
            &self.inner.write_options().encode,
            self.byte_grouping,
            dtype,
        )?;
        let writer = self.inner.writer(1, 0, overwrite).py()?;
        let buf = BorrowedBuffer::readable(data)?;
        let slice = buf.as_slice();
        let framework = framework.to_string();
        let manifest = run(py, async move {
            let shard = writer.save_shard_with(step, slice, &encode).await?;
            writer
                .finalize(
                    step,
                    epoch,
                    &framework,
                    Some(vec![shard]),
                    meta,
                    Duration::ZERO,
                )
                .await
        })?;
        drop(buf);
        info(py, &manifest)
    }

    /// The data of the highest committed step, or None when there is none.
    fn load_latest<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let store = self.inner.clone();
        match run(py, async move { store.latest_step().await })? {
            Some(step) => self.load(py, Step(step as i64), None).map(Some),
            None => Ok(None),
        }
    }

    /// The data of committed `step` (of `rank` for multi-rank checkpoints).
    #[pyo3(signature = (step, rank=None))]
    fn load<'py>(
        &self,
        py: Python<'py>,
        step: Step,
        rank: Option<Rank>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let step = check_step(step)?;
        // An overwrite committing mid-read removes the shard being read:
        // read the step again from its new generation (a bounded number of
        // times), so the caller gets the old data or the new, never
        // FileNotFoundError.
        const LOOKS: usize = s3dlio_core::checkpoint::reader::OVERWRITE_LOOKS;
        for look in 1..=LOOKS {
            let reader = self.inner.reader();
            let r2 = reader.clone();
            let manifest = run(py, async move { r2.manifest(step).await })?;
            match self.load_from(py, &reader, manifest.clone(), step, rank.map(|r| r.0)) {
                Err(e) if look < LOOKS && e.is_instance_of::<PyFileNotFoundError>(py) => {
                    let again = reader.clone();
                    let replaced = run(py, async move { again.replaced(&manifest).await })?;
                    if !replaced {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
        unreachable!("the last look returns")
    }

    fn latest_step(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let store = self.inner.clone();
        run(py, async move { store.latest_step().await })
    }

    fn list_checkpoints(&self, py: Python<'_>) -> PyResult<Vec<CheckpointInfo>> {
        let store = self.inner.clone();
        let manifests = run(py, async move { store.list_checkpoints().await })?;
        manifests.iter().map(|m| info(py, m)).collect()
    }

    fn delete_checkpoint(&self, py: Python<'_>, step: Step) -> PyResult<()> {
        let step = check_step(step)?;
        let store = self.inner.clone();
        run(py, async move { store.delete_checkpoint(step).await })
    }

    /// This process's writer for rank `rank` of `world_size`.
    #[pyo3(signature = (world_size, rank, *, overwrite=false))]
    fn writer(
        &self,
        world_size: WorldSize,
        rank: Rank,
        overwrite: bool,
    ) -> PyResult<PyCheckpointWriter> {
        Ok(PyCheckpointWriter {
            inner: self.inner.writer(world_size.0, rank.0, overwrite).py()?,
            encode: self.inner.write_options().encode.clone(),
            byte_grouping: self.byte_grouping,
        })
    }

    fn reader(&self) -> PyCheckpointReader {
        PyCheckpointReader {
            inner: self.inner.reader(),
        }
    }

    fn __repr__(&self) -> String {
        format!("PyCheckpointStore({:?})", self.inner.uri())
    }
}

#[pyclass(frozen, name = "CheckpointWriter", module = "s3dlio._native")]
pub struct PyCheckpointWriter {
    inner: CheckpointWriter,
    /// The store's encoding and `byte_grouping=`, for per-shard dtypes.
    encode: EncodeOptions,
    byte_grouping: Option<bool>,
}

#[pymethods]
impl PyCheckpointWriter {
    #[getter]
    fn rank(&self) -> u32 {
        self.inner.rank()
    }

    #[getter]
    fn world_size(&self) -> u32 {
        self.inner.world_size()
    }

    /// Write this rank's whole shard; returns its record for finalize.
    #[pyo3(signature = (step, epoch, framework, data, *, dtype=None))]
    fn save_distributed_shard<'py>(
        &self,
        py: Python<'py>,
        step: Step,
        epoch: Epoch,
        framework: &str,
        data: &Bound<'py, PyAny>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let _ = (check_epoch(epoch)?, framework);
        let step = check_step(step)?;
        let encode = shard_encode(&self.encode, self.byte_grouping, dtype)?;
        let buf = BorrowedBuffer::readable(data)?;
        let slice = buf.as_slice();
        let writer = self.inner.clone();
        let shard = run(py, async move {
            writer.save_shard_with(step, slice, &encode).await
        })?;
        drop(buf);
        shard_dict(py, &shard)
    }

    /// A stream to write this rank's shard in chunks.
    #[pyo3(signature = (step, epoch, framework, *, dtype=None))]
    fn get_distributed_shard_stream(
        &self,
        py: Python<'_>,
        step: Step,
        epoch: Epoch,
        framework: &str,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyShardStream> {
        let _ = (check_epoch(epoch)?, framework);
        let step = check_step(step)?;
        let encode = shard_encode(&self.encode, self.byte_grouping, dtype)?;
        let writer = self.inner.clone();
        let stream = run(
            py,
            async move { writer.shard_stream_with(step, &encode).await },
        )?;
        Ok(PyShardStream {
            inner: Mutex::new(Some(stream)),
        })
    }

    /// Commit `step` on rank 0 once every rank's shard is written.
    /// `shard_metas` are the records the ranks returned; None reads the
    /// records from the store, waiting up to `timeout` seconds.
    #[pyo3(signature = (step, epoch, framework, shard_metas=None, user_meta=None, timeout=0.0))]
    // The keyword arguments are the public Python signature.
    #[allow(clippy::too_many_arguments)]
    fn finalize_distributed_checkpoint(
        &self,
        py: Python<'_>,
        step: Step,
        epoch: Epoch,
        framework: &str,
        shard_metas: Option<&Bound<'_, PyList>>,
        user_meta: Option<&Bound<'_, PyAny>>,
        timeout: f64,
    ) -> PyResult<CheckpointInfo> {
        let (step, epoch) = (check_step(step)?, check_epoch(epoch)?);
        let wait = s3dlio_core::limits::seconds("timeout", timeout, true).py()?;
        let shards = match shard_metas {
            Some(list) => Some(
                list.iter()
                    .map(|o| shard_from_py(&o))
                    .collect::<PyResult<Vec<_>>>()?,
            ),
            None => None,
        };
        let meta = to_json(user_meta)?;
        let writer = self.inner.clone();
        let framework = framework.to_string();
        let manifest = run(py, async move {
            writer
                .finalize(step, epoch, &framework, shards, meta, wait)
                .await
        })?;
        info(py, &manifest)
    }
}

/// A rank's shard being written. Use `finalize()` to publish it; dropping
/// or `abort()` leaves nothing visible.
#[pyclass(frozen, name = "ShardStream", module = "s3dlio._native")]
pub struct PyShardStream {
    inner: Mutex<Option<ShardStream>>,
}

impl PyShardStream {
    /// Refuse concurrent use instead of blocking with the GIL held.
    fn lock(&self) -> PyResult<MutexGuard<'_, Option<ShardStream>>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "shard stream is in use by another thread",
            )),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        }
    }

    fn take(&self) -> PyResult<ShardStream> {
        self.lock()?
            .take()
            .ok_or_else(|| PyValueError::new_err("shard stream is already finalized or aborted"))
    }
}

#[pymethods]
impl PyShardStream {
    /// Append `data` (any buffer) to the shard.
    fn write_chunk(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = BorrowedBuffer::readable(data)?;
        let slice = buf.as_slice();
        let mut guard = self.lock()?;
        let stream = guard
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("shard stream is already finalized or aborted"))?;
        let res = run(py, stream.write_slice(slice));
        if res.is_err() {
            // A failed write leaves the object unusable: abort it now so
            // nothing partial lingers.
            if let Some(s) = guard.take() {
                run(py, s.abort())?;
            }
        }
        drop(guard);
        drop(buf);
        res
    }

    /// Publish the shard; returns its record for finalize.
    fn finalize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stream = self.take()?;
        let shard = run(py, stream.finish())?;
        shard_dict(py, &shard)
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(s) = self.lock()?.take() {
            run(py, s.abort())?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block with an exception aborts the stream.
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
        }
        Ok(false)
    }
}

#[pyclass(frozen, name = "CheckpointReader", module = "s3dlio._native")]
pub struct PyCheckpointReader {
    pub(crate) inner: CheckpointReader,
}

#[pymethods]
impl PyCheckpointReader {
    /// The manifest of the highest committed step, or None.
    fn load_latest_manifest<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let store = self.inner.store().clone();
        let Some(step) = run(py, async move { store.latest_step().await })? else {
            return Ok(None);
        };
        self.manifest(py, Step(step as i64)).map(Some)
    }

    fn manifest<'py>(&self, py: Python<'py>, step: Step) -> PyResult<Bound<'py, PyAny>> {
        let step = check_step(step)?;
        let reader = self.inner.clone();
        let m = run(py, async move { reader.manifest(step).await })?;
        manifest_dict(py, &m)
    }

    /// One rank's whole shard, CRC32C-checked.
    fn read_shard<'py>(
        &self,
        py: Python<'py>,
        step: Step,
        rank: Rank,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (reader, manifest, rank) = self.resolve(py, step, rank.0)?;
        let handle = run(py, async move { reader.open_shard(&manifest, rank).await })?;
        read_to_bytes(py, &handle.reader, Some(handle.meta.crc32c))
    }

    /// Read one rank's whole shard into the writable buffer `out`, which
    /// must be exactly the shard's size. Returns the byte count.
    fn read_shard_into(
        &self,
        py: Python<'_>,
        step: Step,
        rank: Rank,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let (reader, manifest, rank) = self.resolve(py, step, rank.0)?;
        let handle = run(py, async move { reader.open_shard(&manifest, rank).await })?;
        let mut buf = BorrowedBuffer::writable(out)?;
        if buf.len() as u64 != handle.meta.size {
            return Err(PyValueError::new_err(format!(
                "buffer has {} bytes but the shard of rank {rank} has {}",
                buf.len(),
                handle.meta.size
            )));
        }
        let dst = buf.as_mut_slice();
        run(py, handle.reader.read_into(dst, Some(handle.meta.crc32c)))?;
        Ok(dst.len())
    }

    /// A seekable, file-like view of one rank's shard.
    fn open_shard(
        &self,
        py: Python<'_>,
        step: Step,
        rank: Rank,
    ) -> PyResult<crate::shard_file::ShardFile> {
        let (reader, manifest, rank) = self.resolve(py, step, rank.0)?;
        let handle = run(py, async move { reader.open_shard(&manifest, rank).await })?;
        Ok(crate::shard_file::ShardFile::new(handle))
    }

    /// Re-read every shard of `step`; one dict per shard with `error` None when good.
    fn verify<'py>(&self, py: Python<'py>, step: Step) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let step = check_step(step)?;
        let reader = self.inner.clone();
        let checks = run(py, async move { reader.verify(step).await })?;
        checks
            .iter()
            .map(|c| {
                let d = PyDict::new(py);
                d.set_item("rank", c.rank)?;
                d.set_item("uri", &c.uri)?;
                d.set_item("size", c.size)?;
                d.set_item("error", &c.error)?;
                Ok(d)
            })
            .collect()
    }
}

impl PyCheckpointReader {
    pub(crate) fn resolve(
        &self,
        py: Python<'_>,
        step: Step,
        rank: i64,
    ) -> PyResult<(CheckpointReader, Manifest, u32)> {
        let step = check_step(step)?;
        let reader = self.inner.clone();
        let r2 = reader.clone();
        let manifest = run(py, async move { r2.manifest(step).await })?;
        let (rank, _) =
            s3dlio_core::checkpoint::layout::check_rank(rank, manifest.world_size as i64).py()?;
        Ok((reader, manifest, rank))
    }
}

// Not exposed to Python: a helper of `load`.
impl PyCheckpointStore {
    /// The data of `rank` of the checkpoint `manifest` describes.
    fn load_from<'py>(
        &self,
        py: Python<'py>,
        reader: &s3dlio_core::checkpoint::CheckpointReader,
        manifest: Manifest,
        step: u64,
        rank: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let reader = reader.clone();
        let rank = match rank {
            Some(r) => s3dlio_core::checkpoint::layout::check_rank(r, manifest.world_size as i64).py()?.0,
            None if manifest.world_size == 1 => 0,
            None => {
                return Err(PyValueError::new_err(format!(
                    "checkpoint step {step} has {} ranks: pass rank= (or use reader().read_shard(step, rank))",
                    manifest.world_size
                )))
            }
        };
        let handle = run(py, async move { reader.open_shard(&manifest, rank).await })?;
        read_to_bytes(py, &handle.reader, Some(handle.meta.crc32c))
    }
}
