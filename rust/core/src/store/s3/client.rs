//! The S3 wire calls of one bucket, each returning the crate's errors.
//! Request-level retries (throttling, 5xx, resets before a response) are
//! the SDK's standard retry mode; a body that breaks mid-stream is resumed
//! here from the first missing byte.

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, MetadataDirective,
};
use bytes::Bytes;

use super::builder::{self, Resolved};
use super::error::{Context, Failure};
use crate::error::{Error, Result};
use crate::store::ranged::{check_version, Cursor};
use crate::store::upload::UploadedPart;
use crate::store::{metadata_says_plain, DirListing, ObjectMeta, PLAIN_CODEC};

/// The user metadata entry (`x-amz-meta-s3dlio-crc32c`, 8 hex digits)
/// holding the CRC32C of an object's bytes where S3 keeps no full-object
/// checksum: multipart uploads (their checksum is composite) and
/// multipart copies. Single PUTs carry `x-amz-checksum-crc32c` instead.
pub(crate) const CRC_METADATA: &str = "s3dlio-crc32c";

/// The user metadata entry (`x-amz-meta-s3dlio-codec: none`) that marks
/// an object s3dlio stored plain (see `PutOptions::plain`).
pub(crate) const CODEC_METADATA: &str = "s3dlio-codec";

/// User metadata of a plain object written by s3dlio: the marker, and the
/// CRC32C when it is known before the upload.
fn plain_metadata(crc: Option<u32>) -> HashMap<String, String> {
    let mut m = HashMap::from([(CODEC_METADATA.to_string(), PLAIN_CODEC.to_string())]);
    if let Some(crc) = crc {
        m.insert(CRC_METADATA.to_string(), format!("{crc:08x}"));
    }
    m
}

/// First and longest wait between resumes of a broken body.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A bucket and the client that reaches it.
/// Not `Debug`: it holds the secrets to redact.
#[derive(Clone)]
pub(crate) struct BucketClient {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// Attempts for resuming a broken body (the SDK's max attempts).
    pub attempts: u32,
    pub secrets: Vec<String>,
    /// Where requests go, for messages.
    pub endpoint: String,
}

/// A GET's response: the body still to read, the object's size (from
/// Content-Range, else the length) and its ETag.
pub(crate) type Opened = crate::store::ranged::Opened<ByteStream>;

/// Outcome of a conditional create.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    Yes,
    AlreadyExists,
    /// The server does not implement `If-None-Match` on PUT.
    Unsupported,
}

