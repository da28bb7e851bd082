//! The `ObjectStore` contract every backend implements, and `open_store`,
//! which turns a URI into a store plus the key inside it.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::uri::StoreUri;

pub mod azure;
pub mod direct;
pub mod faults;
pub mod local;
pub(crate) mod mapped;
pub mod memory;
pub(crate) mod posix;
pub(crate) mod ranged;
pub mod s3;
pub(crate) mod shared;
pub(crate) mod unique;
pub(crate) mod upload;

/// What a store knows about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    pub etag: Option<String>,
    /// CRC32C of the stored bytes when the backend keeps one.
    pub crc32c: Option<u32>,
    pub last_modified: Option<SystemTime>,
    /// The store recorded, when s3dlio wrote the object, that its bytes
    /// are stored as they are (no s3dlio encoding, see
    /// [`PutOptions::plain`]): a reader need not look for a seek table.
    /// `false` means unknown.
    pub plain: bool,
}

impl ObjectMeta {
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        ObjectMeta {
            key: key.into(),
            size,
            etag: None,
            crc32c: None,
            last_modified: None,
            plain: false,
        }
    }
}

/// Value of the codec entry (`s3dlio-codec` on S3, `s3dlio_codec` on
/// Azure) that s3dlio writes in the user metadata of an object whose bytes
/// are stored as they are ([`PutOptions::plain`]).
pub(crate) const PLAIN_CODEC: &str = "none";

/// Whether user metadata says the object is plain: `codec_key` (matched
/// without case, as servers change it) holds [`PLAIN_CODEC`].
pub(crate) fn metadata_says_plain(
    metadata: &std::collections::HashMap<String, String>,
    codec_key: &str,
) -> bool {
    metadata
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(codec_key) && v.trim() == PLAIN_CODEC)
}

/// How an object is written.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// fsync the data (and the directory entry) before `finish` returns.
    pub fsync: bool,
    /// Size of one upload part / write unit for streaming writers.
    pub part_size: usize,
    /// Parts in flight at once; memory is bounded by `concurrency * part_size`.
    pub concurrency: usize,
    /// Objects at least this large are uploaded in parts by backends that
    /// have multipart uploads; smaller ones in a single request.
    pub multipart_threshold: usize,
    /// The bytes written are the object's logical bytes, not an s3dlio
    /// encoding. Stores that keep user metadata (S3, Azure) record it with
    /// the CRC32C, so that [`ObjectStore::head`] reports `plain` and a
    /// reader skips the round trip that looks for a seek table at the end.
    pub plain: bool,
    /// The CRC32C of all the bytes about to be written, when the caller
    /// knows it before the first one (a whole buffer). An S3 multipart
    /// upload of a plain object records it at creation, where S3 keeps no
    /// CRC32C of the whole object, and refuses to complete if the bytes
    /// sent do not match it.
    pub crc32c: Option<u32>,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            fsync: false,
            part_size: 8 << 20,
            concurrency: 4,
            multipart_threshold: 64 << 20,
            plain: false,
            crc32c: None,
        }
    }
}

