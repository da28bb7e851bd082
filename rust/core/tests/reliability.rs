//! Defects found by probing (issue 16), each pinned by a test that failed
//! before its fix: keys escaping the base, concurrent saves of one step,
//! damaged manifests passing as good ones.

use std::path::Path;
use std::time::Duration;

use s3dlio_core::checkpoint::{CheckpointStore, ShardMeta, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::StoreOptions;
use s3dlio_core::Error;

#[path = "support/seed.rs"]
mod seed;
use seed::save;

fn file_store(dir: &Path, level: Option<i32>) -> CheckpointStore {
    CheckpointStore::open(
        &format!("file://{}", dir.display()),
        Strategy::Flat,
        WriteOptions::with_level(level),
        &StoreOptions::default(),
    )
    .unwrap()
}

/// The files of a step directory whose names start with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// A `..` in a record handed to finalize, or in a stored manifest, is
/// refused: nothing outside the base is read, and an overwrite never
/// deletes a file outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_records_and_manifests_never_escape_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"not yours").unwrap();
    let store = file_store(&base, None);

    // A record naming a file outside the step directory.
    let w = store.writer(1, 0, false).unwrap();
    let mut shard: ShardMeta = w.save_shard(1, b"abc").await.unwrap();
    shard.key = "../../victim".to_string();
    let err = w
        .finalize(
            1,
            0,
            "t",
            Some(vec![shard]),
            serde_json::Value::Null,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!store.is_committed(1).await.unwrap());

    // A committed checkpoint whose manifest was tampered with.
    save(&store, 2, b"good", false).await.unwrap();
    let step_dir = base.join("step-000000000002");
    for manifest in files_starting(&step_dir, "manifest") {
        let text = std::fs::read_to_string(&manifest).unwrap();
        let tampered = text.replace("rank-00000-of-00001", "../../victim#");
        let tampered = tampered.replace("victim#.bin", "victim");
        std::fs::write(&manifest, tampered).unwrap();
    }
    let load = store.reader().read_shard(2, 0).await;
    assert!(load.is_err(), "a tampered manifest loaded");
    // An overwrite must not delete what the tampered manifest names.
    let _ = save(&store, 2, b"newer", true).await;
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

/// Two saves of one step at once, new and overwriting: at least one is
/// told it committed, a save told so is what loads (unless a later one
/// also committed), and a save told it lost never corrupts the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_saves_of_one_step_never_mix() {
    const ROUNDS: u64 = 12;
    let tmp = tempfile::tempdir().unwrap();
    for level in [None, Some(1)] {
        let store = file_store(&tmp.path().join(format!("l{level:?}")), level);
        for round in 0..ROUNDS {
            for overwrite in [false, true] {
                let step = round;
                let datas = [payload(1, 200_000), payload(2, 150_000)];
                let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
                let mut tasks = Vec::new();
                for data in datas.clone() {
                    let (store, barrier) = (store.clone(), barrier.clone());
                    tasks.push(tokio::spawn(async move {
                        barrier.wait().await;
                        save(&store, step, &data, overwrite).await
                    }));
                }
                let mut ok = Vec::new();
                for (i, t) in tasks.into_iter().enumerate() {
                    match t.await.unwrap() {
                        Ok(()) => ok.push(i),
                        Err(Error::AlreadyExists { .. }) => {}
                        Err(e) => panic!("round {round} overwrite={overwrite}: {e}"),
                    }
                }
                assert!(!ok.is_empty(), "round {round}: no save committed");
                if !overwrite {
                    // A fresh step: one generation, exactly one winner.
                    assert_eq!(ok.len(), 1, "round {round}: both told they committed");
                }
                let loaded = store.reader().read_shard(step, 0).await.unwrap();
                assert!(
                    ok.iter().any(|&i| loaded[..] == datas[i][..]),
                    "round {round} overwrite={overwrite}: the loaded data is no committed save's"
                );
            }
        }
    }
}

