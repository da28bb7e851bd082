//! Streaming uploads as block blobs, through the shared multipart engine
//! ([`crate::store::upload`]): Azure's side is [`BlockTarget`].
//!
//! Data is cut into `part_size` blocks; up to `concurrency` of them are
//! staged (Put Block) at once, and `finish` commits the list (Put Block
//! List), which makes the whole object visible atomically. An object that
//! ends before its first block fills is sent as one Put Blob instead.
//!
//! Memory: the engine's bound, `(concurrency + 1) * part_size` bytes
//! whatever the object size.
//!
//! A failed, aborted or dropped writer never commits: staged blocks stay
//! uncommitted (invisible to reads and listings) and the service discards
//! them (after a week, or at the next commit of that name).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::client::AzureClient;
use crate::error::{Error, Result};
use crate::store::unique::{unique_tag, UniqueTag};
use crate::store::upload::{MultipartTarget, MultipartWriter, UploadLimits, UploadedPart};
use crate::store::{ObjectMeta, ObjectWriter, PutOptions};

/// Put Block takes at most 4000 MiB.
const MAX_BLOCK: usize = 4000 << 20;
/// Blocks one blob may have.
const MAX_BLOCKS: u32 = 50_000;

/// A streaming writer of `key`: the shared engine over [`BlockTarget`].
pub fn block_writer(
    client: Arc<AzureClient>,
    key: &str,
    opts: &PutOptions,
) -> Result<Box<dyn ObjectWriter>> {
    if opts.part_size == 0 || opts.concurrency == 0 {
        return Err(Error::invalid(format!(
            "{}: part size and concurrency must be positive",
            client.uri(key)
        )));
    }
    if opts.part_size > MAX_BLOCK {
        return Err(Error::invalid(format!(
            "{}: part size {} exceeds Azure's block limit of 4000 MiB",
            client.uri(key),
            opts.part_size
        )));
    }
    let mut limits = UploadLimits::new(opts, 1, MAX_BLOCKS, MAX_BLOCK);
    // Blocks are staged as soon as the first one fills: only an object
    // smaller than one block goes up as a single Put Blob.
    limits.multipart_threshold = limits.part_size;
    let target = BlockTarget {
        client,
        key: key.to_string(),
        plain: opts.plain,
    };
    Ok(Box::new(MultipartWriter::new(Arc::new(target), limits)))
}

/// One blob's block upload. The "upload id" is a per-writer nonce that
/// prefixes its block ids, so two writers of one name never mix blocks;
/// nothing is sent to start or abort an upload.
pub(crate) struct BlockTarget {
    client: Arc<AzureClient>,
    key: String,
    /// Mark the blob plain in its metadata (`PutOptions::plain`).
    plain: bool,
}

#[async_trait]
impl MultipartTarget for BlockTarget {
    fn uri(&self) -> String {
        self.client.uri(&self.key)
    }

    async fn put_whole(&self, data: Bytes, _crc32c: u32) -> Result<ObjectMeta> {
        self.client
            .put_blob(&self.key, data, false, self.plain)
            .await?
            .ok_or_else(|| Error::backend(self.uri(), "unconditional put refused", false))
    }

    async fn start(&self) -> Result<String> {
        let UniqueTag { hash, seq } = unique_tag();
        Ok(format!(
            "{:016x}",
            (u64::from(hash) << 32) | (seq & 0xffff_ffff)
        ))
    }

    async fn put_part(
        &self,
        upload_id: &str,
        number: u32,
        data: Bytes,
        crc32c: u32,
    ) -> Result<UploadedPart> {
        // Block ids of one blob must all have the same length.
        let id = format!("{upload_id}-{number:010}");
        let size = data.len() as u64;
        self.client
            .stage_block(&self.key, id.as_bytes(), data)
            .await?;
        Ok(UploadedPart {
            number,
            tag: id,
            size,
            crc32c,
        })
    }

    async fn complete(
        &self,
        _upload_id: &str,
        parts: &[UploadedPart],
        size: u64,
        crc32c: u32,
    ) -> Result<ObjectMeta> {
        let ids = parts.iter().map(|p| p.tag.clone().into_bytes()).collect();
        self.client
            .commit_blocks(&self.key, ids, size, crc32c, self.plain)
            .await
    }

    /// Uncommitted blocks are invisible and the service discards them.
    async fn abort(&self, _upload_id: &str) -> Result<()> {
        Ok(())
    }
}