/// A streaming upload. Nothing is visible under the final key before
/// `finish` succeeds; `abort` (or dropping the writer) leaves nothing behind.
///
/// Required: `write`, `finish`, `abort`. Capabilities (defaults that a
/// wrapper must still forward, see [`ObjectStore`]'s "Wrappers"):
///
/// | method | promises | default | overridden by |
/// |---|---|---|---|
/// | `write_with_crc` | `write` of a buffer whose CRC32C the caller computed | ignores the CRC, calls `write` | the multipart engine (skips re-reading the bytes), `FaultStore` |
/// | `blocking` | a [`BlockingWrite`] appending borrowed memory on the calling thread | `None` | local files, `FaultStore` |
/// | `write_slice` | `write` of borrowed memory | copies it into owned `Bytes`, calls `write` | direct:// (straight into its aligned staging buffers), `FaultStore` |
/// | `prefers_slices` | `write_slice` costs no more than `write` of owned bytes | `false` | direct://, `FaultStore` |
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, buf: Bytes) -> Result<()>;
    /// `write` of memory the caller keeps. A writer that copies what it is
    /// given anyway (into aligned buffers for O_DIRECT) takes it from here,
    /// one copy instead of two; the default makes the owned copy `write`
    /// needs.
    async fn write_slice(&mut self, buf: &[u8]) -> Result<()> {
        self.write(Bytes::copy_from_slice(buf)).await
    }
    /// Whether `write_slice` copies no more than `write` of owned bytes
    /// does, so a caller holding borrowed memory should hand it over as is
    /// rather than make an owned copy (which it can then work on in parallel).
    fn prefers_slices(&self) -> bool {
        false
    }
    /// `write` of a buffer whose CRC32C the caller already computed (the
    /// pack writer's item checksums), so a writer that checksums what it
    /// uploads need not read the bytes again. The default ignores it.
    async fn write_with_crc(&mut self, buf: Bytes, _crc32c: u32) -> Result<()> {
        self.write(buf).await
    }
    async fn finish(self: Box<Self>) -> Result<ObjectMeta>;
    async fn abort(self: Box<Self>) -> Result<()>;
    /// This writer's blocking form, for backends that can append borrowed
    /// memory from the calling thread (local files); `None` for the rest.
    fn blocking(&mut self) -> Option<&mut dyn BlockingWrite> {
        None
    }
}

/// Appends borrowed memory on the calling thread: no copy into owned
/// buffers and no hand-off to the runtime's threads, which on a busy
/// machine cost more than the copy into the page cache itself. Call it
/// from blocking code (with the GIL released), never from a runtime task.
pub trait BlockingWrite {
    /// Append every byte of `bufs`, in order.
    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> Result<()>;
    /// The next `len` bytes are about to be appended: a backend may
    /// allocate room for them first (a hint; the default does nothing).
    fn reserve(&mut self, len: u64) -> Result<()> {
        let _ = len;
        Ok(())
    }
}

