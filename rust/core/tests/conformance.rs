//! One suite, every backend. A new backend is done when it passes this
//! file unchanged: add it to `backends()`.
//!
//! The suite covers the required methods and every capability of the
//! store contract (`store/mod.rs`), and runs again through the fault
//! wrapper (with no faults armed) over memory, file and direct: a wrapper
//! must not change what a store does nor which of its paths runs.

use std::sync::Arc;

use bytes::Bytes;
use s3dlio_core::codec::{EncodeOptions, EncodingWriter, ObjectReader};
use s3dlio_core::store::faults::FaultStore;
use s3dlio_core::store::{
    open_store, Location, ObjectStore, ObjectStoreExt, PutOptions, StoreOptions,
};
use s3dlio_core::Error;

#[path = "support/azure.rs"]
mod azure_support;
mod support;

/// A backend under test: a store, a fresh key prefix in it, and a guard
/// that keeps its scratch space alive.
struct Backend {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    _scratch: Option<tempfile::TempDir>,
}

/// Scratch space on the work disk: older kernels (< 6.6) refuse O_DIRECT on tmpfs.
fn scratch() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::tempdir_in(base).expect("scratch dir")
}

fn local(name: &'static str, scheme: &str) -> Backend {
    let dir = scratch();
    let Location { store, key } = open_store(
        &format!("{scheme}://{}", dir.path().display()),
        &StoreOptions::default(),
    )
    .expect("open store");
    Backend {
        name,
        store,
        prefix: key,
        _scratch: Some(dir),
    }
}

fn memory(name: &'static str) -> Backend {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let i = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mem = open_store(
        &format!("memory://conformance-{n}-{i}/p"),
        &StoreOptions::default(),
    )
    .expect("memory store");
    Backend {
        name,
        store: mem.store,
        prefix: mem.key,
        _scratch: None,
    }
}

/// `b` behind the fault wrapper with no fault armed.
fn wrapped(name: &'static str, b: Backend) -> Backend {
    Backend {
        name,
        store: FaultStore::new(b.store, Vec::new()),
        ..b
    }
}

fn backends() -> Vec<Backend> {
    let mut all = vec![
        memory("memory"),
        local("file", "file"),
        local("direct", "direct"),
        wrapped("faults(memory)", memory("memory")),
        wrapped("faults(file)", local("file", "file")),
        wrapped("faults(direct)", local("direct", "direct")),
    ];
    if let Some(azurite) = azure_support::shared() {
        let loc = open_store(&format!("{}/p", azurite.fresh_uri()), &azurite.options())
            .expect("azure store");
        all.push(Backend {
            name: "azure",
            store: loc.store,
            prefix: loc.key,
            _scratch: None,
        });
    }
    all.extend(s3());
    all
}

/// A fresh prefix in the bucket of this process's s3s-fs server (skipped,
/// with a line saying so, when S3DLIO_S3S_FS is not set).
fn s3() -> Option<Backend> {
    let server = support::s3::shared()?;
    let uri = format!(
        "s3://{}/{}",
        server.bucket,
        support::s3::fresh_prefix("conformance")
    );
    let Location { store, key } =
        open_store(&uri, &support::s3::options_for(&server.endpoint)).expect("s3 store");
    Some(Backend {
        name: "s3",
        store,
        prefix: key,
        _scratch: None,
    })
}

