//! S3 behaviour beyond the conformance suite, against a real s3s-fs:
//! multipart uploads, checksums on the wire, cleanup of aborted uploads,
//! retries (broken bodies, throttling), and the errors users meet (bad
//! credentials, missing bucket, unreachable endpoint).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use s3dlio_core::codec::crc::crc32c;
use s3dlio_core::store::{open_store, Location, ObjectStoreExt, PutOptions, StoreOptions};
use s3dlio_core::Error;

mod support;
use support::s3::{Fault, FaultProxy, S3Server, SECRET_KEY};
#[path = "support/hold.rs"]
mod hold;
#[path = "support/plain_marks.rs"]
mod plain_marks;
use hold::HoldProxy;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A server of this test's own with one bucket, or `None` (skip).
fn server(bucket: &str) -> Option<S3Server> {
    let s = S3Server::start()?;
    s.create_bucket(bucket);
    Some(s)
}

fn open(uri: &str, options: &StoreOptions) -> Location {
    open_store(uri, options).expect("open store")
}

fn multipart_opts() -> PutOptions {
    PutOptions {
        part_size: 5 << 20,
        concurrency: 3,
        multipart_threshold: 5 << 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_is_ordered_and_checksummed() {
    let Some(s) = server("multipart") else { return };
    let loc = open("s3://multipart/big.bin", &s.options());
    let data = pattern((23 << 20) + 12_345, 5);
    let mut w = loc.store.writer(&loc.key, &multipart_opts()).await.unwrap();
    for piece in data.chunks(3_000_017) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        assert!(loc.store.head(&loc.key).await.unwrap_err().is_not_found());
    }
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c, Some(crc32c(&data)));
    assert!(
        meta.etag.as_deref().is_some_and(|e| e.contains("-5")),
        "five parts: {:?}",
        meta.etag
    );
    assert_eq!(
        loc.store.head(&loc.key).await.unwrap().size,
        data.len() as u64
    );
    // Whole object and a long range: parallel ranged GETs into one buffer.
    assert_eq!(loc.store.get(&loc.key).await.unwrap(), data);
    let r = loc
        .store
        .get_range(&loc.key, 1_000_001..20_000_003)
        .await
        .unwrap();
    assert_eq!(&r[..], &data[1_000_001..20_000_003]);
    // Straight into a caller's buffer, in parallel pieces.
    let mut dst = vec![0u8; 19_000_002];
    loc.store
        .get_range_into(&loc.key, 1_000_001, &mut dst)
        .await
        .unwrap();
    assert_eq!(&dst[..], &data[1_000_001..20_000_003]);
    // Scattered over odd-sized buffers, several GETs of 8 MiB pieces each
    // draining into more than one buffer.
    let sizes = [3usize, 9_000_000, 0, 7_777_777, 1, 4_000_000];
    let mut owned: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
    let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
    loc.store.read_into(&loc.key, 999, &mut bufs).await.unwrap();
    let total: usize = sizes.iter().sum();
    assert!(
        owned.concat() == data[999..999 + total],
        "scattered read_into"
    );
    let mut past_end = vec![0u8; 100];
    let err = loc
        .store
        .get_range_into(&loc.key, data.len() as u64 - 50, &mut past_end)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("s3://multipart/big.bin"), "{err}");
    assert!(s.pending_upload_files().is_empty());

    // put() of a large buffer takes the multipart path too.
    let loc2 = open("s3://multipart/put.bin", &s.options());
    let meta = loc2
        .store
        .put(&loc2.key, Bytes::from(data.clone()), &multipart_opts())
        .await
        .unwrap();
    assert!(meta
        .etag
        .as_deref()
        .is_some_and(|e| e.trim_matches('"').ends_with("-5")));
    assert_eq!(loc2.store.get(&loc2.key).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_puts_carry_crc32c_that_the_server_checks() {
    let Some(s) = server("crc") else { return };
    let loc = open("s3://crc/small.bin", &s.options());
    let data = pattern(100_000, 1);
    loc.store
        .put(&loc.key, Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    // The server computed the CRC32C of what it received and matched it
    // against our header (else BadDigest); HEAD returns the stored value.
    let head = loc.store.head(&loc.key).await.unwrap();
    assert_eq!(head.crc32c, Some(crc32c(&data)));

    // A streamed object below the multipart threshold goes up as one PUT
    // of the buffers it was written in (not joined first), with the
    // CRC32C of all of them.
    assert_eq!(
        loc.store.single_put_limit(&PutOptions::default()),
        Some(64 << 20)
    );
    let streamed = open("s3://crc/streamed.bin", &s.options());
    let mut w = streamed
        .store
        .writer(&streamed.key, &PutOptions::default())
        .await
        .unwrap();
    for piece in data.chunks(7_001) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let meta = w.finish().await.unwrap();
    assert!(
        meta.etag.as_deref().is_some_and(|e| !e.contains('-')),
        "one PUT, not a multipart upload: {:?}",
        meta.etag
    );
    let head = streamed.store.head(&streamed.key).await.unwrap();
    assert_eq!(head.crc32c, Some(crc32c(&data)));
    assert_eq!(streamed.store.get(&streamed.key).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_drop_remove_the_uploaded_parts() {
    let Some(s) = server("abort") else { return };
    let opts = multipart_opts();
    let loc = open("s3://abort/aborted.bin", &s.options());
    // Parts reach the server before the abort.
    let wait_for_parts = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.pending_upload_files().is_empty() {
            assert!(Instant::now() < deadline, "no part reached the server");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut w = loc.store.writer(&loc.key, &opts).await.unwrap();
    w.write(Bytes::from(pattern(16 << 20, 1))).await.unwrap();
    wait_for_parts().await;
    w.abort().await.unwrap();
    assert!(s.pending_upload_files().is_empty(), "abort left parts");

    let mut w = loc.store.writer(&loc.key, &opts).await.unwrap();
    w.write(Bytes::from(pattern(16 << 20, 2))).await.unwrap();
    wait_for_parts().await;
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.pending_upload_files().is_empty() {
        assert!(Instant::now() < deadline, "drop did not abort the upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(loc.store.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_mid_stream_is_resumed() {
    let Some(s) = server("cut") else { return };
    let data = pattern(3 << 20, 9);
    let direct = open("s3://cut/obj", &s.options());
    direct
        .store
        .put(
            &direct.key,
            Bytes::from(data.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let proxy = FaultProxy::start(s.port, Fault::CutOnceAfter(1 << 20));
    let via_proxy = open("s3://cut/obj", &support::s3::options_for(&proxy.endpoint));
    assert_eq!(via_proxy.store.get(&via_proxy.key).await.unwrap(), data);
    assert_eq!(
        proxy.fired.load(Ordering::SeqCst),
        1,
        "the body was cut once"
    );
    // The same for a read straight into scattered caller buffers: the
    // resumed GET goes on filling them from the first missing byte.
    let proxy = FaultProxy::start(s.port, Fault::CutOnceAfter(1 << 20));
    let via_proxy = open("s3://cut/obj", &support::s3::options_for(&proxy.endpoint));
    let mut owned = [vec![0u8; 700_000], vec![0u8; 1_000_000], vec![0u8; 5]];
    let mut bufs: Vec<&mut [u8]> = owned.iter_mut().map(|v| v.as_mut_slice()).collect();
    via_proxy
        .store
        .read_into(&via_proxy.key, 10, &mut bufs)
        .await
        .unwrap();
    assert!(owned.concat() == data[10..1_700_015], "resumed read_into");
    assert_eq!(proxy.fired.load(Ordering::SeqCst), 1, "cut once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    let Some(s) = server("slow") else { return };
    let direct = open("s3://slow/obj", &s.options());
    direct
        .store
        .put(
            &direct.key,
            Bytes::from_static(b"patience"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let proxy = FaultProxy::start(s.port, Fault::Throttle(2));
    let mut opts = support::s3::options_for(&proxy.endpoint);
    opts.s3.max_attempts = Some(4);
    let via_proxy = open("s3://slow/obj", &opts);
    assert_eq!(
        &via_proxy.store.get(&via_proxy.key).await.unwrap()[..],
        b"patience"
    );
    assert_eq!(proxy.fired.load(Ordering::SeqCst), 2);

    // With fewer attempts than refusals the error says so, retryable.
    let proxy = FaultProxy::start(s.port, Fault::Throttle(5));
    let mut opts = support::s3::options_for(&proxy.endpoint);
    opts.s3.max_attempts = Some(2);
    let via_proxy = open("s3://slow/obj", &opts);
    match via_proxy.store.get(&via_proxy.key).await.unwrap_err() {
        Error::Backend {
            uri,
            reason,
            retryable,
        } => {
            assert_eq!(uri, "s3://slow/obj");
            assert!(
                reason.contains("SlowDown") && reason.contains("after retries"),
                "{reason}"
            );
            assert!(retryable);
        }
        other => panic!("expected a backend error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_permission_denied_without_the_secret() {
    let Some(s) = server("creds") else { return };
    let mut opts = s.options();
    let wrong_secret = format!("{SECRET_KEY}-but-wrong");
    opts.s3.secret_access_key = Some(wrong_secret.clone());
    let loc = open("s3://creds/k", &opts);
    let errors = [
        loc.store
            .put(&loc.key, Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err(),
        loc.store.get(&loc.key).await.unwrap_err(),
        loc.store.head(&loc.key).await.unwrap_err(),
        loc.store.list("").await.unwrap_err(),
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{msg}");
        assert!(msg.contains("s3://creds/"), "names the URI: {msg}");
        assert!(
            !msg.contains(&wrong_secret) && !msg.contains(SECRET_KEY),
            "{msg}"
        );
    }
    let mut opts = s.options();
    opts.s3.access_key_id = Some("no-such-key-id".into());
    let loc = open("s3://creds/k", &opts);
    let err = loc.store.get(&loc.key).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_not_found_naming_the_bucket() {
    let Some(s) = server("present") else { return };
    let loc = open("s3://no-such-bucket/some/key", &s.options());
    let errors = [
        loc.store.get(&loc.key).await.unwrap_err(),
        loc.store.head(&loc.key).await.unwrap_err(),
        loc.store.list("some/").await.unwrap_err(),
        // (No PUT here: s3s-fs creates the bucket's directory on PUT where
        // S3 answers NoSuchBucket, which maps like the GET above.)
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(err.is_not_found(), "{msg}");
        assert!(
            msg.contains("bucket 'no-such-bucket' does not exist"),
            "{msg}"
        );
    }
    // A missing key in a bucket that exists says nothing about buckets.
    let loc = open("s3://present/missing", &s.options());
    let msg = loc.store.head(&loc.key).await.unwrap_err().to_string();
    assert!(
        msg.contains("s3://present/missing") && !msg.contains("bucket"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let mut opts = support::s3::options_for(&format!("http://127.0.0.1:{port}"));
    opts.s3.max_attempts = Some(2);
    opts.s3.connect_timeout = Some(Duration::from_secs(1));
    let loc = open("s3://b/k", &opts);
    let started = Instant::now();
    let err = loc.store.get(&loc.key).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    match err {
        Error::Backend {
            uri,
            reason,
            retryable,
        } => {
            assert_eq!(uri, "s3://b/k");
            assert!(reason.contains("could not be reached"), "{reason}");
            assert!(retryable);
        }
        other => panic!("expected a backend error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_continuation_tokens() {
    let Some(s) = server("many") else { return };
    let store = open("s3://many/", &s.options()).store;
    let keys: Vec<String> = (0..1003).map(|i| format!("p/{:05}", 1002 - i)).collect();
    stream::iter(keys.iter())
        .map(|k| {
            let store = store.clone();
            async move {
                store
                    .put(k, Bytes::from_static(b"."), &PutOptions::default())
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    store
        .put(
            "q/outside",
            Bytes::from_static(b"."),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list("p/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed, want, "all 1003 keys, sorted, across pages");
}

/// A read of several ranged GETs pins the ETag the first one saw: an
/// object overwritten between two of its GETs is an error, never bytes of
/// two versions stitched together, whichever read asks (get_range,
/// read_into, get_range_into).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_overwritten_between_ranged_gets_is_an_error_not_a_mix() {
    let Some(s) = server("pinned") else { return };
    // Three 8 MiB pieces: GET 1 learns the ETag, the overwrite lands
    // before GET 2 reaches the server.
    let old = Bytes::from(pattern(20 << 20, 1));
    let new = Bytes::from(pattern(20 << 20, 2));
    let direct = open("s3://pinned/obj", &s.options());
    for read in ["get_range", "read_into", "get_range_into"] {
        direct
            .store
            .put(&direct.key, old.clone(), &PutOptions::default())
            .await
            .unwrap();
        let (store, key, replacement) = (direct.store.clone(), direct.key.clone(), new.clone());
        let rt = tokio::runtime::Handle::current();
        let proxy = HoldProxy::start(s.port, 2, move || {
            rt.block_on(store.put(&key, replacement.clone(), &PutOptions::default()))
                .expect("overwrite");
        });
        let mut opts = support::s3::options_for(&proxy.endpoint);
        // One GET at a time, so GET 2 is the second piece.
        opts.s3.concurrency = Some(1);
        let via = open("s3://pinned/obj", &opts);
        let mut dst = vec![0u8; old.len()];
        let result = match read {
            "get_range" => via
                .store
                .get_range(&via.key, 0..old.len() as u64)
                .await
                .map(|b| b.to_vec()),
            "read_into" => via
                .store
                .read_into(&via.key, 0, &mut [dst.as_mut_slice()])
                .await
                .map(|_| dst.clone()),
            _ => via
                .store
                .get_range_into(&via.key, 0, &mut dst)
                .await
                .map(|_| dst.clone()),
        };
        assert!(
            proxy.fired.load(Ordering::SeqCst),
            "{read}: the overwrite happened mid-read"
        );
        match result {
            Err(e) => assert!(e.to_string().contains("s3://pinned/obj"), "{read}: {e}"),
            Ok(got) => panic!(
                "{read}: a read spanning an overwrite returned data (old version: {}, new: {})",
                got == old,
                got == new
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_above_the_copy_threshold_go_part_by_part_on_the_server() {
    let Some(s) = server("partcopy") else { return };
    let mut options = s.options();
    // CopyObject stops at 5 GiB; a small threshold takes the same path.
    options.s3.multipart_copy_threshold = Some(6 << 20);
    options.s3.part_size = Some(5 << 20);
    let loc = open("s3://partcopy/src.bin", &options);
    let data = pattern((12 << 20) + 777, 9);
    loc.store
        .put(&loc.key, Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();
    let meta = loc.store.copy(&loc.key, "dir/dst.bin").await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    let head = loc.store.head("dir/dst.bin").await.unwrap();
    // Three UploadPartCopy parts (5 + 5 + 2 MiB): a multipart ETag. A copy
    // streamed through the client would be one PUT of 12 MiB here.
    let etag = head.etag.clone().unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    // No full-object checksum comes with part copies: the source's CRC32C
    // is carried over in the copy's metadata.
    assert_eq!(head.crc32c, Some(crc32c(&data)));
    assert!(loc.store.get("dir/dst.bin").await.unwrap() == data);

    // At or below the threshold: one CopyObject, S3's own checksum.
    let small = pattern(6 << 20, 3);
    loc.store
        .put(
            "small.bin",
            Bytes::from(small.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    loc.store.copy("small.bin", "small-copy.bin").await.unwrap();
    let head = loc.store.head("small-copy.bin").await.unwrap();
    assert!(!head.etag.unwrap_or_default().contains('-'));
    assert_eq!(head.crc32c, Some(crc32c(&small)));

    let err = loc.store.copy("missing.bin", "x.bin").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(loc.store.head("x.bin").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_object_gets_its_crc_recorded_in_metadata() {
    let Some(s) = server("recordcrc") else { return };
    for threshold in [None, Some(6 << 20)] {
        let mut options = s.options();
        options.s3.multipart_copy_threshold = threshold;
        options.s3.part_size = Some(5 << 20);
        let loc = open("s3://recordcrc/big.bin", &options);
        let data = pattern((11 << 20) + 5, 1);
        let mut w = loc.store.writer(&loc.key, &multipart_opts()).await.unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        w.finish().await.unwrap();
        // A composite checksum is no CRC32C of the bytes: none to report.
        assert_eq!(loc.store.head(&loc.key).await.unwrap().crc32c, None);
        assert!(loc
            .store
            .record_crc32c(&loc.key, crc32c(&data))
            .await
            .unwrap());
        assert_eq!(
            loc.store.head(&loc.key).await.unwrap().crc32c,
            Some(crc32c(&data))
        );
        assert!(loc.store.get(&loc.key).await.unwrap() == data);
        let err = loc.store.record_crc32c("nope.bin", 1).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");

        // A move records it in its one copy instead (TF's renames).
        let mut w = loc
            .store
            .writer("fresh.bin", &multipart_opts())
            .await
            .unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        w.finish().await.unwrap();
        loc.store
            .copy_recording_crc32c("fresh.bin", "moved.bin", crc32c(&data))
            .await
            .unwrap();
        assert_eq!(
            loc.store.head("moved.bin").await.unwrap().crc32c,
            Some(crc32c(&data))
        );
        assert!(loc.store.get("moved.bin").await.unwrap() == data);
        assert_eq!(loc.store.head("fresh.bin").await.unwrap().crc32c, None);
        let err = loc
            .store
            .copy_recording_crc32c("nope.bin", "moved.bin", 1)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_plain_are_marked_and_checked_on_full_reads() {
    use s3dlio_core::codec::ObjectReader;
    use s3dlio_core::object::{put_object, WriteOptions};
    let Some(s) = server("plainmark") else { return };
    let loc = |key: &str| open(&format!("s3://plainmark/{key}"), &s.options());
    let small = pattern((1 << 20) + 3, 7);
    let big = pattern((11 << 20) + 5, 8);
    let multipart = WriteOptions {
        put: multipart_opts(),
        ..WriteOptions::with_level(None)
    };
    put_object(&loc("small.bin"), &small, &WriteOptions::with_level(None))
        .await
        .unwrap();
    put_object(&loc("big.bin"), &big, &multipart).await.unwrap();
    plain_marks::only_codec_plain_writes_are_marked(&loc, &small).await;
    let store = loc("small.bin").store;
    let head = store.head("small.bin").await.unwrap();
    assert!(head.plain);
    assert_eq!(head.crc32c, Some(crc32c(&small)), "a single PUT knows it");
    let head = store.head("big.bin").await.unwrap();
    assert!(head.plain, "marked when the upload is created");
    assert_eq!(head.crc32c, Some(crc32c(&big)), "known before the upload");
    // A stream's CRC32C is known only at its end, after the creation.
    let streamed = PutOptions {
        plain: true,
        ..multipart_opts()
    };
    let mut w = store.writer("streamed.bin", &streamed).await.unwrap();
    w.write(Bytes::from(big.clone())).await.unwrap();
    w.finish().await.unwrap();
    let head = store.head("streamed.bin").await.unwrap();
    assert!(head.plain);
    assert_eq!(head.crc32c, None, "a composite checksum is none");
    // Bytes that do not match a declared CRC32C are never completed.
    let declared = PutOptions {
        crc32c: Some(crc32c(&big) ^ 1),
        ..streamed
    };
    let mut w = store.writer("lied.bin", &declared).await.unwrap();
    w.write(Bytes::from(big.clone())).await.unwrap();
    let err = w.finish().await.unwrap_err();
    assert!(
        err.to_string().contains("do not match the CRC32C declared"),
        "{err}"
    );
    assert!(store.head("lied.bin").await.unwrap_err().is_not_found());
    // Copies keep the mark, with or without a CRC32C recorded on the way.
    store.copy("small.bin", "copied.bin").await.unwrap();
    assert!(store.head("copied.bin").await.unwrap().plain);
    store
        .copy_recording_crc32c("big.bin", "moved.bin", crc32c(&big))
        .await
        .unwrap();
    let head = store.head("moved.bin").await.unwrap();
    assert!(head.plain);
    assert_eq!(head.crc32c, Some(crc32c(&big)));
    for (key, data) in [
        ("small.bin", &small),
        ("big.bin", &big),
        ("moved.bin", &big),
        ("streamed.bin", &big),
    ] {
        let r = ObjectReader::open(store.clone(), key).await.unwrap();
        assert_eq!(r.logical_size(), data.len() as u64);
        assert!(r.read_all(None).await.unwrap() == data[..], "{key}");
    }

    // A byte flipped on the server's disk: a full read of a marked object
    // with its CRC32C is an integrity error naming it, in memory or into a
    // buffer.
    for key in ["small.bin", "big.bin"] {
        let path = s.data.join("plainmark").join(key);
        let mut stored = std::fs::read(&path).unwrap();
        stored[4321] ^= 0x10;
        std::fs::write(&path, &stored).unwrap();
        let r = ObjectReader::open(store.clone(), key).await.unwrap();
        let err = r.read_all(None).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        assert!(err.to_string().contains(key), "{err}");
        let mut dst = vec![0u8; r.logical_size() as usize];
        let err = r.read_into(&mut dst, None).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
    }
}
