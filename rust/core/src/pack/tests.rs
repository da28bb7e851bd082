use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::codec::crc::crc32c;
use crate::error::Error;
use crate::runtime::block_on;
use crate::store::faults::{Fault, FaultStore};
use crate::store::memory::MemoryStore;
use crate::store::ObjectStore;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ (i / 97) as u8 ^ seed as u8)
        .collect()
}

fn write(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    items: &[Vec<Vec<u8>>],
    opts: PackOptions,
) -> Vec<PackedItem> {
    block_on(async {
        let mut w = PackWriter::open(store, key, opts).await.unwrap();
        let mut out = Vec::new();
        for segs in items {
            let segs = segs.iter().map(|s| Bytes::copy_from_slice(s)).collect();
            out.push(w.write_item(segs).await.unwrap());
        }
        w.finish().await.unwrap();
        out
    })
    .unwrap()
}

fn opts(level: Option<i32>, workers: u32) -> PackOptions {
    PackOptions {
        level,
        zstd_workers: workers,
        piece_size: 1 << 16,
        ..Default::default()
    }
}

fn small_reads() -> ReadOptions {
    ReadOptions {
        threads: 3,
        part_size: 50_000,
        max_gap: 1000,
    }
}

/// Items of many sizes (empty, tiny, larger than a piece and a read part),
/// each made of several segments.
fn sample() -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![data(700, 1), data(120_000, 2), data(800, 3)],
        vec![],
        vec![data(5, 4)],
        vec![data(0, 5), data(333_333, 6)],
        vec![data(64, 7), data(64, 8)],
    ]
}

/// Read every item back with `targets` built per item by `shape`.
fn read_back(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    items: &[Vec<Vec<u8>>],
    placed: &[PackedItem],
    compressed: bool,
    opts: &ReadOptions,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut outs: Vec<Vec<u8>> = items
        .iter()
        .map(|segs| vec![0u8; segs.iter().map(|s| s.len()).sum()])
        .collect();
    let mut reads = Vec::new();
    for (i, (out, p)) in outs.iter_mut().zip(placed).enumerate() {
        // Keep the middle of each item; skip (but checksum) a short head.
        let head = out.len().min(3);
        let (_, keep) = out.split_at_mut(head);
        reads.push(ItemRead {
            key: key.to_string(),
            offset: p.offset,
            length: p.length,
            compressed,
            crc32c: p.crc32c,
            label: format!("item-{i}"),
            targets: vec![Target::Skip(head), Target::Into(keep)],
        });
    }
    read_items(store.clone(), reads, opts)?;
    Ok(outs)
}

fn expect(items: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|segs| {
            let mut v = segs.concat();
            let head = v.len().min(3);
            v[..head].fill(0);
            v
        })
        .collect()
}

#[test]
fn plain_items_land_back_to_back_and_read_back() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = sample();
    let placed = write(&store, "p/__0_0.distcp", &items, opts(None, 0));
    let mut next = 0;
    for (p, segs) in placed.iter().zip(&items) {
        let whole = segs.concat();
        assert_eq!(p.offset, next);
        assert_eq!(p.length, whole.len() as u64);
        assert_eq!(p.size, whole.len() as u64);
        assert_eq!(p.crc32c, Some(crc32c(&whole)));
        next += p.length;
    }
    let stored = block_on(store.get("p/__0_0.distcp")).unwrap().unwrap();
    assert_eq!(
        &stored[..],
        &items
            .iter()
            .map(|s| s.concat())
            .collect::<Vec<_>>()
            .concat()[..]
    );
    for ro in [small_reads(), ReadOptions::default()] {
        let got = read_back(&store, "p/__0_0.distcp", &items, &placed, false, &ro).unwrap();
        assert_eq!(got, expect(&items));
    }
}

#[test]
fn compressed_items_are_single_frames_and_read_back() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = sample();
    for workers in [0, 2] {
        let key = format!("c{workers}.distcp");
        let placed = write(&store, &key, &items, opts(Some(3), workers));
        let stored = block_on(store.get(&key)).unwrap().unwrap();
        for (p, segs) in placed.iter().zip(&items) {
            let whole = segs.concat();
            let frame = &stored[p.offset as usize..(p.offset + p.length) as usize];
            // What torch's stock reader does with a `stream.zstd` item.
            assert_eq!(zstd::stream::decode_all(frame).unwrap(), whole);
            assert_eq!(
                zstd::zstd_safe::find_frame_compressed_size(frame).unwrap(),
                frame.len()
            );
            assert_eq!(p.size, whole.len() as u64);
            assert_eq!(p.crc32c, Some(crc32c(&whole)));
        }
        let got = read_back(&store, &key, &items, &placed, true, &small_reads()).unwrap();
        assert_eq!(got, expect(&items));
    }
}

#[test]
fn unrequested_items_and_gaps_are_skipped() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = sample();
    let placed = write(&store, "g.distcp", &items, opts(None, 0));
    // Only items 0 and 3 (a gap of items 1 and 2 between them), in reverse.
    let (a, b) = (items[0].concat(), items[3].concat());
    let (mut ga, mut gb) = (vec![0u8; a.len()], vec![0u8; b.len()]);
    for max_gap in [0, 1 << 20] {
        let reads = vec![
            ItemRead {
                key: "g.distcp".into(),
                offset: placed[3].offset,
                length: placed[3].length,
                compressed: false,
                crc32c: placed[3].crc32c,
                label: "b".into(),
                targets: vec![Target::Into(&mut gb)],
            },
            ItemRead {
                key: "g.distcp".into(),
                offset: placed[0].offset,
                length: placed[0].length,
                compressed: false,
                crc32c: placed[0].crc32c,
                label: "a".into(),
                targets: vec![Target::Into(&mut ga)],
            },
        ];
        let ro = ReadOptions {
            max_gap,
            ..small_reads()
        };
        read_items(store.clone(), reads, &ro).unwrap();
        assert_eq!((&ga, &gb), (&a, &b));
    }
}

