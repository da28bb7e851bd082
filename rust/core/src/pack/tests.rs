use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::crc::crc32c;
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
            out.push(w.write_item(segs, None).await.unwrap());
        }
        w.finish().await.unwrap();
        out
    })
    .unwrap()
}

fn enc(compressed: bool) -> Encoding {
    if compressed {
        Encoding::Zstd
    } else {
        Encoding::Plain
    }
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
            encoding: enc(compressed),
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
                encoding: Encoding::Plain,
                crc32c: placed[3].crc32c,
                label: "b".into(),
                targets: vec![Target::Into(&mut gb)],
            },
            ItemRead {
                key: "g.distcp".into(),
                offset: placed[0].offset,
                length: placed[0].length,
                encoding: Encoding::Plain,
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
                encoding: enc(level.is_some()),
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
        let p = placed[0].clone();
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
                encoding: enc(compressed),
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
                    encoding: enc(compressed),
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

/// A `file://` store rooted at `dir`.
fn local_store(dir: &tempfile::TempDir) -> crate::store::Location {
    crate::store::open_store(
        &format!("file://{}", dir.path().display()),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn local_files_read_into_caller_memory() {
    let dir = tempfile::tempdir().unwrap();
    let loc = local_store(&dir);
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
            encoding: Encoding::Plain,
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
        w.write_item(vec![Bytes::from(data(1000, 1))], None)
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
        w.write_item(vec![Bytes::from(data(10, 1))], None)
            .await
            .unwrap();
        assert!(w
            .write_item(vec![Bytes::from(data(10, 2))], None)
            .await
            .is_err());
        assert!(w
            .write_item(vec![Bytes::from(data(10, 3))], None)
            .await
            .is_err());
        assert!(w.finish().await.is_err());
        assert!(store.head("f.distcp").await.unwrap_err().is_not_found());
    })
    .unwrap();
}

/// Little-endian floats of `width` bytes that look like weights: smooth
/// values plus noise, so the exponent bytes repeat and mantissas do not.
fn floats(n: usize, width: usize, seed: u32) -> Vec<u8> {
    let mut rng = crate::test_rng::XorShift32::new(seed);
    (0..n)
        .flat_map(|i| {
            let noise = rng.next_u32() as f64 / u32::MAX as f64 - 0.5;
            let v = ((i as f64) * 0.001).sin() * 0.05 + noise * 1e-3;
            match width {
                2 => ((v as f32).to_bits() >> 16).to_le_bytes()[..2].to_vec(),
                4 => (v as f32).to_le_bytes().to_vec(),
                _ => v.to_le_bytes().to_vec(),
            }
        })
        .collect()
}

fn write_grouped(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    items: &[(Vec<Vec<u8>>, Option<GroupRequest>)],
    opts: PackOptions,
) -> Result<Vec<PackedItem>, Error> {
    block_on(async {
        let mut w = PackWriter::open(store, key, opts).await?;
        let mut out = Vec::new();
        for (segs, group) in items {
            let segs = segs.iter().map(|s| Bytes::copy_from_slice(s)).collect();
            out.push(w.write_item(segs, *group).await?);
        }
        w.finish().await?;
        Ok(out)
    })
    .unwrap()
}

/// Header, floats, trailer: the shape of a DCP tensor item.
fn tensor_item(floats_len: usize, width: usize, seed: u32) -> (Vec<Vec<u8>>, Option<GroupRequest>) {
    (
        vec![
            data(701, seed),
            floats(floats_len, width, seed),
            data(333, seed + 1),
        ],
        Some(GroupRequest { segment: 1, width }),
    )
}

fn read_grouped(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    placed: &PackedItem,
    cuts: &[usize],
    skip: Option<usize>,
) -> Result<Vec<u8>, Error> {
    // Targets cut at `cuts` (logical offsets); the run numbered `skip` is
    // read but not kept (left zero).
    let mut out = vec![0u8; placed.size as usize];
    let mut targets = Vec::new();
    let mut rest: &mut [u8] = &mut out;
    let mut at = 0;
    for (k, &cut) in cuts.iter().chain([placed.size as usize].iter()).enumerate() {
        let (head, tail) = rest.split_at_mut(cut - at);
        targets.push(if skip == Some(k) {
            Target::Skip(head.len())
        } else {
            Target::Into(head)
        });
        rest = tail;
        at = cut;
    }
    let encoding = match placed.grouping {
        Some(g) => Encoding::Grouped(g),
        None => Encoding::Zstd,
    };
    read_items(
        store.clone(),
        vec![ItemRead {
            key: key.into(),
            offset: placed.offset,
            length: placed.length,
            encoding,
            crc32c: placed.crc32c,
            label: "w".into(),
            targets,
        }],
        &small_reads(),
    )?;
    Ok(out)
}

#[test]
fn grouped_items_restore_exactly_for_every_width_and_target_shape() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    // Runs spanning several data frames (plus a partial last one), tiny
    // and empty runs, and a plain item among them.
    let mut items = Vec::new();
    for (k, width) in [2usize, 4, 8].into_iter().enumerate() {
        items.push(tensor_item(
            (GROUP_FRAME * 2 + 4096) / width + 3,
            width,
            k as u32,
        ));
        items.push(tensor_item(5, width, 10 + k as u32));
        items.push(tensor_item(0, width, 20 + k as u32));
    }
    items.push((vec![data(5000, 7)], None));
    for workers in [0, 3] {
        let placed = write_grouped(&store, "g.distcp", &items, opts(Some(1), workers)).unwrap();
        for (p, (segs, group)) in placed.iter().zip(&items) {
            let whole = segs.concat();
            assert_eq!(p.size, whole.len() as u64);
            assert_eq!(p.crc32c, Some(crc32c(&whole)));
            match (group, p.grouping) {
                (Some(g), Some(got)) => {
                    assert_eq!(got.start, 701);
                    assert_eq!(got.length, segs[1].len() as u64);
                    assert_eq!((got.width, got.frame), (g.width, GROUP_FRAME));
                }
                (None, None) => {}
                other => panic!("grouping {other:?}"),
            }
            let size = whole.len();
            // Whole; cut inside the header and inside a data frame; a
            // skipped run across the header/floats border.
            for (cuts, skip) in [
                (vec![], None),
                (vec![3, 1000.min(size), (GROUP_FRAME + 77).min(size)], None),
                (vec![600, 900.min(size)], Some(1)),
            ] {
                let got = read_grouped(&store, "g.distcp", p, &cuts, skip).unwrap();
                let mut want = whole.clone();
                if let Some(k) = skip {
                    let bounds: Vec<usize> =
                        [0].into_iter().chain(cuts.clone()).chain([size]).collect();
                    want[bounds[k]..bounds[k + 1]].fill(0);
                }
                assert!(
                    got == want,
                    "width {:?} cuts {cuts:?}",
                    group.map(|g| g.width)
                );
            }
        }
    }
}

