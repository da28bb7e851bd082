//! The `extern "C"` functions of TF's tables: each turns C arguments into
//! Rust ones, runs the op under `guard` (status + panic catching) and hands
//! results back in memory TF frees with `plugin_memory_free`.

use std::ffi::{c_char, c_int, CStr};

use super::abi::*;
use super::files::{ReadFile, WriteFile};
use super::filesystem as fs;
use super::status::{guard, guard_quiet, Failure, OpResult};
use super::{alloc_c_string, compression_level};

pub fn fill_filesystem(t: &mut TF_FilesystemOps) {
    t.init = Some(init);
    t.cleanup = Some(cleanup);
    t.new_random_access_file = Some(new_random_access_file);
    t.new_writable_file = Some(new_writable_file);
    t.new_appendable_file = Some(new_appendable_file);
    t.create_dir = Some(create_dir);
    t.recursively_create_dir = Some(recursively_create_dir);
    t.delete_file = Some(delete_file);
    t.delete_dir = Some(delete_dir);
    t.delete_recursively = Some(delete_recursively);
    t.rename_file = Some(rename_file);
    t.copy_file = Some(copy_file);
    t.path_exists = Some(path_exists);
    t.stat = Some(stat);
    t.is_directory = Some(is_directory);
    t.get_file_size = Some(get_file_size);
    t.translate_name = Some(translate_name);
    t.get_children = Some(get_children);
    t.get_matching_paths = Some(get_matching_paths);
}

pub fn fill_random_access(t: &mut TF_RandomAccessFileOps) {
    t.cleanup = Some(ra_cleanup);
    t.read = Some(ra_read);
}

pub fn fill_writable(t: &mut TF_WritableFileOps) {
    t.cleanup = Some(wf_cleanup);
    t.append = Some(wf_append);
    t.tell = Some(wf_tell);
    t.flush = Some(wf_flush);
    t.sync = Some(wf_sync);
    t.close = Some(wf_close);
}

/// A path argument as UTF-8.
unsafe fn arg<'a>(p: *const c_char) -> OpResult<&'a str> {
    if p.is_null() {
        return Err(Failure::new(
            super::abi::code::INVALID_ARGUMENT,
            "null path",
        ));
    }
    CStr::from_ptr(p).to_str().map_err(|_| {
        Failure::new(
            super::abi::code::INVALID_ARGUMENT,
            "path is not valid UTF-8",
        )
    })
}

/// `names` as a plugin-allocated array of plugin-allocated C strings.
unsafe fn hand_over(names: Vec<String>, out: *mut *mut *mut c_char) -> OpResult<c_int> {
    let n = names.len();
    let arr: *mut *mut c_char = libc::calloc(n.max(1), std::mem::size_of::<*mut c_char>()).cast();
    if arr.is_null() {
        return Err(Failure::new(super::abi::code::INTERNAL, "out of memory"));
    }
    for (i, name) in names.iter().enumerate() {
        *arr.add(i) = alloc_c_string(name);
    }
    *out = arr;
    c_int::try_from(n).map_err(|_| Failure::new(super::abi::code::INTERNAL, "too many entries"))
}

// ---- filesystem ----

unsafe extern "C" fn init(_fs: *mut TF_Filesystem, status: *mut TF_Status) {
    // Stores and the runtime are process-wide and created on first use.
    guard(status, (), || Ok(()));
}

unsafe extern "C" fn cleanup(_fs: *mut TF_Filesystem) {
    // Nothing per filesystem: shared globals outlive TF's copies of it.
}

unsafe extern "C" fn new_random_access_file(
    _fs: *const TF_Filesystem,
    path: *const c_char,
    file: *mut TF_RandomAccessFile,
    status: *mut TF_Status,
) {
    guard(status, (), || {
        let f = ReadFile::open(arg(path)?)?;
        (*file).plugin_file = Box::into_raw(Box::new(f)).cast();
        Ok(())
    })
}

unsafe fn new_writer(
    path: *const c_char,
    file: *mut TF_WritableFile,
    status: *mut TF_Status,
    append: bool,
) {
    guard(status, (), || {
        let f = WriteFile::create(arg(path)?, compression_level(), append)?;
        (*file).plugin_file = Box::into_raw(Box::new(f)).cast();
        Ok(())
    })
}

unsafe extern "C" fn new_writable_file(
    _fs: *const TF_Filesystem,
    path: *const c_char,
    file: *mut TF_WritableFile,
    status: *mut TF_Status,
) {
    new_writer(path, file, status, false)
}

unsafe extern "C" fn new_appendable_file(
    _fs: *const TF_Filesystem,
    path: *const c_char,
    file: *mut TF_WritableFile,
    status: *mut TF_Status,
) {
    new_writer(path, file, status, true)
}

unsafe extern "C" fn create_dir(_fs: *const TF_Filesystem, p: *const c_char, s: *mut TF_Status) {
    guard(s, (), || fs::create_dir(arg(p)?, false))
}

unsafe extern "C" fn recursively_create_dir(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    s: *mut TF_Status,
) {
    guard(s, (), || fs::create_dir(arg(p)?, true))
}

unsafe extern "C" fn delete_file(_fs: *const TF_Filesystem, p: *const c_char, s: *mut TF_Status) {
    guard(s, (), || fs::delete_file(arg(p)?))
}

unsafe extern "C" fn delete_dir(_fs: *const TF_Filesystem, p: *const c_char, s: *mut TF_Status) {
    guard(s, (), || fs::delete_dir(arg(p)?))
}

