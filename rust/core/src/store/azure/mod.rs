//! `az://<account>/<container>/<key>`: Azure Blob Storage (and Azurite)
//! through the official `azure_storage_blob` crate.
//!
//! - `builder.rs`: endpoint, credential and retry settings from
//!   `storage_options` and the environment;
//! - `credential.rs`: our Shared Key signing policy, SAS, Entra ID;
//! - `client.rs`: one SDK request per method, errors mapped to ours;
//! - `writer.rs`: streaming block uploads;
//! - here: the `ObjectStore` contract, including parallel ranged reads.
//!
//! The store root is the container: keys are blob names. Containers are
//! never created implicitly; a missing one is `NotFound` naming it.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::Etag;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{check_range, DirListing, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::error::{Error, Result};

pub mod builder;
pub mod client;
pub mod credential;
pub mod writer;

pub use builder::{AzureConfig, AzureOptions};
use client::AzureClient;

/// Size of one ranged GET of a large read.
const READ_PART: u64 = 8 << 20;
/// Ranged GETs in flight for one read.
const READ_CONCURRENCY: usize = 8;

#[derive(Debug, Clone)]
pub struct AzureStore {
    client: Arc<AzureClient>,
}

impl AzureStore {
    pub fn new(config: AzureConfig) -> Self {
        AzureStore {
            client: Arc::new(AzureClient::new(config)),
        }
    }

    /// The store for `az://<account>/<container>`, configured from
    /// `options` and the process environment.
    pub fn open(account: &str, container: &str, options: &AzureOptions) -> Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        Ok(AzureStore::new(builder::resolve(
            account, container, options, &env,
        )?))
    }

    /// Create this store's container; `false` when it already existed.
    /// For set-up by tests and benchmarks: the store itself never creates one.
    pub async fn create_container(&self) -> Result<bool> {
        self.client.create_container().await
    }

    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() || key.ends_with('/') {
            return Err(Error::invalid(format!(
                "{}: a blob name must not be empty or end with '/'",
                self.client.uri(key)
            )));
        }
        Ok(())
    }

    /// Read `range` of `key` into `dest` (exactly `dest.len()` bytes),
    /// retrying a body that breaks off. `first` is a response already in
    /// hand for this range.
    async fn fill(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<Etag>,
        dest: &mut [u8],
        first: Option<client::RangeResponse>,
    ) -> Result<()> {
        let max = self.client.config().max_retries;
        let mut attempt = 0u32;
        let mut response = first;
        loop {
            let r = match response.take() {
                Some(r) => r,
                None => self
                    .client
                    .get_range(key, range.clone(), etag.clone())
                    .await?
                    .ok_or_else(|| {
                        Error::backend(
                            self.client.uri(key),
                            format!("bytes {}..{} are no longer there", range.start, range.end),
                            false,
                        )
                    })?,
            };
            let failure = if r.len != dest.len() as u64 {
                format!("got {} bytes instead of {}", r.len, dest.len())
            } else {
                match r.body.collect_into(dest).await {
                    Ok(n) if n == dest.len() => return Ok(()),
                    Ok(n) => format!("body ended after {n} of {} bytes", dest.len()),
                    Err(e) => client::redacted_chain(&e),
                }
            };
            if attempt >= max {
                return Err(Error::backend(
                    self.client.uri(key),
                    format!(
                        "reading bytes {}..{} failed after {attempt} retries: {failure}",
                        range.start, range.end
                    ),
                    true,
                ));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

/// 100 ms, 200 ms, 400 ms ... capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

#[async_trait]
impl ObjectStore for AzureStore {
    fn uri(&self, key: &str) -> String {
        self.client.uri(key)
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        self.check_key(key)?;
        if data.len() < opts.multipart_threshold.max(1) {
            return self
                .client
                .put_blob(key, data, false)
                .await?
                .ok_or_else(|| Error::backend(self.uri(key), "unconditional put refused", false));
        }
        let mut w = self.writer(key, opts).await?;
        w.write(data).await?;
        w.finish().await
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.check_key(key)?;
        Ok(Box::new(writer::BlockWriter::new(
            self.client.clone(),
            key,
            opts,
        )?))
    }

    /// The first ranged GET learns the blob's size (Content-Range) and
    /// version (ETag); the rest of a large range follows in parallel
    /// pieces pinned to that version, each written straight into its part
    /// of the destination buffer.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let uri = self.uri(key);
        if range.start > range.end {
            check_range(&uri, &range, u64::MAX)?;
        }
        if range.start == range.end {
            let size = self.head(key).await?.size;
            check_range(&uri, &range, size)?;
            return Ok(Bytes::new());
        }
        let first_end = range.end.min(range.start.saturating_add(READ_PART));
        let Some(first) = self
            .client
            .get_range(key, range.start..first_end, None)
            .await?
        else {
            // Starts at or past the end (or the blob is empty).
            let size = self.head(key).await?.size;
            check_range(&uri, &range, size)?;
            return Ok(Bytes::new());
        };
        let end = range.end.min(first.total);
        let len = usize::try_from(end - range.start).map_err(|_| {
            Error::invalid(format!(
                "{uri}: a {}-byte read does not fit in memory",
                end - range.start
            ))
        })?;
        let mut out = vec![0u8; len];
        let etag = first.etag.clone();
        let first_len = (first.len as usize).min(len);
        let (head, tail) = out.split_at_mut(first_len);
        let first_range = range.start..range.start + first_len as u64;
        // Built up front (one small future per piece) rather than lazily:
        // a lazy stream's closure trips the Send check of async_trait.
        let mut pieces = vec![self.fill(key, first_range.clone(), etag.clone(), head, Some(first))];
        for (i, dest) in tail.chunks_mut(READ_PART as usize).enumerate() {
            let s = first_range.end + i as u64 * READ_PART;
            let r = s..s + dest.len() as u64;
            pieces.push(self.fill(key, r, etag.clone(), dest, None));
        }
        let pieces = stream::iter(pieces).buffer_unordered(READ_CONCURRENCY);
        pieces.try_collect::<Vec<()>>().await?;
        Ok(Bytes::from(out))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.client.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = self.client.list(prefix).await?;
        // The service sorts too, but by its own collation; ours is bytes.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let mut out = self.client.list_dir(prefix).await?;
        out.prefixes.sort();
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client.delete(key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.check_key(key)?;
        Ok(self.client.put_blob(key, data, true).await?.is_some())
    }
}
