//! Python objects <-> JSON values via the stdlib `json` module, so user
//! metadata round-trips exactly as `json.dumps`/`json.loads` would.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub fn to_json(obj: Option<&Bound<'_, PyAny>>) -> PyResult<serde_json::Value> {
    let Some(obj) = obj else {
        return Ok(serde_json::Value::Null);
    };
    if obj.is_none() {
        return Ok(serde_json::Value::Null);
    }
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))
        .map_err(|e| PyValueError::new_err(format!("user_meta is not JSON-serialisable: {e}")))?
        .extract()?;
    serde_json::from_str(&text)
        .map_err(|e| PyValueError::new_err(format!("user_meta is not JSON-serialisable: {e}")))
}

pub fn from_json<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}
