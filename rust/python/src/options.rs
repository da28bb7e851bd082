//! Keyword arguments shared by every entry point.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use s3dlio_core::codec::{check_level, EncodeOptions};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::{PutOptions, StoreOptions};

use crate::errors::IntoPyResult;

/// `storage_options={...}` as the core's store options (the rules live
/// in the core: `StoreOptions::from_pairs`).
pub fn store_options(opts: Option<HashMap<String, String>>) -> PyResult<StoreOptions> {
    StoreOptions::from_pairs(opts.unwrap_or_default()).py()
}

/// Write options from the Python keywords; validates the level.
pub fn write_options(
    compression_level: Option<i32>,
    part_size: Option<usize>,
    fsync: bool,
) -> PyResult<WriteOptions> {
    if let Some(level) = compression_level {
        check_level(level).py()?;
    }
    let mut put = PutOptions {
        fsync,
        ..Default::default()
    };
    if let Some(p) = part_size {
        put.part_size = s3dlio_core::limits::part_size("part_size", p as u64).py()?;
    }
    Ok(WriteOptions {
        encode: EncodeOptions {
            level: compression_level,
            ..Default::default()
        },
        put,
    })
}

/// `compression_threads=`: frames compressed at once; `None` is one per
/// core.
pub fn compression_threads(threads: Option<usize>) -> PyResult<usize> {
    match threads {
        None => Ok(0),
        Some(0) => Err(PyValueError::new_err(
            "compression_threads must be at least 1 (or None for one per core)",
        )),
        Some(n) => s3dlio_core::limits::threads("compression_threads", n as u64).py(),
    }
}

/// The raw APIs' `dtype=`: float data of 2, 4 or 8 bytes gets the
/// byte-grouping filter when compressing, chosen automatically (off, not an
/// error, where it does not fit the data).
pub fn with_dtype(
    mut encode: EncodeOptions,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<EncodeOptions> {
    let width = match dtype {
        Some(d) if !d.is_none() => crate::dtype::float_width(d)?,
        _ => None,
    };
    encode.byte_group = width;
    encode.byte_group_auto = true;
    Ok(encode)
}