/// One backend. Keys are `/`-separated and relative to the store root.
///
/// # Contract
///
/// Every backend implements the required methods with the same meaning,
/// checked by `tests/conformance.rs` on every backend:
///
/// - `put`, `writer`: nothing is visible under `key` until the whole
///   object is (the writer's `finish`); a failed write leaves nothing.
/// - `get`, `get_range`: `get_range` clips a range past the end to the
///   end; a range whose start lies past the end is `InvalidInput`.
/// - `head`, `list` (sorted by key), `delete` (a missing key is
///   `NotFound`), `put_if_absent` (`false` when the key existed: the
///   commit-marker primitive).
/// - A missing key is `NotFound` for every method that reads it.
///
/// # Capabilities
///
/// Fast paths with a correct default built on the required methods. A
/// backend overrides one where it can do better; callers may use any of
/// them on any store and get the same bytes and errors.
///
/// | method | promises | default | overridden by |
/// |---|---|---|---|
/// | `get_range_view` | `get_range`, for a caller that only holds the bytes while it decodes them | `get_range` | file:// (maps large ranges) |
/// | `read_into` | fills caller buffers, in order, with exactly their length of bytes from `offset`; bytes past the end are `InvalidInput` | `get_range` copied out | file://, direct://, s3://, az:// (no staging copy) |
/// | `list_dir` | one level under a prefix: objects and sub-prefixes | filters `list` | s3://, az:// (delimiter listing) |
/// | `single_put_limit` | objects below this size go up in one request | `None` (writes are not requests) | s3:// |
/// | `is_remote` | reads are network requests driven by the runtime | `false` | s3://, az:// |
/// | `copy` | server-side where the service can | streams through the client | s3:// (CopyObject, UploadPartCopy), az:// (Copy Blob) |
/// | `record_crc32c` | `head` reports the CRC32C given from now on | `false` (nowhere to keep it) | s3:// (self-copy with user metadata) |
/// | `copy_recording_crc32c` | `copy`, then `head` of the copy reports the CRC32C given | `copy`, then `record_crc32c` | s3:// (one copy carrying the metadata) |
///
/// Helpers that every store gets the same way and no backend overrides
/// live in [`ObjectStoreExt`].
///
/// # Wrappers
///
/// A store that wraps another ([`faults::FaultStore`]) forwards every
/// method, capabilities included, under
/// `#[deny(clippy::missing_trait_methods)]`: a default left standing would
/// silently swap the inner store's fast path for the slow one, and a test
/// through the wrapper would exercise a path users never take.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// The URI of `key`, for messages.
    fn uri(&self, key: &str) -> String;

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta>;
    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>>;
    /// Objects smaller than this go up in one request when written with
    /// `opts`; larger ones as multipart uploads. `None` where writes are not
    /// requests (local stores). Lets a caller that chooses how to split
    /// its data (DCP data files) keep objects in one request each, which
    /// costs the server one pass over the bytes instead of two.
    fn single_put_limit(&self, _opts: &PutOptions) -> Option<u64> {
        None
    }
    /// Whether reads are network requests driven by the runtime (S3,
    /// Azure) rather than system calls. A plain thread waiting for one is
    /// better off spawning it as a task than polling it with `block_on`,
    /// where every body chunk would cross threads.
    fn is_remote(&self) -> bool {
        false
    }
    /// Bytes `range` of the object; a range past the end is clipped to it,
    /// a start past the end is `InvalidInput`.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Bytes `range`, as `get_range`, for a caller that holds them only
    /// while it decodes them: a local store may map the file instead of
    /// copying it (see `mapped`). The default is `get_range`.
    async fn get_range_view(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.get_range(key, range).await
    }
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Fill `bufs`, in order, with the bytes of `key` from `offset` on: a
    /// scattered ranged read of exactly their total length (an object that
    /// ends sooner is `InvalidInput`). Backends that can read straight into
    /// caller memory override this; the default is one `get_range` copied out.
    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if total == 0 {
            return Ok(());
        }
        let data = self.get_range(key, offset..offset + total).await?;
        scatter(&self.uri(key), &data, offset, bufs)
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Deleting a missing object is `NotFound`.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Create `key` only if it does not exist; `false` when it already did.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;

    /// Copy the stored bytes of `from` to `to` inside this store,
    /// replacing `to`, with the CRC32C the store keeps for `from`. The
    /// default streams them through this process in bounded windows; S3
    /// and Azure override it with a server-side copy.
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        copy_through_client(self, from, to).await
    }

    /// Record `crc`, the CRC32C of the bytes of `key`, where `head` will
    /// report it, for an object whose store kept none when it was written
    /// (an S3 multipart upload). `false` where the store has no place for
    /// it (the default); `head` then reports what it did before.
    async fn record_crc32c(&self, key: &str, crc: u32) -> Result<bool> {
        let _ = (key, crc);
        Ok(false)
    }

    /// `copy`, with `crc` (the CRC32C of the bytes of `from`) recorded for
    /// `to` as `record_crc32c` would: for a move of an object whose store
    /// kept no CRC32C when it was written, the copy records it in the same
    /// pass instead of a second one. Returns what `copy` does.
    async fn copy_recording_crc32c(&self, from: &str, to: &str, crc: u32) -> Result<ObjectMeta> {
        let meta = self.copy(from, to).await?;
        self.record_crc32c(to, crc).await?;
        Ok(meta)
    }

    /// One level under `prefix`, like `aws s3 ls`: the objects directly
    /// under it and the sub-prefixes (ending in `/`) that hold more.
    /// Backends with a delimiter listing override this to avoid walking
    /// the whole subtree.
    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let mut out = DirListing::default();
        for meta in self.list(prefix).await? {
            let rest = &meta.key[prefix.len().min(meta.key.len())..];
            match rest.find('/') {
                Some(i) => {
                    let sub = format!("{prefix}{}", &rest[..=i]);
                    if out.prefixes.last() != Some(&sub) {
                        out.prefixes.push(sub);
                    }
                }
                None => out.objects.push(meta),
            }
        }
        Ok(out)
    }
}

