//! Reading committed checkpoints back, every byte checked against the
//! manifest's CRC32C.

use bytes::Bytes;

use super::manifest::{Manifest, ShardMeta};
use super::CheckpointStore;
use crate::codec::ObjectReader;
use crate::crc::crc32c_append;
use crate::error::{Error, Result};
use crate::store::join_key;

/// How many times a load reads a step again after overwrites removed the
/// shards it was reading. Each look repeats only because another
/// generation committed meanwhile; the bound stops a reader that is
/// overtaken forever (a starved process beside a fast overwrite loop took
/// more than 4 looks on a loaded machine).
pub const OVERWRITE_LOOKS: usize = 16;

#[derive(Debug, Clone)]
pub struct CheckpointReader {
    store: CheckpointStore,
}

/// One rank's object of a committed checkpoint, ready for reads.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    pub reader: ObjectReader,
    pub meta: ShardMeta,
}

/// What `verify` found for one shard.
#[derive(Debug, Clone)]
pub struct ShardCheck {
    pub rank: u32,
    pub uri: String,
    pub size: u64,
    pub error: Option<String>,
    /// The failure is bad stored data (CRC mismatch, undecodable), not an
    /// access or network problem.
    pub damaged: bool,
}

impl CheckpointReader {
    pub(crate) fn new(store: CheckpointStore) -> Self {
        CheckpointReader { store }
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    pub async fn manifest(&self, step: u64) -> Result<Manifest> {
        self.store.manifest(step).await
    }

    /// The manifest of the highest committed step.
    pub async fn latest_manifest(&self) -> Result<Manifest> {
        match self.store.latest_step().await? {
            Some(step) => self.store.manifest(step).await,
            None => Err(Error::NotFound {
                uri: format!("{} (no committed checkpoint)", self.store.uri()),
            }),
        }
    }

    pub async fn open_shard(&self, manifest: &Manifest, rank: u32) -> Result<ShardHandle> {
        let dir = self.store.layout.step_dir(manifest.step);
        let meta = manifest
            .shard(rank, &self.store.loc.store.uri(&dir))?
            .clone();
        let key = join_key(&dir, &meta.key);
        let store = self.store.loc.store.clone();
        let reader = match meta.codec {
            crate::codec::Codec::None => {
                ObjectReader::open_plain(store, &key, meta.stored_size, None).await?
            }
            crate::codec::Codec::ZstdSeekable => ObjectReader::open(store, &key).await?,
        };
        if reader.logical_size() != meta.size || reader.stored_size() != meta.stored_size {
            return Err(Error::corrupt(
                reader.uri(),
                format!(
                    "shard of rank {rank} has {} bytes ({} stored), the manifest says {} ({} stored)",
                    reader.logical_size(),
                    reader.stored_size(),
                    meta.size,
                    meta.stored_size
                ),
            ));
        }
        Ok(ShardHandle { reader, meta })
    }

    /// A rank's whole shard, verified.
    /// An overwrite committing while this reads removes the shards read
    /// from: the step is then read again, whole, from the new generation,
    /// so a reader gets the old data or the new, never `NotFound`.
    pub async fn read_shard(&self, step: u64, rank: u32) -> Result<Bytes> {
        let mut last = None;
        for _ in 0..OVERWRITE_LOOKS {
            let manifest = self.manifest(step).await?;
            let read = async {
                let h = self.open_shard(&manifest, rank).await?;
                h.reader.read_all(Some(h.meta.crc32c)).await
            };
            match read.await {
                Err(e) if e.is_not_found() && self.replaced(&manifest).await? => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound {
            uri: self.store.uri(),
        }))
    }

    /// Whether a newer generation of `manifest`'s step has committed since.
    pub async fn replaced(&self, manifest: &Manifest) -> Result<bool> {
        Ok(self.store.manifest(manifest.step).await?.generation != manifest.generation)
    }

    /// Re-read every shard of `step` and check its CRC32C.
    pub async fn verify(&self, step: u64) -> Result<Vec<ShardCheck>> {
        let manifest = self.manifest(step).await?;
        let mut out = Vec::new();
        for s in &manifest.shards {
            let uri = self
                .store
                .loc
                .store
                .uri(&join_key(&self.store.layout.step_dir(step), &s.key));
            let (error, damaged) = match self.verify_shard(&manifest, s.rank).await {
                Ok(()) => (None, false),
                Err(e) => {
                    let damaged = matches!(e, Error::Integrity { .. } | Error::Corrupt { .. });
                    (Some(e.to_string()), damaged)
                }
            };
            out.push(ShardCheck {
                rank: s.rank,
                uri,
                size: s.size,
                error,
                damaged,
            });
        }
        Ok(out)
    }

    /// Stream a shard in pieces so verifying needs no memory for it whole.
    async fn verify_shard(&self, manifest: &Manifest, rank: u32) -> Result<()> {
        const PIECE: u64 = 64 << 20;
        let h = self.open_shard(manifest, rank).await?;
        let mut crc = 0u32;
        let mut pos = 0u64;
        while pos < h.meta.size {
            let end = (pos + PIECE).min(h.meta.size);
            crc = crc32c_append(crc, &h.reader.read_range(pos..end).await?);
            pos = end;
        }
        if crc != h.meta.crc32c {
            return Err(Error::Integrity {
                uri: h.reader.uri(),
                offset: 0,
                expected: h.meta.crc32c,
                actual: crc,
            });
        }
        Ok(())
    }
}