/// Credentials inside malformed endpoints and connection strings never
/// reach an error message, and an `endpoint` meant for Azure is not judged
/// as an S3 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_bad_endpoints_are_redacted() {
    use s3dlio_core::store::open_store;
    const SIG: &str = "SIGSECRETzz";
    const PW: &str = "PWSECRETzz";
    const KEY: &str = "S0VZU0VDUkVU";
    let mut messages = Vec::new();
    let azure = |k: &str, v: &str| {
        let mut o = StoreOptions::default();
        o.azure.set(k, v).unwrap();
        o.azure.set("account_key", KEY).unwrap();
        match open_store("az://acct/ctr/x", &o) {
            Ok(_) => panic!("{k}={v} accepted"),
            Err(e) => e.to_string(),
        }
    };
    messages.push(azure(
        "endpoint",
        &format!("ftp://me:{PW}@h/acct?sig={SIG}"),
    ));
    messages.push(azure("endpoint", &format!("not a url ?sig={SIG}")));
    messages.push(azure(
        "connection_string",
        &format!("BlobEndpoint=bad endpoint sig={SIG};AccountName=acct;AccountKey={KEY}"),
    ));
    messages.push(azure(
        "connection_string",
        &format!("AccountName=acct;AccountKey={KEY};BlobEndpoint=ftp://u:{PW}@h/x"),
    ));
    for endpoint in [
        format!("h://me:{PW}@127.0.0.1:1"),
        format!("127.0.0.1:1/?X-Amz-Signature={SIG}"),
    ] {
        let mut o = StoreOptions::default();
        let set = o.s3.set("endpoint_url", &endpoint);
        let err = match set {
            Err(e) => e,
            Ok(_) => match open_store("s3://bkt/x", &o) {
                Err(e) => e,
                Ok(loc) => loc.store.head("x").await.unwrap_err(),
            },
        };
        messages.push(err.to_string());
    }
    for m in &messages {
        for secret in [SIG, PW, KEY] {
            assert!(!m.contains(secret), "secret {secret} in: {m}");
        }
    }
    // `endpoint` is shared by both backends: an Azure-only value must not
    // be refused as an S3 endpoint while the options are read.
    let mut o = StoreOptions::default();
    assert!(o.s3.set("endpoint", "localhost:10000").is_ok());
}

/// A device node, FIFO or socket is never replaced by a regular file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_never_replaced() {
    use s3dlio_core::store::open_store;
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for scheme in ["file", "direct"] {
        let uri = format!("{scheme}://{}", fifo.display());
        let opts = StoreOptions {
            direct_fallback: true,
            ..Default::default()
        };
        let loc = open_store(&uri, &opts).unwrap();
        let err = loc
            .store
            .put(
                &loc.key,
                bytes::Bytes::from_static(b"x"),
                &Default::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{scheme}: {err}");
        let ty = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(ty.is_fifo(), "{scheme}: the FIFO was replaced");
    }
}

/// An S3 server that accepts connections and never answers is reported,
/// within the read timeout, instead of hanging forever. (The defaults are
/// checked by value; the loopback run uses short overrides to stay brief.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_request_to_a_silent_server_times_out() {
    use s3dlio_core::store::open_store;
    use s3dlio_core::store::s3::S3Options;
    let (connect, read) = S3Options::default().timeouts();
    assert!(connect > Duration::ZERO && read > Duration::ZERO);

    let port = silent_server();
    let mut o = StoreOptions::default();
    for (k, v) in [
        ("endpoint_url", format!("http://127.0.0.1:{port}")),
        ("aws_access_key_id", "AKIDTEST".to_string()),
        ("aws_secret_access_key", "secret-for-test".to_string()),
        ("region", "us-east-1".to_string()),
        ("max_attempts", "1".to_string()),
        ("read_timeout", "1".to_string()),
    ] {
        assert!(o.s3.set(k, &v).unwrap());
    }
    let loc = open_store("s3://bkt/k", &o).unwrap();
    // The outer bound only keeps a regression from hanging the suite.
    let res = tokio::time::timeout(Duration::from_secs(60), loc.store.head("k"))
        .await
        .expect("the request hung past its read timeout");
    let err = res.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
}

/// A loopback port that accepts every connection and never sends a byte.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => return,
            }
        }
    });
    port
}