#[test]
fn grouped_floats_store_smaller_than_one_zstd_frame() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    for width in [2, 4] {
        let item = tensor_item(1 << 20, width, 5);
        let grouped =
            write_grouped(&store, "a", std::slice::from_ref(&item), opts(Some(3), 0)).unwrap();
        let plain =
            write_grouped(&store, "b", &[(item.0.clone(), None)], opts(Some(3), 0)).unwrap();
        assert!(
            (grouped[0].length as f64) < 0.95 * plain[0].length as f64,
            "width {width}: grouped {} vs plain {}",
            grouped[0].length,
            plain[0].length
        );
        // Any zstd decoder reads the item, but gets the planes, not the floats.
        let stored = block_on(store.get("a")).unwrap().unwrap();
        let decoded = zstd::stream::decode_all(&stored[..]).unwrap();
        assert_eq!(decoded.len(), item.0.concat().len());
        assert_ne!(decoded, item.0.concat());
    }
}

#[test]
fn grouping_needs_compression_and_a_real_segment() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let err = write_grouped(&store, "n", &[tensor_item(100, 4, 1)], opts(None, 0)).unwrap_err();
    assert!(err.to_string().contains("needs compression"), "{err}");
    let bad = (
        vec![data(10, 1)],
        Some(GroupRequest {
            segment: 3,
            width: 4,
        }),
    );
    let err = write_grouped(&store, "s", &[bad], opts(Some(1), 0)).unwrap_err();
    assert!(err.to_string().contains("segment 3"), "{err}");
    let bad = (
        vec![data(12, 1)],
        Some(GroupRequest {
            segment: 0,
            width: 3,
        }),
    );
    let err = write_grouped(&store, "w", &[bad], opts(Some(1), 0)).unwrap_err();
    assert!(err.to_string().contains("width 3"), "{err}");
    assert!(block_on(store.list("")).unwrap().unwrap().is_empty());
}

