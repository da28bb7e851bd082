//! `s3://bucket/key` on AWS S3 and S3-compatible servers.
//!
//! - [`builder`]: configuration from `storage_options` and the environment,
//!   one shared SDK client per configuration.
//! - `client`: the wire calls, with errors mapped and broken bodies resumed.
//! - `target`: the multipart calls the shared streaming writer drives.
//!
//! Uploads below the multipart threshold are one PUT; above it, parts go
//! up in parallel ([`crate::store::upload`]). Every PUT and part carries
//! `x-amz-checksum-crc32c`. Reads longer than one piece are split into
//! parallel ranged GETs written straight into one buffer.

mod body;
pub mod builder;
mod client;
mod error;
mod target;

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use builder::Resolved;
pub use builder::{Addressing, S3Options, S3_OPTION_KEYS};
use client::{BucketClient, Created};

use super::ranged::{self, Opened, RangedGet};
use super::upload::{MultipartWriter, UploadLimits};
use super::{DirListing, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::crc::crc32c;
use crate::error::{Error, Result};

/// S3 refuses parts below 5 MiB (except the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// Parts per multipart upload.
const MAX_PARTS: u32 = 10_000;
/// The largest part S3 accepts.
const MAX_PART_SIZE: usize = 5 << 30;
/// Reads longer than this become parallel ranged GETs of this size.
const READ_PIECE: u64 = 8 << 20;
/// Ranged GETs in flight for one read, unless `max_concurrency` says otherwise.
const READ_CONCURRENCY: usize = 8;
/// Attempts of a conditional create that meets a concurrent one (409).
const CONDITIONAL_ATTEMPTS: u32 = 3;
/// The largest single PUT S3 accepts.
const MAX_SINGLE_PUT: usize = 5 << 30;
/// The largest object one CopyObject copies; larger ones take UploadPartCopy.
const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Part size of a multipart copy unless `part_size` is configured: the
/// server moves the bytes, so large parts only save requests.
const COPY_PART_SIZE: u64 = 512 << 20;

/// Buckets (per endpoint) a `HeadBucket` has shown to exist in this
/// process, so a missing key costs one extra request at most once.
static SEEN_BUCKETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One bucket. Cheap to create: the SDK client is built (or taken from the
/// process-wide cache) on the first request.
pub struct S3Store {
    bucket: String,
    config: Arc<Resolved>,
    client: OnceCell<Arc<BucketClient>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.config.endpoint)
            .field("path_style", &self.config.path_style)
            .finish()
    }
}

