//! Fault injection through the paths users take, on every backend
//! (issue 16): seed-API saves and loads, one-object reads through the
//! decoder, and DCP item reads through the pack reader, each driven
//! through a `FaultStore` over memory, file, direct, S3 (s3s-fs) and
//! Azure (Azurite). Faults: the Nth request of each operation failing or
//! losing its reply, short bodies, slow requests, flipped bytes.
//!
//! What must hold: a faulted read returns exactly the stored bytes or an
//! integrity / I/O error naming the object, never other bytes; a faulted
//! save returns an error, every committed step still loads bit-exact, and
//! a clean save afterwards succeeds. Each backend prints one
//! `FAULT-MATRIX` line with its counts (docs/RELIABILITY.md quotes them).

use std::time::Instant;

use s3dlio_core::checkpoint::{CheckpointStore, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::faults::Fault;

#[path = "../support/azure.rs"]
mod azure_support;
#[path = "../support/mod.rs"]
mod support;

mod backends;
mod loads;
mod objects;
mod pack;
mod save;
mod tally;

use backends::Backend;
use tally::Tally;

#[path = "../support/seed.rs"]
mod seed;
use seed::save;

/// Plain shards and compressed ones.
const LEVELS: [Option<i32>; 2] = [None, Some(1)];
/// Small frames: a shard of a few hundred KiB spans several.
const FRAME: usize = 64 << 10;

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    s3dlio_core::runtime::block_on(fut).expect("runtime")
}

/// Compressible bytes (a few bits of entropy per byte), different per seed.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761) >> 28) as u8 ^ seed).wrapping_add((i >> 12) as u8))
        .collect()
}

/// Short bodies and flipped bytes at offsets inside headers, frames,
/// trailers and past the first frame of every read.
fn damage_faults() -> Vec<Fault> {
    let mut out: Vec<Fault> = [0, 17, 4096, 70_000]
        .into_iter()
        .map(|keep| Fault::TruncateReads { keep })
        .collect();
    out.extend(
        [0, 5, 200, 4099, 65_600, 200_000]
            .into_iter()
            .map(|offset| Fault::FlipByte { offset }),
    );
    out
}

fn checkpoint_store(b: &Backend, name: &str, level: Option<i32>) -> CheckpointStore {
    let mut write = WriteOptions::with_level(level);
    write.encode.frame_size = FRAME;
    write.put = b.put.clone();
    CheckpointStore::at(b.child(name), Strategy::Flat, write).expect("checkpoint store")
}

fn matrix(b: Option<Backend>) {
    let Some(b) = b else { return };
    let started = Instant::now();
    let (mut saves, mut loads, mut objects, mut packs) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let timed = |part: &str, run: &mut dyn FnMut()| {
        let t = Instant::now();
        run();
        eprintln!("{} {part}: {:.1} s", b.name, t.elapsed().as_secs_f64());
    };
    timed("saves", &mut || save::run(&b, &mut saves));
    timed("loads", &mut || loads::run(&b, &mut loads));
    timed("objects", &mut || objects::run(&b, &mut objects));
    timed("pack", &mut || pack::run(&b, &mut packs));
    tally::report(
        b.name,
        &saves,
        &[
            ("checkpoint loads", &loads),
            ("object reads", &objects),
            ("DCP item reads", &packs),
        ],
        started,
    );
}

#[test]
fn faults_on_memory() {
    matrix(Some(backends::memory()));
}

#[test]
fn faults_on_file() {
    matrix(Some(backends::file()));
}

#[test]
fn faults_on_direct() {
    matrix(Some(backends::direct()));
}

#[test]
fn faults_on_s3() {
    matrix(backends::s3());
}

#[test]
fn faults_on_azure() {
    matrix(backends::azure());
}
