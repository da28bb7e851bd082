//! `PyValidatedCheckpointReader`: every shard checked against the
//! manifest's CRC32C before it is handed back as a numpy array. The array
//! owns its memory (allocated by numpy, filled in place), so it can outlive
//! the reader and the store with no lifetime hazard.

use std::collections::HashMap;

use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use s3dlio_core::checkpoint::{CheckpointStore, Strategy};
use s3dlio_core::object::WriteOptions;

use crate::args::{Rank, Step};
use crate::checkpoint::PyCheckpointReader;
use crate::errors::IntoPyResult;
use crate::options::store_options;
use crate::runtime::run;

#[pyclass(frozen, module = "s3dlio._native")]
pub struct PyValidatedCheckpointReader {
    reader: Py<PyCheckpointReader>,
}

#[pymethods]
impl PyValidatedCheckpointReader {
    #[new]
    #[pyo3(signature = (uri, storage_options=None))]
    fn new(
        py: Python<'_>,
        uri: &str,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let store = CheckpointStore::open(
            uri,
            Strategy::Flat,
            WriteOptions::default(),
            &store_options(storage_options)?,
        )
        .py()?;
        Ok(PyValidatedCheckpointReader {
            reader: Py::new(
                py,
                PyCheckpointReader {
                    inner: store.reader(),
                },
            )?,
        })
    }

    fn latest_step(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let store = self.reader.get().inner.store().clone();
        run(py, async move { store.latest_step().await })
    }

    fn manifest<'py>(&self, py: Python<'py>, step: Step) -> PyResult<Bound<'py, PyAny>> {
        self.reader.bind(py).call_method1("manifest", (step.0,))
    }

    /// Rank `rank`'s shard of `step` as a 1-D array of `dtype`, verified.
    #[pyo3(signature = (step, rank, dtype=None))]
    fn read_shard_array<'py>(
        &self,
        py: Python<'py>,
        step: Step,
        rank: Rank,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let numpy = py.import("numpy")?;
        let dtype = match dtype {
            Some(d) => numpy.call_method1("dtype", (d,))?,
            None => numpy.call_method1("dtype", ("uint8",))?,
        };
        let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
        let (reader, manifest, rank) = self.reader.get().resolve(py, step, rank.0)?;
        let handle = run(py, async move { reader.open_shard(&manifest, rank).await })?;
        let size = handle.meta.size as usize;
        if itemsize == 0 || !size.is_multiple_of(itemsize) {
            return Err(PyValueError::new_err(format!(
                "shard of rank {rank} has {size} bytes, not a whole number of {} elements ({itemsize} bytes each)",
                dtype.str()?
            )));
        }
        // SAFETY: every byte is written by read_into before the array is
        // returned; on error the array is dropped unseen.
        let array = unsafe { PyArray1::<u8>::new(py, [size], false) };
        {
            let mut rw = array.readwrite();
            let dst = rw
                .as_slice_mut()
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            run(py, handle.reader.read_into(dst, Some(handle.meta.crc32c)))?;
        }
        debug_assert_eq!(array.len(), size);
        array.call_method1("view", (dtype,))
    }

    fn read_shard<'py>(
        &self,
        py: Python<'py>,
        step: Step,
        rank: Rank,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.reader
            .bind(py)
            .call_method1("read_shard", (step.0, rank.0))
    }

    fn verify<'py>(&self, py: Python<'py>, step: Step) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.reader
            .bind(py)
            .call_method1("verify", (step.0,))?
            .extract()
    }
}
