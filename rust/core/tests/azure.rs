//! Azure-only behaviour on a real Azurite (the conformance suite covers the
//! shared contract): crashes mid-upload, bad credentials, a missing
//! container, an unreachable endpoint, broken response bodies, block
//! uploads and parallel ranged reads at sizes that span many parts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3dlio_core::checkpoint::{CheckpointStore, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::azure::builder::DEV_ACCOUNT;
use s3dlio_core::store::{open_store, ObjectStoreExt, PutOptions, StoreOptions};
use s3dlio_core::Error;

#[path = "support/azure.rs"]
mod azure_support;
use azure_support::Azurite;
#[path = "support/hold.rs"]
mod hold;
#[path = "support/plain_marks.rs"]
mod plain_marks;
#[path = "support/seed.rs"]
mod seed;
use hold::HoldProxy;
use seed::save;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_leaves_nothing_and_keeps_the_previous_checkpoint() {
    let Some(mut azurite) = Azurite::start() else {
        return;
    };
    let base = format!("{}/run", azurite.fresh_uri());
    let write = WriteOptions {
        put: PutOptions {
            part_size: 1 << 20,
            concurrency: 2,
            ..Default::default()
        },
        ..WriteOptions::with_level(None)
    };
    let store = CheckpointStore::open(&base, Strategy::Flat, write, &azurite.options()).unwrap();
    let good = pattern(3 << 20, 1);
    save(&store, 1, &good, false).await.unwrap();
    // Let Azurite persist its metadata (a graceful restart saves it), so
    // the crash below can only lose what was in flight.
    azurite.stop();
    azurite.restart();

    let w = store.writer(1, 0, false).unwrap();
    let mut stream = w.shard_stream(2).await.unwrap();
    let piece = pattern(1 << 20, 2);
    for _ in 0..4 {
        stream.write_slice(&piece).await.unwrap();
    }
    azurite.kill();
    let started = Instant::now();
    let mut failed = None;
    for _ in 0..16 {
        if let Err(e) = stream.write_slice(&piece).await {
            failed = Some(e);
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => stream.finish().await.unwrap_err(),
    };
    assert!(
        matches!(err, Error::Backend { .. }),
        "a dead server is a backend error: {err}"
    );
    assert!(err.to_string().contains("cannot reach"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded retries, took {:?}",
        started.elapsed()
    );

    azurite.restart();
    assert_eq!(store.committed_steps().await.unwrap(), vec![1]);
    assert_eq!(store.latest_step().await.unwrap(), Some(1));
    assert_eq!(store.reader().read_shard(1, 0).await.unwrap(), good);
    let step2 = open_store(
        &format!("{base}/{}", store.layout().step_dir(2)),
        &azurite.options(),
    )
    .unwrap();
    let visible = step2.store.list(&step2.key).await.unwrap();
    assert!(
        visible.is_empty(),
        "half-written step 2 is visible: {visible:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_account_key_is_permission_denied_and_never_printed() {
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let uri = format!("{}/k", azurite.fresh_uri());
    // Valid base64, wrong key.
    let wrong = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IQ==";
    let mut opts = azurite.options();
    opts.azure.connection_string = Some(
        azurite
            .connection_string()
            .replace(s3dlio_core::store::azure::builder::DEV_KEY, wrong),
    );
    let loc = open_store(&uri, &opts).unwrap();
    for err in [
        loc.store
            .put(&loc.key, Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err(),
        loc.store.get(&loc.key).await.unwrap_err(),
        loc.store.head(&loc.key).await.unwrap_err(),
        loc.store.list("").await.unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{msg}");
        assert!(msg.contains("account key"), "{msg}");
        assert!(!msg.contains(wrong) && !msg.contains("d3Jvbmcg"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_not_found_naming_it() {
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let loc = open_store(
        &format!("az://{DEV_ACCOUNT}/no-such-container/a/b"),
        &azurite.options(),
    )
    .unwrap();
    let errs = [
        loc.store
            .put(&loc.key, Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err(),
        loc.store.get(&loc.key).await.unwrap_err(),
        loc.store.list("a/").await.unwrap_err(),
        {
            let mut w = loc
                .store
                .writer(&loc.key, &PutOptions::default())
                .await
                .unwrap();
            w.write(Bytes::from_static(b"y")).await.unwrap();
            w.finish().await.unwrap_err()
        },
    ];
    for err in errs {
        let msg = err.to_string();
        assert!(err.is_not_found(), "{msg}");
        assert!(msg.contains("container 'no-such-container'"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_fast_with_a_clear_error() {
    // No server needed: a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = StoreOptions::default();
    for (k, v) in [
        ("account_key", s3dlio_core::store::azure::builder::DEV_KEY),
        (
            "endpoint",
            &format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}"),
        ),
        ("max_retries", "2"),
        ("retry_timeout", "2"),
    ] {
        assert!(opts.azure.set(k, v).unwrap());
    }
    let loc = open_store(&format!("az://{DEV_ACCOUNT}/ctr/obj"), &opts).unwrap();
    let started = Instant::now();
    let err = loc.store.get(&loc.key).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("cannot reach http://127.0.0.1:{port}/")),
        "{msg}"
    );
    assert!(msg.contains("az://devstoreaccount1/ctr/obj"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_uploads_and_parallel_ranged_reads_are_exact() {
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let base = azurite.fresh_uri();
    let loc = open_store(&format!("{base}/big"), &azurite.options()).unwrap();
    // 19 MiB + 5: several 8 MiB read parts, 1 MiB blocks, odd tail.
    let data = Bytes::from(pattern((19 << 20) + 5, 4));
    for (part_size, concurrency) in [(1 << 20, 1), ((1 << 20) + 7, 3), (8 << 20, 4)] {
        let opts = PutOptions {
            part_size,
            concurrency,
            ..Default::default()
        };
        let mut w = loc.store.writer(&loc.key, &opts).await.unwrap();
        // Uneven pieces: copies into blocks and zero-copy whole blocks.
        let mut at = 0;
        for (i, len) in [100usize, 3 << 20, 1, 5 << 20, 77_777]
            .iter()
            .cycle()
            .enumerate()
        {
            if at >= data.len() {
                break;
            }
            let end = (at + len + i).min(data.len());
            w.write(data.slice(at..end)).await.unwrap();
            at = end;
        }
        assert_eq!(w.finish().await.unwrap().size, data.len() as u64);
        assert_eq!(
            loc.store.get(&loc.key).await.unwrap(),
            data,
            "part {part_size}"
        );
    }
    for (s, e) in [
        (0u64, 1u64),
        (8 << 20, (8 << 20) + 1),
        ((8 << 20) - 3, (16 << 20) + 3),
        (5, 1 << 40),
        (data.len() as u64, data.len() as u64 + 9),
    ] {
        let got = loc.store.get_range(&loc.key, s..e).await.unwrap();
        let want = &data[s as usize..(e as usize).min(data.len())];
        assert!(got == want, "range {s}..{e}: {} bytes", got.len());
    }
    // put() of a large buffer goes through blocks too.
    let opts = PutOptions {
        multipart_threshold: 4 << 20,
        part_size: 4 << 20,
        ..Default::default()
    };
    let meta = loc.store.put(&loc.key, data.clone(), &opts).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(loc.store.get(&loc.key).await.unwrap(), data);
    assert_eq!(
        loc.store.head(&loc.key).await.unwrap().size,
        data.len() as u64
    );
}

/// A TCP proxy that cuts the server-to-client stream of a connection after
/// `cut_after` bytes while `cuts` is above zero: a response body that
/// breaks off mid-way.
struct CuttingProxy {
    port: u16,
    cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let armed = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, usize::MAX, None));
                let armed = armed.clone();
                std::thread::spawn(move || pump(server, client, cut_after, Some(armed)));
            }
        });
        CuttingProxy { port, cuts }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut_after: usize, cuts: Option<Arc<AtomicUsize>>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cut = cuts
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst) > 0 && sent + n > cut_after);
        if cut {
            let _ = to.write_all(&buf[..cut_after.saturating_sub(sent)]);
            if let Some(c) = &cuts {
                c.fetch_sub(1, Ordering::SeqCst);
            }
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_response_bodies_are_retried_then_reported() {
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let uri = format!("{}/body", azurite.fresh_uri());
    let data = Bytes::from(pattern(3 << 20, 5));
    let direct = open_store(&uri, &azurite.options()).unwrap();
    direct
        .store
        .put(&direct.key, data.clone(), &PutOptions::default())
        .await
        .unwrap();

    let proxy = CuttingProxy::start(azurite.port, 256 << 10);
    let mut opts = azurite.options();
    opts.azure.endpoint = Some(format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", proxy.port));
    let via = open_store(&uri, &opts).unwrap();
    // Two breaks, within the two retries the options allow.
    proxy.cuts.store(2, Ordering::SeqCst);
    assert_eq!(via.store.get(&via.key).await.unwrap(), data);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 0, "both cuts happened");
    // More breaks than retries: a clear, retryable error, not short data.
    proxy.cuts.store(10, Ordering::SeqCst);
    let err = via.store.get(&via.key).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("failed after 2 retries"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dir_follows_markers_across_small_pages() {
    use s3dlio_core::store::azure::{builder, AzureStore};
    use s3dlio_core::store::ObjectStore;
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let uri = azurite.fresh_uri();
    let container = uri.rsplit('/').next().unwrap();
    let mut config =
        builder::resolve(DEV_ACCOUNT, container, &azurite.options().azure, &|_| None).unwrap();
    // Two entries a page: every listing below spans several pages, with
    // pages that end on a prefix, on a blob and between the two.
    config.list_page_size = Some(2);
    let store = AzureStore::new(config);
    let objects: Vec<String> = (0..7)
        .map(|i| format!("d/o{i}"))
        .chain(["d/ü x?#".to_string()])
        .collect();
    let deeper: Vec<String> = (0..5)
        .flat_map(|i| [format!("d/p{i}/x"), format!("d/p{i}/y/z")])
        .collect();
    for k in objects
        .iter()
        .chain(&deeper)
        .chain(["top".to_string()].iter())
    {
        store
            .put(k, Bytes::from(k.clone()), &PutOptions::default())
            .await
            .unwrap();
    }
    let dir = store.list_dir("d/").await.unwrap();
    let mut want_objects = objects.clone();
    want_objects.sort();
    assert_eq!(
        dir.objects
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        want_objects
    );
    for m in &dir.objects {
        assert_eq!(m.size, m.key.len() as u64, "{}", m.key);
        assert!(m.last_modified.is_some(), "{}", m.key);
    }
    assert_eq!(
        dir.prefixes,
        (0..5).map(|i| format!("d/p{i}/")).collect::<Vec<_>>()
    );
    let root = store.list_dir("").await.unwrap();
    assert_eq!(root.prefixes, ["d/"]);
    assert_eq!(
        root.objects
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["top"]
    );
    let sub = store.list_dir("d/p3/").await.unwrap();
    assert_eq!(sub.prefixes, ["d/p3/y/"]);
    assert_eq!(
        sub.objects
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["d/p3/x"]
    );
    // The flat listing pages the same way and sees everything below.
    let mut want_all: Vec<String> = objects.into_iter().chain(deeper).collect();
    want_all.sort();
    let all = store.list("d/").await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.key.clone()).collect::<Vec<_>>(),
        want_all
    );
}

/// A read of several ranged GETs pins the ETag the first one saw: a blob
/// overwritten between two of its GETs is an error, never bytes of two
/// versions stitched together, whichever read asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_overwritten_between_ranged_gets_is_an_error_not_a_mix() {
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let uri = format!("{}/pinned", azurite.fresh_uri());
    // Three 8 MiB pieces: GET 1 learns the ETag, the overwrite lands
    // before the second GET reaches the server (GETs are issued in order:
    // the first alone, the rest after it).
    let old = Bytes::from(pattern(20 << 20, 1));
    let new = Bytes::from(pattern(20 << 20, 2));
    let direct = open_store(&uri, &azurite.options()).unwrap();
    for read in ["get_range", "read_into", "get_range_into"] {
        direct
            .store
            .put(&direct.key, old.clone(), &PutOptions::default())
            .await
            .unwrap();
        let (store, key, replacement) = (direct.store.clone(), direct.key.clone(), new.clone());
        let rt = tokio::runtime::Handle::current();
        let proxy = HoldProxy::start(azurite.port, 2, move || {
            rt.block_on(store.put(&key, replacement.clone(), &PutOptions::default()))
                .expect("overwrite");
        });
        let mut opts = azurite.options();
        opts.azure.endpoint = Some(format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", proxy.port));
        let via = open_store(&uri, &opts).unwrap();
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
            Err(e) => assert!(e.to_string().contains("pinned"), "{read}: {e}"),
            Ok(got) => panic!(
                "{read}: a read spanning an overwrite returned data (old version: {}, new: {})",
                got == old,
                got == new
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_written_plain_are_marked_with_their_crc() {
    use s3dlio_core::codec::crc::crc32c;
    use s3dlio_core::codec::ObjectReader;
    use s3dlio_core::object::put_object;
    let Some(azurite) = azure_support::shared() else {
        return;
    };
    let base = azurite.fresh_uri();
    let loc = |key: &str| open_store(&format!("{base}/{key}"), &azurite.options()).unwrap();
    let small = pattern((1 << 20) + 3, 7);
    let blocks = WriteOptions {
        put: PutOptions {
            part_size: 1 << 20,
            concurrency: 2,
            ..Default::default()
        },
        ..WriteOptions::with_level(None)
    };
    let one_put = WriteOptions::with_level(None);
    put_object(&loc("small.bin"), &small, &one_put)
        .await
        .unwrap();
    put_object(&loc("blocks.bin"), &small, &blocks)
        .await
        .unwrap();
    plain_marks::only_codec_plain_writes_are_marked(&loc, &small).await;
    let store = loc("small.bin").store;
    for key in ["small.bin", "blocks.bin"] {
        let head = store.head(key).await.unwrap();
        assert!(head.plain, "{key}");
        assert_eq!(head.crc32c, Some(crc32c(&small)), "{key}");
        let r = ObjectReader::open(store.clone(), key).await.unwrap();
        assert!(r.read_all(None).await.unwrap() == small[..], "{key}");
    }
    store.copy("blocks.bin", "copied.bin").await.unwrap();
    assert!(
        store.head("copied.bin").await.unwrap().plain,
        "Copy Blob keeps it"
    );
}