#[test]
fn damaged_grouped_item_is_an_error_naming_it() {
    let mem: Arc<dyn ObjectStore> = MemoryStore::new();
    let items = [tensor_item(300_000, 4, 3)];
    let placed = write_grouped(&mem, "d.distcp", &items, opts(Some(1), 0)).unwrap();
    let stored = block_on(mem.get("d.distcp")).unwrap().unwrap();
    for at in [
        placed[0].length as usize / 2,
        50,
        placed[0].length as usize - 3,
    ] {
        let mut bad = stored.to_vec();
        bad[at] ^= 0x10;
        block_on(mem.put("bad.distcp", Bytes::from(bad), &Default::default()))
            .unwrap()
            .unwrap();
        let err = read_grouped(&mem, "bad.distcp", &placed[0], &[], None).unwrap_err();
        assert!(
            matches!(err, Error::Integrity { .. } | Error::Corrupt { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad.distcp (item w)"), "{err}");
    }
    // A recorded run that does not fit the item is refused up front.
    let mut wrong = placed[0].clone();
    if let Some(g) = wrong.grouping.as_mut() {
        g.length += 1000;
    }
    let err = read_grouped(&mem, "d.distcp", &wrong, &[], None).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

/// Items written in place on a local file: byte-identical to the streamed
/// form, placed back to back after items written the streamed way, with the
/// same CRC32Cs; batches larger than one vectored write (more than 1024
/// buffers, items larger than a block) included.
#[test]
fn in_place_items_on_local_files_match_the_streamed_form() {
    let dir = tempfile::tempdir().unwrap();
    let loc = local_store(&dir);
    let key = crate::store::join_key(&loc.key, "__0_0.distcp");
    let mut items = sample();
    items.push(vec![data(3 << 20, 9), data(17, 10)]);
    items.extend((0..1500).map(|i| vec![data(i % 7, i as u32), data(3, 11)]));
    let (first, rest) = items.split_at(2);
    let mut w = block_on(PackWriter::open(&loc.store, &key, opts(None, 0)))
        .unwrap()
        .unwrap();
    assert!(w.writes_in_place());
    let mut placed = Vec::new();
    for segs in first {
        let segs = segs.iter().map(|s| Bytes::copy_from_slice(s)).collect();
        placed.push(block_on(w.write_item(segs, None)).unwrap().unwrap());
    }
    let borrowed: Vec<Vec<&[u8]>> = rest
        .iter()
        .map(|segs| segs.iter().map(|s| &s[..]).collect())
        .collect();
    let (a, b) = borrowed.split_at(3);
    placed.extend(w.write_items_in_place(a).unwrap());
    placed.extend(w.write_items_in_place(&[]).unwrap());
    placed.extend(w.write_items_in_place(b).unwrap());
    // Nothing under the final name before finish.
    assert!(block_on(loc.store.head(&key)).unwrap().is_err());
    block_on(w.finish()).unwrap().unwrap();

    let mut next = 0;
    for (p, segs) in placed.iter().zip(&items) {
        let whole = segs.concat();
        assert_eq!(
            (p.offset, p.length, p.size),
            (next, whole.len() as u64, whole.len() as u64)
        );
        assert_eq!(p.crc32c, Some(crc32c(&whole)));
        assert_eq!(p.grouping, None);
        next += p.length;
    }
    let stored = block_on(loc.store.get(&key)).unwrap().unwrap();
    let all: Vec<u8> = items
        .iter()
        .map(|s| s.concat())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(stored.len(), all.len());
    assert!(stored[..] == all[..]);
    let got = read_back(&loc.store, &key, &items, &placed, false, &small_reads()).unwrap();
    assert_eq!(got, expect(&items));
    // Preallocation leaves no slack after the last byte.
    let on_disk = std::fs::metadata(crate::store::posix::key_path(&key)).unwrap();
    assert_eq!(on_disk.len(), all.len() as u64);
}

/// In-place writes only where they are exact: not when compressing, not
/// on stores that cannot take borrowed memory (memory, fault-injecting
/// wrappers), and an aborted in-place writer publishes nothing.
#[test]
fn in_place_writes_only_where_supported_and_abort_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loc = local_store(&dir);
    let key = crate::store::join_key(&loc.key, "a.distcp");
    let memory: Arc<dyn ObjectStore> = MemoryStore::new();
    let wrapped: Arc<dyn ObjectStore> = FaultStore::new(loc.store.clone(), vec![]);
    for (store, level) in [(&loc.store, Some(1)), (&memory, None)] {
        let mut w = block_on(PackWriter::open(store, &key, opts(level, 0)))
            .unwrap()
            .unwrap();
        assert!(!w.writes_in_place());
        assert!(w.write_items_in_place(&[vec![b"x".as_slice()]]).is_err());
        block_on(w.abort()).unwrap().unwrap();
    }
    // A wrapper forwards the writer's blocking form: a wrapped local store
    // writes in place like the store itself (it used to fall back).
    let mut w = block_on(PackWriter::open(&wrapped, &key, opts(None, 0)))
        .unwrap()
        .unwrap();
    assert!(w.writes_in_place());
    block_on(w.abort()).unwrap().unwrap();
    let mut w = block_on(PackWriter::open(&loc.store, &key, opts(None, 0)))
        .unwrap()
        .unwrap();
    let item = data(2 << 20, 3);
    let placed = w.write_items_in_place(&[vec![&item[..]]]).unwrap();
    assert_eq!(placed[0].crc32c, Some(crc32c(&item)));
    block_on(w.abort()).unwrap().unwrap();
    assert!(block_on(loc.store.head(&key)).unwrap().is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Without checksums no CRC32C is recorded.
    let mut w = block_on(PackWriter::open(
        &loc.store,
        &key,
        PackOptions {
            checksum: false,
            ..opts(None, 0)
        },
    ))
    .unwrap()
    .unwrap();
    assert_eq!(
        w.write_items_in_place(&[vec![&item[..]]]).unwrap()[0].crc32c,
        None
    );
    block_on(w.finish()).unwrap().unwrap();
}

/// Each data frame a byte-grouped item lists reads alone, as a grouped
/// item of its own, with its own CRC32C: what a reader needing part of a
/// large item relies on.
#[test]
fn each_grouped_data_frame_reads_alone() {
    let store: Arc<dyn ObjectStore> = MemoryStore::new();
    let run = floats((GROUP_FRAME * 2 + 1000) / 4, 4, 9);
    let item = (
        vec![run.clone()],
        Some(GroupRequest {
            segment: 0,
            width: 4,
        }),
    );
    for workers in [0, 2] {
        let placed = write_grouped(
            &store,
            "f",
            std::slice::from_ref(&item),
            opts(Some(1), workers),
        )
        .unwrap();
        let p = &placed[0];
        assert_eq!(p.frames.len(), 3);
        assert_eq!(p.frames.iter().map(|f| f.stored).sum::<u64>(), p.length);
        let mut at = p.offset;
        for (k, f) in p.frames.iter().enumerate() {
            let lo = k * GROUP_FRAME;
            let hi = (lo + GROUP_FRAME).min(run.len());
            assert_eq!(f.crc32c, crc32c(&run[lo..hi]));
            let mut out = vec![0u8; hi - lo];
            read_items(
                store.clone(),
                vec![ItemRead {
                    key: "f".into(),
                    offset: at,
                    length: f.stored,
                    encoding: Encoding::Grouped(Grouping {
                        start: 0,
                        length: (hi - lo) as u64,
                        width: 4,
                        frame: GROUP_FRAME,
                    }),
                    crc32c: Some(f.crc32c),
                    label: format!("frame {k}"),
                    targets: vec![Target::Into(&mut out)],
                }],
                &small_reads(),
            )
            .unwrap();
            assert!(out == run[lo..hi], "frame {k}");
            at += f.stored;
        }
    }
}