impl S3Store {
    pub fn new(bucket: &str, options: &S3Options) -> Result<Self> {
        if bucket.is_empty() {
            return Err(Error::invalid("s3://: missing bucket name"));
        }
        Ok(S3Store {
            bucket: bucket.to_string(),
            config: Arc::new(Resolved::new(options)?),
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Arc<BucketClient>> {
        self.client
            .get_or_try_init(|| async {
                Ok(Arc::new(
                    BucketClient::new(&self.bucket, &self.config).await?,
                ))
            })
            .await
    }

    /// The caller's put options with this store's overrides, within S3's limits.
    fn limits(&self, opts: &PutOptions) -> UploadLimits {
        let o = &self.config.options;
        let effective = PutOptions {
            part_size: o.part_size.unwrap_or(opts.part_size),
            concurrency: o.concurrency.unwrap_or(opts.concurrency),
            multipart_threshold: o.multipart_threshold.unwrap_or(opts.multipart_threshold),
            ..opts.clone()
        };
        let mut limits = UploadLimits::new(&effective, MIN_PART_SIZE, MAX_PARTS, MAX_PART_SIZE);
        limits.multipart_threshold = limits.multipart_threshold.min(MAX_SINGLE_PUT);
        limits
    }

    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() || key.ends_with('/') {
            return Err(Error::invalid(format!(
                "{}: an object key must not be empty or end with '/'",
                self.uri(key)
            )));
        }
        crate::keys::check_key(&self.uri(key), key)
    }

    /// A bare 404 (HEAD has no body) may mean a missing bucket: say so
    /// when it does. A bucket seen to exist is not looked up again.
    async fn explain(&self, err: Error) -> Error {
        let Error::NotFound { uri } = &err else {
            return err;
        };
        let seen_key = format!("{} {}", self.config.shown_endpoint(), self.bucket);
        let seen = || SEEN_BUCKETS.lock().unwrap_or_else(|p| p.into_inner());
        if uri.contains("(bucket") || seen().contains(&seen_key) {
            return err;
        }
        let Ok(client) = self.client().await else {
            return err;
        };
        match client.bucket_exists().await {
            Ok(true) => {
                seen().insert(seen_key);
                err
            }
            Ok(false) => Error::NotFound {
                uri: format!("{uri} (bucket '{}' does not exist)", self.bucket),
            },
            Err(_) => err,
        }
    }

    async fn head_explained(&self, key: &str) -> Result<ObjectMeta> {
        match self.client().await?.head(key).await {
            Ok(m) => Ok(m),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// Objects above this size are copied part by part.
    fn copy_threshold(&self) -> u64 {
        self.config
            .options
            .multipart_copy_threshold
            .unwrap_or(MAX_SINGLE_COPY)
            .min(MAX_SINGLE_COPY)
    }

    /// The source of a copy: its size, ETag and user metadata.
    async fn head_for_copy(
        &self,
        key: &str,
    ) -> Result<(ObjectMeta, std::collections::HashMap<String, String>)> {
        let head = self.client().await?.head_with_metadata(key).await;
        match head {
            Ok(m) => Ok(m),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// Copy `from` (described by `meta`, `metadata`) to `to` server-side:
    /// CopyObject, or UploadPartCopy above the copy threshold. With `crc`,
    /// the copy's user metadata records it; without, the copy keeps what
    /// the source has.
    async fn copy_server_side(
        &self,
        from: &str,
        to: &str,
        meta: &ObjectMeta,
        mut metadata: std::collections::HashMap<String, String>,
        crc: Option<u32>,
    ) -> Result<ObjectMeta> {
        if meta.size > self.copy_threshold() {
            return self
                .copy_multipart(from, to, meta, crc.or(meta.crc32c), metadata)
                .await;
        }
        let replaced = crc.map(|crc| {
            metadata.insert(client::CRC_METADATA.to_string(), format!("{crc:08x}"));
            metadata
        });
        self.client()
            .await?
            .copy_object(from, to, meta.size, replaced)
            .await
    }

    /// UploadPartCopy of `from` (`source`, pinned by its ETag) to `to`, `concurrency`
    /// parts at a time; the copy keeps the source's user metadata and gets
    /// its CRC32C (`crc`) recorded there, as S3 computes no full-object
    /// checksum for it. The upload is aborted on any failure.
    async fn copy_multipart(
        &self,
        from: &str,
        to: &str,
        source: &ObjectMeta,
        crc: Option<u32>,
        mut metadata: std::collections::HashMap<String, String>,
    ) -> Result<ObjectMeta> {
        let size = source.size;
        let client = self.client().await?.clone();
        let min_part = self
            .config
            .options
            .part_size
            .map_or(COPY_PART_SIZE, |p| p as u64)
            .max(MIN_PART_SIZE as u64);
        let part = min_part
            .max(size.div_ceil(u64::from(MAX_PARTS)))
            .min(MAX_PART_SIZE as u64);
        if let Some(crc) = crc {
            metadata.insert(client::CRC_METADATA.to_string(), format!("{crc:08x}"));
        }
        let upload_id = client.create_multipart_copy(to, metadata).await?;
        let ranges: Vec<(u32, Range<u64>)> = (0..size.div_ceil(part))
            .map(|i| (i as u32 + 1, i * part..((i + 1) * part).min(size)))
            .collect();
        let copied: Result<Vec<(u32, String)>> = stream::iter(ranges)
            .map(|(n, r)| {
                let client = &client;
                let upload_id = &upload_id;
                let etag = source.etag.as_deref();
                async move {
                    let tag = client
                        .upload_part_copy(to, upload_id, n, from, r, etag)
                        .await?;
                    Ok((n, tag))
                }
            })
            .buffer_unordered(self.read_concurrency())
            .try_collect()
            .await;
        let done = match copied {
            Ok(mut parts) => {
                parts.sort_by_key(|(n, _)| *n);
                let tags: Vec<String> = parts.into_iter().map(|(_, t)| t).collect();
                client.complete_multipart_copy(to, &upload_id, &tags).await
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(etag) => {
                let mut meta = ObjectMeta::new(to, size);
                meta.etag = etag;
                meta.crc32c = crc;
                Ok(meta)
            }
            Err(e) => {
                // The copy's error is the one to report; a failed abort
                // leaves parts the bucket's lifecycle rules clean up.
                let _ = client.abort_multipart(to, &upload_id).await;
                Err(e)
            }
        }
    }

    fn read_concurrency(&self) -> usize {
        self.config
            .options
            .concurrency
            .unwrap_or(READ_CONCURRENCY)
            .max(1)
    }
}

/// S3's side of the shared ranged-read driver: GetObject with a Range
/// header, pinned with `If-Match`; broken bodies resume from the first
/// missing byte.
struct Reads<'a>(&'a S3Store);

#[async_trait]
impl RangedGet for Reads<'_> {
    type Body = aws_sdk_s3::primitives::ByteStream;

    fn uri(&self, key: &str) -> String {
        self.0.uri(key)
    }

    fn piece_size(&self) -> u64 {
        READ_PIECE
    }

    fn concurrency(&self) -> usize {
        self.0.read_concurrency()
    }

    async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.0.head_explained(key).await?.size)
    }

    async fn open(
        &self,
        key: &str,
        range: Range<u64>,
        version: Option<&str>,
    ) -> Result<Option<Opened<Self::Body>>> {
        match self.0.client().await?.open_range(key, range, version).await {
            Ok(o) => Ok(Some(o)),
            // 416: the start is at or past the end of the object.
            Err(Error::InvalidInput(_)) => Ok(None),
            Err(e) => Err(self.0.explain(e).await),
        }
    }

    async fn fill(
        &self,
        key: &str,
        start: u64,
        dst: &mut [&mut [u8]],
        first: Option<Opened<Self::Body>>,
        version: Option<&str>,
    ) -> Result<()> {
        let client = self.0.client().await?;
        client.read_into(key, start, dst, first, version).await
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        self.check_key(key)?;
        let limits = self.limits(opts);
        if data.len() < limits.multipart_threshold {
            let crc = crc32c(&data);
            let (_, meta) = self
                .client()
                .await?
                .put_object(key, vec![data], crc, false, opts.plain)
                .await?;
            return Ok(meta);
        }
        let mut w = self.writer(key, opts).await?;
        if let Err(e) = w.write(data).await {
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish().await
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.check_key(key)?;
        let target = target::S3Target::new(self.client().await?.clone(), key, opts);
        Ok(Box::new(MultipartWriter::new(
            Arc::new(target),
            self.limits(opts),
        )))
    }

    fn single_put_limit(&self, opts: &PutOptions) -> Option<u64> {
        Some(self.limits(opts).multipart_threshold as u64)
    }

    fn is_remote(&self) -> bool {
        true
    }

    /// Parallel ranged GETs of [`READ_PIECE`] bytes pinned to the first
    /// one's ETag (see [`super::ranged`]), written straight into one buffer.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        ranged::get_range(&Reads(self), key, range).await
    }

    /// As `get_range`, with the bodies copied straight into `bufs` (no
    /// staging buffer, no second copy).
    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        ranged::read_exact(&Reads(self), key, offset, bufs).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.head_explained(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.client().await?.list(prefix).await
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        self.client().await?.list_dir(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        // S3 deletes missing keys silently; every backend reports them.
        self.head_explained(key).await?;
        self.client().await?.delete(key).await
    }

    /// CopyObject, or UploadPartCopy above CopyObject's 5 GiB limit (or
    /// the `multipart_copy_threshold` option): no byte passes through this
    /// process either way.
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        self.check_key(to)?;
        let (meta, metadata) = self.head_for_copy(from).await?;
        self.copy_server_side(from, to, &meta, metadata, None).await
    }

    /// A copy of the object onto itself with the CRC32C added to its user
    /// metadata (S3 cannot change metadata in place): the server rewrites
    /// the object, no byte passes through this process. For objects whose
    /// checksum S3 does not keep as a full-object CRC32C (multipart).
    async fn record_crc32c(&self, key: &str, crc: u32) -> Result<bool> {
        self.check_key(key)?;
        let (meta, metadata) = self.head_for_copy(key).await?;
        if meta.crc32c != Some(crc) {
            self.copy_server_side(key, key, &meta, metadata, Some(crc))
                .await?;
        }
        Ok(true)
    }

    /// One server-side copy whose user metadata carries the CRC32C.
    async fn copy_recording_crc32c(&self, from: &str, to: &str, crc: u32) -> Result<ObjectMeta> {
        self.check_key(to)?;
        let (meta, metadata) = self.head_for_copy(from).await?;
        self.copy_server_side(from, to, &meta, metadata, Some(crc))
            .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.check_key(key)?;
        let client = self.client().await?.clone();
        let crc = crc32c(&data);
        for attempt in 1..=CONDITIONAL_ATTEMPTS {
            // The HEAD answers the common case without a write, and is the
            // only protection on servers that ignore If-None-Match.
            match self.head_explained(key).await {
                Ok(_) => return Ok(false),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            match client
                .put_object(key, vec![data.clone()], crc, true, false)
                .await
            {
                Ok((Created::Yes, _)) => return Ok(true),
                Ok((Created::AlreadyExists, _)) => return Ok(false),
                Ok((Created::Unsupported, _)) => {
                    // The server refuses conditional PUTs: fall back to the
                    // HEAD above, racy against a concurrent creator (see
                    // docs/ARCHITECTURE.md, S3 backend).
                    client
                        .put_object(key, vec![data], crc, false, false)
                        .await?;
                    return Ok(true);
                }
                // 409 ConditionalRequestConflict: another create of the same
                // key is in flight; look again.
                Err(Error::Backend { reason, .. })
                    if reason.contains("ConditionalRequestConflict")
                        && attempt < CONDITIONAL_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::backend(
            self.uri(key),
            "conditional create kept conflicting with concurrent writers",
            true,
        ))
    }
}
