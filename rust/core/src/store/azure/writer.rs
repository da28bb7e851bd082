//! Streaming uploads as block blobs.
//!
//! Data is cut into `part_size` blocks; up to `concurrency` of them are
//! staged (Put Block) at once, and `finish` commits the list (Put Block
//! List), which makes the whole object visible atomically. An object that
//! ends before its first block fills is sent as one Put Blob instead.
//!
//! Memory: each block holds a permit of a `concurrency`-sized semaphore
//! from the moment it starts filling until its upload is done, so at most
//! `concurrency * part_size` bytes are held, whatever the object size.
//!
//! A failed, aborted or dropped writer never commits: staged blocks stay
//! uncommitted (invisible to reads and listings) and the service discards
//! them (after a week, or at the next commit of that name).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::client::AzureClient;
use crate::error::{Error, Result};
use crate::store::unique::{unique_tag, UniqueTag};
use crate::store::{ObjectMeta, ObjectWriter, PutOptions};

pub struct BlockWriter {
    client: Arc<AzureClient>,
    key: String,
    part_size: usize,
    permits: Arc<Semaphore>,
    /// The block being filled, and the permit it holds.
    filling: BytesMut,
    filling_permit: Option<OwnedSemaphorePermit>,
    uploads: JoinSet<Result<()>>,
    /// Block ids in object order; their length must be equal for one blob.
    block_ids: Vec<Vec<u8>>,
    /// Distinguishes this writer's blocks from another writer's on the same name.
    nonce: u64,
    size: u64,
    /// Set once anything failed: the writer can only be dropped/aborted then.
    failed: bool,
}

impl BlockWriter {
    pub fn new(client: Arc<AzureClient>, key: &str, opts: &PutOptions) -> Result<Self> {
        if opts.part_size == 0 || opts.concurrency == 0 {
            return Err(Error::invalid(format!(
                "{}: part size and concurrency must be positive",
                client.uri(key)
            )));
        }
        // Put Block takes at most 4000 MiB; 50,000 blocks per blob.
        const MAX_BLOCK: usize = 4000 << 20;
        if opts.part_size > MAX_BLOCK {
            return Err(Error::invalid(format!(
                "{}: part size {} exceeds Azure's block limit of 4000 MiB",
                client.uri(key),
                opts.part_size
            )));
        }
        Ok(BlockWriter {
            client,
            key: key.to_string(),
            part_size: opts.part_size,
            permits: Arc::new(Semaphore::new(opts.concurrency)),
            filling: BytesMut::new(),
            filling_permit: None,
            uploads: JoinSet::new(),
            block_ids: Vec::new(),
            nonce: nonce(),
            size: 0,
            failed: false,
        })
    }

    fn uri(&self) -> String {
        self.client.uri(&self.key)
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::invalid(format!(
                "{}: the upload already failed; start a new one",
                self.uri()
            )));
        }
        Ok(())
    }

    /// Surface failures of finished block uploads without waiting.
    fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.uploads.try_join_next() {
            self.settle(done)?;
        }
        Ok(())
    }

    fn settle(
        &mut self,
        done: std::result::Result<Result<()>, tokio::task::JoinError>,
    ) -> Result<()> {
        let res = done.unwrap_or_else(|e| {
            Err(Error::backend(
                self.uri(),
                format!("block upload task failed: {e}"),
                false,
            ))
        });
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    async fn permit(&mut self) -> Result<OwnedSemaphorePermit> {
        // Wait for a slot, noticing failed uploads while we wait.
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return Ok(p);
            }
            match self.uploads.join_next().await {
                Some(done) => self.settle(done)?,
                None => {
                    return self
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| Error::backend(self.uri(), "upload slots closed", false))
                }
            }
        }
    }

    /// Start staging `data` as the next block.
    fn stage(&mut self, data: Bytes, permit: OwnedSemaphorePermit) {
        let id = format!("{:016x}-{:010}", self.nonce, self.block_ids.len()).into_bytes();
        self.block_ids.push(id.clone());
        let client = self.client.clone();
        let key = self.key.clone();
        self.uploads.spawn(async move {
            let res = client.stage_block(&key, &id, data).await;
            drop(permit);
            res
        });
    }

    async fn write_inner(&mut self, mut buf: Bytes) -> Result<()> {
        while !buf.is_empty() {
            if self.filling_permit.is_none() {
                self.filling_permit = Some(self.permit().await?);
            }
            let room = self.part_size - self.filling.len();
            if self.filling.is_empty() && buf.len() >= self.part_size {
                // A whole block in the caller's buffer: no copy.
                let block = buf.split_to(self.part_size);
                self.size += block.len() as u64;
                let permit = self.take_permit()?;
                self.stage(block, permit);
                continue;
            }
            let take = room.min(buf.len());
            if self.filling.capacity() == 0 {
                self.filling.reserve(self.part_size);
            }
            self.filling.extend_from_slice(&buf.split_to(take));
            self.size += take as u64;
            if self.filling.len() == self.part_size {
                let block = std::mem::take(&mut self.filling).freeze();
                let permit = self.take_permit()?;
                self.stage(block, permit);
            }
        }
        Ok(())
    }

    fn take_permit(&mut self) -> Result<OwnedSemaphorePermit> {
        self.filling_permit
            .take()
            .ok_or_else(|| Error::backend(self.uri(), "block buffer without a slot", false))
    }

    async fn finish_inner(&mut self) -> Result<ObjectMeta> {
        if self.block_ids.is_empty() {
            // Never filled one block: a single Put Blob.
            let data = std::mem::take(&mut self.filling).freeze();
            let meta = self
                .client
                .put_blob(&self.key, data, false)
                .await?
                .ok_or_else(|| Error::backend(self.uri(), "unconditional put refused", false))?;
            return Ok(meta);
        }
        if !self.filling.is_empty() {
            let block = std::mem::take(&mut self.filling).freeze();
            let permit = self.take_permit()?;
            self.stage(block, permit);
        }
        while let Some(done) = self.uploads.join_next().await {
            self.settle(done)?;
        }
        let ids = std::mem::take(&mut self.block_ids);
        self.client.commit_blocks(&self.key, ids, self.size).await
    }
}

#[async_trait]
impl ObjectWriter for BlockWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.check_usable()?;
        self.reap()?;
        let res = self.write_inner(buf).await;
        if res.is_err() {
            self.failed = true;
            self.uploads.abort_all();
        }
        res
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta> {
        self.check_usable()?;
        let res = self.finish_inner().await;
        if res.is_err() {
            // Never commit a partial list: stop what is still staging.
            self.uploads.abort_all();
        }
        res
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.uploads.abort_all();
        while self.uploads.join_next().await.is_some() {}
        Ok(())
    }
}

/// A per-writer random-enough tag for block ids.
fn nonce() -> u64 {
    let UniqueTag { hash, seq } = unique_tag();
    (u64::from(hash) << 32) | (seq & 0xffff_ffff)
}
