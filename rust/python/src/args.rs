//! Integer arguments that refuse `True`/`False`. Python's bool is an int,
//! so pyo3 would take `step=True` as step 1 and `compression_level=True`
//! as level 1 without a word; the DCP writer refuses them, and so does
//! every entry point here, with a message naming the argument.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// `obj` as a `T`, refusing bools; a failed conversion keeps its exception
/// type (TypeError, OverflowError) with the argument's name in front.
fn strict<'a, 'py, T>(obj: Borrowed<'a, 'py, PyAny>, arg: &str) -> PyResult<T>
where
    T: FromPyObject<'a, 'py>,
{
    if obj.is_instance_of::<PyBool>() {
        return Err(PyValueError::new_err(format!(
            "{arg} must be an integer, not a bool (got {})",
            obj.str()?
        )));
    }
    obj.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        let py = obj.py();
        PyErr::from_type(e.get_type(py), format!("{arg}: {}", e.value(py)))
    })
}

macro_rules! int_arg {
    ($(#[$doc:meta])* $name:ident($ty:ty), $arg:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(pub $ty);

        impl<'a, 'py> FromPyObject<'a, 'py> for $name {
            type Error = PyErr;

            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                strict(obj, $arg).map($name)
            }
        }
    };
}

int_arg!(
    /// `step=`: checked for range by the callee.
    Step(i64),
    "step"
);
int_arg!(
    /// `epoch=`.
    Epoch(i64),
    "epoch"
);
int_arg!(
    /// `rank=`.
    Rank(i64),
    "rank"
);
int_arg!(
    /// `world_size=`.
    WorldSize(i64),
    "world_size"
);
int_arg!(
    /// `compression_level=`: the core checks the range (1-22).
    Level(i32),
    "compression_level"
);

/// The value of an optional level argument.
pub fn level(level: Option<Level>) -> Option<i32> {
    level.map(|l| l.0)
}