#[test]
fn a_flipped_byte_names_the_file_and_item() {
    let mem: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = sample();
    for (level, name) in [(None, "plain.distcp"), (Some(1), "zstd.distcp")] {
        let placed = write(&mem, name, &items, opts(level, 0));
        let item = &placed[3];
        // Reading item 3 alone, the fault's offset (relative to each read)
        // lands inside it.
        let ro = ReadOptions {
            max_gap: 0,
            ..small_reads()
        };
        let fs = FaultStore::new(mem.clone(), vec![Fault::FlipByte { offset: 10 }]);
        let faulty: Arc<dyn ObjectStore> = fs;
        let mut out = vec![0u8; item.size as usize];
        let err = read_items(
            faulty,
            vec![ItemRead {
                key: name.into(),
                offset: item.offset,
                length: item.length,
                compressed: level.is_some(),
                crc32c: item.crc32c,
                label: "model.weight".into(),
                targets: vec![Target::Into(&mut out)],
            }],
            &ro,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Integrity { .. } | Error::Corrupt { .. }),
            "{name}: {msg}"
        );
        assert!(
            msg.contains(name) && msg.contains("item model.weight"),
            "{msg}"
        );
    }
}

#[test]
fn truncated_and_oversized_items_are_corrupt() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = vec![vec![data(100_000, 9)]];
    for (level, compressed) in [(None, false), (Some(2), true)] {
        let placed = write(&store, "t.distcp", &items, opts(level, 0));
        let p = placed[0];
        // The object is shorter than the item says.
        let stored = block_on(store.get("t.distcp")).unwrap().unwrap();
        block_on(store.put(
            "cut.distcp",
            stored.slice(..stored.len() - 7),
            &Default::default(),
        ))
        .unwrap()
        .unwrap();
        let mut out = vec![0u8; p.size as usize];
        let err = read_items(
            store.clone(),
            vec![ItemRead {
                key: "cut.distcp".into(),
                offset: p.offset,
                length: p.length,
                compressed,
                crc32c: p.crc32c,
                label: "x".into(),
                targets: vec![Target::Into(&mut out)],
            }],
            &small_reads(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("cut.distcp (item x)"), "{err}");
        if compressed {
            // Buffers smaller than the frame's content: more bytes than recorded.
            let mut small = vec![0u8; p.size as usize - 1];
            let err = read_items(
                store.clone(),
                vec![ItemRead {
                    key: "t.distcp".into(),
                    offset: p.offset,
                    length: p.length,
                    compressed,
                    crc32c: None,
                    label: "x".into(),
                    targets: vec![Target::Into(&mut small)],
                }],
                &small_reads(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("more than"), "{err}");
        }
    }
}

#[test]
fn local_files_read_into_caller_memory() {
    let dir = tempfile::tempdir().unwrap();
    let loc = crate::store::open_store(
        &format!("file://{}", dir.path().display()),
        &Default::default(),
    )
    .unwrap();
    let key = crate::store::join_key(&loc.key, "__0_0.distcp");
    let items = sample();
    for level in [None, Some(1)] {
        let placed = write(&loc.store, &key, &items, opts(level, 1));
        let got = read_back(
            &loc.store,
            &key,
            &items,
            &placed,
            level.is_some(),
            &small_reads(),
        )
        .unwrap();
        assert_eq!(got, expect(&items));
    }
    // A missing file is NotFound, naming it.
    let mut out = vec![0u8; 4];
    let err = read_items(
        loc.store.clone(),
        vec![ItemRead {
            key: crate::store::join_key(&loc.key, "missing.distcp"),
            offset: 0,
            length: 4,
            compressed: false,
            crc32c: None,
            label: "x".into(),
            targets: vec![Target::Into(&mut out)],
        }],
        &small_reads(),
    )
    .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("missing.distcp"),
        "{err}"
    );
}

#[test]
fn abort_and_failed_items_publish_nothing() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    block_on(async {
        let mut w = PackWriter::open(&store, "a.distcp", opts(Some(1), 0))
            .await
            .unwrap();
        w.write_item(vec![Bytes::from(data(1000, 1))])
            .await
            .unwrap();
        w.abort().await.unwrap();
        assert!(store.head("a.distcp").await.unwrap_err().is_not_found());

        let faulty: Arc<dyn ObjectStore> = FaultStore::new(
            store.clone(),
            vec![Fault::FailNth {
                op: crate::store::faults::Op::Write,
                nth: 2,
            }],
        );
        let mut w = PackWriter::open(&faulty, "f.distcp", opts(None, 0))
            .await
            .unwrap();
        w.write_item(vec![Bytes::from(data(10, 1))]).await.unwrap();
        assert!(w.write_item(vec![Bytes::from(data(10, 2))]).await.is_err());
        assert!(w.write_item(vec![Bytes::from(data(10, 3))]).await.is_err());
        assert!(w.finish().await.is_err());
        assert!(store.head("f.distcp").await.unwrap_err().is_not_found());
    })
    .unwrap();
}