/// Helpers every store gets from its [`ObjectStore`] methods, the same way
/// on every backend: not part of the contract, so nothing overrides them
/// and no wrapper has to forward them.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Fill `dst` with the object's bytes from `offset`: `read_into` of
    /// one buffer (bytes past the end are `InvalidInput`).
    async fn get_range_into(&self, key: &str, offset: u64, dst: &mut [u8]) -> Result<()> {
        self.read_into(key, offset, &mut [dst]).await
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// Bytes per window of [`copy_through_client`].
const COPY_WINDOW: u64 = 8 << 20;

/// `ObjectStore::copy` by reading and writing: one window in memory at a time.
pub async fn copy_through_client<S: ObjectStore + ?Sized>(
    store: &S,
    from: &str,
    to: &str,
) -> Result<ObjectMeta> {
    let size = store.head(from).await?.size;
    let mut w = store.writer(to, &PutOptions::default()).await?;
    let mut pos = 0;
    while pos < size {
        let end = (pos + COPY_WINDOW).min(size);
        let piece = match store.get_range(from, pos..end).await {
            Ok(p) if p.len() as u64 == end - pos => p,
            Ok(p) => {
                w.abort().await?;
                return Err(Error::corrupt(
                    store.uri(from),
                    format!("read {} bytes at {pos}, expected {}", p.len(), end - pos),
                ));
            }
            Err(e) => {
                w.abort().await?;
                return Err(e);
            }
        };
        if let Err(e) = w.write(piece).await {
            w.abort().await?;
            return Err(e);
        }
        pos = end;
    }
    w.finish().await
}

/// What `list_dir` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Sub-prefixes, each ending in `/`, sorted.
    pub prefixes: Vec<String>,
    /// Objects directly under the prefix, sorted by key.
    pub objects: Vec<ObjectMeta>,
}

/// Settings a caller may pass next to the URI (`storage_options`).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// direct://: fall back to buffered I/O when O_DIRECT is refused.
    pub direct_fallback: bool,
    /// az://: credentials, endpoint and retries (unset ones come from the env).
    pub azure: azure::AzureOptions,
    /// s3://: endpoint, region, credentials, addressing, retries, part sizes.
    pub s3: s3::S3Options,
}

impl StoreOptions {
    /// Options from `storage_options`-style `key: value` pairs (the Python
    /// API's dict, the CLI's flags): one rule for every binding. A key
    /// applies to one URI, so it is given to every remote backend that
    /// knows it (both know `endpoint`); a key no backend knows is
    /// `InvalidInput` listing the known ones.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<StoreOptions> {
        let mut out = StoreOptions::default();
        for (key, value) in pairs {
            out.set(key.as_ref(), value.as_ref())?;
        }
        Ok(out)
    }

    /// Set one option (see [`StoreOptions::from_pairs`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "direct_fallback" {
            self.direct_fallback = parse_bool(key, value)?;
            return Ok(());
        }
        let azure = self.azure.set(key, value)?;
        let s3 = self.s3.set(key, value)?;
        if !(azure || s3) {
            return Err(Error::invalid(format!(
                "unknown storage option '{key}' (known: direct_fallback, {}, {})",
                s3::S3_OPTION_KEYS.join(", "),
                azure::AzureOptions::KEYS.join(", ")
            )));
        }
        Ok(())
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(format!(
            "storage option {key} must be true or false, got '{v}'"
        ))),
    }
}

/// A store and the key a URI names inside it.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub key: String,
}

impl Location {
    pub fn uri(&self) -> String {
        self.store.uri(&self.key)
    }

    /// `key` joined under this location's key with `/`.
    pub fn child(&self, name: &str) -> String {
        join_key(&self.key, name)
    }

    /// The key of `name` under this location, for names that come from
    /// outside (framework item names): `InvalidInput` unless `name` is a
    /// plain relative path (no empty, `.` or `..` components, no leading
    /// `/`), so no name can reach outside the location.
    pub fn child_checked(&self, name: &str) -> Result<String> {
        let bad = name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(Error::invalid(format!(
                "{}: item file name {name:?} is not a plain relative path",
                self.uri()
            )));
        }
        Ok(join_key(&self.key, name))
    }
}

