//! DCP data files: items packed by `PackWriter` (plain, one zstd frame,
//! byte-grouped floats) read back by `read_items`, the reader behind
//! `S3DlioReader` (coalesced ranged reads into caller buffers, a CRC32C per
//! item), under every fault; and files really cut short on the store,
//! down to empty, which must read as damage naming the item.

use bytes::Bytes;
use s3dlio_core::pack::{
    read_items, Encoding, GroupRequest, ItemRead, PackOptions, PackWriter, PackedItem, ReadOptions,
    Target,
};
use s3dlio_core::store::Location;
use s3dlio_core::Error;

use super::backends::Backend;
use super::loads::{case, request_faults};
use super::tally::Tally;
use super::{block_on, damage_faults, payload};

/// Item sizes: small ones coalesce into one request, the large one spans
/// several `part_size` reads; an empty item reads nothing.
const SIZES: [usize; 5] = [1_000, 0, 150_000, 7, 90_004];

fn write(loc: &Location, level: Option<i32>, items: &[Vec<u8>]) -> Vec<PackedItem> {
    block_on(async {
        let opts = PackOptions {
            level,
            piece_size: 64 << 10,
            ..Default::default()
        };
        let mut w = PackWriter::open(&loc.store, &loc.key, opts).await?;
        let mut placed = Vec::new();
        for item in items {
            // The large float item goes byte-grouped when compressing.
            let group = (level.is_some() && item.len() == 90_004).then_some(GroupRequest {
                segment: 0,
                width: 4,
            });
            placed.push(w.write_item(vec![Bytes::from(item.clone())], group).await?);
        }
        w.finish().await?;
        Ok::<_, Error>(placed)
    })
    .expect("write pack")
}

/// `read_items` of every item into fresh buffers, concatenated.
fn read(loc: &Location, level: Option<i32>, placed: &[PackedItem]) -> Result<Vec<u8>, Error> {
    let mut bufs: Vec<Vec<u8>> = placed.iter().map(|p| vec![0u8; p.size as usize]).collect();
    let reads = placed
        .iter()
        .zip(bufs.iter_mut())
        .enumerate()
        .map(|(i, (p, buf))| ItemRead {
            key: loc.key.clone(),
            offset: p.offset,
            length: p.length,
            encoding: match (level, p.grouping) {
                (_, Some(g)) => Encoding::Grouped(g),
                (Some(_), None) => Encoding::Zstd,
                (None, None) => Encoding::Plain,
            },
            crc32c: p.crc32c,
            label: format!("item-{i}"),
            targets: vec![Target::Into(buf.as_mut_slice())],
        })
        .collect();
    let opts = ReadOptions {
        threads: 2,
        part_size: 64 << 10,
        max_gap: 4096,
    };
    read_items(loc.store.clone(), reads, &opts)?;
    Ok(bufs.concat())
}

pub fn run(b: &Backend, tally: &mut Tally) {
    let items: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, n)| payload(*n, 40 + i as u8))
        .collect();
    let want = items.concat();
    for (name, level) in [("__0_0.plain.distcp", None), ("__0_0.zstd.distcp", Some(1))] {
        let loc = b.child(name);
        let placed = write(&loc, level, &items);
        let what = format!("{} {name} read_items", b.name);
        let mut faults = request_faults(b, || read(&loc, level, &placed).map(|_| ()));
        faults.extend(damage_faults());
        for fault in faults {
            case(
                b,
                tally,
                &what,
                &fault,
                None,
                || read(&loc, level, &placed),
                &want,
            );
        }
        cut_short(b, tally, &loc, level, &placed, &what);
    }
}

/// The file really shorter on the store (an interrupted copy, a truncated
/// disk): every cut is damage naming an item, never bad input.
fn cut_short(
    b: &Backend,
    tally: &mut Tally,
    loc: &Location,
    level: Option<i32>,
    placed: &[PackedItem],
    what: &str,
) {
    let whole = block_on(b.raw.get(&loc.key)).expect("stored bytes");
    for keep in [0, 1, whole.len() / 2, whole.len() - 1] {
        block_on(b.raw.put(&loc.key, whole.slice(..keep), &b.put)).expect("cut");
        let got = read(loc, level, placed);
        let label = format!("{what}, file cut to {keep} of {} bytes", whole.len());
        let names_item = match &got {
            Err(e @ (Error::Corrupt { .. } | Error::Integrity { .. })) => {
                e.to_string().contains("(item item-")
            }
            _ => true,
        };
        tally.check(names_item, || format!("{label}: names no item: {got:?}"));
        tally.read(&label, got, &[], &b.base_uri());
    }
    block_on(b.raw.put(&loc.key, whole, &b.put)).expect("restore");
}
