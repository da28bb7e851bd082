//! TensorFlow's modular filesystem C ABI
//! (`tensorflow/c/experimental/filesystem/filesystem_interface.h`, TF 2.21),
//! mirrored by hand: the header is C++-only, and linking TensorFlow would
//! make `import s3dlio` need it. `tests/test_tf_abi.py` checks every size
//! and offset here against the installed header.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};

/// TF's status object; only ever handled through a pointer.
#[repr(C)]
pub struct TF_Status {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct TF_Filesystem {
    pub plugin_filesystem: *mut c_void,
}

#[repr(C)]
pub struct TF_RandomAccessFile {
    pub plugin_file: *mut c_void,
}

#[repr(C)]
pub struct TF_WritableFile {
    pub plugin_file: *mut c_void,
}

#[repr(C)]
pub struct TF_FileStatistics {
    pub length: i64,
    pub mtime_nsec: i64,
    pub is_directory: bool,
}

/// `TF_Code` values (tensorflow/c/tf_status.h).
pub mod code {
    pub const OK: i32 = 0;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
}

/// A slot of a table this plugin leaves empty (same size as any pointer).
pub type Unused = Option<unsafe extern "C" fn()>;

type Fs = *const TF_Filesystem;
type Path = *const c_char;
type St = *mut TF_Status;

#[repr(C)]
pub struct TF_RandomAccessFileOps {
    pub cleanup: Option<unsafe extern "C" fn(*mut TF_RandomAccessFile)>,
    pub read: Option<
        unsafe extern "C" fn(*const TF_RandomAccessFile, u64, usize, *mut c_char, St) -> i64,
    >,
}

#[repr(C)]
pub struct TF_WritableFileOps {
    pub cleanup: Option<unsafe extern "C" fn(*mut TF_WritableFile)>,
    pub append: Option<unsafe extern "C" fn(*const TF_WritableFile, *const c_char, usize, St)>,
    pub tell: Option<unsafe extern "C" fn(*const TF_WritableFile, St) -> i64>,
    pub flush: Option<unsafe extern "C" fn(*const TF_WritableFile, St)>,
    pub sync: Option<unsafe extern "C" fn(*const TF_WritableFile, St)>,
    pub close: Option<unsafe extern "C" fn(*const TF_WritableFile, St)>,
}

#[repr(C)]
pub struct TF_ReadOnlyMemoryRegionOps {
    pub cleanup: Unused,
    pub data: Unused,
    pub length: Unused,
}

#[repr(C)]
pub struct TF_FilesystemOps {
    pub init: Option<unsafe extern "C" fn(*mut TF_Filesystem, St)>,
    pub cleanup: Option<unsafe extern "C" fn(*mut TF_Filesystem)>,
    pub new_random_access_file:
        Option<unsafe extern "C" fn(Fs, Path, *mut TF_RandomAccessFile, St)>,
    pub new_writable_file: Option<unsafe extern "C" fn(Fs, Path, *mut TF_WritableFile, St)>,
    pub new_appendable_file: Option<unsafe extern "C" fn(Fs, Path, *mut TF_WritableFile, St)>,
    pub new_read_only_memory_region_from_file: Unused,
    pub create_dir: Option<unsafe extern "C" fn(Fs, Path, St)>,
    pub recursively_create_dir: Option<unsafe extern "C" fn(Fs, Path, St)>,
    pub delete_file: Option<unsafe extern "C" fn(Fs, Path, St)>,
    pub delete_dir: Option<unsafe extern "C" fn(Fs, Path, St)>,
    pub delete_recursively: Option<unsafe extern "C" fn(Fs, Path, *mut u64, *mut u64, St)>,
    pub rename_file: Option<unsafe extern "C" fn(Fs, Path, Path, St)>,
    pub copy_file: Option<unsafe extern "C" fn(Fs, Path, Path, St)>,
    pub path_exists: Option<unsafe extern "C" fn(Fs, Path, St)>,
    pub paths_exist: Unused,
    pub stat: Option<unsafe extern "C" fn(Fs, Path, *mut TF_FileStatistics, St)>,
    pub is_directory: Option<unsafe extern "C" fn(Fs, Path, St) -> bool>,
    pub get_file_size: Option<unsafe extern "C" fn(Fs, Path, St) -> i64>,
    pub translate_name: Option<unsafe extern "C" fn(Fs, Path) -> *mut c_char>,
    pub get_children: Option<unsafe extern "C" fn(Fs, Path, *mut *mut *mut c_char, St) -> c_int>,
    pub get_matching_paths:
        Option<unsafe extern "C" fn(Fs, Path, *mut *mut *mut c_char, St) -> c_int>,
    pub flush_caches: Unused,
    /// start, end, add_to, get_for, get_or_start_for, decode transaction.
    pub transactions: [Unused; 6],
    /// set/get filesystem configuration, get int/string/list options.
    pub configuration: [Unused; 5],
}

#[repr(C)]
pub struct TF_FilesystemPluginOps {
    pub scheme: *mut c_char,
    pub filesystem_ops_abi: c_int,
    pub filesystem_ops_api: c_int,
    pub filesystem_ops_size: usize,
    pub filesystem_ops: *mut TF_FilesystemOps,
    pub random_access_file_ops_abi: c_int,
    pub random_access_file_ops_api: c_int,
    pub random_access_file_ops_size: usize,
    pub random_access_file_ops: *mut TF_RandomAccessFileOps,
    pub writable_file_ops_abi: c_int,
    pub writable_file_ops_api: c_int,
    pub writable_file_ops_size: usize,
    pub writable_file_ops: *mut TF_WritableFileOps,
    pub read_only_memory_region_ops_abi: c_int,
    pub read_only_memory_region_ops_api: c_int,
    pub read_only_memory_region_ops_size: usize,
    pub read_only_memory_region_ops: *mut TF_ReadOnlyMemoryRegionOps,
}

#[repr(C)]
pub struct TF_FilesystemPluginInfo {
    pub num_schemes: usize,
    pub ops: *mut TF_FilesystemPluginOps,
    pub plugin_memory_allocate: Option<unsafe extern "C" fn(usize) -> *mut c_void>,
    pub plugin_memory_free: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// ABI and API versions of every table in TF 2.21 (all 0).
pub const ABI_VERSION: c_int = 0;
pub const API_VERSION: c_int = 0;

/// `(name, size)` of every table and `(table.field, offset)` of every field
/// the layout test compares with the C++ header.
pub fn layout() -> Vec<(String, usize)> {
    use std::mem::{offset_of, size_of};
    let mut out = vec![
        (
            "sizeof TF_FilesystemPluginInfo".into(),
            size_of::<TF_FilesystemPluginInfo>(),
        ),
        (
            "sizeof TF_FilesystemPluginOps".into(),
            size_of::<TF_FilesystemPluginOps>(),
        ),
        (
            "sizeof TF_FilesystemOps".into(),
            size_of::<TF_FilesystemOps>(),
        ),
        (
            "sizeof TF_RandomAccessFileOps".into(),
            size_of::<TF_RandomAccessFileOps>(),
        ),
        (
            "sizeof TF_WritableFileOps".into(),
            size_of::<TF_WritableFileOps>(),
        ),
        (
            "sizeof TF_ReadOnlyMemoryRegionOps".into(),
            size_of::<TF_ReadOnlyMemoryRegionOps>(),
        ),
        (
            "sizeof TF_FileStatistics".into(),
            size_of::<TF_FileStatistics>(),
        ),
    ];
    macro_rules! off {
        ($t:ident, $($f:ident),+) => {
            $(out.push((concat!(stringify!($t), ".", stringify!($f)).into(), offset_of!($t, $f)));)+
        };
    }
    off!(
        TF_FilesystemPluginInfo,
        num_schemes,
        ops,
        plugin_memory_allocate,
        plugin_memory_free
    );
    off!(
        TF_FilesystemPluginOps,
        scheme,
        filesystem_ops_abi,
        filesystem_ops_api,
        filesystem_ops_size,
        filesystem_ops,
        random_access_file_ops_abi,
        random_access_file_ops_api,
        random_access_file_ops_size,
        random_access_file_ops,
        writable_file_ops_abi,
        writable_file_ops_api,
        writable_file_ops_size,
        writable_file_ops,
        read_only_memory_region_ops_abi,
        read_only_memory_region_ops_api,
        read_only_memory_region_ops_size,
        read_only_memory_region_ops
    );
    off!(
        TF_FilesystemOps,
        init,
        cleanup,
        new_random_access_file,
        new_writable_file,
        new_appendable_file,
        new_read_only_memory_region_from_file,
        create_dir,
        recursively_create_dir,
        delete_file,
        delete_dir,
        delete_recursively,
        rename_file,
        copy_file,
        path_exists,
        paths_exist,
        stat,
        is_directory,
        get_file_size,
        translate_name,
        get_children,
        get_matching_paths,
        flush_caches
    );
    off!(TF_RandomAccessFileOps, cleanup, read);
    off!(
        TF_WritableFileOps,
        cleanup,
        append,
        tell,
        flush,
        sync,
        close
    );
    off!(TF_FileStatistics, length, mtime_nsec, is_directory);
    out
}
