//! Rough codec throughput on this machine:
//! `cargo test --release -p s3dlio-core codec::bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::encoder::tests::floats;
use super::{EncodeOptions, EncodedMeta, EncodingWriter, ObjectReader};
use crate::store::memory::MemoryStore;
use crate::store::{ObjectMeta, ObjectStore, ObjectWriter, PutOptions};

const SIZE: usize = 256 << 20;
const PIECE: usize = 8 << 20;

/// Swallows the bytes: encoder speed without a store's copying.
struct NullWriter(u64);

#[async_trait::async_trait]
impl ObjectWriter for NullWriter {
    async fn write(&mut self, buf: Bytes) -> crate::Result<()> {
        self.0 += buf.len() as u64;
        Ok(())
    }
    async fn finish(self: Box<Self>) -> crate::Result<ObjectMeta> {
        Ok(ObjectMeta::new("null", self.0))
    }
    async fn abort(self: Box<Self>) -> crate::Result<()> {
        Ok(())
    }
}

async fn encode(
    inner: Box<dyn ObjectWriter>,
    data: &Bytes,
    level: Option<i32>,
    threads: usize,
) -> (EncodedMeta, f64) {
    let opts = EncodeOptions {
        level,
        threads,
        ..Default::default()
    };
    let t = Instant::now();
    let mut w = EncodingWriter::new(inner, "bench".into(), opts).unwrap();
    let mut off = 0;
    while off < data.len() {
        let end = (off + PIECE).min(data.len());
        w.write(data.slice(off..end)).await.unwrap();
        off = end;
    }
    let meta = w.finish().await.unwrap();
    (meta, t.elapsed().as_secs_f64())
}

fn mib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
async fn codec_throughput() {
    let data = Bytes::from(floats(SIZE, 42));
    let crc = crate::crc::crc32c(&data);
    let store = MemoryStore::new();
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    println!("{} MiB of float-like data", SIZE >> 20);
    for level in [None, Some(1), Some(3)] {
        for threads in [1, 2] {
            if level.is_none() && threads == 2 {
                continue;
            }
            let key = format!("b-{level:?}-{threads}");
            let (_, enc_null) = encode(Box::new(NullWriter(0)), &data, level, threads).await;
            let inner = store.writer(&key, &PutOptions::default()).await.unwrap();
            let (meta, enc) = encode(inner, &data, level, threads).await;
            assert_eq!(meta.crc32c, crc);

            let r = ObjectReader::open(dyn_store.clone(), &key).await.unwrap();
            let mut dst = vec![0u8; SIZE];
            // Touch the pages first so both read paths pay the same.
            dst.iter_mut().step_by(4096).for_each(|b| *b = 1);
            let t = Instant::now();
            r.read_into(&mut dst, Some(crc)).await.unwrap();
            let dec = t.elapsed().as_secs_f64();
            assert!(dst[..] == data[..]);

            super::decoder::FORCE_COPYING.store(true, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            r.read_into(&mut dst, Some(crc)).await.unwrap();
            let dec_copy = t.elapsed().as_secs_f64();
            super::decoder::FORCE_COPYING.store(false, std::sync::atomic::Ordering::Relaxed);
            assert!(dst[..] == data[..]);

            println!(
                "level {level:?} threads {threads}: ratio {:.3}, encode {:.0} MiB/s \
                 (null sink), {:.0} MiB/s (memory store), read_into {:.0} MiB/s (in place), {:.0} MiB/s (decode+copy)",
                meta.ratio(),
                mib_s(SIZE, enc_null),
                mib_s(SIZE, enc),
                mib_s(SIZE, dec),
                mib_s(SIZE, dec_copy),
            );
            store.delete(&key).await.unwrap();
        }
    }
}

/// The contents of `S3DLIO_BENCH_FILE` and the element width in
/// `S3DLIO_BENCH_WIDTH` (default 4), for the timing tests on real data.
pub(super) fn bench_file() -> Option<(Vec<u8>, usize)> {
    let path = std::env::var("S3DLIO_BENCH_FILE").ok()?;
    let width = std::env::var("S3DLIO_BENCH_WIDTH")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(4);
    Some((std::fs::read(path).unwrap(), width))
}

/// Whole-object encode/decode of a real file with the byte-grouping filter:
/// `S3DLIO_BENCH_FILE=x.bin S3DLIO_BENCH_WIDTH=4 cargo test --release -p
/// s3dlio-core codec::bench::grouped_file -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; needs S3DLIO_BENCH_FILE"]
async fn grouped_file() {
    let Some((data, width)) = bench_file() else {
        return;
    };
    let data = Bytes::from(data);
    let store = MemoryStore::new();
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    for (label, byte_group) in [("plain", None), ("grouped", Some(width))] {
        let opts = EncodeOptions {
            level: Some(1),
            byte_group,
            ..Default::default()
        };
        let inner = store.writer("g", &PutOptions::default()).await.unwrap();
        let t = Instant::now();
        let mut w = EncodingWriter::new(inner, "g".into(), opts).unwrap();
        w.write(data.clone()).await.unwrap();
        let meta = w.finish().await.unwrap();
        let enc = t.elapsed().as_secs_f64();
        let r = ObjectReader::open(dyn_store.clone(), "g").await.unwrap();
        let mut dst = vec![1u8; data.len()];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            r.read_into(&mut dst, None).await.unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        assert!(dst[..] == data[..]);
        println!(
            "{label}: ratio {:.4}, encode {:.0} MiB/s, read_into {:.0} MiB/s",
            meta.ratio(),
            mib_s(data.len(), enc),
            mib_s(data.len(), best)
        );
    }
}