impl BucketClient {
    pub async fn new(bucket: &str, cfg: &Resolved) -> Result<Self> {
        Ok(BucketClient {
            client: builder::client(cfg).await?,
            bucket: bucket.to_string(),
            attempts: builder::attempts(cfg),
            secrets: cfg.secrets(),
            endpoint: cfg.shown_endpoint(),
        })
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn ctx<'a>(&'a self, uri: &'a str, op: &'a str) -> Context<'a> {
        Context {
            uri,
            bucket: &self.bucket,
            op,
            secrets: &self.secrets,
            endpoint: &self.endpoint,
        }
    }

    fn fail<E>(
        &self,
        key: &str,
        op: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let uri = self.uri(key);
        Failure::of(&err).into_error(&self.ctx(&uri, op))
    }

    /// Single-request upload carrying `x-amz-checksum-crc32c`; with
    /// `if_absent`, only when no object exists under `key`; with `plain`,
    /// the plain marker and the CRC32C go into its user metadata.
    /// `data` is the object's bytes in order, sent without joining them.
    pub async fn put_object(
        &self,
        key: &str,
        data: Vec<Bytes>,
        crc: u32,
        if_absent: bool,
        plain: bool,
    ) -> Result<(Created, ObjectMeta)> {
        let size: u64 = data.iter().map(|c| c.len() as u64).sum();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(crc_header(crc))
            .body(super::body::chunked(data))
            .set_metadata(plain.then(|| plain_metadata(Some(crc))));
        if if_absent {
            req = req.if_none_match("*");
        }
        // The CRC32C header protects the payload; hashing it again for the
        // signature would only cost CPU (as UNSIGNED-PAYLOAD does for boto3
        // and the AWS CLI with flexible checksums).
        match req.customize().disable_payload_signing().send().await {
            Ok(out) => {
                let mut meta = ObjectMeta::new(key, size);
                meta.etag = out.e_tag().map(str::to_string);
                meta.crc32c = Some(crc);
                meta.plain = plain;
                Ok((Created::Yes, meta))
            }
            Err(err) => {
                let failure = Failure::of(&err);
                if if_absent && (failure.is_status(412) || failure.code() == "PreconditionFailed") {
                    return Ok((Created::AlreadyExists, ObjectMeta::new(key, 0)));
                }
                if if_absent && (failure.is_status(501) || failure.code() == "NotImplemented") {
                    return Ok((Created::Unsupported, ObjectMeta::new(key, 0)));
                }
                let uri = self.uri(key);
                Err(failure.into_error(&self.ctx(&uri, "PutObject")))
            }
        }
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.head_with_metadata(key).await?.0)
    }

    /// HeadObject: what `head` returns and the object's user metadata.
    pub async fn head_with_metadata(
        &self,
        key: &str,
    ) -> Result<(ObjectMeta, HashMap<String, String>)> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.fail(key, "HeadObject", e))?;
        let metadata = out.metadata().cloned().unwrap_or_default();
        // Ours first: it was computed from the bytes as they were written,
        // and some servers (s3s-fs) keep a stale checksum header when a
        // multipart upload replaces a single-PUT object. Composite
        // checksums of multipart uploads ("…-N") are not the CRC32C of the
        // bytes; only a full-object value is.
        // An object marked plain is checked against its CRC32C on every
        // full read, so only ours, never a header that may be stale, is
        // taken for it.
        let plain = metadata_says_plain(&metadata, CODEC_METADATA);
        let crc32c = crc_from_metadata(&metadata).or_else(|| {
            out.checksum_crc32_c()
                .and_then(parse_crc_header)
                .filter(|_| !plain)
        });
        let meta = ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(str::to_string),
            crc32c,
            last_modified: out
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
            plain,
        };
        Ok((meta, metadata))
    }

    /// Whether the bucket exists (to tell a missing bucket from a missing
    /// key where S3 answers both with a bare 404).
    pub async fn bucket_exists(&self) -> Result<bool> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                let f = Failure::of(&err);
                if f.is_status(404) || f.code() == "NoSuchBucket" || f.code() == "NotFound" {
                    return Ok(false);
                }
                let uri = self.uri("");
                Err(f.into_error(&self.ctx(&uri, "HeadBucket")))
            }
        }
    }

    /// Send a ranged GET (`range` must be non-empty) and return its body
    /// unread. `if_match` pins the object version seen by an earlier piece.
    pub async fn open_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Opened> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        if let Some(etag) = if_match {
            req = req.if_match(etag);
        }
        let out: GetObjectOutput = req
            .send()
            .await
            .map_err(|e| self.fail(key, "GetObject", e))?;
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let total = match out.content_range() {
            Some(v) => total_from_content_range(v).unwrap_or(range.start + len),
            // A whole-object answer is only right for a range from 0.
            None if range.start == 0 => len,
            None => {
                return Err(Error::backend(
                    self.uri(key),
                    "the server ignored the Range header of a GetObject",
                    false,
                ))
            }
        };
        Ok(Opened {
            version: out.e_tag().map(str::to_string),
            body: out.body,
            total,
        })
    }

    /// Fill `dst` (buffers filled in order) with the object's bytes from
    /// `start`, reading `first`'s body when given, and resuming from the
    /// first missing byte when a body breaks or ends early (bounded by the
    /// configured attempts). Body chunks are copied straight into `dst`.
    pub async fn read_into(
        &self,
        key: &str,
        start: u64,
        dst: &mut [&mut [u8]],
        mut first: Option<Opened>,
        etag: Option<&str>,
    ) -> Result<()> {
        let uri = self.uri(key);
        let len: usize = dst.iter().map(|b| b.len()).sum();
        let mut got = 0usize;
        let mut failures = 0u32;
        while got < len {
            let opened = match first.take() {
                Some(o) => o,
                None => {
                    let range = start + got as u64..start + len as u64;
                    let o = self.open_range(key, range.clone(), etag).await?;
                    check_version(&uri, etag, o.version.as_deref())?;
                    if o.total < range.end {
                        return Err(Error::corrupt(
                            &uri,
                            format!(
                                "the object has {} bytes, the read needs {} (changed while reading?)",
                                o.total, range.end
                            ),
                        ));
                    }
                    o
                }
            };
            let before = got;
            let why = match drain(opened.body, dst, &mut got).await {
                Ok(()) if got == len => return Ok(()),
                Ok(()) => "the body ended early".to_string(),
                Err(BodyError::TooLong) => {
                    return Err(Error::backend(
                        &uri,
                        format!(
                            "GetObject returned more bytes than the {} requested",
                            len - before
                        ),
                        false,
                    ))
                }
                Err(BodyError::Broken(e)) => self.ctx(&uri, "GetObject").redact(&e),
            };
            if got == before {
                failures += 1;
            } else {
                // Progress made: this is a fresh failure, not a repeat.
                failures = 1;
            }
            if failures >= self.attempts {
                return Err(Error::backend(
                    &uri,
                    format!(
                        "GetObject body broke at byte {} of {} after {} attempts: {why}",
                        start + got as u64,
                        start + len as u64,
                        self.attempts
                    ),
                    true,
                ));
            }
            tokio::time::sleep(backoff(failures)).await;
        }
        Ok(())
    }

    /// Every object under `prefix`, following continuation tokens.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self.list_pages(prefix, None).await?.objects)
    }

    /// One level under `prefix`: S3 groups deeper keys into common
    /// prefixes, so nothing below the level is transferred.
    pub async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        self.list_pages(prefix, Some("/")).await
    }

    async fn list_pages(&self, prefix: &str, delimiter: Option<&str>) -> Result<DirListing> {
        let mut out = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_string));
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| self.fail(prefix, "ListObjectsV2", e))?;
            prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                // Prefixes ending in '/' stored as zero-byte "folders" by
                // consoles are not objects of ours; keys never end in '/'.
                if key.ends_with('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    etag: obj.e_tag().map(str::to_string),
                    crc32c: None,
                    last_modified: obj
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                    plain: false,
                });
            }
            token = match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => Some(next.to_string()),
                (Some(true), None) => return Err(Error::backend(
                    self.uri(prefix),
                    "ListObjectsV2 said the listing is truncated but gave no continuation token",
                    false,
                )),
                _ => None,
            };
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        prefixes.sort();
        prefixes.dedup();
        Ok(DirListing {
            prefixes,
            objects: out,
        })
    }

    /// Server-side copy of `from` (of `size` bytes) to `to` in this bucket;
    /// S3 computes the copy's full-object CRC32C. With `metadata`, the
    /// copy gets that user metadata instead of the source's (a copy onto
    /// itself with new metadata is how S3 changes an object's metadata).
    pub async fn copy_object(
        &self,
        from: &str,
        to: &str,
        size: u64,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<ObjectMeta> {
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(self.copy_source(from))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C);
        if let Some(m) = metadata {
            req = req
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(m));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.fail(from, "CopyObject", e))?;
        let result = out.copy_object_result();
        let mut meta = ObjectMeta::new(to, size);
        meta.etag = result.and_then(|r| r.e_tag()).map(str::to_string);
        meta.crc32c = result
            .and_then(|r| r.checksum_crc32_c())
            .and_then(parse_crc_header);
        Ok(meta)
    }

    /// `x-amz-copy-source` of `key` in this bucket.
    fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, percent_encode(key))
    }

    /// CreateMultipartUpload for a multipart copy: no checksum algorithm
    /// (UploadPartCopy parts have no CRC32C of ours to complete with),
    /// `metadata` set on the copy.
    pub async fn create_multipart_copy(
        &self,
        key: &str,
        metadata: HashMap<String, String>,
    ) -> Result<String> {
        self.create_upload(key, Some(metadata), None).await
    }

    /// UploadPartCopy: bytes `range` of `from` become part `number` of
    /// the upload, copied by the server. Returns the part's ETag.
    /// `etag` pins the source version (a source replaced mid-copy fails
    /// the part instead of mixing versions).
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        from: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<String> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .copy_source(self.copy_source(from))
            .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_copy_source_if_match(etag.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.fail(key, "UploadPartCopy", e))?;
        out.copy_part_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::backend(
                    self.uri(key),
                    format!("UploadPartCopy {number} returned no ETag"),
                    false,
                )
            })
    }

    /// CompleteMultipartUpload of parts named by number and ETag only.
    pub async fn complete_multipart_copy(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<Option<String>> {
        let completed = etags
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(tag)
                    .build()
            })
            .collect::<Vec<_>>();
        self.complete(key, upload_id, completed).await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail(key, "DeleteObject", e))?;
        Ok(())
    }

    /// CreateMultipartUpload of a new object; with `plain`, its user
    /// metadata carries the plain marker and `crc`, the CRC32C of the bytes
    /// to come, when the caller knows it.
    pub async fn create_multipart(
        &self,
        key: &str,
        plain: bool,
        crc: Option<u32>,
    ) -> Result<String> {
        let metadata = plain.then(|| plain_metadata(crc));
        self.create_upload(key, metadata, Some(ChecksumAlgorithm::Crc32C))
            .await
    }

    /// CreateMultipartUpload; the upload id.
    async fn create_upload(
        &self,
        key: &str,
        metadata: Option<HashMap<String, String>>,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(metadata)
            .set_checksum_algorithm(checksum)
            .send()
            .await
            .map_err(|e| self.fail(key, "CreateMultipartUpload", e))?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            Error::backend(
                self.uri(key),
                "CreateMultipartUpload returned no upload id",
                false,
            )
        })
    }

    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
        crc: u32,
    ) -> Result<UploadedPart> {
        let size = data.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(size as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(crc_header(crc))
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.fail(key, "UploadPart", e))?;
        let tag = out.e_tag().map(str::to_string).ok_or_else(|| {
            Error::backend(
                self.uri(key),
                format!("UploadPart {number} returned no ETag"),
                false,
            )
        })?;
        Ok(UploadedPart {
            number,
            tag,
            size,
            crc32c: crc,
        })
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<Option<String>> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.tag)
                    .checksum_crc32_c(crc_header(p.crc32c))
                    .build()
            })
            .collect::<Vec<_>>();
        self.complete(key, upload_id, completed).await
    }

    /// CompleteMultipartUpload of `parts`; returns the object's ETag.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<Option<String>> {
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail(key, "CompleteMultipartUpload", e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let f = Failure::of(&err);
                // Already gone is what we wanted.
                if f.code() == "NoSuchUpload" {
                    return Ok(());
                }
                let uri = self.uri(key);
                Err(f.into_error(&self.ctx(&uri, "AbortMultipartUpload")))
            }
        }
    }
}

