//! In-process store for tests: `memory://<name>/<key>`. Stores with the same
//! name share contents inside one process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::crc::{crc32c, crc32c_append};
use crate::error::{Error, Result};

type Objects = Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>;

/// Cloning shares the contents: writers hold a clone.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    name: String,
    objects: Objects,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryStore::default())
    }

    /// The process-wide store called `name`.
    pub fn named(name: &str) -> Arc<Self> {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        stores
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(MemoryStore {
                    name: name.to_string(),
                    ..Default::default()
                })
            })
            .clone()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        // A panic while holding the lock cannot leave a half-written entry
        // (inserts are single operations), so a poisoned map is still valid.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meta(key: &str, data: &Bytes, at: SystemTime) -> ObjectMeta {
        Self::meta_with_crc(key, data, at, crc32c(data))
    }

    fn meta_with_crc(key: &str, data: &Bytes, at: SystemTime, crc: u32) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            etag: None,
            crc32c: Some(crc),
            last_modified: Some(at),
            plain: false,
        }
    }

    fn insert(&self, key: &str, data: Bytes) -> ObjectMeta {
        let crc = crc32c(&data);
        self.insert_with_crc(key, data, crc)
    }

    /// [`Self::insert`] of `data` whose CRC32C the caller computed.
    fn insert_with_crc(&self, key: &str, data: Bytes, crc: u32) -> ObjectMeta {
        let now = SystemTime::now();
        let meta = Self::meta_with_crc(key, &data, now, crc);
        self.objects().insert(key.to_string(), (data, now));
        meta
    }
}

fn check_key(store: &MemoryStore, key: &str) -> Result<()> {
    if key.is_empty() || key.ends_with('/') {
        return Err(Error::invalid(format!(
            "{}: an object key must not be empty or end with '/'",
            store.uri(key)
        )));
    }
    crate::keys::check_key(&store.uri(key), key)
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn uri(&self, key: &str) -> String {
        format!("memory://{}/{}", self.name, key)
    }

    async fn put(&self, key: &str, data: Bytes, _opts: &PutOptions) -> Result<ObjectMeta> {
        check_key(self, key)?;
        Ok(self.insert(key, data))
    }

    async fn writer(&self, key: &str, _opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        check_key(self, key)?;
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            key: key.to_string(),
            parts: Vec::new(),
            len: 0,
            crc: 0,
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.get(key).await?;
        super::slice_range(&self.uri(key), &data, range)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.objects()
            .get(key)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| Error::NotFound { uri: self.uri(key) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.objects()
            .get(key)
            .map(|(d, at)| Self::meta(key, d, *at))
            .ok_or_else(|| Error::NotFound { uri: self.uri(key) })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (d, at))| Self::meta(k, d, *at))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects()
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound { uri: self.uri(key) })
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        check_key(self, key)?;
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), (data, SystemTime::now()));
        Ok(true)
    }
}

struct MemoryWriter {
    store: MemoryStore,
    key: String,
    /// The pieces as written, joined once at `finish`: one copy of the
    /// object instead of a growing buffer's repeated reallocations (and
    /// into memory the allocator recycles: a fresh mapping per object,
    /// which a growing buffer past glibc's mmap threshold gets, costs a
    /// page fault per 4 KiB and was slower than the copy).
    parts: Vec<Bytes>,
    len: usize,
    /// CRC32C of the pieces so far, computed as they come: while the
    /// caller produces the next ones (an encoder's frames compress on
    /// other threads meanwhile), not all at once in `finish`.
    crc: u32,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.crc = crc32c_append(self.crc, &buf);
        self.len += buf.len();
        self.parts.push(buf);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta> {
        let data = if self.parts.len() == 1 {
            self.parts.pop().unwrap_or_default()
        } else {
            let mut joined = BytesMut::with_capacity(self.len);
            for part in &self.parts {
                joined.extend_from_slice(part);
            }
            joined.freeze()
        };
        Ok(self.store.insert_with_crc(&self.key, data, self.crc))
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_pieces_get_the_crc32c_of_the_whole_object() {
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 / 3) as u8).collect();
        for pieces in [1, 2, 7] {
            let mut w = store.writer("k", &PutOptions::default()).await.unwrap();
            let size = data.len().div_ceil(pieces);
            for piece in data.chunks(size) {
                w.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            // An empty piece changes nothing.
            w.write(Bytes::new()).await.unwrap();
            let meta = w.finish().await.unwrap();
            assert_eq!(meta.crc32c, Some(crc32c(&data)), "{pieces} pieces");
            assert_eq!(meta.size, data.len() as u64);
            assert_eq!(store.head("k").await.unwrap().crc32c, meta.crc32c);
            assert!(store.get("k").await.unwrap()[..] == data[..]);
        }
    }
}
