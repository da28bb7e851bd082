//! Property tests of every parser of stored bytes (bounded case counts,
//! part of `make test`): the seekable trailer and seek table, manifests and
//! commit records, and whole compressed objects (frames) with random damage.
//! Whatever the bytes, a parser returns a value or an error: never a panic,
//! never an allocation sized by a lie, and a damaged object never reads
//! back as other bytes without an error.
//!
//! Each test prints `PROPTEST <name> <cases>` so docs/RELIABILITY.md can
//! quote the number of inputs tried.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use s3dlio_core::checkpoint::{CommitRecord, Manifest};
use s3dlio_core::codec::seekable::{parse_tail, FrameEntry, Sniff, Trailer};
use s3dlio_core::object::{get_object, put_object, WriteOptions};
use s3dlio_core::store::{open_store, StoreOptions};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static TRAILERS: AtomicUsize = AtomicUsize::new(0);
static MANIFESTS: AtomicUsize = AtomicUsize::new(0);
static OBJECTS: AtomicUsize = AtomicUsize::new(0);

fn report(name: &str, n: &AtomicUsize) {
    println!("PROPTEST {name} {}", n.load(Ordering::Relaxed));
}

fn valid_trailer(frames: usize, frame: u32, last: u32) -> Trailer {
    let frames: Vec<FrameEntry> = (0..frames)
        .map(|i| FrameEntry {
            compressed_size: 20 + i as u32,
            decompressed_size: if i + 1 == frames { last } else { frame },
            crc32c: i as u32 * 7919,
        })
        .collect();
    let crc = frames.iter().fold(0u32, |c, f| {
        s3dlio_core::codec::crc::crc32c_combine(c, f.crc32c, u64::from(f.decompressed_size))
    });
    Trailer {
        logical_size: frames.iter().map(|f| u64::from(f.decompressed_size)).sum(),
        crc32c: crc,
        frame_size: frame,
        level: 3,
        byte_group: 0,
        frames,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary tails, and valid trailers with bytes flipped or cut:
    /// parse_tail never panics, and whatever it accepts is consistent with
    /// the object size and within zstd's ratio.
    #[test]
    fn trailer_parser_survives_any_tail(
        frames in 1usize..6,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in 0usize..64,
        noise in proptest::collection::vec(any::<u8>(), 0..300),
        declared_extra in 0u64..1000,
    ) {
        TRAILERS.fetch_add(1, Ordering::Relaxed);
        let t = valid_trailer(frames, 64 << 10, 1000);
        let mut tail = t.encode().unwrap();
        for (at, x) in &flips {
            let i = at.index(tail.len());
            tail[i] ^= x;
        }
        let keep = tail.len().saturating_sub(cut);
        let tail = &tail[tail.len() - keep..];
        for (bytes, size) in [
            (tail.to_vec(), t.data_len() + tail.len() as u64 + declared_extra),
            (noise.clone(), noise.len() as u64 + declared_extra),
        ] {
            if let Ok(Sniff::Seekable(parsed)) = parse_tail(&bytes, size) {
                prop_assert_eq!(parsed.stored_size(), size);
                for f in &parsed.frames {
                    prop_assert!(
                        u64::from(f.compressed_size)
                            >= s3dlio_core::codec::seekable::min_stored(u64::from(f.decompressed_size))
                    );
                }
            }
        }
    }

    /// Manifests and commit records: arbitrary JSON-ish bytes and valid
    /// manifests with fields changed never panic; accepted manifests keep
    /// every shard name inside the step directory.
    #[test]
    fn manifest_parsers_survive_any_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..400),
        world in 0u32..5,
        key in "[a-z./]{0,12}",
        rank in 0u32..6,
    ) {
        MANIFESTS.fetch_add(1, Ordering::Relaxed);
        let _ = Manifest::from_json("memory://p/m", &raw);
        let _ = CommitRecord::from_json("memory://p/c", &raw);
        let shard = serde_json::json!({
            "rank": rank, "world_size": world, "step": 1, "generation": 0,
            "key": key, "size": 3, "stored_size": 3, "crc32c": 0,
            "codec": "none", "level": null,
        });
        let doc = serde_json::json!({
            "format": "s3dlio-checkpoint/1", "step": 1, "epoch": 0, "framework": "t",
            "world_size": world, "generation": 0, "created_unix": 0.0,
            "logical_size": 3, "stored_size": 3, "shards": [shard], "user_meta": null,
        });
        if let Ok(m) = Manifest::from_json("memory://p/m", doc.to_string().as_bytes()) {
            prop_assert_eq!(m.world_size, 1);
            prop_assert_eq!(m.shards.len(), 1);
            prop_assert!(s3dlio_core::keys::name_problem(&m.shards[0].key).is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whole compressed objects (plain and byte-grouped frames) with random
    /// flips, cuts and appended garbage: a read returns the original bytes
    /// or an error, never other bytes.
    #[test]
    fn damaged_objects_never_read_back_as_other_bytes(
        len in 1usize..200_000,
        grouped in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
        cut in 0usize..100,
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        OBJECTS.fetch_add(1, Ordering::Relaxed);
        // Byte grouping needs whole 4-byte elements.
        let len = if grouped { len / 4 * 4 + 4 } else { len };
        let data: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let n = OBJECTS.load(Ordering::Relaxed);
        let out: Result<(), TestCaseError> = rt.block_on(async {
            let loc = open_store(&format!("memory://prop-{n}/o.zst"), &StoreOptions::default()).unwrap();
            let mut opts = WriteOptions::with_level(Some(1));
            opts.encode.frame_size = 32 << 10;
            if grouped {
                opts.encode.byte_group = Some(4);
            }
            put_object(&loc, &data, &opts).await.unwrap();
            let mut stored = loc.store.get(&loc.key).await.unwrap().to_vec();
            let mut magic_hit = false;
            for (at, x) in &flips {
                let i = at.index(stored.len());
                magic_hit |= i < 4;
                stored[i] ^= x;
            }
            // With the leading zstd magic destroyed AND the trailer damaged
            // too, nothing is left that says the object was compressed: it
            // is the plain bytes it now reads as (a checkpoint shard or DCP
            // item still fails its recorded CRC32C). Damage on one side only
            // must always be caught.
            let undecidable = magic_hit && (flips.len() > 1 || cut > 0 || !extra.is_empty());
            stored.truncate(stored.len().saturating_sub(cut));
            stored.extend(&extra);
            let damaged = open_store(&format!("memory://prop-{n}/d.zst"), &StoreOptions::default()).unwrap();
            damaged.store.put(&damaged.key, stored.into(), &Default::default()).await.unwrap();
            if let Ok(got) = get_object(&damaged).await {
                prop_assert!(
                    undecidable || got[..] == data[..],
                    "damaged object read back as other bytes"
                );
            }
            Ok(())
        });
        out?;
    }
}

#[test]
fn zz_report_counts() {
    // Runs after the property tests in the same binary when tests run
    // single-threaded; with threads the counts are partial, so the
    // reliability script runs this binary with --test-threads=1.
    report("trailer", &TRAILERS);
    report("manifest", &MANIFESTS);
    report("object", &OBJECTS);
}
