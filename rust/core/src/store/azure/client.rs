//! The wire protocol, through the official `azure_storage_blob` clients:
//! one request per method here, SDK errors mapped to ours. Everything that
//! composes requests (parallel reads, block uploads) lives in `mod.rs` and
//! `writer.rs`.

use std::collections::HashMap;
use std::num::NonZero;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, Etag, ExponentialRetryOptions, HttpClientOptions, RetryOptions, StatusCode,
    Transport, Url,
};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders,
    BlobContainerClientListBlobsOptions, BlobName, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockLookupList, CopyStatus,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions, BlockBlobClient,
};
use bytes::Bytes;
use futures::TryStreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::builder::{display_url, AzureConfig};
use super::credential::AzureCredential;
use crate::crc::crc32c;
use crate::error::{Error, Result};
use crate::store::{metadata_says_plain, DirListing, ObjectMeta, PLAIN_CODEC};

/// The blob metadata entry holding the CRC32C of the blob's bytes (8 hex
/// digits), written with every Put Blob and Put Block List so that a
/// whole-blob read can be checked; Copy Blob carries it to the copy.
/// Azure has no service-side CRC32C of a whole blob to use instead.
pub const CRC_METADATA: &str = "s3dlio_crc32c";

/// The longest a server-side copy may stay pending before it is aborted.
const COPY_PENDING_LIMIT: Duration = Duration::from_secs(600);
/// First and longest wait between polls of a pending copy.
const COPY_POLL_FIRST: Duration = Duration::from_millis(50);
const COPY_POLL_MAX: Duration = Duration::from_secs(2);

/// The blob metadata entry (`s3dlio_codec = none`) that marks a blob
/// s3dlio stored plain (see `PutOptions::plain`); Azure metadata names are
/// C# identifiers, hence `_`.
pub const CODEC_METADATA: &str = "s3dlio_codec";

/// Metadata written with a blob: its CRC32C and, when `plain`, the marker.
fn written_metadata(crc: u32, plain: bool) -> HashMap<String, String> {
    let mut m = HashMap::from([(CRC_METADATA.to_string(), format!("{crc:08x}"))]);
    if plain {
        m.insert(CODEC_METADATA.to_string(), PLAIN_CODEC.to_string());
    }
    m
}

/// The CRC32C recorded in a blob's metadata, if any (and well formed).
fn crc_from_metadata(metadata: &HashMap<String, String>) -> Option<u32> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CRC_METADATA))
        .and_then(|(_, v)| u32::from_str_radix(v.trim(), 16).ok())
}

/// Bytes of a blob name that are sent as they are; everything else is
/// percent-encoded (as the Python SDK does), `/` kept as the separator.
const BLOB_NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// One container, with the credential and the HTTP connection pool shared
/// by every request made through it.
pub struct AzureClient {
    config: AzureConfig,
    /// Retry and signing settings; the transport is added per process.
    options: ClientOptions,
    /// One connection pool for every request of this store, per process.
    transport: Mutex<Option<(u32, Transport)>>,
    token: Option<Arc<dyn TokenCredential>>,
    sas: Option<String>,
}

impl std::fmt::Debug for AzureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClient")
            .field("container_url", &display_url(&self.config.container_url))
            .field("credential", &self.config.credential)
            .finish_non_exhaustive()
    }
}

/// A ranged read's body and what its headers said.
pub struct RangeResponse {
    pub body: azure_core::http::AsyncResponseBody,
    /// The blob's total size, from `Content-Range`.
    pub total: u64,
    /// Bytes this response carries.
    pub len: u64,
    pub etag: Option<Etag>,
}

