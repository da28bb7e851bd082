//! `direct://`: local files read and written with O_DIRECT, so checkpoint
//! traffic neither evicts the page cache nor waits behind it. Rooted at `/`
//! like `file://` (the key `a/b` is `/a/b`), with the same temp-file +
//! rename publication, list and delete semantics (shared with `local.rs`).
//!
//! O_DIRECT wants 4 KiB-aligned buffers, offsets and lengths. Writers stage
//! data in aligned buffers and write whole blocks; only the final partial
//! block is written after clearing O_DIRECT. Reads fetch the aligned span
//! covering the request and hand back the exact bytes without copying;
//! reads into caller memory (`read_into`) go through a
//! bounded aligned bounce buffer, since caller buffers and item offsets
//! are rarely 4 KiB-aligned, so their memory stays small whatever the size.
//!
//! A filesystem that refuses O_DIRECT is an error that says so, never a
//! silent switch to buffered I/O, unless the store was built with
//! `direct_fallback`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

mod aligned;
mod engine;
mod writer;

use aligned::round_up;
use engine::{refused, ReadIo, WriteIo};
use writer::{DirectWriter, TempGuard};

use crate::error::{Error, Result};
use crate::store::posix::{
    blocking, check_file_key, delete_async, file_uri, head_async, in_place, key_path, list_async,
    sync_parent, temp_path,
};
use crate::store::ranged::past_end;
use crate::store::{check_range, ObjectMeta, ObjectStore, ObjectWriter, PutOptions};

#[derive(Debug, Clone, Default)]
pub struct DirectStore {
    /// Use buffered I/O where the filesystem refuses O_DIRECT.
    fallback: bool,
    /// Behave as if every filesystem refused O_DIRECT. Current kernels
    /// (6.6+) accept O_DIRECT on tmpfs, so tests cannot rely on a real
    /// refusal being available.
    simulate_refusal: bool,
}

impl DirectStore {
    pub fn new(direct_fallback: bool) -> Self {
        DirectStore {
            fallback: direct_fallback,
            simulate_refusal: false,
        }
    }

    #[cfg(test)]
    fn refusing(direct_fallback: bool) -> Self {
        DirectStore {
            fallback: direct_fallback,
            simulate_refusal: true,
        }
    }

    /// Open `path` with O_DIRECT (creating it exclusively when `create`).
    /// `shown` is the path named in a refusal, so users see their object,
    /// not our temp name.
    fn open(&self, uri: &str, path: &Path, shown: &Path, create: bool) -> Result<File> {
        let mut opts = OpenOptions::new();
        if create {
            opts.write(true).create_new(true);
        } else {
            opts.read(true);
        }
        let first = if self.simulate_refusal {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            opts.clone().custom_flags(libc::O_DIRECT).open(path)
        };
        let err = match first {
            Ok(f) => return Ok(f),
            Err(e) => e,
        };
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::from_io(uri, err));
        }
        // The inode can be created before the flag is refused; the name is
        // our random temp name, so removing it cannot hurt anyone else.
        if create {
            let _ = fs::remove_file(path);
        }
        // EINVAL has other causes (a directory, for one): only blame O_DIRECT
        // when the same open without it succeeds.
        let file = opts.open(path).map_err(|e| Error::from_io(uri, e))?;
        let is_dir = file
            .metadata()
            .map_err(|e| Error::from_io(uri, e))?
            .is_dir();
        if is_dir {
            return Err(Error::NotFound {
                uri: format!("{uri} (a directory, not an object)"),
            });
        }
        if self.fallback {
            return Ok(file);
        }
        drop(file);
        if create {
            let _ = fs::remove_file(path);
        }
        Err(refused(shown))
    }

    async fn open_writer(
        &self,
        key: &str,
        opts: &PutOptions,
        size_hint: Option<usize>,
    ) -> Result<DirectWriter> {
        let uri = self.uri(key);
        check_file_key(&uri, key)?;
        let mut part = round_up(opts.part_size.max(1));
        if let Some(n) = size_hint {
            // A small put needs no full-size staging buffer.
            part = part.min(round_up(n.max(1)));
        }
        let store = self.clone();
        let key = key.to_string();
        let fsync = opts.fsync;
        let max_bufs = opts.concurrency.max(1);
        blocking(&uri.clone(), move || {
            let dest = key_path(&key);
            create_parents(&uri, &dest)?;
            let temp = temp_path(&dest);
            let file = store.open(&uri, &temp, &dest, true)?;
            Ok(DirectWriter {
                io: Arc::new(WriteIo {
                    file,
                    uri,
                    dest: dest.clone(),
                    fallback: store.fallback,
                }),
                key,
                temp: TempGuard(Some(temp)),
                fsync,
                part,
                max_bufs,
                allocated: 0,
                stage: None,
                free: Vec::new(),
                inflight: VecDeque::new(),
                offset: 0,
                poisoned: false,
            })
        })
        .await
    }

    /// Fill `bufs` from `offset` on (see `ObjectStore::read_into`).
    fn read_into_bufs(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if total == 0 {
            return Ok(());
        }
        let uri = self.uri(key);
        let path = key_path(key);
        in_place(|| {
            let file = self.open(&uri, &path, &path, false)?;
            let md = file.metadata().map_err(|e| Error::from_io(&uri, e))?;
            if md.is_dir() {
                return Err(Error::NotFound {
                    uri: format!("{uri} (a directory, not an object)"),
                });
            }
            let range = offset..offset + total;
            check_range(&uri, &range, md.len())?;
            if range.end > md.len() {
                return Err(past_end(&uri, offset, total, md.len()));
            }
            let reader = ReadIo {
                file: &file,
                uri: &uri,
                path: &path,
                fallback: self.fallback,
            };
            reader.read_into(offset, bufs)
        })
    }

    /// Bytes `range` of `key`, clipped to its size.
    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let uri = self.uri(key);
        let store = self.clone();
        let path = key_path(key);
        blocking(&uri.clone(), move || {
            let file = store.open(&uri, &path, &path, false)?;
            let md = file.metadata().map_err(|e| Error::from_io(&uri, e))?;
            if md.is_dir() {
                return Err(Error::NotFound {
                    uri: format!("{uri} (a directory, not an object)"),
                });
            }
            let size = md.len();
            let range = match range {
                Some(r) => {
                    check_range(&uri, &r, size)?;
                    r.start..r.end.min(size)
                }
                None => 0..size,
            };
            let reader = ReadIo {
                file: &file,
                uri: &uri,
                path: &path,
                fallback: store.fallback,
            };
            reader.read_range(range)
        })
        .await
    }
}

