//! The byte-grouping filter end to end through the public codec API:
//! bit-exact restores of every float width (NaN payloads, infinities,
//! subnormals), partial elements, ranged reads across frames, corruption,
//! and objects written without the filter.

use std::sync::Arc;

use bytes::Bytes;
use s3dlio_core::codec::crc::crc32c;
use s3dlio_core::codec::seekable::{parse_tail, Sniff, Trailer};
use s3dlio_core::codec::{EncodeOptions, EncodingWriter, ObjectReader};
use s3dlio_core::object::{put_object, WriteOptions};
use s3dlio_core::store::memory::MemoryStore;
use s3dlio_core::store::{Location, ObjectStore, PutOptions};
use s3dlio_core::Error;

const FRAME: usize = 64 << 10;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Bit patterns every float format has trouble with, then weight-like
/// values, then random bits; `n` elements of `width` bytes.
fn tricky_floats(width: usize, n: usize, seed: u64) -> Vec<u8> {
    let mut rnd = xorshift(seed);
    let special: Vec<u64> = match width {
        2 => vec![
            0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE5A, 0x0001, 0x03FF, 0x8001, 0x7BFF,
            0x0400, // fp16: ±0, ±inf, NaNs with payloads, subnormals, max, min normal
            0x7F80, 0xFF80, 0x7FC1, 0xFF81, 0x007F, 0x0080, // bf16 views of the same
        ],
        4 => vec![
            0x0000_0000,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0000,
            0x7FC0_1234,
            0x7F80_0001,
            0xFFBF_FFFF,
            0x0000_0001,
            0x007F_FFFF,
            0x8000_0001,
            0x7F7F_FFFF,
            0x0080_0000,
        ],
        8 => vec![
            0,
            1 << 63,
            0x7FF0_0000_0000_0000,
            0xFFF0_0000_0000_0000,
            0x7FF8_0000_0000_0000,
            0x7FF8_0000_DEAD_BEEF,
            0x7FF0_0000_0000_0001,
            0xFFF7_FFFF_FFFF_FFFF,
            1,
            0x000F_FFFF_FFFF_FFFF,
            0x8000_0000_0000_0001,
            0x7FEF_FFFF_FFFF_FFFF,
        ],
        _ => unreachable!(),
    };
    let mut out = Vec::with_capacity(n * width);
    for i in 0..n {
        let bits: u64 = if i < 4 * special.len() {
            special[i % special.len()]
        } else if i % 3 == 0 {
            rnd()
        } else {
            let v = ((i as f64) * 0.001).sin() * 0.02 + (rnd() >> 40) as f64 * 1e-10;
            match width {
                2 => ((v as f32).to_bits() >> 16) as u64,
                4 => (v as f32).to_bits() as u64,
                _ => v.to_bits(),
            }
        };
        out.extend_from_slice(&bits.to_le_bytes()[..width]);
    }
    out
}

fn opts(level: Option<i32>, byte_group: Option<usize>, auto: bool) -> EncodeOptions {
    EncodeOptions {
        level,
        frame_size: FRAME,
        threads: 2,
        byte_group,
        byte_group_auto: auto,
    }
}

fn dyn_store(s: &Arc<MemoryStore>) -> Arc<dyn ObjectStore> {
    s.clone()
}

async fn write(
    store: &Arc<MemoryStore>,
    key: &str,
    data: &[u8],
    o: EncodeOptions,
) -> s3dlio_core::Result<s3dlio_core::codec::EncodedMeta> {
    let inner = store.writer(key, &PutOptions::default()).await?;
    let mut w = EncodingWriter::new(inner, store.uri(key), o)?;
    // Odd piece sizes: elements straddle write calls.
    for (i, piece) in data.chunks(10_007).enumerate() {
        if i % 2 == 0 {
            w.write(Bytes::copy_from_slice(piece)).await?;
        } else {
            w.write_slice(piece).await?;
        }
    }
    w.finish().await
}

