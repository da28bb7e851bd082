//! Checkpoint loads under faults, through each path users take: the core's
//! `read_shard`, the Python `load`/`read_shard_into` path (manifest, open,
//! `read_into` with the manifest's CRC32C), ranged reads of a compressed
//! shard (`ShardFile`, frames checked one by one) and `verify`.

use s3dlio_core::checkpoint::CheckpointStore;
use s3dlio_core::codec::Codec;
use s3dlio_core::store::faults::{Fault, Op};
use s3dlio_core::Error;

use super::backends::Backend;
use super::tally::Tally;
use super::{block_on, checkpoint_store, damage_faults, payload, save, LEVELS};

const STEP: u64 = 7;
const MAX_NTH: usize = 4;

/// Where damage goes: everything, or one kind of object of the step.
const SCOPES: [Option<&str>; 4] = [None, Some("rank-"), Some("manifest"), Some("COMMITTED")];

/// The damage faults that can reach objects of `scope`: the manifest and
/// the commit record are JSON of well under a KiB.
fn damage_in(scope: Option<&str>) -> Vec<Fault> {
    let small = matches!(scope, Some("manifest" | "COMMITTED"));
    damage_faults()
        .into_iter()
        .filter(|f| {
            !small
                || matches!(f, Fault::TruncateReads { keep } | Fault::FlipByte { offset: keep } if *keep < 1024)
        })
        .collect()
}

type LoadPath = fn(&CheckpointStore) -> Result<Vec<u8>, Error>;

fn read_shard(store: &CheckpointStore) -> Result<Vec<u8>, Error> {
    block_on(store.reader().read_shard(STEP, 0)).map(|b| b.to_vec())
}

/// `PyCheckpointStore.load`: manifest, open, then `read_into` the
/// caller's buffer checked against the manifest.
fn load_into(store: &CheckpointStore) -> Result<Vec<u8>, Error> {
    block_on(async {
        let reader = store.reader();
        let manifest = reader.manifest(STEP).await?;
        let h = reader.open_shard(&manifest, 0).await?;
        let mut out = vec![0u8; h.meta.size as usize];
        h.reader.read_into(&mut out, Some(h.meta.crc32c)).await?;
        Ok(out)
    })
}

/// A compressed shard read in uneven ranges (each frame's CRC32C checked);
/// plain shards are checked over a whole pass by `ShardFile`, not per range.
fn ranges(store: &CheckpointStore) -> Result<Vec<u8>, Error> {
    block_on(async {
        let reader = store.reader();
        let manifest = reader.manifest(STEP).await?;
        let h = reader.open_shard(&manifest, 0).await?;
        let size = h.meta.size;
        let mut out = Vec::new();
        for (a, z) in [
            (0, 1),
            (1, size / 3),
            (size / 3, size - 5),
            (size - 5, size),
        ] {
            out.extend_from_slice(&h.reader.read_range(a..z).await?);
        }
        Ok(out)
    })
}

/// `verify`: every shard re-read and checked; its report as a result.
fn verify(store: &CheckpointStore) -> Result<(), Error> {
    let checks = block_on(store.reader().verify(STEP))?;
    for c in checks {
        if let Some(reason) = c.error {
            return Err(if c.damaged {
                Error::corrupt(c.uri, reason)
            } else {
                Error::backend(c.uri, reason, false)
            });
        }
    }
    Ok(())
}

pub fn run(b: &Backend, tally: &mut Tally) {
    for level in LEVELS {
        let store = checkpoint_store(b, &format!("load-{}", level.unwrap_or(0)), level);
        let data = payload(333_333, 9);
        // Generation 1 (COMMITTED.g1), so loads go through an overwrite's records.
        block_on(save(&store, STEP, &payload(1000, 1), false)).expect("save");
        block_on(save(&store, STEP, &data, true)).expect("overwrite");
        let mut paths: Vec<(&str, LoadPath)> =
            vec![("read_shard", read_shard), ("load", load_into)];
        if level.is_some() {
            paths.push(("read_range", ranges));
        }
        let manifest = block_on(store.manifest(STEP)).expect("manifest");
        assert_eq!(
            manifest.shards[0].codec,
            if level.is_some() {
                Codec::ZstdSeekable
            } else {
                Codec::None
            }
        );
        for (name, path) in paths {
            let what = format!("{} level {level:?} {name}", b.name);
            for fault in request_faults(b, || path(&store).map(|_| ())) {
                case(b, tally, &what, &fault, None, || path(&store), &data);
            }
            for scope in SCOPES {
                for fault in damage_in(scope) {
                    case(b, tally, &what, &fault, scope, || path(&store), &data);
                }
            }
        }
        let what = format!("{} level {level:?} verify", b.name);
        let faults: Vec<(Fault, Option<&str>)> = request_faults(b, || verify(&store))
            .into_iter()
            .map(|f| (f, None))
            .chain(
                SCOPES
                    .iter()
                    .flat_map(|s| damage_in(*s).into_iter().map(move |f| (f, *s))),
            )
            .collect();
        for (fault, scope) in faults {
            // Verify hands back no bytes: passing means its CRC32C matched.
            case(
                b,
                tally,
                &what,
                &fault,
                scope,
                || verify(&store).map(|()| data.clone()),
                &data,
            );
        }
    }
}

/// `FailNth` at every request position (up to `MAX_NTH` per operation) a
/// clean run of `path` makes, plus a small delay on every request.
pub fn request_faults(b: &Backend, path: impl Fn() -> Result<(), Error>) -> Vec<Fault> {
    b.faults.set_scope(None);
    b.faults.set_faults(Vec::new());
    path().expect("clean run");
    let mut out = vec![Fault::Delay(std::time::Duration::from_millis(2))];
    for op in [Op::Get, Op::Head, Op::List] {
        for nth in 1..=b.faults.calls(op).min(MAX_NTH) {
            out.push(Fault::FailNth { op, nth });
        }
    }
    out
}

/// One faulted run of `path`, judged.
pub fn case(
    b: &Backend,
    tally: &mut Tally,
    what: &str,
    fault: &Fault,
    scope: Option<&str>,
    path: impl Fn() -> Result<Vec<u8>, Error>,
    want: &[u8],
) {
    let before = b.faults.injected();
    b.faults.set_scope(scope);
    b.faults.set_faults(vec![fault.clone()]);
    let got = path();
    b.faults.set_faults(Vec::new());
    b.faults.set_scope(None);
    let fired = b.faults.injected() - before;
    if fired == 0 {
        // Nothing in scope was long enough to damage: not a case.
        assert!(
            got.as_deref().is_ok_and(|g| g == want),
            "{what} with {fault:?} on {scope:?}: no fault, yet {got:?}",
            got = got.map(|g| g.len())
        );
        return;
    }
    tally.injected += fired;
    tally.read(
        &format!("{what} with {fault:?} on {scope:?}"),
        got,
        want,
        &b.base_uri(),
    );
}
