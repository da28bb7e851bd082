//! `file://`: buffered local files. A store rooted at `/`; the key `a/b` is
//! the path `/a/b`. Writes go to `<name>.tmp-<random>` and are renamed into
//! place, so a reader never sees a partial file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::mapped::MappedRange;
pub use super::posix::TEMP_MARKER;
use super::posix::{
    blocking, check_file_key, create_parent, delete_async, file_uri, head_async, in_place,
    key_path, list_async, meta_from_fs, preadv_exact, preallocate, publish, sync_parent, temp_path,
    writev_all,
};
use super::{check_range, BlockingWrite, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};
use crate::error::{Error, Result};

/// Shorter ranges are copied by `get_range_view`: mapping costs two
/// system calls and a TLB flush, which only pays on larger reads.
const VIEW_MIN: u64 = 256 << 10;

#[derive(Debug, Default, Clone)]
pub struct LocalStore;

impl LocalStore {
    pub fn new() -> Self {
        LocalStore
    }
}

/// Bytes `range` of the file at `path`, clipped to its size: mapped when
/// `map` (see `get_range_view`), else copied with `pread`.
fn read_file_range(uri: &str, path: &Path, range: Range<u64>, map: bool) -> Result<Bytes> {
    let file = File::open(path).map_err(|e| Error::from_io(uri, e))?;
    let size = file.metadata().map_err(|e| Error::from_io(uri, e))?.len();
    check_range(uri, &range, size)?;
    let len = (range.end.min(size) - range.start) as usize;
    if map && len > 0 {
        // A filesystem that cannot map files (some FUSE mounts) still
        // reads: by the copy below, where pread reports real I/O errors.
        if let Ok(view) = MappedRange::new(&file, range.start, len) {
            return Ok(Bytes::from_owner(view));
        }
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, range.start)
        .map_err(|e| Error::from_io(uri, e))?;
    Ok(Bytes::from(buf))
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn uri(&self, key: &str) -> String {
        file_uri("file", key)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        let mut w = self.writer(key, opts).await?;
        w.write(data).await?;
        w.finish().await
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let uri = self.uri(key);
        check_file_key(&uri, key)?;
        let key = key.to_string();
        let fsync = opts.fsync;
        blocking(&uri.clone(), move || {
            let dest = key_path(&key);
            create_parent(&uri, &dest)?;
            let temp = temp_path(&dest);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| Error::from_io(&uri, e))?;
            Ok(Box::new(LocalWriter {
                uri,
                key,
                dest,
                temp: Some(temp),
                file: Some(file),
                size: 0,
                fsync,
            }) as Box<dyn ObjectWriter>)
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let uri = self.uri(key);
        let path = key_path(key);
        blocking(&uri.clone(), move || {
            read_file_range(&uri, &path, range, false)
        })
        .await
    }

    async fn get_range_view(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let uri = self.uri(key);
        let path = key_path(key);
        let map = range.end.saturating_sub(range.start) >= VIEW_MIN;
        blocking(&uri.clone(), move || {
            read_file_range(&uri, &path, range, map)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let uri = self.uri(key);
        let path = key_path(key);
        blocking(&uri.clone(), move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| Error::from_io(&uri, e))
        })
        .await
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let uri = self.uri(key);
        let path = key_path(key);
        in_place(|| {
            let file = File::open(&path).map_err(|e| Error::from_io(&uri, e))?;
            preadv_exact(&uri, &file, offset, bufs)
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        head_async(self.uri(key), key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        list_async(self.uri(prefix), prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        delete_async(self.uri(key), key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let uri = self.uri(key);
        check_file_key(&uri, key)?;
        let key = key.to_string();
        blocking(&uri.clone(), move || {
            let dest = key_path(&key);
            create_parent(&uri, &dest)?;
            let temp = temp_path(&dest);
            let written = File::create_new(&temp)
                .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(Error::from_io(&uri, e));
            }
            let created = publish(&uri, &temp, &dest, true)?;
            sync_parent(&uri, &dest)?;
            Ok(created)
        })
        .await
    }
}

struct LocalWriter {
    uri: String,
    key: String,
    dest: PathBuf,
    /// Present until the temp file is renamed or removed.
    temp: Option<PathBuf>,
    file: Option<File>,
    size: u64,
    fsync: bool,
}

impl LocalWriter {
    fn file(&mut self) -> Result<File> {
        self.file
            .take()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", self.uri)))
    }
}

impl BlockingWrite for LocalWriter {
    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", self.uri)))?;
        self.size += writev_all(&self.uri, file, bufs)?;
        Ok(())
    }

    fn reserve(&mut self, len: u64) -> Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", self.uri)))?;
        preallocate(&self.uri, file, self.size, len)
    }
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    fn blocking(&mut self) -> Option<&mut dyn BlockingWrite> {
        Some(self)
    }

    async fn write(&mut self, buf: Bytes) -> Result<()> {
        let mut file = self.file()?;
        let uri = self.uri.clone();
        let (file, res) = tokio::task::spawn_blocking(move || {
            let res = file.write_all(&buf).map(|_| buf.len());
            (file, res)
        })
        .await
        .map_err(|e| Error::backend(&self.uri, format!("I/O task failed: {e}"), false))?;
        self.file = Some(file);
        self.size += res.map_err(|e| Error::from_io(uri, e))? as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta> {
        let file = self.file()?;
        let temp = self.temp.take();
        let (uri, key, dest, fsync, size) = (
            self.uri.clone(),
            self.key.clone(),
            self.dest.clone(),
            self.fsync,
            self.size,
        );
        blocking(&self.uri, move || {
            let Some(temp) = temp else {
                return Err(Error::invalid(format!("{uri}: writer already finished")));
            };
            if fsync {
                if let Err(e) = file.sync_all() {
                    let _ = fs::remove_file(&temp);
                    return Err(Error::from_io(&uri, e));
                }
            }
            drop(file);
            publish(&uri, &temp, &dest, false)?;
            if fsync {
                sync_parent(&uri, &dest)?;
            }
            let md = fs::metadata(&dest).map_err(|e| Error::from_io(&uri, e))?;
            let mut meta = meta_from_fs(&key, &md);
            meta.size = size;
            Ok(meta)
        })
        .await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        if let Some(temp) = self.temp.take() {
            let uri = self.uri.clone();
            blocking(&self.uri, move || {
                fs::remove_file(&temp).map_err(|e| Error::from_io(uri, e))
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // A writer dropped without finish/abort (error path, cancelled task)
        // must not leave its temp file behind.
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}