/// The Azure equivalent: `read_timeout` bounds each attempt (the SDK's
/// client alone waits 60 s per read), `max_retries` the attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_request_to_a_silent_server_times_out() {
    use s3dlio_core::store::azure::builder::{DEV_ACCOUNT, DEV_KEY};
    use s3dlio_core::store::open_store;
    let port = silent_server();
    let mut o = StoreOptions::default();
    for (k, v) in [
        ("endpoint", format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}")),
        ("account_key", DEV_KEY.to_string()),
        ("max_retries", "1".to_string()),
        ("read_timeout", "1".to_string()),
    ] {
        o.set(k, &v).unwrap();
    }
    let loc = open_store(&format!("az://{DEV_ACCOUNT}/ctr/k"), &o).unwrap();
    let started = std::time::Instant::now();
    // The outer bound only keeps a regression from hanging the suite.
    let res = tokio::time::timeout(Duration::from_secs(60), loc.store.head("k"))
        .await
        .expect("the request hung past its read timeout");
    let err = res.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains("read_timeout"),
        "{msg}"
    );
    assert!(msg.contains("az://devstoreaccount1/ctr/k"), "{msg}");
    // Two attempts of 1 s and one short back-off.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A compressed object cut short or with its footer damaged is corrupt:
/// never read back as its raw stored bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_footer_damaged_zst_is_corrupt() {
    use s3dlio_core::object::{get_object, put_object};
    use s3dlio_core::store::open_store;
    let tmp = tempfile::tempdir().unwrap();
    let uri = |name: &str| format!("file://{}/{name}", tmp.path().display());
    let data = payload(7, 700_000);
    let mut opts = WriteOptions::with_level(Some(3));
    opts.encode.frame_size = 128 << 10;
    let whole = open_store(&uri("whole.zst"), &StoreOptions::default()).unwrap();
    put_object(&whole, &data, &opts).await.unwrap();
    let stored = std::fs::read(tmp.path().join("whole.zst")).unwrap();
    let mut tried = 0;
    let mut cuts: Vec<usize> = (1..40).map(|i| stored.len() * i / 40).collect();
    cuts.extend([stored.len() - 1, stored.len() - 4, stored.len() - 9, 6, 7]);
    for cut in cuts {
        std::fs::write(tmp.path().join(format!("cut{cut}.zst")), &stored[..cut]).unwrap();
        let loc = open_store(&uri(&format!("cut{cut}.zst")), &StoreOptions::default()).unwrap();
        match get_object(&loc).await {
            Ok(got) => panic!("cut at {cut}: read back {} bytes, no error", got.len()),
            Err(Error::Corrupt { .. }) | Err(Error::Integrity { .. }) => {}
            Err(e) => panic!("cut at {cut}: {e}"),
        }
        tried += 1;
    }
    for back in 1..=12 {
        let mut damaged = stored.clone();
        let at = damaged.len() - back;
        damaged[at] ^= 0xFF;
        std::fs::write(tmp.path().join("foot.zst"), &damaged).unwrap();
        let loc = open_store(&uri("foot.zst"), &StoreOptions::default()).unwrap();
        assert!(
            get_object(&loc).await.is_err(),
            "footer byte -{back} flipped: read back without error"
        );
        tried += 1;
    }
    assert!(tried > 50);
}

/// A trailer claiming far more bytes than its frames can hold is refused
/// before anything is allocated (a 118-byte file claiming 4 frames of
/// 4 GiB drove a read to 16 GiB of memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_trailer_sizes_are_refused_before_allocating() {
    use s3dlio_core::codec::crc::crc32c_combine;
    use s3dlio_core::codec::seekable::{FrameEntry, Trailer};
    use s3dlio_core::object::{get_object, get_object_range};
    use s3dlio_core::store::open_store;
    let tmp = tempfile::tempdir().unwrap();
    let frame: u32 = u32::MAX - 3;
    let frames: Vec<FrameEntry> = (0..4)
        .map(|i| FrameEntry {
            compressed_size: 8,
            decompressed_size: frame,
            crc32c: i,
        })
        .collect();
    let crc = frames.iter().fold(0u32, |c, f| {
        crc32c_combine(c, f.crc32c, u64::from(f.decompressed_size))
    });
    let trailer = Trailer {
        logical_size: 4 * u64::from(frame),
        crc32c: crc,
        frame_size: frame,
        level: 3,
        byte_group: 0,
        frames,
    };
    let mut bytes = vec![0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x00, 0x01, 0x00];
    bytes.extend(std::iter::repeat_n(0u8, 24));
    bytes.extend(trailer.encode().unwrap());
    let path = tmp.path().join("liar.zst");
    std::fs::write(&path, &bytes).unwrap();
    let loc = open_store(
        &format!("file://{}", path.display()),
        &StoreOptions::default(),
    )
    .unwrap();
    let err = get_object(&loc).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let err = get_object_range(&loc, 0..(4u64 << 40)).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
