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
//!
//! TF's checkpoint writer closes each file under a temporary name
//! (`<name>.tempstate<digits>`) and renames it at once, and on S3 a
//! rename is a server-side copy. For such a file the self-copy is left to
//! the rename: its CRC32C waits here, in this process, and the rename's
//! copy records it (`ObjectStore::copy_recording_crc32c`), one server pass
//! over the data instead of two. Until then the temporary file's CRC32C is
//! known only here: a read of it in this process, or its move to another
//! store, is checked against it; one left behind by a killed process
//! (garbage TF never points to) never is.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{LazyLock, Mutex, MutexGuard};

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
            if is_tf_temporary(target.key()) {
                pending().insert(target.uri(), crc);
                return Ok(());
            }
            block_on(store.record_crc32c(target.key(), crc))??;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// CRC32Cs of closed temporary files whose rename will record them, by URI.
/// An entry leaves when its file is renamed, deleted or written again.
fn pending() -> MutexGuard<'static, HashMap<String, u32>> {
    static PENDING: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// The CRC32C waiting for the rename of the temporary file at `uri`.
pub fn pending_crc(uri: &str) -> Option<u32> {
    pending().get(uri).copied()
}

/// `uri` was renamed, deleted or opened for writing: its waiting CRC32C,
/// if any, no longer describes an object there.
pub fn forget(uri: &str) {
    pending().remove(uri);
}

/// A name TF's checkpoint writer (`BundleWriter`) gives a file it renames
/// as soon as it is closed: `<final name>.tempstate<decimal digits>`.
fn is_tf_temporary(key: &str) -> bool {
    match key.rsplit_once(".tempstate") {
        Some((stem, digits)) => {
            !stem.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bundle_writer_temporaries_wait_for_their_rename() {
        assert!(is_tf_temporary(
            "run/ckpt.part-00000-of-00001.data-00000-of-00001.tempstate1297021079455968021"
        ));
        assert!(is_tf_temporary("ckpt.index.tempstate7"));
        for key in [
            "run/ckpt.data-00000-of-00001",
            "run/ckpt.tempstate",
            "run/ckpt.tempstate12x",
            ".tempstate12",
            "run/ckpt.tempstate12/more",
        ] {
            assert!(!is_tf_temporary(key), "{key}");
        }
    }
}
