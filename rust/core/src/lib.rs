//! s3dlio core: every byte s3dlio reads or writes goes through here.
//!
//! # Layers
//!
//! Modules sit in layers and import only their own layer or the layers
//! below it (`tests/layering.rs` fails on an import that points up):
//!
//! | layer | modules | holds |
//! |---|---|---|
//! | 0 leaf | [`error`], [`crc`], [`runtime`], [`keys`], [`limits`], [`redact`] | the error type, CRC32C, the shared tokio runtime, key and range checks, credential redaction |
//! | 1 formats | [`format`] | byte formats with no I/O: seekable container, byte grouping, raw planes, zstd helpers, pack frames |
//! | 2 stores | [`uri`], [`store`] | the `ObjectStore` contract and one module per backend |
//! | 3 streams | [`codec`], [`pack`] | the streaming encoder/decoder and the pack writer/reader, on top of any store |
//! | 4 objects | [`object`] | one-object helpers (open a writer/reader on a URI, copy) |
//! | 5 checkpoints | [`checkpoint`] | checkpoint layout, manifests and commit markers |
//!
//! So a store never knows about compression, and a format never touches
//! a store: a new backend needs only layer 2, a new format only layer 1.

pub mod checkpoint;
pub mod codec;
pub mod crc;
pub mod error;
pub mod format;
pub mod keys;
pub mod limits;
pub mod object;
pub mod pack;
pub mod redact;
pub mod runtime;
pub mod store;
pub mod uri;

#[cfg(test)]
pub(crate) mod test_rng;

pub use error::{Error, Result};