impl AzureClient {
    pub fn new(config: AzureConfig) -> Self {
        let mut options = ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_retries: config.max_retries,
                max_total_elapsed: to_time(config.retry_timeout),
                max_delay: azure_core::time::Duration::seconds(10),
            }),
            ..Default::default()
        };
        let (token, sas) = match &config.credential {
            AzureCredential::SharedKey(policy) => {
                options.per_try_policies.push(Arc::new(policy.clone()));
                (None, None)
            }
            AzureCredential::Sas(sas) => (None, Some(sas.clone())),
            AzureCredential::Token(t) => (Some(t.clone()), None),
            AzureCredential::Anonymous => (None, None),
        };
        AzureClient {
            config,
            options,
            transport: Mutex::new(None),
            token,
            sas,
        }
    }

    /// Client options with this process's connection pool. A child after
    /// `fork()` gets a pool of its own: the parent's pooled connections
    /// are driven by runtime threads that do not exist in the child.
    fn client_options(&self) -> ClientOptions {
        let pid = std::process::id();
        let mut slot = self.transport.lock().unwrap_or_else(|p| p.into_inner());
        let transport = match slot.as_ref() {
            Some((owner, t)) if *owner == pid => t.clone(),
            _ => {
                // Storage clients must not decompress bodies (ranges would break).
                let mut http = azure_core::http::new_http_client(Some(HttpClientOptions {
                    automatic_decompression: false,
                }));
                if let Some(limit) = self.config.read_timeout {
                    http = Arc::new(super::deadline::Deadline { inner: http, limit });
                }
                let t = Transport::new(http);
                *slot = Some((pid, t.clone()));
                t
            }
        };
        ClientOptions {
            transport: Some(transport),
            ..self.options.clone()
        }
    }

    pub fn config(&self) -> &AzureConfig {
        &self.config
    }

    /// `az://account/container/key`, for messages.
    pub fn uri(&self, key: &str) -> String {
        format!(
            "az://{}/{}/{key}",
            self.config.account, self.config.container
        )
    }

    fn with_sas(&self, mut url: Url) -> Url {
        if let Some(sas) = &self.sas {
            let query = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{sas}"),
                _ => sas.clone(),
            };
            url.set_query(Some(&query));
        }
        url
    }

    fn blob_url(&self, key: &str) -> Url {
        let mut url = self.config.container_url.clone();
        let path = format!("{}/{}", url.path(), utf8_percent_encode(key, BLOB_NAME));
        url.set_path(&path);
        self.with_sas(url)
    }

    fn blob(&self, key: &str) -> Result<BlobClient> {
        // The URL layer collapses dot segments: a `..` here would address
        // another container while our messages name this one.
        crate::keys::check_key(&self.uri(key), key)?;
        BlobClient::new(
            self.blob_url(key),
            self.token.clone(),
            Some(BlobClientOptions {
                client_options: self.client_options(),
                ..Default::default()
            }),
        )
        .map_err(|e| self.error(key, e))
    }

    fn block_blob(&self, key: &str) -> Result<BlockBlobClient> {
        Ok(self.blob(key)?.block_blob_client())
    }

    fn container(&self) -> Result<BlobContainerClient> {
        self.container_at(self.config.container_url.clone())
    }

    /// A container client for `url`: the container's URL, possibly with
    /// query pairs of our own that every request through it carries.
    fn container_at(&self, url: Url) -> Result<BlobContainerClient> {
        BlobContainerClient::new(
            self.with_sas(url),
            self.token.clone(),
            Some(BlobContainerClientOptions {
                client_options: self.client_options(),
                ..Default::default()
            }),
        )
        .map_err(|e| self.error("", e))
    }

    /// Put Blob: the whole object in one request. With `if_absent`, an
    /// existing blob is left alone and `Ok(None)` returned; with `plain`,
    /// its metadata marks it plain.
    pub async fn put_blob(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
        plain: bool,
    ) -> Result<Option<ObjectMeta>> {
        let size = data.len() as u64;
        let crc = crc32c(&data);
        let options = BlockBlobClientUploadOptions {
            // One request whatever the size: never the SDK's own partitioning.
            partition_size: NonZero::new(size.max(1)),
            if_none_match: if_absent.then(|| Etag::from("*")),
            metadata: Some(written_metadata(crc, plain)),
            ..Default::default()
        };
        match self
            .block_blob(key)?
            .upload(data.into(), Some(options))
            .await
        {
            Ok(r) => {
                let mut meta = ObjectMeta::new(key, size);
                meta.etag = r.etag.map(|e| e.to_string());
                meta.last_modified = r.last_modified.map(SystemTime::from);
                meta.crc32c = Some(crc);
                meta.plain = plain;
                Ok(Some(meta))
            }
            Err(e) if if_absent && is_already_exists(&e) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Put Block: stage `data` under `block_id`, invisible until committed.
    pub async fn stage_block(&self, key: &str, block_id: &[u8], data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.block_blob(key)?
            .stage_block(block_id, len, data.into(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    /// Put Block List: the blob becomes exactly these blocks, atomically,
    /// with `crc` (the CRC32C of all their bytes) in its metadata, and the
    /// plain marker when `plain`.
    pub async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<Vec<u8>>,
        size: u64,
        crc: u32,
        plain: bool,
    ) -> Result<ObjectMeta> {
        let list = BlockLookupList {
            latest: Some(block_ids),
            ..Default::default()
        };
        let content = list.try_into().map_err(|e| self.error(key, e))?;
        let r = self
            .block_blob(key)?
            .commit_block_list(
                content,
                Some(BlockBlobClientCommitBlockListOptions {
                    metadata: Some(written_metadata(crc, plain)),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.error(key, e))?;
        use azure_storage_blob::models::BlockBlobClientCommitBlockListResultHeaders;
        let mut meta = ObjectMeta::new(key, size);
        meta.etag = r.etag().ok().flatten().map(|e| e.to_string());
        meta.last_modified = r.last_modified().ok().flatten().map(SystemTime::from);
        meta.crc32c = Some(crc);
        meta.plain = plain;
        Ok(meta)
    }

    /// Get Blob Properties.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let r = self
            .blob(key)?
            .get_properties(None)
            .await
            .map_err(|e| self.error(key, e))?;
        let header = |e: azure_core::Error| self.error(key, e);
        let size = r.content_length().map_err(header)?.unwrap_or(0);
        let mut meta = ObjectMeta::new(key, size);
        meta.etag = r.etag().map_err(header)?.map(|e| e.to_string());
        meta.last_modified = r.last_modified().map_err(header)?.map(SystemTime::from);
        let metadata = r.metadata().map_err(header)?;
        meta.crc32c = crc_from_metadata(&metadata);
        meta.plain = metadata_says_plain(&metadata, CODEC_METADATA);
        Ok(meta)
    }

    /// Copy Blob inside this container: the service copies the bytes and
    /// the metadata (the CRC32C with them); no byte passes through this
    /// process. The source URL is authorised by the request's own Shared
    /// Key or token (same account), or carries the SAS. A copy the service
    /// leaves pending is polled until it ends, and aborted after
    /// [`COPY_PENDING_LIMIT`].
    pub async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        crate::keys::check_key(&self.uri(from), from)?;
        let dest = self.blob(to)?;
        let r = dest
            .start_copy_from_url(
                self.blob_url(from).to_string(),
                Some(BlobClientStartCopyFromUrlOptions::default()),
            )
            .await
            .map_err(|e| match self.error(to, e) {
                // The service names the destination; the missing one is the source.
                Error::NotFound { uri } if uri == self.uri(to) => Error::NotFound {
                    uri: self.uri(from),
                },
                other => other,
            })?;
        let header = |e: azure_core::Error| self.error(to, e);
        let mut status = r.copy_status().map_err(header)?;
        let copy_id = r.copy_id().map_err(header)?;
        let started = std::time::Instant::now();
        let mut wait = COPY_POLL_FIRST;
        while status == Some(CopyStatus::Pending) {
            if started.elapsed() > COPY_PENDING_LIMIT {
                if let Some(id) = &copy_id {
                    // Best effort: the error below is what the caller needs.
                    let _ = dest.abort_copy(id, None).await;
                }
                return Err(Error::backend(
                    self.uri(to),
                    format!(
                        "server-side copy from {} still pending after {} s; aborted",
                        self.uri(from),
                        COPY_PENDING_LIMIT.as_secs()
                    ),
                    true,
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(COPY_POLL_MAX);
            let p = dest
                .get_properties(None)
                .await
                .map_err(|e| self.error(to, e))?;
            status = p.copy_status().map_err(header)?;
            if status != Some(CopyStatus::Pending) {
                let why = p.copy_status_description().map_err(header)?;
                if status != Some(CopyStatus::Success) {
                    return Err(Error::backend(
                        self.uri(to),
                        format!(
                            "server-side copy from {} ended {status:?}: {}",
                            self.uri(from),
                            why.unwrap_or_default()
                        ),
                        false,
                    ));
                }
            }
        }
        if !matches!(status, Some(CopyStatus::Success) | None) {
            return Err(Error::backend(
                self.uri(to),
                format!("server-side copy from {} ended {status:?}", self.uri(from)),
                false,
            ));
        }
        self.head(to).await
    }

    /// One ranged Get Blob (`range` must not be empty). `if_match` pins
    /// the version the first piece of a read saw. `Ok(None)` when the
    /// range starts at or past the end of the blob (HTTP 416).
    pub async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<Etag>,
    ) -> Result<Option<RangeResponse>> {
        let options = BlobClientDownloadOptions {
            range: Some((range.start..range.end).into()),
            // A range smaller than the partition is one request.
            parallel: NonZero::new(1),
            partition_size: NonZero::new((range.end - range.start).max(1) as usize),
            if_match,
            ..Default::default()
        };
        let r = match self.blob(key)?.download(Some(options)).await {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::RequestedRangeNotSatisfiable) => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(key, e)),
        };
        let (first, len, total) = match r.headers.get_optional_str(&"content-range".into()) {
            Some(v) => {
                let (first, last, total) = parse_content_range(v).ok_or_else(|| {
                    Error::backend(
                        self.uri(key),
                        format!("unreadable Content-Range '{v}'"),
                        true,
                    )
                })?;
                (first, last + 1 - first, total)
            }
            // The whole blob instead of a range: Azurite does this for an
            // empty blob. Only acceptable for a read from the start.
            None => {
                let len = r.properties.content_length.unwrap_or(0);
                (0, len, len)
            }
        };
        if first != range.start {
            return Err(Error::backend(
                self.uri(key),
                format!(
                    "asked for bytes from {} but got bytes from {first}",
                    range.start
                ),
                true,
            ));
        }
        Ok(Some(RangeResponse {
            body: r.body,
            total,
            len,
            etag: r.properties.etag,
        }))
    }

    /// Delete Blob.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.blob(key)?
            .delete(None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    /// Every committed blob whose name starts with `prefix` (a flat,
    /// recursive listing: no delimiter).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self.list_pages(prefix, false).await?.objects)
    }

    /// One level under `prefix`: with `delimiter=/` the service folds every
    /// deeper name into one `BlobPrefix` entry, so nothing below the level
    /// is transferred.
    pub async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        self.list_pages(prefix, true).await
    }

    /// List Blobs, following `NextMarker` until the last page. The SDK's
    /// options have no delimiter and its page model drops `BlobPrefix`
    /// entries, so the delimiter rides in the container URL's query (the
    /// SDK keeps the pairs it finds there, and our Shared Key policy signs
    /// every pair) and each page body is read with our own model.
    async fn list_pages(&self, prefix: &str, one_level: bool) -> Result<DirListing> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            maxresults: self
                .config
                .list_page_size
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let mut url = self.config.container_url.clone();
        if one_level {
            url.query_pairs_mut().append_pair("delimiter", "/");
        }
        let mut pages = self
            .container_at(url)?
            .list_blobs(Some(options))
            .map_err(|e| self.error(prefix, e))?
            .into_pages();
        let mut out = DirListing::default();
        while let Some(page) = pages.try_next().await.map_err(|e| self.error(prefix, e))? {
            let page: ListPage =
                azure_core::xml::from_xml(page.into_body()).map_err(|e| self.error(prefix, e))?;
            for entry in page.blobs.entries {
                match entry {
                    ListEntry::Blob(item) => {
                        let Some(name) = self.decode_name(prefix, item.name)? else {
                            continue;
                        };
                        let props = item.properties;
                        let mut meta = ObjectMeta::new(name, props.content_length.unwrap_or(0));
                        meta.etag = props.etag;
                        meta.last_modified = props.last_modified.map(SystemTime::from);
                        out.objects.push(meta);
                    }
                    ListEntry::BlobPrefix(p) => {
                        if let Some(name) = self.decode_name(prefix, p.name)? {
                            out.prefixes.push(name);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// A listed name; names the service could not send as XML text come
    /// percent-encoded with `Encoded="true"`. `None`: an entry without a name.
    fn decode_name(&self, prefix: &str, name: BlobName) -> Result<Option<String>> {
        let Some(content) = name.content else {
            return Ok(None);
        };
        if !name.encoded.unwrap_or(false) {
            return Ok(Some(content));
        }
        match percent_encoding::percent_decode_str(&content).decode_utf8() {
            Ok(s) => Ok(Some(s.into_owned())),
            Err(_) => Err(Error::backend(
                self.uri(prefix),
                format!("the listing holds an encoded blob name that is not UTF-8: '{content}'"),
                false,
            )),
        }
    }

    /// Create the container; `Ok(false)` when it already existed. For
    /// set-up (tests, benchmarks): the store never creates containers.
    pub async fn create_container(&self) -> Result<bool> {
        match self.container()?.create(None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(self.error("", e)),
        }
    }

    /// Map an SDK error on `key` to ours. Messages carry the status, the
    /// service's error code and the transport's reason with URL queries
    /// removed: never a key or a SAS token.
    pub fn error(&self, key: &str, e: azure_core::Error) -> Error {
        let uri = self.uri(key);
        let container_uri = || {
            format!(
                "az://{}/{} (container '{}' does not exist)",
                self.config.account, self.config.container, self.config.container
            )
        };
        match e.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let code = error_code.clone().unwrap_or_else(|| status.to_string());
                match *status {
                    StatusCode::NotFound if code == "ContainerNotFound" => Error::NotFound {
                        uri: container_uri(),
                    },
                    StatusCode::NotFound => Error::NotFound { uri },
                    StatusCode::Forbidden | StatusCode::Unauthorized => Error::PermissionDenied {
                        uri,
                        reason: format!(
                            "{code} (HTTP {}): the service refused the {}; check it and the \
                             account it is for",
                            u16::from(*status),
                            self.config.credential.kind()
                        ),
                    },
                    StatusCode::Conflict if code == "BlobAlreadyExists" => {
                        Error::AlreadyExists { uri }
                    }
                    StatusCode::PreconditionFailed => Error::backend(
                        uri,
                        format!("{code}: the object changed while it was being read or written"),
                        false,
                    ),
                    StatusCode::BadRequest => Error::invalid(format!("{uri}: {code}")),
                    s => Error::backend(
                        uri,
                        format!("{code} (HTTP {}) after retries", u16::from(s)),
                        u16::from(s) >= 500 || s == StatusCode::TooManyRequests,
                    ),
                }
            }
            ErrorKind::Io | ErrorKind::Connection => Error::backend(
                uri,
                format!(
                    "cannot reach {} (gave up after {} retries): {}",
                    display_url(&self.config.container_url),
                    self.config.max_retries,
                    redacted_chain(&e)
                ),
                true,
            ),
            ErrorKind::Credential => Error::PermissionDenied {
                uri,
                reason: redacted_chain(&e),
            },
            _ => Error::backend(uri, redacted_chain(&e), false),
        }
    }
}

fn is_already_exists(e: &azure_core::Error) -> bool {
    matches!(
        e.http_status(),
        Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)
    )
}

/// One page of List Blobs, as far as we read it. `Blob` and `BlobPrefix`
/// entries interleave inside `<Blobs>`, hence one enum in document order.
#[derive(Deserialize)]
struct ListPage {
    #[serde(rename = "Blobs", default)]
    blobs: ListEntries,
}

#[derive(Deserialize, Default)]
struct ListEntries {
    #[serde(rename = "$value", default)]
    entries: Vec<ListEntry>,
}

#[derive(Deserialize)]
enum ListEntry {
    Blob(ListedBlob),
    BlobPrefix(ListedPrefix),
}

#[derive(Deserialize)]
struct ListedBlob {
    #[serde(rename = "Name")]
    name: BlobName,
    #[serde(rename = "Properties", default)]
    properties: ListedProperties,
}

#[derive(Deserialize, Default)]
struct ListedProperties {
    #[serde(rename = "Content-Length")]
    content_length: Option<u64>,
    #[serde(rename = "Etag")]
    etag: Option<String>,
    #[serde(
        rename = "Last-Modified",
        default,
        with = "azure_core::time::rfc7231::option"
    )]
    last_modified: Option<azure_core::time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct ListedPrefix {
    #[serde(rename = "Name")]
    name: BlobName,
}

/// `bytes <first>-<last>/<total>`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

fn to_time(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::MAX)
}

/// The error and its sources, each with URL queries cut off.
pub fn redacted_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![redact_urls(&e.to_string())];
    let mut source = e.source();
    while let Some(s) = source {
        let text = redact_urls(&s.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Remove the query of every URL in `text` (it may hold a SAS signature).
pub fn redact_urls(text: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Text,
        Url,
        Query,
    }
    let mut out = String::with_capacity(text.len());
    let mut state = State::Text;
    for (i, c) in text.char_indices() {
        let rest = &text[i..];
        if state == State::Text && (rest.starts_with("http://") || rest.starts_with("https://")) {
            state = State::Url;
        }
        if state != State::Text && (c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
        {
            state = State::Text;
        }
        match (&state, c) {
            (State::Url, '?') => {
                out.push_str("?<redacted>");
                state = State::Query;
            }
            (State::Query, _) => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-99/1234"), Some((0, 99, 1234)));
        assert_eq!(parse_content_range("bytes */1234"), None);
    }

    #[test]
    fn urls_lose_their_queries() {
        let t = "error sending request for url (http://h:1/a/b?sv=1&sig=SECRET): refused";
        let r = redact_urls(t);
        assert_eq!(
            r,
            "error sending request for url (http://h:1/a/b?<redacted>): refused"
        );
        assert_eq!(redact_urls("no urls? here"), "no urls? here");
    }

    #[test]
    fn blob_names_are_encoded_per_segment() {
        let cfg =
            super::super::builder::resolve("devstoreaccount1", "ctr", &Default::default(), &|k| {
                (k == "AZURE_STORAGE_CONNECTION_STRING")
                    .then(|| "UseDevelopmentStorage=true".into())
            })
            .unwrap();
        let c = AzureClient::new(cfg);
        assert_eq!(
            c.blob_url("dir with space/ü?#.bin").as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/ctr/dir%20with%20space/%C3%BC%3F%23.bin"
        );
    }
}
