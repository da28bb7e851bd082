//! TensorFlow filesystem plugin: `TF_InitPlugin`, exported by this same
//! library next to the Python module, registers `s3`, `az` and `direct`
//! with TF's modular filesystem (`s3dlio_tf` hands TF this library's path).
//! Every op runs inside `catch_unwind`: a panic becomes TF_INTERNAL
//! instead of aborting the process.

mod abi;
mod files;
mod filesystem;
mod integrity;
mod ops;
mod read_ahead;
mod status;
mod target;

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;

use abi::*;

/// Schemes this plugin serves.
const SCHEMES: [&str; 3] = ["s3", "az", "direct"];

/// Environment variable read at registration: a zstd level (1-22) for the
/// files TF writes, or unset / "0" / "none" to store them as they are.
pub const LEVEL_ENV: &str = "S3DLIO_TF_COMPRESSION_LEVEL";

/// Compression level of new files; 0 = none.
static LEVEL: AtomicI32 = AtomicI32::new(0);

pub(crate) fn compression_level() -> Option<i32> {
    match LEVEL.load(Ordering::Relaxed) {
        0 => None,
        l => Some(l),
    }
}

fn set_level(level: Option<i32>) -> s3dlio_core::Result<()> {
    let v = match level {
        Some(l) => s3dlio_core::codec::check_level(l)?,
        None => 0,
    };
    LEVEL.store(v, Ordering::Relaxed);
    Ok(())
}

fn level_from_env() -> s3dlio_core::Result<Option<i32>> {
    match std::env::var(LEVEL_ENV) {
        Err(_) => Ok(None),
        Ok(v) if v.is_empty() || v == "0" || v.eq_ignore_ascii_case("none") => Ok(None),
        Ok(v) => v.parse::<i32>().map(Some).map_err(|_| {
            s3dlio_core::Error::invalid(format!(
                "{LEVEL_ENV}={v:?} is not a compression level (1-22, or 0 / none)"
            ))
        }),
    }
}

/// Compression of the files the TF plugin writes from now on (None: none).
#[pyfunction]
#[pyo3(signature = (compression_level=None))]
fn tf_configure(compression_level: Option<i32>) -> PyResult<()> {
    set_level(compression_level).map_err(crate::errors::to_py)
}

/// `(name, value)` of every size and offset of the mirrored C tables, for
/// the test that compares them with TF's header.
#[pyfunction]
fn tf_abi_layout() -> Vec<(String, usize)> {
    abi::layout()
}

/// Register the plugin's Python-side helpers in `s3dlio._native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tf_configure, m)?)?;
    m.add_function(wrap_pyfunction!(tf_abi_layout, m)?)?;
    m.add("TF_COMPRESSION_ENV", LEVEL_ENV)?;
    Ok(())
}

unsafe extern "C" fn plugin_alloc(size: usize) -> *mut c_void {
    libc::malloc(size)
}

unsafe extern "C" fn plugin_free(ptr: *mut c_void) {
    libc::free(ptr)
}

/// `calloc` one `T` (TF frees it with `plugin_free`).
unsafe fn alloc_zeroed<T>() -> *mut T {
    libc::calloc(1, std::mem::size_of::<T>()).cast()
}

/// A NUL-terminated copy of `s` in plugin memory.
pub(crate) unsafe fn alloc_c_string(s: &str) -> *mut c_char {
    let p: *mut c_char = libc::malloc(s.len() + 1).cast();
    if !p.is_null() {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast(), p, s.len());
        *p.add(s.len()) = 0;
    }
    p
}

/// Entry point TF looks up after `dlopen`ing this library. TF zeroes
/// `info` first; leaving it empty makes registration fail cleanly.
///
/// # Safety
/// `info` must point to a writable `TF_FilesystemPluginInfo`.
#[no_mangle]
pub unsafe extern "C" fn TF_InitPlugin(info: *mut TF_FilesystemPluginInfo) {
    let _ = std::panic::catch_unwind(|| {
        if info.is_null() || !status::resolve() {
            return;
        }
        if let Ok(level) = level_from_env() {
            if level.is_some() {
                let _ = set_level(level);
            }
        }
        let ops: *mut TF_FilesystemPluginOps =
            libc::calloc(SCHEMES.len(), std::mem::size_of::<TF_FilesystemPluginOps>()).cast();
        if ops.is_null() {
            return;
        }
        for (i, scheme) in SCHEMES.iter().enumerate() {
            fill_scheme(&mut *ops.add(i), scheme);
        }
        (*info).plugin_memory_allocate = Some(plugin_alloc);
        (*info).plugin_memory_free = Some(plugin_free);
        (*info).num_schemes = SCHEMES.len();
        (*info).ops = ops;
    });
}

unsafe fn fill_scheme(o: &mut TF_FilesystemPluginOps, scheme: &str) {
    o.scheme = alloc_c_string(scheme);

    let fs: *mut TF_FilesystemOps = alloc_zeroed();
    if !fs.is_null() {
        ops::fill_filesystem(&mut *fs);
    }
    o.filesystem_ops_abi = ABI_VERSION;
    o.filesystem_ops_api = API_VERSION;
    o.filesystem_ops_size = std::mem::size_of::<TF_FilesystemOps>();
    o.filesystem_ops = fs;

    let ra: *mut TF_RandomAccessFileOps = alloc_zeroed();
    if !ra.is_null() {
        ops::fill_random_access(&mut *ra);
    }
    o.random_access_file_ops_abi = ABI_VERSION;
    o.random_access_file_ops_api = API_VERSION;
    o.random_access_file_ops_size = std::mem::size_of::<TF_RandomAccessFileOps>();
    o.random_access_file_ops = ra;

    let wf: *mut TF_WritableFileOps = alloc_zeroed();
    if !wf.is_null() {
        ops::fill_writable(&mut *wf);
    }
    o.writable_file_ops_abi = ABI_VERSION;
    o.writable_file_ops_api = API_VERSION;
    o.writable_file_ops_size = std::mem::size_of::<TF_WritableFileOps>();
    o.writable_file_ops = wf;
    // No read-only memory regions: TF falls back to reading the file.
}
