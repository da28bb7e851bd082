//! Directory-style metadata calls for path adapters (the `etils.epath`
//! path of `s3dlio_jax`): one level of a prefix with a single delimiter
//! listing, one object's metadata with a single HEAD, and an object's
//! stored bytes with a single GET (no codec sniffing, which costs S3 and
//! Azure two more requests per small file).

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use s3dlio_core::store::ObjectMeta;

use crate::objects::locate;
use crate::runtime::run;

/// `(uri, size, last_modified)` of one object; the time in seconds since
/// the epoch, None where the backend does not say.
type ObjectRow = (String, u64, Option<f64>);

fn seconds(meta: &ObjectMeta) -> Option<f64> {
    meta.last_modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// One level under the prefix `uri`, like `aws s3 ls`: the URIs of the
/// sub-prefixes holding more (each ending in `/`) and `(uri, size,
/// last_modified)` of the objects directly under it. One delimiter
/// listing on S3 and Azure. `uri` is taken as a directory: a trailing `/`
/// is implied.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn list_dir(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<(Vec<String>, Vec<ObjectRow>)> {
    let loc = locate(uri, storage_options)?;
    let prefix = match loc.key.trim_end_matches('/') {
        "" => String::new(),
        key => format!("{key}/"),
    };
    let listing = run(py, loc.store.list_dir(&prefix))?;
    let dirs = listing.prefixes.iter().map(|p| loc.store.uri(p)).collect();
    let objects = listing
        .objects
        .iter()
        .map(|m| (loc.store.uri(&m.key), m.size, seconds(m)))
        .collect();
    Ok((dirs, objects))
}

/// `(size, last_modified)` of the object at `uri` (one HEAD request);
/// FileNotFoundError when there is none.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn head_object(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<(u64, Option<f64>)> {
    let loc = locate(uri, storage_options)?;
    let meta = run(py, loc.store.head(&loc.key))?;
    Ok((meta.size, seconds(&meta)))
}

/// The stored bytes of the object at `uri`, as they are (one GET).
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub fn get_object<'py>(
    py: Python<'py>,
    uri: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let loc = locate(uri, storage_options)?;
    let data = run(py, loc.store.get(&loc.key))?;
    Ok(PyBytes::new(py, &data))
}
