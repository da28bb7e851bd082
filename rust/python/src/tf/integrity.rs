//! Where the CRC32C of a plain (uncompressed) file is recorded, so that a
//! whole-file read can check it. Compressed files carry theirs in the
//! seekable trailer and need nothing here.
//!
//! - direct://: the extended attribute `user.s3dlio.crc32c` (it follows
//!   rename(2)); a file system without user attributes records nothing.
//! - s3://: the `x-amz-checksum-crc32c` of single-request uploads, which
//!   the core sends anyway. Multipart objects carry a composite checksum,
//!   which is not the file's, so after one is closed its CRC32C goes into
//!   its user metadata (`x-amz-meta-s3dlio-crc32c`) by a server-side copy
//!   onto itself: a plain S3 CopyObject works on every S3 server, where a
//!   full-object multipart checksum is AWS-only (s3s-fs ignores it).
//! - az://: the blob metadata `s3dlio_crc32c`, which the core's Azure
//!   writer sets with every Put Blob and Put Block List.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use s3dlio_core::runtime::block_on;
use s3dlio_core::store::PutOptions;
use s3dlio_core::{Error, Result};

use super::target::Target;

const XATTR: &[u8] = b"user.s3dlio.crc32c\0";

/// Record `crc` for the plain file of `size` bytes just closed at
/// `target`, written with `put`.
pub fn record(target: &Target, crc: u32, size: u64, put: &PutOptions) -> Result<()> {
    if let Some(path) = &target.local {
        return set_xattr(path, crc);
    }
    let store = &target.loc.store;
    // Below the store's single-request limit the upload carried the CRC
    // itself; stores without one (Azure) record it while writing.
    match store.single_put_limit(put) {
        Some(limit) if size >= limit => {
            block_on(store.record_crc32c(target.key(), crc))??;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The CRC32C recorded for the plain file at `target`, if any.
pub async fn recorded(target: &Target) -> Result<Option<u32>> {
    match &target.local {
        Some(path) => get_xattr(path),
        None => Ok(target.loc.store.head(target.key()).await?.crc32c),
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{}: path contains a NUL byte", path.display())))
}

fn unsupported(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM))
}

fn set_xattr(path: &Path, crc: u32) -> Result<()> {
    let p = c_path(path)?;
    let value = crc.to_be_bytes();
    // SAFETY: NUL-terminated path and name, a 4-byte value.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            XATTR.as_ptr().cast(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if unsupported(&err) {
        return Ok(());
    }
    Err(Error::from_io(path.display().to_string(), err))
}

fn get_xattr(path: &Path) -> Result<Option<u32>> {
    let p = c_path(path)?;
    let mut value = [0u8; 4];
    // SAFETY: NUL-terminated path and name, a 4-byte buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            XATTR.as_ptr().cast(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if n == 4 {
        return Ok(Some(u32::from_be_bytes(value)));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA) => Ok(None),
        _ if n >= 0 || unsupported(&err) => Ok(None),
        _ => Err(Error::from_io(path.display().to_string(), err)),
    }
}

/// Carry the recorded CRC32C of `from` over to a copy at `to`.
pub fn copy_local(from: &Path, to: &Path) -> Result<()> {
    match get_xattr(from)? {
        Some(crc) => set_xattr(to, crc),
        None => Ok(()),
    }
}