/// Create the missing parents of `path`. A new directory survives a crash
/// only once the entry naming it is synced, so each new directory's parent is
/// fsynced (the object's own directory is synced again after the rename).
fn create_parents(uri: &str, path: &Path) -> Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut p = parent;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(up) => p = up,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(parent).map_err(|e| Error::from_io(uri, e))?;
    for dir in missing.iter().rev() {
        sync_parent(uri, dir)?;
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for DirectStore {
    fn uri(&self, key: &str) -> String {
        file_uri("direct", key)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> Result<ObjectMeta> {
        let mut w = self.open_writer(key, opts, Some(data.len())).await?;
        w.write(data).await?;
        Ok(w.publish(false).await?.0)
    }

    async fn writer(&self, key: &str, opts: &PutOptions) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(self.open_writer(key, opts, None).await?))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read(key, Some(range)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.read(key, None).await
    }

    async fn read_into(&self, key: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        self.read_into_bufs(key, offset, bufs)
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
        let opts = PutOptions {
            fsync: true,
            ..PutOptions::default()
        };
        let mut w = self.open_writer(key, &opts, Some(data.len())).await?;
        w.write(data).await?;
        Ok(w.publish(true).await?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::aligned::{ALIGN, BOUNCE};
    use super::engine::is_direct;
    use super::*;
    use crate::store::ObjectStoreExt;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    const SIZES: [usize; 6] = [0, 1, 4095, 4096, 4097, (1 << 20) + 3];

    fn is_tmpfs(path: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string and st a valid out-pointer.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast)]
        let tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
        tmpfs
    }

    /// A scratch dir on a disk filesystem: the system temp dir unless it is
    /// tmpfs, else the workspace target dir.
    fn scratch() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let root = if is_tmpfs(&tmp) {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/direct-test-tmp");
            fs::create_dir_all(&p).unwrap();
            p
        } else {
            tmp
        };
        tempfile::Builder::new()
            .prefix("s3dlio-direct-")
            .tempdir_in(root)
            .unwrap()
    }

    fn key_of(path: &Path) -> String {
        path.to_str().unwrap().trim_start_matches('/').to_string()
    }

    /// Position-dependent bytes, so a block written at the wrong offset shows.
    fn pattern(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::test_rng::XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..n).map(|_| rng.next_u64() as u8).collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Reads into caller memory larger than the bounce buffer, at
    /// unaligned offsets and buffer edges, come back exact; a read past
    /// the end is InvalidInput (read_into and get_range_into alike).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_into_goes_through_bounded_bounce_buffers() {
        let dir = scratch();
        let key = key_of(&dir.path().join("big.bin"));
        let store = DirectStore::new(false);
        let data = pattern(2 * BOUNCE + 3 * ALIGN + 123, 11);
        store
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        for (offset, sizes) in [
            (0usize, vec![data.len()]),
            (4093, vec![1, BOUNCE + 5, 0, 7, BOUNCE]),
            (ALIGN * 3, vec![BOUNCE - ALIGN * 2, BOUNCE + 1]),
        ] {
            let mut owned: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
            let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
            store
                .read_into(&key, offset as u64, &mut bufs)
                .await
                .unwrap();
            let got = owned.concat();
            assert!(got == data[offset..offset + got.len()], "at {offset}");
            let mut one = vec![0u8; got.len()];
            store
                .get_range_into(&key, offset as u64, &mut one)
                .await
                .unwrap();
            assert!(one == got);
        }
        let mut past = vec![0u8; 200];
        let at = data.len() as u64 - 100;
        let err = store
            .read_into(&key, at, &mut [&mut past])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let err = store.get_range_into(&key, at, &mut past).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    #[test]
    fn uri_is_rooted_at_slash() {
        assert_eq!(
            DirectStore::new(false).uri("tmp/x/obj"),
            "direct:///tmp/x/obj"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_get_roundtrip_all_sizes() {
        let dir = scratch();
        let store = DirectStore::new(false);
        for (i, &n) in SIZES.iter().enumerate() {
            let key = key_of(&dir.path().join(format!("sub/obj-{n}")));
            let data = pattern(n, i as u64);
            let meta = store
                .put(&key, Bytes::from(data.clone()), &PutOptions::default())
                .await
                .unwrap();
            assert_eq!(meta.size, n as u64);
            assert_eq!(meta.key, key);
            assert_eq!(fs::metadata(key_path(&key)).unwrap().len(), n as u64);
            let got = store.get(&key).await.unwrap();
            assert_eq!(got.len(), n);
            assert!(got[..] == data[..], "size {n} differs");
            assert_eq!(store.head(&key).await.unwrap().size, n as u64);
        }
        assert_eq!(entries(&dir.path().join("sub")).len(), SIZES.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streaming_writer_odd_chunks() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let chunks = [1usize, 7, 4093, 5000, 3, 8192, 12289, 4096, 999];
        // Small parts with several in flight, one part, and the default.
        let configs = [(8192, 3), (4096 * 3 + 1, 1), (8 << 20, 4)];
        for (c, &(part_size, concurrency)) in configs.iter().enumerate() {
            for (i, &n) in SIZES.iter().enumerate() {
                let key = key_of(&dir.path().join(format!("w{c}/obj-{n}")));
                let data = pattern(n, 100 + i as u64);
                let opts = PutOptions {
                    fsync: false,
                    part_size,
                    concurrency,
                    ..PutOptions::default()
                };
                let mut w = store.writer(&key, &opts).await.unwrap();
                let mut pos = 0;
                let mut k = 0;
                while pos < n {
                    let end = (pos + chunks[k % chunks.len()]).min(n);
                    w.write(Bytes::copy_from_slice(&data[pos..end]))
                        .await
                        .unwrap();
                    pos = end;
                    k += 1;
                }
                w.write(Bytes::new()).await.unwrap();
                // Nothing is visible before finish.
                assert!(store.head(&key).await.unwrap_err().is_not_found());
                let meta = w.finish().await.unwrap();
                assert_eq!(meta.size, n as u64);
                let got = store.get(&key).await.unwrap();
                assert!(got[..] == data[..], "config {c} size {n} differs");
            }
            assert_eq!(
                entries(&dir.path().join(format!("w{c}"))).len(),
                SIZES.len()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_range_unaligned() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let n = (1usize << 20) + 3;
        let data = pattern(n, 7);
        let key = key_of(&dir.path().join("r"));
        store
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        let n64 = n as u64;
        let ranges = [
            0..0,
            0..1,
            1..2,
            1..4097,
            4095..4097,
            4096..8192,
            4097..8193,
            12345..654321,
            0..n64,
            n64 - 1..n64,
            n64 - 5000..n64 + 100,
            n64..n64,
            n64..n64 + 10,
        ];
        for r in ranges {
            let got = store.get_range(&key, r.clone()).await.unwrap();
            let (s, e) = (r.start as usize, (r.end as usize).min(n));
            assert!(got[..] == data[s..e], "range {r:?}");
        }
        let err = store.get_range(&key, n64 + 1..n64 + 2).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        #[allow(clippy::reversed_empty_ranges)]
        let err = store.get_range(&key, 10..5).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        // A small file read through a range that starts mid-block.
        let small = key_of(&dir.path().join("small"));
        store
            .put(
                &small,
                Bytes::from_static(b"hello world"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            &store.get_range(&small, 6..100).await.unwrap()[..],
            b"world"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_and_drop_leave_nothing() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let opts = PutOptions {
            fsync: false,
            part_size: 8192,
            concurrency: 2,
            ..PutOptions::default()
        };
        let key = key_of(&dir.path().join("a"));
        let mut w = store.writer(&key, &opts).await.unwrap();
        w.write(Bytes::from(pattern(50_001, 1))).await.unwrap();
        assert_eq!(
            entries(dir.path()).len(),
            1,
            "temp file exists while writing"
        );
        w.abort().await.unwrap();
        assert!(entries(dir.path()).is_empty());

        let mut w = store.writer(&key, &opts).await.unwrap();
        w.write(Bytes::from(pattern(50_001, 2))).await.unwrap();
        drop(w);
        assert!(entries(dir.path()).is_empty());
        assert!(store.get(&key).await.unwrap_err().is_not_found());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_and_reader_really_use_o_direct() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("d"));
        let w = store
            .open_writer(&key, &PutOptions::default(), None)
            .await
            .unwrap();
        assert!(is_direct(&w.io.file).unwrap(), "writer fd lacks O_DIRECT");
        // Cross-check through the kernel's own view of the descriptor.
        let fdinfo =
            fs::read_to_string(format!("/proc/self/fdinfo/{}", w.io.file.as_raw_fd())).unwrap();
        let flags = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i64::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_DIRECT as i64, 0, "{fdinfo}");
        drop(w);

        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let f = store.open("direct:///f", &path, &path, false).unwrap();
        assert!(is_direct(&f).unwrap(), "reader fd lacks O_DIRECT");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_path_and_overwrite() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("deep/er/f"));
        let opts = PutOptions {
            fsync: true,
            part_size: 4096,
            concurrency: 2,
            ..PutOptions::default()
        };
        for (i, &n) in SIZES.iter().enumerate() {
            let data = pattern(n, 50 + i as u64);
            let mut w = store.writer(&key, &opts).await.unwrap();
            w.write(Bytes::from(data.clone())).await.unwrap();
            assert_eq!(w.finish().await.unwrap().size, n as u64);
            assert!(store.get(&key).await.unwrap()[..] == data[..], "size {n}");
        }
        assert_eq!(entries(&dir.path().join("deep/er")), vec!["f".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_if_absent_is_exclusive() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("m/COMMITTED"));
        assert!(store
            .put_if_absent(&key, Bytes::from_static(b"first"))
            .await
            .unwrap());
        assert!(!store
            .put_if_absent(&key, Bytes::from_static(b"second"))
            .await
            .unwrap());
        assert_eq!(&store.get(&key).await.unwrap()[..], b"first");
        assert_eq!(
            entries(&dir.path().join("m")),
            vec!["COMMITTED".to_string()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_head_delete() {
        let dir = scratch();
        let store = DirectStore::new(false);
        let base = key_of(dir.path());
        for name in ["ab/x", "ab/y/z", "abc", "b"] {
            store
                .put(
                    &format!("{base}/{name}"),
                    Bytes::from_static(b"12345"),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
        // A leftover temp file from a crashed writer is not an object.
        fs::write(dir.path().join("ab/x.tmp-deadbeef0"), b"junk").unwrap();
        let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list(&format!("{base}/a")).await.unwrap()),
            vec![
                format!("{base}/ab/x"),
                format!("{base}/ab/y/z"),
                format!("{base}/abc")
            ]
        );
        assert_eq!(
            keys(store.list(&format!("{base}/ab/")).await.unwrap()),
            vec![format!("{base}/ab/x"), format!("{base}/ab/y/z")]
        );
        assert!(store
            .list(&format!("{base}/nope/"))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.head(&format!("{base}/abc")).await.unwrap().size, 5);
        assert!(store
            .head(&format!("{base}/ab"))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store
            .get(&format!("{base}/ab"))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store
            .get(&format!("{base}/none"))
            .await
            .unwrap_err()
            .is_not_found());
        store.delete(&format!("{base}/abc")).await.unwrap();
        assert!(store
            .delete(&format!("{base}/abc"))
            .await
            .unwrap_err()
            .is_not_found());
        let err = store
            .put(
                &format!("{base}/dir/"),
                Bytes::new(),
                &PutOptions::default(),
            )
            .await;
        assert!(matches!(err, Err(Error::InvalidInput(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusal_is_an_error_unless_fallback() {
        let dir = scratch();
        let key = key_of(&dir.path().join("x/obj"));
        let err = DirectStore::refusing(false)
            .put(&key, Bytes::from_static(b"abc"), &PutOptions::default())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidInput(_)), "{msg}");
        assert!(msg.contains("O_DIRECT is not supported"), "{msg}");
        assert!(msg.contains("direct_fallback=True"), "{msg}");
        assert!(
            msg.contains(&format!("{}/x/obj", dir.path().display())),
            "{msg}"
        );
        assert!(
            entries(&dir.path().join("x")).is_empty(),
            "temp file left behind"
        );

        let fb = DirectStore::refusing(true);
        for (i, &n) in SIZES.iter().enumerate() {
            let data = pattern(n, 200 + i as u64);
            let opts = PutOptions {
                fsync: false,
                part_size: 4096,
                concurrency: 2,
                ..PutOptions::default()
            };
            let w = fb.open_writer(&key, &opts, None).await.unwrap();
            assert!(!is_direct(&w.io.file).unwrap());
            let mut w: Box<dyn ObjectWriter> = Box::new(w);
            for c in data.chunks(777) {
                w.write(Bytes::copy_from_slice(c)).await.unwrap();
            }
            w.finish().await.unwrap();
            assert!(fb.get(&key).await.unwrap()[..] == data[..], "size {n}");
            if n > 10 {
                assert!(fb.get_range(&key, 3..n as u64 - 2).await.unwrap()[..] == data[3..n - 2]);
            }
        }
        // Reads are refused too without the fallback.
        let err = DirectStore::refusing(false).get(&key).await.unwrap_err();
        assert!(
            err.to_string().contains("O_DIRECT is not supported"),
            "{err}"
        );
    }

    /// /dev/shm is tmpfs. Kernels before 6.6 refuse O_DIRECT there, newer
    /// ones accept it: either way the store must be correct or say why not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tmpfs_errors_clearly_or_works() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() || !is_tmpfs(shm) {
            eprintln!("no tmpfs at /dev/shm; skipped");
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("s3dlio-direct-")
            .tempdir_in(shm)
            .unwrap();
        let key = key_of(&dir.path().join("obj"));
        let data = pattern(4097, 9);
        match DirectStore::new(false)
            .put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
        {
            Ok(_) => {
                eprintln!("this kernel supports O_DIRECT on tmpfs");
                assert!(DirectStore::new(false).get(&key).await.unwrap()[..] == data[..]);
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("O_DIRECT is not supported"), "{msg}");
                assert!(msg.contains("/dev/shm"), "{msg}");
                assert!(entries(dir.path()).is_empty());
            }
        }
        let fb = DirectStore::new(true);
        fb.put(&key, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        assert!(fb.get(&key).await.unwrap()[..] == data[..]);
        assert!(fb.get_range(&key, 4095..4097).await.unwrap()[..] == data[4095..]);
    }

    /// `cargo test --release -p s3dlio-core direct_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn direct_throughput_vs_buffered() {
        const TOTAL: usize = 1 << 30;
        const CHUNK: usize = 8 << 20;
        let dir = scratch();
        let chunk = Bytes::from(pattern(CHUNK, 3));
        let gib = |secs: f64| TOTAL as f64 / secs / (1u64 << 30) as f64;

        let store = DirectStore::new(false);
        let key = key_of(&dir.path().join("direct.bin"));
        let t = Instant::now();
        let mut w = store.writer(&key, &PutOptions::default()).await.unwrap();
        for _ in 0..TOTAL / CHUNK {
            w.write(chunk.clone()).await.unwrap();
        }
        w.finish().await.unwrap();
        let direct = t.elapsed().as_secs_f64();

        let path = dir.path().join("buffered.bin");
        let c = chunk.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = File::create(&path).unwrap();
            for _ in 0..TOTAL / CHUNK {
                f.write_all(&c).unwrap();
            }
            f.sync_all().unwrap();
        })
        .await
        .unwrap();
        let buffered = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let got = store.get(&key).await.unwrap();
        let direct_read = t.elapsed().as_secs_f64();
        assert_eq!(got.len(), TOTAL);
        drop(got);

        eprintln!(
            "1 GiB write: direct:// {direct:.2}s ({:.2} GiB/s), buffered+fsync {buffered:.2}s ({:.2} GiB/s); \
             direct:// get {direct_read:.2}s ({:.2} GiB/s)",
            gib(direct),
            gib(buffered),
            gib(direct_read)
        );
    }
}
