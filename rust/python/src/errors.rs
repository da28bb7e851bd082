//! Core errors as the Python exceptions users already catch.

use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::{create_exception, PyErr};
use s3dlio_core::Error;

create_exception!(
    _native,
    IntegrityError,
    PyOSError,
    "Stored bytes do not match their CRC32C or cannot be decoded; the message names the object."
);

pub fn to_py(err: Error) -> PyErr {
    // Redacted again here: variants built without a constructor too.
    let msg = err.redacted();
    match err {
        Error::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        Error::AlreadyExists { .. } => PyFileExistsError::new_err(msg),
        Error::PermissionDenied { .. } => PyPermissionError::new_err(msg),
        Error::Integrity { .. } | Error::Corrupt { .. } => IntegrityError::new_err(msg),
        Error::InvalidInput(_) => PyValueError::new_err(msg),
        Error::Backend { .. } => PyOSError::new_err(msg),
    }
}

/// `?`-friendly conversion for core results.
pub trait IntoPyResult<T> {
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPyResult<T> for s3dlio_core::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