enum BodyError {
    Broken(String),
    TooLong,
}

/// Copy a body into `dst` (buffers filled in order) from byte `got` of
/// them on, advancing `got` as bytes arrive: each chunk is copied once,
/// straight into the caller's memory.
async fn drain(
    mut body: ByteStream,
    dst: &mut [&mut [u8]],
    got: &mut usize,
) -> Result<(), BodyError> {
    let mut cursor = Cursor::at(dst, *got);
    let outcome = loop {
        let data = match body.next().await {
            None => break Ok(()),
            Some(Ok(data)) => data,
            Some(Err(e)) => break Err(BodyError::Broken(super::error::chain(&e))),
        };
        if !cursor.put(dst, &data) {
            break Err(BodyError::TooLong);
        }
    };
    *got = cursor.got;
    outcome
}

fn backoff(failures: u32) -> Duration {
    let exp = RESUME_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(10));
    exp.min(RESUME_BACKOFF_MAX)
}

/// `bytes 0-99/1234` -> 1234.
fn total_from_content_range(v: &str) -> Option<u64> {
    v.rsplit_once('/')
        .and_then(|(_, total)| total.trim().parse().ok())
}

/// The base64 of the big-endian CRC32C, as `x-amz-checksum-crc32c` wants it.
pub(crate) fn crc_header(crc: u32) -> String {
    base64_encode(&crc.to_be_bytes())
}