fn trailer_of(stored: &[u8]) -> Trailer {
    match parse_tail(stored, stored.len() as u64) {
        Ok(Sniff::Seekable(t)) => t,
        other => panic!("not a seekable object: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_width_roundtrips_bit_exact() {
    let store = MemoryStore::new();
    for width in [2usize, 4, 8] {
        for level in [1, 3, 19] {
            // Several frames and a short last one.
            let n = (3 * FRAME + 4 * 1000) / width;
            let data = tricky_floats(width, n, (width * 100 + level as usize) as u64);
            let key = format!("w{width}-l{level}.zst");
            let meta = write(&store, &key, &data, opts(Some(level), Some(width), false))
                .await
                .unwrap();
            assert_eq!(meta.byte_group, Some(width));
            assert_eq!(meta.crc32c, crc32c(&data));
            assert_eq!(meta.logical_size, data.len() as u64);

            let stored = store.get(&key).await.unwrap();
            let t = trailer_of(&stored);
            assert_eq!(t.byte_group as usize, width);
            assert_eq!(t.frames.len(), 4);

            let r = ObjectReader::open(dyn_store(&store), &key).await.unwrap();
            assert_eq!(r.byte_group(), Some(width));
            assert_eq!(r.crc32c(), Some(crc32c(&data)));
            let back = r.read_all(Some(crc32c(&data))).await.unwrap();
            assert!(back[..] == data[..], "width {width} level {level}");
            let mut dst = vec![0u8; data.len()];
            r.read_into(&mut dst, None).await.unwrap();
            assert!(dst == data, "read_into width {width} level {level}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grouping_shrinks_float_data_below_plain_zstd() {
    let store = MemoryStore::new();
    // Weight-like fp32 (no random-bit elements): plain zstd barely helps.
    let data: Vec<u8> = (0..(1 << 20))
        .flat_map(|i: u32| {
            let v = ((i as f32) * 0.37).sin() * 0.05 * (1.0 + ((i % 7) as f32) * 0.1);
            v.to_le_bytes()
        })
        .collect();
    let plain = write(&store, "p.zst", &data, opts(Some(1), None, false))
        .await
        .unwrap();
    let grouped = write(&store, "g.zst", &data, opts(Some(1), Some(4), false))
        .await
        .unwrap();
    assert!(
        grouped.ratio() < plain.ratio() - 0.05,
        "grouped {} vs plain {}",
        grouped.ratio(),
        plain.ratio()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_reads_cross_frames_and_elements() {
    let store = MemoryStore::new();
    for width in [2usize, 4, 8] {
        let data = tricky_floats(width, (5 * FRAME) / width + 3, width as u64);
        let key = format!("r{width}.zst");
        write(&store, &key, &data, opts(Some(3), Some(width), false))
            .await
            .unwrap();
        let r = ObjectReader::open(dyn_store(&store), &key).await.unwrap();
        let n = data.len() as u64;
        let f = FRAME as u64;
        for range in [
            0..1,
            1..3,
            f - 3..f + 5,
            f..2 * f,
            f + 1..4 * f - 1,
            2 * f - 7..2 * f + 7,
            n - 5..n,
            0..n,
            3..n + 10,
        ] {
            let got = r.read_range(range.clone()).await.unwrap();
            let end = range.end.min(n) as usize;
            assert!(
                got[..] == data[range.start as usize..end],
                "width {width} range {range:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_misaligned_size_is_an_error_and_stores_nothing() {
    let store = MemoryStore::new();
    let data = tricky_floats(4, 1000, 1);
    // Streaming: only known at finish.
    let err = write(
        &store,
        "bad.zst",
        &data[..data.len() - 1],
        opts(Some(1), Some(4), false),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("3999 bytes are not a whole number of 4-byte elements"),
        "{msg}"
    );
    assert!(msg.contains("bad.zst"), "{msg}");
    assert!(store.head("bad.zst").await.unwrap_err().is_not_found());

    // Whole object in memory: refused before anything is written.
    let loc = Location {
        store: store.clone(),
        key: "bad2.zst".into(),
    };
    let w = WriteOptions {
        encode: opts(Some(1), Some(4), false),
        put: PutOptions::default(),
    };
    let err = put_object(&loc, &data[..6], &w).await.unwrap_err();
    assert!(
        err.to_string().contains("6 bytes are not a whole number"),
        "{err}"
    );
    assert!(store.head("bad2.zst").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_requests_that_cannot_work_are_refused_up_front() {
    let store = MemoryStore::new();
    for (o, why) in [
        (
            opts(Some(1), Some(3), false),
            "not a supported element size",
        ),
        (opts(None, Some(4), false), "needs compression"),
        (
            EncodeOptions {
                frame_size: 1001,
                ..opts(Some(1), Some(4), false)
            },
            "frame size 1001 is not a multiple",
        ),
    ] {
        let inner = store.writer("x", &PutOptions::default()).await.unwrap();
        let err = EncodingWriter::new(inner, store.uri("x"), o).err().unwrap();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains(why), "{err}");
    }
    assert!(store.head("x").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_grouping_steps_aside_when_it_does_not_fit() {
    let store = MemoryStore::new();
    let data = tricky_floats(4, 40_000, 2);

    // No compression, odd frame size, unsupported width: plain objects.
    for (i, o) in [
        opts(None, Some(4), true),
        EncodeOptions {
            frame_size: 1001,
            ..opts(Some(1), Some(4), true)
        },
        opts(Some(1), Some(16), true),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("auto{i}");
        let meta = write(&store, &key, &data, o).await.unwrap();
        assert_eq!(meta.byte_group, None);
        let r = ObjectReader::open(dyn_store(&store), &key).await.unwrap();
        assert_eq!(r.byte_group(), None);
        assert!(r.read_all(None).await.unwrap()[..] == data[..]);
    }

    // Known misaligned size: off.
    let loc = Location {
        store: store.clone(),
        key: "odd.zst".into(),
    };
    let w = WriteOptions {
        encode: opts(Some(1), Some(4), true),
        put: PutOptions::default(),
    };
    let odd = &data[..data.len() - 2];
    let meta = put_object(&loc, odd, &w).await.unwrap();
    assert_eq!(meta.byte_group, None);
    assert!(store.get("odd.zst").await.is_ok());
    let r = ObjectReader::open(dyn_store(&store), "odd.zst")
        .await
        .unwrap();
    assert!(r.read_all(None).await.unwrap()[..] == odd[..]);

    // Aligned size: on.
    let loc = Location {
        store: store.clone(),
        key: "even.zst".into(),
    };
    assert_eq!(
        put_object(&loc, &data, &w).await.unwrap().byte_group,
        Some(4)
    );

    // A stream that ends mid-element keeps the filter; the partial element
    // is stored as it is and restores exactly.
    for cut in [1usize, 2, 3] {
        let key = format!("tail{cut}.zst");
        let part = &data[..2 * FRAME + 400 + cut];
        let meta = write(&store, &key, part, opts(Some(3), Some(4), true))
            .await
            .unwrap();
        assert_eq!(meta.byte_group, Some(4));
        let r = ObjectReader::open(dyn_store(&store), &key).await.unwrap();
        assert!(r.read_all(Some(crc32c(part))).await.unwrap()[..] == part[..]);
        let n = part.len() as u64;
        assert!(r.read_range(n - 6..n).await.unwrap()[..] == part[part.len() - 6..]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_grouped_object() {
    let store = MemoryStore::new();
    let meta = write(&store, "e.zst", &[], opts(Some(1), Some(2), false))
        .await
        .unwrap();
    assert_eq!(meta.logical_size, 0);
    let r = ObjectReader::open(dyn_store(&store), "e.zst")
        .await
        .unwrap();
    assert!(r.read_all(Some(0)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn corruption_is_detected_never_returned() {
    let store = MemoryStore::new();
    let data = tricky_floats(4, (3 * FRAME) / 4, 77);
    write(&store, "c.zst", &data, opts(Some(1), Some(4), false))
        .await
        .unwrap();
    let stored = store.get("c.zst").await.unwrap();
    let t = trailer_of(&stored);
    let data_len = t.data_len() as usize;

    let mut detected = 0;
    for pos in (0..data_len).step_by(data_len / 300) {
        let mut bad = stored.to_vec();
        bad[pos] ^= 0x21;
        store
            .put("bad.zst", Bytes::from(bad), &PutOptions::default())
            .await
            .unwrap();
        let r = ObjectReader::open(dyn_store(&store), "bad.zst")
            .await
            .unwrap();
        match r.read_all(None).await {
            Err(Error::Integrity { uri, .. }) | Err(Error::Corrupt { uri, .. }) => {
                assert_eq!(uri, store.uri("bad.zst"));
                detected += 1;
            }
            Err(other) => panic!("flip at {pos}: unexpected {other}"),
            // A flip zstd decodes around (e.g. in a raw block's padding)
            // must still give exactly the data.
            Ok(all) => assert!(all[..] == data[..], "flip at {pos} gave wrong data"),
        }
    }
    assert!(detected > 250, "only {detected} flips detected");

    // The recorded width itself changed to another valid one: planes are
    // merged wrongly, and the CRC32C says so.
    let mut bad = stored.to_vec();
    let width_at = data_len + 8 + 7 + 8 + 4 + 4 + 1;
    assert_eq!(bad[width_at], 4);
    bad[width_at] = 2;
    store
        .put("w.zst", Bytes::from(bad.clone()), &PutOptions::default())
        .await
        .unwrap();
    let r = ObjectReader::open(dyn_store(&store), "w.zst")
        .await
        .unwrap();
    assert_eq!(r.byte_group(), Some(2));
    let err = r.read_all(None).await.unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");

    // A width this version does not know: a corrupt object, said plainly.
    bad[width_at] = 3;
    store
        .put("w3.zst", Bytes::from(bad), &PutOptions::default())
        .await
        .unwrap();
    let err = ObjectReader::open(dyn_store(&store), "w3.zst")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { reason, .. } if reason.contains("byte-grouping filter of width 3")),
        "{err}"
    );
}

/// An object as the writer before the filter made it, built by hand from
/// the documented format: plain zstd frames and a trailer with width 0.
#[tokio::test(flavor = "multi_thread")]
async fn objects_without_the_filter_still_read() {
    let store = MemoryStore::new();
    let data = tricky_floats(4, 50_000, 5);
    let frame_size = 65_536usize;
    let mut stored = Vec::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(frame_size) {
        let c = zstd::bulk::compress(chunk, 3).unwrap();
        frames.push(s3dlio_core::codec::seekable::FrameEntry {
            compressed_size: c.len() as u32,
            decompressed_size: chunk.len() as u32,
            crc32c: crc32c(chunk),
        });
        stored.extend_from_slice(&c);
    }
    let trailer = Trailer {
        logical_size: data.len() as u64,
        crc32c: crc32c(&data),
        frame_size: frame_size as u32,
        level: 3,
        byte_group: 0,
        frames,
    };
    stored.extend_from_slice(&trailer.encode().unwrap());
    store
        .put("old.zst", Bytes::from(stored), &PutOptions::default())
        .await
        .unwrap();
    let r = ObjectReader::open(dyn_store(&store), "old.zst")
        .await
        .unwrap();
    assert_eq!(r.byte_group(), None);
    assert!(r.read_all(Some(crc32c(&data))).await.unwrap()[..] == data[..]);
    assert!(r.read_range(65_530..65_546).await.unwrap()[..] == data[65_530..65_546]);
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_cli_gives_the_grouped_bytes() {
    if std::process::Command::new("zstd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("zstd CLI not installed; skipping");
        return;
    }
    let store = MemoryStore::new();
    let data = tricky_floats(2, 40_001, 9);
    write(&store, "g", &data, opts(Some(3), Some(2), true))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.zst");
    std::fs::write(&path, store.get("g").await.unwrap()).unwrap();
    let out = std::process::Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = Vec::new();
    for chunk in data.chunks(FRAME) {
        let mut g = vec![0u8; chunk.len()];
        s3dlio_core::codec::byte_group::split(chunk, 2, &mut g);
        expected.extend_from_slice(&g);
    }
    assert!(out.stdout == expected);
}
