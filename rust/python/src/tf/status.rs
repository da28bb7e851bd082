//! Reporting results to TensorFlow through `TF_SetStatus`, which lives in
//! `libtensorflow_framework.so.2`. It is found at run time (the wheel must
//! not link TensorFlow): by the time TF calls `TF_InitPlugin` its library
//! is loaded, so `dlopen(RTLD_NOLOAD)` returns it without loading anything.

use std::ffi::{c_char, c_void, CString};
use std::sync::OnceLock;

use s3dlio_core::Error;

use super::abi::{code, TF_Status};

type SetStatus = unsafe extern "C" fn(*mut TF_Status, i32, *const c_char);

static SET_STATUS: OnceLock<SetStatus> = OnceLock::new();

const FRAMEWORK: &[u8] = b"libtensorflow_framework.so.2\0";
const SYMBOL: &[u8] = b"TF_SetStatus\0";

/// Find `TF_SetStatus`; `false` when TensorFlow is not loaded in this process.
pub fn resolve() -> bool {
    if SET_STATUS.get().is_some() {
        return true;
    }
    // SAFETY: dlopen/dlsym with NUL-terminated names; RTLD_NOLOAD only
    // returns a library that is already loaded, and the extra reference it
    // takes keeps it loaded for as long as this process may call into it.
    let sym = unsafe {
        let lib = libc::dlopen(
            FRAMEWORK.as_ptr().cast(),
            libc::RTLD_NOW | libc::RTLD_NOLOAD,
        );
        let mut sym: *mut c_void = std::ptr::null_mut();
        if !lib.is_null() {
            sym = libc::dlsym(lib, SYMBOL.as_ptr().cast());
        }
        if sym.is_null() {
            // TF 2.21 loads its pywrap module RTLD_GLOBAL, so the global
            // scope finds it when the library has another name.
            sym = libc::dlsym(libc::RTLD_DEFAULT, SYMBOL.as_ptr().cast());
        }
        sym
    };
    if sym.is_null() {
        return false;
    }
    // SAFETY: the symbol is TF's `void TF_SetStatus(TF_Status*, TF_Code, const char*)`.
    let f: SetStatus = unsafe { std::mem::transmute::<*mut c_void, SetStatus>(sym) };
    let _ = SET_STATUS.set(f);
    true
}

/// Set `status` to `code` with `msg`.
pub fn set(status: *mut TF_Status, code: i32, msg: &str) {
    if status.is_null() {
        return;
    }
    let Some(f) = SET_STATUS.get() else { return };
    let text = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `status` is the live TF_Status TF passed to the op.
    unsafe { f(status, code, text.as_ptr()) }
}

pub fn ok(status: *mut TF_Status) {
    set(status, code::OK, "");
}

/// The TF code of a core error.
pub fn code_of(err: &Error) -> i32 {
    match err {
        Error::NotFound { .. } => code::NOT_FOUND,
        Error::AlreadyExists { .. } => code::ALREADY_EXISTS,
        Error::PermissionDenied { .. } => code::PERMISSION_DENIED,
        Error::Integrity { .. } | Error::Corrupt { .. } => code::DATA_LOSS,
        Error::InvalidInput(_) => code::INVALID_ARGUMENT,
        Error::Backend {
            retryable: true, ..
        } => code::UNAVAILABLE,
        Error::Backend { .. } => code::UNKNOWN,
    }
}

/// An op's failure: a TF code and a message.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub msg: String,
}

impl Failure {
    pub fn new(code: i32, msg: impl Into<String>) -> Self {
        Failure {
            code,
            msg: msg.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let code = code_of(&err);
        let msg = match &err {
            // TF shows only the message: say what kind of failure it is.
            Error::Integrity { .. } | Error::Corrupt { .. } => {
                format!("s3dlio integrity check failed: {err}")
            }
            _ => err.to_string(),
        };
        Failure { code, msg }
    }
}

pub type OpResult<T> = std::result::Result<T, Failure>;

/// Run an op, report its outcome in `status`, and turn a panic into
/// TF_INTERNAL instead of unwinding into C (which would abort).
pub fn guard<T>(status: *mut TF_Status, fallback: T, op: impl FnOnce() -> OpResult<T>) -> T {
    match caught(op) {
        Ok(v) => {
            ok(status);
            v
        }
        Err(f) => {
            set(status, f.code, &f.msg);
            fallback
        }
    }
}

/// `op`'s result, with a panic inside it as a TF_INTERNAL failure.
fn caught<T>(op: impl FnOnce() -> OpResult<T>) -> OpResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)) {
        Ok(r) => r,
        Err(panic) => Err(Failure::new(
            code::INTERNAL,
            format!("s3dlio: internal error: {}", panic_text(&panic)),
        )),
    }
}

/// Like `guard` for ops without a status (cleanup, translate_name).
pub fn guard_quiet<T>(fallback: T, op: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).unwrap_or(fallback)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_an_op_is_internal_not_an_abort() {
        let f = caught::<()>(|| panic!("boom at {}", 7)).unwrap_err();
        assert_eq!(f.code, code::INTERNAL);
        assert_eq!(f.msg, "s3dlio: internal error: boom at 7");
        let f = caught::<()>(|| std::panic::panic_any(42u8)).unwrap_err();
        assert_eq!(f.code, code::INTERNAL);
        assert!(f.msg.contains("a panic"), "{}", f.msg);
        // Through `guard` too (no status to set without TensorFlow): the
        // fallback comes back and the test process is still running.
        let v = guard(std::ptr::null_mut(), -1i64, || -> OpResult<i64> {
            let v: Vec<i64> = Vec::new();
            Ok(v[3])
        });
        assert_eq!(v, -1);
        assert_eq!(caught(|| Ok(5)).unwrap(), 5);
    }

    #[test]
    fn core_errors_map_to_tf_codes() {
        let f = Failure::from(Error::Integrity {
            uri: "s3://b/k".into(),
            offset: 0,
            expected: 1,
            actual: 2,
        });
        assert_eq!(f.code, code::DATA_LOSS);
        assert!(
            f.msg.starts_with("s3dlio integrity check failed"),
            "{}",
            f.msg
        );
        assert!(f.msg.contains("s3://b/k"), "{}", f.msg);
        let f = Failure::from(Error::NotFound {
            uri: "az://a/c/k".into(),
        });
        assert_eq!(f.code, code::NOT_FOUND);
    }
}