unsafe extern "C" fn delete_recursively(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    undeleted_files: *mut u64,
    undeleted_dirs: *mut u64,
    s: *mut TF_Status,
) {
    let (files, dirs) = guard(s, (0, 0), || fs::delete_recursively(arg(p)?));
    if !undeleted_files.is_null() {
        *undeleted_files = files;
    }
    if !undeleted_dirs.is_null() {
        *undeleted_dirs = dirs;
    }
}

unsafe extern "C" fn rename_file(
    _fs: *const TF_Filesystem,
    from: *const c_char,
    to: *const c_char,
    s: *mut TF_Status,
) {
    guard(s, (), || fs::copy_file(arg(from)?, arg(to)?, true))
}

unsafe extern "C" fn copy_file(
    _fs: *const TF_Filesystem,
    from: *const c_char,
    to: *const c_char,
    s: *mut TF_Status,
) {
    guard(s, (), || fs::copy_file(arg(from)?, arg(to)?, false))
}

unsafe extern "C" fn path_exists(_fs: *const TF_Filesystem, p: *const c_char, s: *mut TF_Status) {
    guard(s, (), || fs::exists(arg(p)?))
}

unsafe extern "C" fn stat(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    stats: *mut TF_FileStatistics,
    s: *mut TF_Status,
) {
    guard(s, (), || {
        let st = fs::stat(arg(p)?)?;
        if !stats.is_null() {
            (*stats).length = st.length as i64;
            (*stats).mtime_nsec = st.mtime_nsec;
            (*stats).is_directory = st.is_directory;
        }
        Ok(())
    })
}

unsafe extern "C" fn is_directory(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    s: *mut TF_Status,
) -> bool {
    guard(s, false, || fs::is_directory(arg(p)?).map(|()| true))
}

unsafe extern "C" fn get_file_size(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    s: *mut TF_Status,
) -> i64 {
    guard(s, -1, || {
        let st = fs::stat(arg(p)?)?;
        if st.is_directory {
            return Err(Failure::new(
                super::abi::code::FAILED_PRECONDITION,
                format!("{}: is a directory", arg(p)?),
            ));
        }
        Ok(st.length as i64)
    })
}

unsafe extern "C" fn translate_name(_fs: *const TF_Filesystem, uri: *const c_char) -> *mut c_char {
    guard_quiet(std::ptr::null_mut(), || match arg(uri) {
        Ok(u) => alloc_c_string(&super::target::translate(u)),
        Err(_) => std::ptr::null_mut(),
    })
}

unsafe extern "C" fn get_children(
    _fs: *const TF_Filesystem,
    p: *const c_char,
    entries: *mut *mut *mut c_char,
    s: *mut TF_Status,
) -> c_int {
    guard(s, -1, || hand_over(fs::children(arg(p)?)?, entries))
}

unsafe extern "C" fn get_matching_paths(
    _fs: *const TF_Filesystem,
    glob: *const c_char,
    entries: *mut *mut *mut c_char,
    s: *mut TF_Status,
) -> c_int {
    guard(s, -1, || {
        hand_over(fs::matching_paths(arg(glob)?)?, entries)
    })
}

// ---- random-access files ----

unsafe extern "C" fn ra_cleanup(file: *mut TF_RandomAccessFile) {
    guard_quiet((), || {
        if !file.is_null() && !(*file).plugin_file.is_null() {
            drop(Box::from_raw((*file).plugin_file.cast::<ReadFile>()));
            (*file).plugin_file = std::ptr::null_mut();
        }
    })
}

unsafe extern "C" fn ra_read(
    file: *const TF_RandomAccessFile,
    offset: u64,
    n: usize,
    buffer: *mut c_char,
    s: *mut TF_Status,
) -> i64 {
    let mut count = 0usize;
    guard(s, (), || {
        let f = &*(*file).plugin_file.cast::<ReadFile>();
        let dst = std::slice::from_raw_parts_mut(buffer.cast::<u8>(), n);
        let (copied, r) = f.read(offset, dst);
        count = copied;
        r
    });
    // TF takes the bytes copied even with an error (a short read at the end).
    count as i64
}

// ---- writable files ----

unsafe fn writer<'a>(file: *const TF_WritableFile) -> &'a WriteFile {
    &*(*file).plugin_file.cast::<WriteFile>()
}

unsafe extern "C" fn wf_cleanup(file: *mut TF_WritableFile) {
    guard_quiet((), || {
        if !file.is_null() && !(*file).plugin_file.is_null() {
            // An unclosed file is abandoned: nothing becomes visible.
            drop(Box::from_raw((*file).plugin_file.cast::<WriteFile>()));
            (*file).plugin_file = std::ptr::null_mut();
        }
    })
}

unsafe extern "C" fn wf_append(
    file: *const TF_WritableFile,
    buf: *const c_char,
    n: usize,
    s: *mut TF_Status,
) {
    guard(s, (), || {
        let data = if n == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(buf.cast::<u8>(), n)
        };
        writer(file).append(data)
    })
}

unsafe extern "C" fn wf_tell(file: *const TF_WritableFile, s: *mut TF_Status) -> i64 {
    guard(s, -1, || Ok(writer(file).tell()))
}

unsafe extern "C" fn wf_flush(_file: *const TF_WritableFile, s: *mut TF_Status) {
    // Files become visible on close; before and after it there is nothing to flush.
    guard(s, (), || Ok(()))
}

unsafe extern "C" fn wf_sync(_file: *const TF_WritableFile, s: *mut TF_Status) {
    // Durability comes with close (direct:// fsyncs then).
    guard(s, (), || Ok(()))
}

unsafe extern "C" fn wf_close(file: *const TF_WritableFile, s: *mut TF_Status) {
    guard(s, (), || writer(file).close())
}