/// The CRC32C in a full-object `x-amz-checksum-crc32c` value; `None` for
/// composite (`…-N`) or malformed values.
pub(crate) fn parse_crc_header(v: &str) -> Option<u32> {
    let bytes = base64_decode(v)?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// The CRC32C recorded in user metadata under [`CRC_METADATA`], if any.
pub(crate) fn crc_from_metadata(metadata: &HashMap<String, String>) -> Option<u32> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CRC_METADATA))
        .and_then(|(_, v)| u32::from_str_radix(v.trim(), 16).ok())
}

/// `key` as `x-amz-copy-source` wants it: URL-encoded, slashes kept.
fn percent_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_headers_roundtrip() {
        // Known value: CRC32C("hello world") = 0xc99465aa -> "yZRlqg==".
        assert_eq!(crc_header(0xc994_65aa), "yZRlqg==");
        assert_eq!(parse_crc_header("yZRlqg=="), Some(0xc994_65aa));
        assert_eq!(parse_crc_header("yZRlqg==-3"), None);
        assert_eq!(parse_crc_header("AAAAAAAA"), None);
        for n in [0u32, 1, 0xffff_ffff, 0x1234_5678] {
            assert_eq!(parse_crc_header(&crc_header(n)), Some(n));
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(total_from_content_range("bytes 0-99/1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes */1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes 0-99/*"), None);
    }
}
