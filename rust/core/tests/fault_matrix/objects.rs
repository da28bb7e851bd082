//! One-object reads (`get_bytes`, `get_range`, `read_into` in Python): the
//! decoder over a compressed `.zst` object, frames fetched in parallel and
//! each checked, and plain objects read whole or in parallel parts.
//! Plain objects outside a checkpoint carry no CRC32C of ours, so they
//! meet failed and short requests only: a flipped byte in one is beyond
//! any reader to notice (checkpoint and DCP loads check theirs).

use s3dlio_core::codec::ObjectReader;
use s3dlio_core::object::{get_object, put_object, WriteOptions};
use s3dlio_core::store::faults::Fault;
use s3dlio_core::store::Location;
use s3dlio_core::Error;

use super::backends::Backend;
use super::loads::{case, request_faults};
use super::tally::Tally;
use super::{block_on, damage_faults, payload, FRAME};

fn whole(loc: &Location) -> Result<Vec<u8>, Error> {
    block_on(get_object(loc)).map(|b| b.to_vec())
}

/// Open, then decode into one caller buffer (frames in parallel).
fn into(loc: &Location) -> Result<Vec<u8>, Error> {
    block_on(async {
        let r = ObjectReader::open(loc.store.clone(), &loc.key).await?;
        let mut out = vec![0u8; r.logical_size() as usize];
        r.read_into(&mut out, None).await?;
        Ok(out)
    })
}

fn ranges(loc: &Location) -> Result<Vec<u8>, Error> {
    block_on(async {
        let r = ObjectReader::open(loc.store.clone(), &loc.key).await?;
        let size = r.logical_size();
        let mut out = Vec::new();
        for (a, z) in [(0, 3), (3, size / 2 + 1), (size / 2 + 1, size)] {
            out.extend_from_slice(&r.read_range(a..z).await?);
        }
        Ok(out)
    })
}

type ReadPath = fn(&Location) -> Result<Vec<u8>, Error>;

pub fn run(b: &Backend, tally: &mut Tally) {
    let data = payload(456_789, 3);
    for (name, level) in [("obj.zst", Some(1)), ("obj.bin", None)] {
        let loc = b.child(name);
        let mut opts = WriteOptions::with_level(level);
        opts.encode.frame_size = FRAME;
        opts.put = b.put.clone();
        block_on(put_object(&loc, &data, &opts)).expect("put object");
        let paths: [(&str, ReadPath); 3] =
            [("get", whole), ("read_into", into), ("get_range", ranges)];
        for (path_name, path) in paths {
            let what = format!("{} {name} {path_name}", b.name);
            let mut faults = request_faults(b, || path(&loc).map(|_| ()));
            faults.extend(
                damage_faults()
                    .into_iter()
                    .filter(|f| level.is_some() || !matches!(f, Fault::FlipByte { .. })),
            );
            for fault in faults {
                case(b, tally, &what, &fault, None, || path(&loc), &data);
            }
        }
    }
}
