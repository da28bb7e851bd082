//! End-to-end tests of the `s3dlio` command on temp directories: the real
//! binary for output and exit codes, `s3dlio_cli::run` for the in-process
//! entry point the Python wheel uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use s3dlio_core::checkpoint::{CheckpointStore, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::runtime::block_on;
use s3dlio_core::store::StoreOptions;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn s3dlio(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_s3dlio"))
        .args(args)
        .output()
        .expect("run s3dlio");
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// Run and expect success; parse stdout as the one JSON document.
fn json(args: &[&str]) -> Value {
    let r = s3dlio(args);
    assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A committed one-rank checkpoint at step 1 under `base`; returns the
/// path of the rank's stored object.
fn make_checkpoint(base: &Path, level: Option<i32>, data: &[u8]) -> PathBuf {
    let uri = format!("file://{}", s(base));
    let store = CheckpointStore::open(
        &uri,
        Strategy::Flat,
        WriteOptions::with_level(level),
        &StoreOptions::default(),
    )
    .unwrap();
    let writer = store.writer(1, 0, false).unwrap();
    block_on(async {
        writer.save_shard(1, data).await.unwrap();
        writer
            .finalize(1, 7, "test", None, Value::Null, Duration::ZERO)
            .await
            .unwrap();
    })
    .unwrap();
    // Each save names its shard with a tag of its own:
    // rank-00000-of-00001.<tag>.bin[.zst].
    let suffix = if level.is_some() { ".bin.zst" } else { ".bin" };
    let step = base.join("step-000000000001");
    let shards: Vec<_> = std::fs::read_dir(&step)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_shard_name(&p.file_name().unwrap().to_string_lossy(), suffix))
        .collect();
    assert_eq!(shards.len(), 1, "one shard in {step:?}: {shards:?}");
    shards.into_iter().next().unwrap()
}

fn is_shard_name(name: &str, suffix: &str) -> bool {
    name.starts_with("rank-00000-of-00001.")
        && name.ends_with(suffix)
        && !name.ends_with(&format!("{suffix}.zst"))
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cp_round_trip_plain_and_compressed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("zeros.bin");
    let data = vec![0u8; 1 << 20];
    write(&src, &data);

    // Plain upload keeps the bytes and reports ratio 1.
    let plain = tmp.path().join("store/plain.bin");
    let out = json(&["cp", s(&src), s(&plain), "--json"]);
    assert_eq!(out["bytes"], 1 << 20);
    assert_eq!(out["copied"][0]["stored_size"], 1 << 20);
    assert_eq!(std::fs::read(&plain).unwrap(), data);
    let st = json(&["stat", s(&plain), "--json"]);
    assert_eq!(st["codec"], "none");
    assert_eq!(st["ratio"], 1.0);
    assert_eq!(st["crc32c"], Value::Null);

    // Compressed upload: zeros shrink, stat reads the trailer.
    let packed = format!("file://{}/store/zeros.bin.zst", s(tmp.path()));
    json(&["cp", s(&src), &packed, "--compression-level", "3", "--json"]);
    let st = json(&["stat", &packed, "--json"]);
    assert_eq!(st["codec"], "zstd-seekable");
    assert_eq!(st["logical_size"], 1 << 20);
    assert!(st["stored_size"].as_u64().unwrap() < 4096);
    assert!(st["ratio"].as_f64().unwrap() < 1.0);
    assert_eq!(st["crc32c"].as_str().unwrap().len(), 8);
    let text = s3dlio(&["stat", &packed]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("zstd-seekable"), "{}", text.stdout);
    assert!(text.stdout.contains("ratio:"), "{}", text.stdout);

    // Download decompresses and checks the CRC32C.
    let back = tmp.path().join("back.bin");
    let r = s3dlio(&["cp", &packed, s(&back)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("copy: "), "{}", r.stdout);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // A destination ending in `/` keeps the source name.
    let dir = format!("{}/into/", s(tmp.path()));
    json(&["cp", s(&src), &dir, "--json"]);
    assert!(tmp.path().join("into/zeros.bin").is_file());
}

#[test]
fn cp_empty_object() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("empty");
    write(&src, b"");
    let dst = tmp.path().join("empty.zst");
    json(&["cp", s(&src), s(&dst), "--compression-level", "1", "--json"]);
    let st = json(&["stat", s(&dst), "--json"]);
    assert_eq!(st["logical_size"], 0);
    let back = tmp.path().join("empty.back");
    json(&["cp", s(&dst), s(&back), "--json"]);
    assert_eq!(std::fs::read(&back).unwrap(), b"");
}

#[test]
fn cp_recursive_ls_and_rm() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.bin"), b"alpha");
    write(&src.join("sub/b.bin"), &[7u8; 3000]);
    write(&src.join("sub/deeper/c.bin"), b"c");
    let dst = tmp.path().join("dst");

    let out = json(&[
        "cp",
        "-r",
        s(&src),
        &format!("file://{}", s(&dst)),
        "--compression-level",
        "5",
        "--json",
    ]);
    assert_eq!(out["copied"].as_array().unwrap().len(), 3);
    assert_eq!(out["bytes"], 5 + 3000 + 1);

    // Non-recursive: files plus `PRE` sub-prefixes, like `aws s3 ls`.
    let r = s3dlio(&["ls", s(&dst)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(
        lines[0].trim_start().starts_with("PRE sub/"),
        "{}",
        r.stdout
    );
    assert!(lines[1].ends_with(" a.bin"), "{}", r.stdout);

    // One level of the parent: directories only, as prefixes.
    let parent = json(&["ls", s(tmp.path()), "--json"]);
    let pres: Vec<&str> = parent["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(pres.len(), 2, "{parent}");
    assert!(pres[0].ends_with("/dst/") && pres[1].ends_with("/src/"));
    assert!(parent["objects"].as_array().unwrap().is_empty());

    let listed = json(&["ls", s(&dst), "--json"]);
    assert_eq!(listed["prefixes"].as_array().unwrap().len(), 1);
    assert_eq!(listed["objects"][0]["name"], "a.bin");

    let all = json(&["ls", "-r", s(&dst), "--json"]);
    let names: Vec<&str> = all["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.bin", "sub/b.bin", "sub/deeper/c.bin"]);
    let b = json(&["stat", s(&dst.join("sub/b.bin")), "--json"]);
    assert_eq!(b["codec"], "zstd-seekable");

    // And back down, decompressed.
    let round = tmp.path().join("round");
    json(&["cp", "--recursive", s(&dst), s(&round), "--json"]);
    assert_eq!(
        std::fs::read(round.join("sub/b.bin")).unwrap(),
        vec![7u8; 3000]
    );

    // A directory without -r is refused.
    let r = s3dlio(&["rm", s(&dst)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--recursive"), "{}", r.stderr);

    // rm one object, then the rest; the local tree goes too.
    let r = s3dlio(&["rm", s(&dst.join("a.bin"))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!dst.join("a.bin").exists());
    let out = json(&["rm", "-r", s(&dst), "--json"]);
    assert_eq!(out["deleted"].as_array().unwrap().len(), 2);
    assert!(!dst.exists());

    // Removing what is gone is "not found".
    let r = s3dlio(&["rm", s(&dst.join("a.bin"))]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.starts_with("s3dlio: error: not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn info_and_verify_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("ckpt");
    make_checkpoint(&base, Some(3), &vec![0u8; 256 << 10]);
    let uri = format!("file://{}", s(&base));

    let info = json(&["info", &uri, "--json"]);
    let cps = info["checkpoints"].as_array().unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0]["step"], 1);
    assert_eq!(cps[0]["epoch"], 7);
    assert_eq!(cps[0]["framework"], "test");
    assert_eq!(cps[0]["world_size"], 1);
    assert_eq!(cps[0]["logical_size"], 256 << 10);
    assert!(cps[0]["ratio"].as_f64().unwrap() < 1.0);

    let text = s3dlio(&["info", &uri]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("FRAMEWORK"), "{}", text.stdout);
    assert!(text.stdout.contains("test"), "{}", text.stdout);

    let step = json(&["info", &uri, "--step", "1", "--json"]);
    assert_eq!(step["shards"][0]["rank"], 0);
    assert_eq!(step["shards"][0]["codec"], "zstd-seekable");
    let shard_key = step["shards"][0]["key"].as_str().unwrap().to_string();
    assert!(is_shard_name(&shard_key, ".bin.zst"), "{shard_key}");
    let text = s3dlio(&["info", &uri, "--step", "1"]);
    assert!(text.stdout.contains(&shard_key), "{}", text.stdout);

    let missing = s3dlio(&["info", &uri, "--step", "9"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("committed steps: 1"),
        "{}",
        missing.stderr
    );

    let ok = s3dlio(&["verify", &uri]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains(" OK "), "{}", ok.stdout);
    assert!(ok.stdout.contains("all OK"), "{}", ok.stdout);
    let doc = json(&["verify", &uri, "--step", "1", "--json"]);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["shards_checked"], 1);
}

#[test]
fn verify_names_a_corrupt_shard() {
    let tmp = tempfile::tempdir().unwrap();
    for level in [None, Some(3)] {
        let base = tmp.path().join(format!("ckpt-{level:?}"));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let shard = make_checkpoint(&base, level, &data);
        flip_byte(&shard, 10);
        let uri = s(&base);

        let r = s3dlio(&["verify", uri]);
        assert_eq!(r.code, 1, "{level:?}: {}{}", r.stdout, r.stderr);
        let name = shard.file_name().unwrap().to_str().unwrap();
        let failed = r
            .stdout
            .lines()
            .find(|l| l.contains("FAILED:"))
            .unwrap_or_else(|| panic!("no FAILED line: {}", r.stdout));
        assert!(failed.contains(name), "{failed}");

        let r = s3dlio(&["verify", uri, "--json"]);
        assert_eq!(r.code, 1);
        let doc: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["shards_failed"], 1);
    }
}

#[test]
fn cp_refuses_corrupt_compressed_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
    write(&src, &data);
    let packed = tmp.path().join("data.zst");
    json(&[
        "cp",
        s(&src),
        s(&packed),
        "--compression-level",
        "3",
        "--json",
    ]);
    flip_byte(&packed, 12);
    let out = tmp.path().join("out.bin");
    let r = s3dlio(&["cp", s(&packed), s(&out)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("s3dlio: error: "), "{}", r.stderr);
    assert!(!out.exists(), "a failed copy must leave nothing behind");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let r = s3dlio(&["ls", "gs://bucket/x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.starts_with("s3dlio: error: "), "{}", r.stderr);
    assert!(r.stderr.contains("unknown scheme 'gs://'"), "{}", r.stderr);

    let r = s3dlio(&["stat", "/definitely/not/here.bin"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x");
    write(&src, b"x");
    let r = s3dlio(&[
        "cp",
        s(&src),
        s(&tmp.path().join("y")),
        "--compression-level",
        "30",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("valid levels are 1-22"), "{}", r.stderr);

    let r = s3dlio(&["verify", s(tmp.path())]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no committed checkpoint"), "{}", r.stderr);

    let r = s3dlio(&["frobnicate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.starts_with("s3dlio: error: "), "{}", r.stderr);
}

#[test]
fn help_documents_exit_codes() {
    let r = s3dlio(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
    for verb in ["ls", "stat", "cp", "rm", "info", "verify"] {
        assert!(r.stdout.contains(verb), "{verb} missing from help");
    }
}

#[test]
fn run_in_process_returns_codes() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(s3dlio_cli::run(args(&["s3dlio", "stat", "gs://b/k"])), 2);
    let tmp = tempfile::tempdir().unwrap();
    // An empty directory lists as nothing, so this test prints nothing.
    let empty = s(tmp.path());
    assert_eq!(s3dlio_cli::run(args(&["s3dlio", "ls", empty])), 0);
    // From inside a tokio runtime too (a caller that has one entered).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let code = rt.block_on(async { s3dlio_cli::run(args(&["s3dlio", "ls", empty])) });
    assert_eq!(code, 0);
    assert_eq!(s3dlio_cli::run(args(&["s3dlio", "rm", empty])), 2);
}
