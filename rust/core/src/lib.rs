//! s3dlio core: every byte s3dlio reads or writes goes through here.
//!
//! - [`store`]: the `ObjectStore` trait and one module per backend.
//! - [`codec`]: seekable zstd container and CRC32C, the same for every backend.
//! - [`checkpoint`]: checkpoint layout, manifests and commit markers.

pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod keys;
pub mod limits;
pub mod object;
pub mod redact;
pub mod pack;
pub mod runtime;
pub mod store;
pub mod uri;

#[cfg(test)]
pub(crate) mod test_rng;

pub use error::{Error, Result};
