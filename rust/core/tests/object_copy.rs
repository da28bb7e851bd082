//! `object::copy_object`, the streaming copy the CLI's `cp` and
//! `download_file` share: progress covers every logical byte across several
//! windows, a re-encoded copy is bit-exact, and a corrupt source leaves
//! nothing at the destination.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use s3dlio_core::codec::{EncodedMeta, ObjectReader};
use s3dlio_core::object::{copy_object, get_object, put_object, WriteOptions};
use s3dlio_core::store::memory::MemoryStore;
use s3dlio_core::store::{Location, ObjectStore, PutOptions};
use s3dlio_core::Error;

/// More than one 64 MiB copy window, compressible but not trivially.
fn sample(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(31) ^ (i >> 12) as u8)
        .collect()
}

fn at(store: &Arc<dyn ObjectStore>, key: &str) -> Location {
    Location {
        store: store.clone(),
        key: key.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_reports_progress_and_reencodes_exactly() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    // Re-encoded (the sink keeps windows while compressing them), and plain
    // over three windows (the sink hands each back for the next one).
    for (size, from, to, windows) in [
        ((64 << 20) + 12_345, Some(1), Some(3), 2),
        ((128 << 20) + 777, None, None, 3),
    ] {
        let data = sample(size);
        put_object(&at(&store, "src"), &data, &WriteOptions::with_level(from))
            .await
            .expect("put source");

        let reader = ObjectReader::open(store.clone(), "src")
            .await
            .expect("open");
        let seen = AtomicU64::new(0);
        let steps = AtomicU64::new(0);
        let progress = |n: u64| {
            seen.fetch_add(n, Ordering::Relaxed);
            steps.fetch_add(1, Ordering::Relaxed);
        };
        let meta = copy_object(
            &reader,
            &at(&store, "dst"),
            &WriteOptions::with_level(to),
            &progress,
        )
        .await
        .expect("copy");

        assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(
            steps.load(Ordering::Relaxed),
            windows,
            "one call per window"
        );
        assert_eq!(meta.logical_size, data.len() as u64);
        assert_eq!(meta.level, to);
        let back = get_object(&at(&store, "dst")).await.expect("read copy");
        assert!(back == data, "the copy differs from the source");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_source_leaves_no_copy() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let data = sample(3 << 20);
    put_object(
        &at(&store, "src"),
        &data,
        &WriteOptions::with_level(Some(1)),
    )
    .await
    .expect("put source");
    let mut stored = store.get("src").await.expect("raw source").to_vec();
    stored[100] ^= 0x40;
    store
        .put("src", Bytes::from(stored), &PutOptions::default())
        .await
        .expect("put corrupt source");

    let reader = ObjectReader::open(store.clone(), "src")
        .await
        .expect("open");
    let err = copy_object(
        &reader,
        &at(&store, "dst"),
        &WriteOptions::default(),
        &|_| {},
    )
    .await
    .expect_err("a corrupt source must not copy");
    assert!(
        matches!(err, Error::Integrity { .. } | Error::Corrupt { .. }),
        "{err}"
    );
    assert!(
        store.head("dst").await.is_err(),
        "a failed copy left an object behind"
    );
}

/// Copy `src`, opened plain with `recorded` as the CRC32C its store
/// keeps, to `dst` at `level`.
async fn copy_recorded(
    store: &Arc<dyn ObjectStore>,
    size: u64,
    recorded: u32,
    level: Option<i32>,
) -> Result<EncodedMeta, Error> {
    let reader = ObjectReader::open_plain(store.clone(), "src", size, Some(recorded))
        .await
        .expect("open");
    copy_object(
        &reader,
        &at(store, "dst"),
        &WriteOptions::with_level(level),
        &|_| {},
    )
    .await
}

/// A plain source checked against the CRC32C its store recorded: bytes
/// changed behind the record fail the copy, compressed or not, before it is
/// published; the same bytes with their true CRC32C copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_source_not_matching_its_recorded_crc_leaves_no_copy() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let data = sample(70 << 20);
    store
        .put("src", Bytes::from(data.clone()), &PutOptions::default())
        .await
        .expect("put source");
    let size = data.len() as u64;
    let truth = s3dlio_core::crc::crc32c(&data);
    for level in [None, Some(1)] {
        let err = copy_recorded(&store, size, truth ^ 1, level)
            .await
            .expect_err("bytes that differ from their record must not copy");
        match err {
            Error::Integrity {
                uri,
                expected,
                actual,
                ..
            } => {
                assert_eq!(uri, "memory:///src", "the error names the source");
                assert_eq!((expected, actual), (truth ^ 1, truth));
            }
            other => panic!("level {level:?}: expected Integrity, got {other}"),
        }
        assert!(
            store.head("dst").await.is_err(),
            "level {level:?}: a failed copy left an object behind"
        );

        let meta = copy_recorded(&store, size, truth, level)
            .await
            .expect("a source matching its record copies");
        assert_eq!(meta.crc32c, truth);
        let back = get_object(&at(&store, "dst")).await.expect("read copy");
        assert!(
            back == data,
            "level {level:?}: the copy differs from the source"
        );
        store.delete("dst").await.expect("delete copy");
    }
}
