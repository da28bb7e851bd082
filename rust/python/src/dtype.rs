//! `dtype=` arguments: which element width (if any) the byte-grouping
//! filter gets for data of that dtype.
//!
//! Accepted: anything `numpy.dtype()` takes (dtype objects, `"float32"`,
//! `"<f4"`, `np.float16`, ml_dtypes' `bfloat16`), torch dtypes
//! (`torch.bfloat16`), and the names `"bfloat16"` / `"bf16"`. Floats of 2,
//! 4 and 8 bytes get the filter; every other dtype (integers, bool,
//! complex, 1-byte floats) is stored without it.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use s3dlio_core::format::byte_group::width_for;

/// Names numpy does not know but users and torch write.
fn named_width(name: &str) -> Option<Option<usize>> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("torch.").unwrap_or(&name);
    let itemsize = match name {
        "bfloat16" | "bf16" | "float16" | "half" => 2,
        "float32" | "float" => 4,
        "float64" | "double" => 8,
        _ => return None,
    };
    Some(width_for(true, itemsize))
}

/// The byte-grouping width for `dtype`: `Some(w)` for 2-, 4- and 8-byte
/// floats, `None` for anything else; an error for what is not a dtype.
pub fn float_width(dtype: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    let py = dtype.py();
    // torch dtypes print as "torch.float32"; numpy does not know them.
    let shown = dtype.str()?.to_string();
    if shown.starts_with("torch.") {
        return Ok(named_width(&shown).flatten());
    }
    if dtype.is_instance_of::<PyString>() {
        let name: String = dtype.extract()?;
        if matches!(
            name.trim().to_ascii_lowercase().as_str(),
            "bfloat16" | "bf16"
        ) {
            return Ok(Some(2));
        }
    }
    let numpy = py.import("numpy")?;
    let dt = numpy.call_method1("dtype", (dtype,)).map_err(|e| {
        PyValueError::new_err(format!(
            "dtype {} is not a dtype numpy or torch knows: {e}",
            dtype.repr().map(|r| r.to_string()).unwrap_or(shown.clone())
        ))
    })?;
    let kind: String = dt.getattr("kind")?.extract()?;
    let itemsize: usize = dt.getattr("itemsize")?.extract()?;
    let name: String = dt.getattr("name")?.extract()?;
    let is_float = kind == "f" || (kind == "V" && name == "bfloat16");
    Ok(width_for(is_float, itemsize))
}

/// `byte_group_width(dtype)`: the element width byte grouping uses for
/// data of `dtype` (2, 4 or 8 for floats of those sizes), or None where it
/// does not apply. Adapters ask this rather than repeat the rule.
#[pyfunction]
pub fn byte_group_width(dtype: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    float_width(dtype)
}

#[cfg(test)]
mod tests {
    use super::named_width;

    #[test]
    fn torch_names() {
        assert_eq!(named_width("torch.bfloat16"), Some(Some(2)));
        assert_eq!(named_width("torch.float32"), Some(Some(4)));
        assert_eq!(named_width("torch.float64"), Some(Some(8)));
        assert_eq!(named_width("torch.half"), Some(Some(2)));
        assert_eq!(named_width("torch.int64"), None);
    }
}