/// Join two key parts with exactly one `/`.
pub fn join_key(base: &str, name: &str) -> String {
    let base = base.trim_end_matches('/');
    let name = name.trim_start_matches('/');
    match (base.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{base}/{name}"),
    }
}

/// Turn a URI into its store and key.
pub fn open_store(uri: &str, options: &StoreOptions) -> Result<Location> {
    let parsed = StoreUri::parse(uri)?;
    open_parsed(&parsed, options)
}

pub fn open_parsed(parsed: &StoreUri, options: &StoreOptions) -> Result<Location> {
    match parsed {
        StoreUri::File { path } => Ok(Location {
            store: Arc::new(local::LocalStore::new()),
            key: path_to_key(path),
        }),
        StoreUri::Direct { path } => Ok(Location {
            store: Arc::new(direct::DirectStore::new(options.direct_fallback)),
            key: path_to_key(path),
        }),
        StoreUri::Memory { name, key } => Ok(Location {
            store: memory::MemoryStore::named(name),
            key: key.clone(),
        }),
        StoreUri::Azure {
            account,
            container,
            key,
        } => Ok(Location {
            store: Arc::new(azure::AzureStore::open(account, container, &options.azure)?),
            key: key.clone(),
        }),
        StoreUri::S3 { bucket, key } => Ok(Location {
            store: Arc::new(s3::S3Store::new(bucket, &options.s3)?),
            key: key.clone(),
        }),
    }
}

/// Local stores are rooted at `/`: the key of `/a/b` is `a/b`.
fn path_to_key(path: &std::path::Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

/// The bytes of `range` inside `data`, with the clipping rules of `get_range`.
pub(crate) fn slice_range(uri: &str, data: &Bytes, range: Range<u64>) -> Result<Bytes> {
    let len = data.len() as u64;
    check_range(uri, &range, len)?;
    Ok(data.slice(range.start as usize..range.end.min(len) as usize))
}

/// Copy `data`, read from `offset`, into `bufs` in order; a short `data`
/// means the object ended before the buffers were full.
pub(crate) fn scatter(uri: &str, data: &[u8], offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if data.len() != total {
        return Err(Error::invalid(format!(
            "{uri}: wanted bytes {offset}..{} but the object ends at {}",
            offset + total as u64,
            offset + data.len() as u64
        )));
    }
    let mut rest = data;
    for buf in bufs.iter_mut() {
        let (head, tail) = rest.split_at(buf.len());
        buf.copy_from_slice(head);
        rest = tail;
    }
    Ok(())
}

/// `range` must be well-formed and start inside (or at the end of) the object.
pub(crate) fn check_range(uri: &str, range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end {
        return Err(Error::invalid(format!(
            "{uri}: range start {} is after its end {}",
            range.start, range.end
        )));
    }
    if range.start > size {
        return Err(Error::invalid(format!(
            "{uri}: range starts at {} but the object has {size} bytes",
            range.start
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_options_from_pairs() {
        let opts = StoreOptions::from_pairs([
            ("direct_fallback", "Yes"),
            ("endpoint", "http://127.0.0.1:1"),
        ])
        .unwrap();
        assert!(opts.direct_fallback);
        let err = StoreOptions::from_pairs([("colour", "red")]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        let msg = err.to_string();
        assert!(msg.contains("unknown storage option 'colour'"), "{msg}");
        assert!(
            msg.contains("direct_fallback") && msg.contains("endpoint_url"),
            "{msg}"
        );
        let err = StoreOptions::from_pairs([("direct_fallback", "maybe")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be true or false, got 'maybe'"),
            "{err}"
        );
    }

    #[test]
    fn child_names_stay_inside_the_location() {
        let loc = open_store("memory://names/base", &StoreOptions::default()).unwrap();
        assert_eq!(loc.child_checked("a/b.distcp").unwrap(), "base/a/b.distcp");
        for bad in ["", "/abs", "a//b", "./a", "a/..", "../x", "a/"] {
            let err = loc.child_checked(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}");
            assert!(
                err.to_string().contains("not a plain relative path"),
                "{err}"
            );
        }
    }
}