fn key(b: &Backend, name: &str) -> String {
    format!("{}/{name}", b.prefix)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// The keys the listing tests look at.
async fn put_tree(b: &Backend) {
    for name in ["a/1", "a/2", "a/sub/3", "ab", "b"] {
        b.store
            .put(
                &key(b, name),
                Bytes::from_static(b"x"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
}

// Every test runs on the process runtime, as the Python module and the CLI
// do: the S3 client (and its connection pool) is cached per process, and a
// pooled connection whose runtime was dropped by an earlier
// `#[tokio::test]` fails with "dispatch task is gone".
macro_rules! for_each_backend {
    ($name:ident, |$b:ident| $body:block) => {
        #[test]
        fn $name() {
            s3dlio_core::runtime::block_on(async {
                for $b in backends() {
                    let $b = &$b;
                    let run = async { $body };
                    run.await;
                }
            })
            .expect("process runtime");
        }
    };
}

for_each_backend!(put_get_head_roundtrip, |b| {
    for len in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 3] {
        let k = key(b, &format!("obj-{len}"));
        let data = Bytes::from(pattern(len, 7));
        let meta = b
            .store
            .put(&k, data.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.size, len as u64, "{}: put size", b.name);
        assert_eq!(
            b.store.get(&k).await.unwrap(),
            data,
            "{}: get {len}",
            b.name
        );
        assert_eq!(
            b.store.head(&k).await.unwrap().size,
            len as u64,
            "{}: head",
            b.name
        );
    }
});

for_each_backend!(ranges_are_exact_and_clipped, |b| {
    let k = key(b, "ranged");
    let data = pattern(10_000, 3);
    b.store
        .put(&k, Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    for (s, e) in [
        (0u64, 1u64),
        (1, 4097),
        (4095, 4097),
        (9_999, 10_000),
        (5_000, 20_000),
        (10_000, 10_000),
    ] {
        let got = b.store.get_range(&k, s..e).await.unwrap();
        let want = &data[s as usize..(e as usize).min(data.len())];
        assert_eq!(&got[..], want, "{}: range {s}..{e}", b.name);
    }
    let err = b.store.get_range(&k, 10_001..10_002).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{}: {err}", b.name);
});

for_each_backend!(read_into_scatters_exact_ranges, |b| {
    let k = key(b, "scattered");
    let data = pattern(300_000, 5);
    b.store
        .put(&k, Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    // Buffers of odd sizes (an empty one among them) filled in order.
    for (offset, sizes) in [
        (0u64, vec![1usize, 4095, 0, 4097, 70_000]),
        (4093, vec![3, 200_000]),
        (299_999, vec![1]),
        (123, vec![]),
    ] {
        let mut owned: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
        let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
        b.store.read_into(&k, offset, &mut bufs).await.unwrap();
        let got: Vec<u8> = owned.concat();
        let start = offset as usize;
        assert_eq!(
            &got[..],
            &data[start..start + got.len()],
            "{}: read_into at {offset}",
            b.name
        );
    }
    // Past the end: an error, never a short fill.
    let mut tail = vec![0u8; 10];
    let err = b
        .store
        .read_into(&k, 299_995, &mut [tail.as_mut_slice()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{}: {err}", b.name);
    let mut one = vec![0u8; 1];
    let err = b
        .store
        .read_into(&key(b, "nope"), 0, &mut [one.as_mut_slice()])
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{}: {err}", b.name);
});

for_each_backend!(missing_objects_are_not_found, |b| {
    let k = key(b, "nope");
    assert!(
        b.store.get(&k).await.unwrap_err().is_not_found(),
        "{}",
        b.name
    );
    assert!(
        b.store.head(&k).await.unwrap_err().is_not_found(),
        "{}",
        b.name
    );
    assert!(
        b.store
            .get_range(&k, 0..1)
            .await
            .unwrap_err()
            .is_not_found(),
        "{}",
        b.name
    );
    assert!(
        b.store.delete(&k).await.unwrap_err().is_not_found(),
        "{}",
        b.name
    );
    let msg = b.store.get(&k).await.unwrap_err().to_string();
    assert!(
        msg.contains("nope"),
        "{}: error names the object: {msg}",
        b.name
    );
});

for_each_backend!(list_is_sorted_recursive_and_prefix_based, |b| {
    put_tree(b).await;
    let keys = |v: Vec<s3dlio_core::store::ObjectMeta>| -> Vec<String> {
        v.into_iter()
            .map(|m| m.key[b.prefix.len() + 1..].to_string())
            .collect()
    };
    let all = keys(b.store.list(&format!("{}/", b.prefix)).await.unwrap());
    assert_eq!(all, ["a/1", "a/2", "a/sub/3", "ab", "b"], "{}", b.name);
    let dir = keys(b.store.list(&key(b, "a/")).await.unwrap());
    assert_eq!(dir, ["a/1", "a/2", "a/sub/3"], "{}", b.name);
    let partial = keys(b.store.list(&key(b, "a")).await.unwrap());
    assert_eq!(partial, ["a/1", "a/2", "a/sub/3", "ab"], "{}", b.name);
    assert!(
        b.store.list(&key(b, "zzz/")).await.unwrap().is_empty(),
        "{}",
        b.name
    );
});

for_each_backend!(delete_removes, |b| {
    let k = key(b, "gone");
    b.store
        .put(&k, Bytes::from_static(b"bye"), &PutOptions::default())
        .await
        .unwrap();
    b.store.delete(&k).await.unwrap();
    assert!(
        b.store.get(&k).await.unwrap_err().is_not_found(),
        "{}",
        b.name
    );
});

for_each_backend!(streaming_writer_is_invisible_until_finish, |b| {
    let k = key(b, "stream/obj");
    let opts = PutOptions {
        part_size: 64 << 10,
        ..Default::default()
    };
    let mut w = b.store.writer(&k, &opts).await.unwrap();
    let mut want = Vec::new();
    for i in 0..20u8 {
        let piece = pattern(10_007 * (i as usize % 3 + 1), i);
        want.extend_from_slice(&piece);
        w.write(Bytes::from(piece)).await.unwrap();
        assert!(
            b.store.head(&k).await.unwrap_err().is_not_found(),
            "{}: visible early",
            b.name
        );
    }
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size, want.len() as u64, "{}", b.name);
    assert_eq!(b.store.get(&k).await.unwrap(), want, "{}", b.name);
    assert_eq!(
        b.store.list(&key(b, "stream/")).await.unwrap().len(),
        1,
        "{}: leftovers",
        b.name
    );
});

for_each_backend!(abort_and_drop_leave_nothing, |b| {
    let k = key(b, "aborted");
    let mut w = b.store.writer(&k, &PutOptions::default()).await.unwrap();
    w.write(Bytes::from(pattern(100_000, 1))).await.unwrap();
    w.abort().await.unwrap();
    let k2 = key(b, "dropped");
    let mut w = b.store.writer(&k2, &PutOptions::default()).await.unwrap();
    w.write(Bytes::from(pattern(100_000, 2))).await.unwrap();
    drop(w);
    assert!(
        b.store
            .list(&format!("{}/", b.prefix))
            .await
            .unwrap()
            .is_empty(),
        "{}",
        b.name
    );
    assert!(
        b.store.head(&k).await.unwrap_err().is_not_found(),
        "{}",
        b.name
    );
});

for_each_backend!(overwrite_replaces_whole_object, |b| {
    let k = key(b, "over");
    b.store
        .put(&k, Bytes::from(pattern(50_000, 1)), &PutOptions::default())
        .await
        .unwrap();
    b.store
        .put(&k, Bytes::from_static(b"short"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(&b.store.get(&k).await.unwrap()[..], b"short", "{}", b.name);
});

for_each_backend!(put_if_absent_creates_once, |b| {
    let k = key(b, "marker");
    assert!(
        b.store
            .put_if_absent(&k, Bytes::from_static(b"first"))
            .await
            .unwrap(),
        "{}",
        b.name
    );
    assert!(
        !b.store
            .put_if_absent(&k, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        "{}",
        b.name
    );
    assert_eq!(&b.store.get(&k).await.unwrap()[..], b"first", "{}", b.name);
});

for_each_backend!(unicode_and_space_keys, |b| {
    let k = key(b, "dir with space/ünïcødé 检查点.bin");
    b.store
        .put(&k, Bytes::from_static(b"hi"), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(&b.store.get(&k).await.unwrap()[..], b"hi", "{}", b.name);
    let listed = b.store.list(&key(b, "dir with space/")).await.unwrap();
    assert_eq!(listed.len(), 1, "{}", b.name);
    assert_eq!(listed[0].key, k, "{}", b.name);
});

for_each_backend!(compressed_objects_roundtrip_and_seek, |b| {
    for (len, level) in [(0usize, 1), (1, 3), (300_000, 1), (300_000, 19)] {
        let k = key(b, &format!("c-{len}-{level}.zst"));
        let data = pattern(len, 9);
        let inner = b.store.writer(&k, &PutOptions::default()).await.unwrap();
        let opts = EncodeOptions {
            level: Some(level),
            frame_size: 64 << 10,
            ..Default::default()
        };
        let mut w = EncodingWriter::new(inner, b.store.uri(&k), opts).unwrap();
        for piece in data.chunks(77_777) {
            w.write_slice(piece).await.unwrap();
        }
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.logical_size, len as u64, "{}", b.name);
        let r = ObjectReader::open(b.store.clone(), &k).await.unwrap();
        assert_eq!(r.logical_size(), len as u64, "{}", b.name);
        assert_eq!(
            r.read_all(None).await.unwrap(),
            data,
            "{}: level {level}",
            b.name
        );
        if len > 200_000 {
            let got = r.read_range(65_000..140_000).await.unwrap();
            assert_eq!(
                &got[..],
                &data[65_000..140_000],
                "{}: ranged compressed read",
                b.name
            );
        }
    }
});

for_each_backend!(list_dir_shows_one_level, |b| {
    put_tree(b).await;
    let rel = |k: &str| k[b.prefix.len() + 1..].to_string();
    let top = b.store.list_dir(&format!("{}/", b.prefix)).await.unwrap();
    assert_eq!(
        top.prefixes.iter().map(|p| rel(p)).collect::<Vec<_>>(),
        ["a/"],
        "{}",
        b.name
    );
    assert_eq!(
        top.objects.iter().map(|m| rel(&m.key)).collect::<Vec<_>>(),
        ["ab", "b"],
        "{}",
        b.name
    );
    let a = b.store.list_dir(&key(b, "a/")).await.unwrap();
    assert_eq!(
        a.prefixes.iter().map(|p| rel(p)).collect::<Vec<_>>(),
        ["a/sub/"],
        "{}",
        b.name
    );
    assert_eq!(
        a.objects.iter().map(|m| rel(&m.key)).collect::<Vec<_>>(),
        ["a/1", "a/2"],
        "{}",
        b.name
    );
});

/// The backend under a fault wrapper's name (`faults(file)` -> `file`).
fn plain_name(b: &Backend) -> &str {
    b.name
        .strip_prefix("faults(")
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(b.name)
}

for_each_backend!(get_range_view_is_get_range, |b| {
    let k = key(b, "viewed");
    // Large enough that file:// maps the range instead of copying it.
    let data = pattern((1 << 20) + 17, 4);
    b.store
        .put(&k, Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    let len = data.len() as u64;
    for (s, e) in [
        (0u64, len),
        (3, (600 << 10) + 3),
        (len - 5, len + 100),
        (len, len),
        (0, 7),
    ] {
        let got = b.store.get_range_view(&k, s..e).await.unwrap();
        let want = &data[s as usize..(e as usize).min(data.len())];
        assert!(got == want, "{}: view {s}..{e}", b.name);
    }
    let err = b
        .store
        .get_range_view(&k, len + 1..len + 2)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{}: {err}", b.name);
    let err = b
        .store
        .get_range_view(&key(b, "nope"), 0..1)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{}: {err}", b.name);
});

// One error for bytes past the end, whichever exact read asks for them.
for_each_backend!(
    get_range_into_is_exact_and_past_the_end_is_invalid_input,
    |b| {
        let k = key(b, "into");
        let data = pattern(100_000, 6);
        b.store
            .put(&k, Bytes::from(data.clone()), &PutOptions::default())
            .await
            .unwrap();
        for (offset, len) in [(0usize, 100_000usize), (4093, 5), (99_999, 1), (50, 0)] {
            let mut dst = vec![0u8; len];
            b.store
                .get_range_into(&k, offset as u64, &mut dst)
                .await
                .unwrap();
            assert!(
                dst == data[offset..offset + len],
                "{}: into at {offset}",
                b.name
            );
        }
        for offset in [99_995u64, 100_000, 200_000] {
            let mut dst = vec![0u8; 10];
            let err = b
                .store
                .get_range_into(&k, offset, &mut dst)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput(_)),
                "{}: into past the end at {offset}: {err}",
                b.name
            );
            assert!(
                err.to_string().contains("into"),
                "{}: names the object: {err}",
                b.name
            );
            let err = b
                .store
                .read_into(&k, offset, &mut [dst.as_mut_slice()])
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput(_)),
                "{}: read_into past the end at {offset}: {err}",
                b.name
            );
        }
    }
);

// What a caller may ask a store about itself, the same through a wrapper.
for_each_backend!(store_capabilities_say_what_the_backend_is, |b| {
    let opts = PutOptions::default();
    let (remote, limit) = match plain_name(b) {
        "s3" => (true, Some(opts.multipart_threshold as u64)),
        "azure" => (true, None),
        _ => (false, None),
    };
    assert_eq!(b.store.is_remote(), remote, "{}: is_remote", b.name);
    assert_eq!(
        b.store.single_put_limit(&opts),
        limit,
        "{}: single_put_limit",
        b.name
    );
});

// Writer capabilities: `write_with_crc` and `write_slice` write what
// `write` does, `prefers_slices` where slices are copied once (direct://),
// and the blocking form exists where the backend has one (local files),
// wrapped or not, and appends what it is handed.
for_each_backend!(writer_capabilities_write_the_same_bytes, |b| {
    let k = key(b, "caps/obj");
    let data = pattern(300_001, 8);
    let mut w = b.store.writer(&k, &PutOptions::default()).await.unwrap();
    let (head, tail) = data.split_at(100_000);
    let (head, middle) = head.split_at(60_001);
    w.write_with_crc(Bytes::copy_from_slice(head), s3dlio_core::crc::crc32c(head))
        .await
        .unwrap();
    for piece in middle.chunks(4_099) {
        w.write_slice(piece).await.unwrap();
    }
    assert_eq!(
        w.prefers_slices(),
        plain_name(b) == "direct",
        "{}: prefers_slices",
        b.name
    );
    let has_blocking = w.blocking().is_some();
    assert_eq!(
        has_blocking,
        plain_name(b) == "file",
        "{}: blocking form",
        b.name
    );
    match w.blocking() {
        Some(blocking) => {
            blocking.reserve(tail.len() as u64).unwrap();
            let (a, c) = tail.split_at(77);
            blocking.write_all_vectored(&[a, &[], c]).unwrap();
        }
        None => w.write(Bytes::copy_from_slice(tail)).await.unwrap(),
    }
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size, data.len() as u64, "{}", b.name);
    assert_eq!(b.store.get(&k).await.unwrap(), data, "{}", b.name);
});

// `copy` replaces the target whole and leaves the source as it was; a
// missing source is NotFound.
for_each_backend!(copy_replaces_the_target_and_keeps_the_source, |b| {
    let (src, dst) = (key(b, "copy-src"), key(b, "copy-dst"));
    let data = Bytes::from(pattern((9 << 20) + 5, 11));
    b.store
        .put(&src, data.clone(), &PutOptions::default())
        .await
        .unwrap();
    b.store
        .put(&dst, Bytes::from_static(b"old"), &PutOptions::default())
        .await
        .unwrap();
    let meta = b.store.copy(&src, &dst).await.unwrap();
    assert_eq!(meta.size, data.len() as u64, "{}: copy size", b.name);
    assert_eq!(b.store.get(&dst).await.unwrap(), data, "{}: copy", b.name);
    assert_eq!(b.store.get(&src).await.unwrap(), data, "{}: source", b.name);
    let missing = b.store.copy(&key(b, "copy-missing"), &dst).await;
    assert!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "{}: copy of a missing object: {missing:?}",
        b.name
    );
    // The copy that also records a CRC32C: same bytes, and a CRC32C the
    // store reports for the copy is the one given, never another.
    let crc = s3dlio_core::crc::crc32c(&data);
    let recorded = key(b, "copy-recorded");
    b.store
        .copy_recording_crc32c(&src, &recorded, crc)
        .await
        .unwrap();
    assert_eq!(b.store.get(&recorded).await.unwrap(), data, "{}", b.name);
    let reported = b.store.head(&recorded).await.unwrap().crc32c;
    assert!(
        reported.is_none_or(|c| c == crc),
        "{}: {reported:?}",
        b.name
    );
});
