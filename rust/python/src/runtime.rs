//! Run core futures from Python with the GIL released.

use std::future::Future;

use pyo3::prelude::*;

use crate::errors::IntoPyResult;

/// Block on `fut` on the process runtime while other Python threads run.
pub fn run<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = s3dlio_core::Result<T>> + Send,
    T: Send,
{
    py.detach(|| s3dlio_core::runtime::block_on(fut).and_then(|r| r))
        .py()
}
