//! One rank's side of a save: stream the rank's object, record it, and on
//! rank 0 commit the whole checkpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::layout::check_rank;
use super::layout::Layout;
use super::manifest::{CommitRecord, Manifest, ShardMeta, FORMAT};
use super::CheckpointStore;
use crate::codec::{Codec, EncodeOptions, EncodingWriter};
use crate::error::{Error, Result};
use crate::store::join_key;

/// Pause between looks for missing shard records while finalizing.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct CheckpointWriter {
    store: CheckpointStore,
    rank: u32,
    world_size: u32,
    overwrite: bool,
}

impl CheckpointWriter {
    pub(crate) fn new(
        store: CheckpointStore,
        world_size: i64,
        rank: i64,
        overwrite: bool,
    ) -> Result<Self> {
        let (rank, world_size) = check_rank(rank, world_size)?;
        Ok(CheckpointWriter {
            store,
            rank,
            world_size,
            overwrite,
        })
    }

    pub fn rank(&self) -> u32 {
        self.rank
    }

    pub fn world_size(&self) -> u32 {
        self.world_size
    }

    /// The generation a new save of `step` gets: 0, or one past the
    /// committed one when overwriting. Refuses an existing step unless
    /// overwriting, before anything is written.
    async fn next_generation(&self, step: u64) -> Result<(u64, Option<(Manifest, String)>)> {
        if !self.store.is_committed(step).await? {
            return Ok((0, None));
        }
        if !self.overwrite {
            return Err(Error::AlreadyExists {
                uri: format!(
                    "{} (checkpoint step {step} is already committed; pass overwrite=True to replace it)",
                    self.store.loc.store.uri(&self.store.layout.step_dir(step))
                ),
            });
        }
        let current = self.store.committed_manifest(step).await?;
        Ok((current.0.generation + 1, Some(current)))
    }

    /// Open this rank's object for `step`; write with `ShardStream::write*`.
    pub async fn shard_stream(&self, step: u64) -> Result<ShardStream> {
        self.shard_stream_with(step, &self.store.write.encode).await
    }

    /// [`Self::shard_stream`] with this shard's own encoding (the store's
    /// with a byte group for the shard's dtype, say). The level decides the
    /// object name, so it must be the store's.
    pub async fn shard_stream_with(
        &self,
        step: u64,
        encode: &EncodeOptions,
    ) -> Result<ShardStream> {
        if encode.level != self.store.write.encode.level {
            return Err(Error::invalid(format!(
                "shard encoding level {:?} differs from the checkpoint store's {:?}",
                encode.level, self.store.write.encode.level
            )));
        }
        let (generation, _) = self.next_generation(step).await?;
        let compressed = self.store.write.encode.level.is_some();
        // A name of this save's own: a concurrent save of the same step
        // never writes over it.
        let tag = super::layout::save_tag();
        let name = self
            .store
            .layout
            .shard_name(step, self.rank, self.world_size, &tag, compressed);
        let key = join_key(&self.store.layout.step_dir(step), &name);
        let loc = crate::store::Location {
            store: self.store.loc.store.clone(),
            key,
        };
        let opts = crate::object::WriteOptions {
            encode: encode.clone(),
            put: self.store.write.put.clone(),
        };
        let writer = crate::object::open_writer(&loc, &opts).await?;
        Ok(ShardStream {
            writer,
            store: self.store.clone(),
            record: ShardMeta {
                rank: self.rank,
                world_size: self.world_size,
                step,
                generation,
                key: name,
                size: 0,
                stored_size: 0,
                crc32c: 0,
                codec: if compressed {
                    Codec::ZstdSeekable
                } else {
                    Codec::None
                },
                level: self.store.write.encode.level,
                byte_group: None,
            },
        })
    }

    /// Write this rank's whole shard from memory.
    pub async fn save_shard(&self, step: u64, data: &[u8]) -> Result<ShardMeta> {
        self.save_shard_with(step, data, &self.store.write.encode)
            .await
    }

    /// [`Self::save_shard`] with this shard's own encoding; an automatic
    /// byte group that does not fit `data` is turned off first.
    pub async fn save_shard_with(
        &self,
        step: u64,
        data: &[u8],
        encode: &EncodeOptions,
    ) -> Result<ShardMeta> {
        let uri = self.store.uri();
        let encode = encode.for_size(&uri, data.len() as u64)?;
        let mut stream = self.shard_stream_with(step, &encode).await?;
        if let Err(e) = stream.write_slice(data).await {
            stream.abort().await?;
            return Err(e);
        }
        stream.finish().await
    }

    /// Commit `step` (rank 0). `shards` are the records every rank returned
    /// (gathered by the caller's framework); `None` reads the records the
    /// ranks stored, waiting up to `wait` for missing ones.
    pub async fn finalize(
        &self,
        step: u64,
        epoch: u64,
        framework: &str,
        shards: Option<Vec<ShardMeta>>,
        user_meta: serde_json::Value,
        wait: Duration,
    ) -> Result<Manifest> {
        if self.rank != 0 {
            return Err(Error::invalid(format!(
                "finalize_distributed_checkpoint must run on rank 0, not rank {}",
                self.rank
            )));
        }
        let (generation, replaced) = self.next_generation(step).await?;
        let shards = match shards {
            Some(s) => s,
            None => self.gather_records(step, generation, wait).await?,
        };
        // Shards written for an older generation: another save of this
        // step committed while they were being written. It won; this one
        // is told so, as when both reach the commit record together.
        if let Some(s) = shards
            .iter()
            .find(|s| s.step == step && s.generation < generation)
        {
            return Err(Error::AlreadyExists {
                uri: format!(
                    "{} (another save committed step {step} (generation {}) while this one was writing generation {}; this save was not committed, the other one is kept)",
                    self.store.loc.store.uri(&self.store.layout.step_dir(step)),
                    generation - 1,
                    s.generation
                ),
            });
        }
        let shards = self.check_shards(step, generation, shards).await?;
        let manifest = Manifest {
            format: FORMAT.to_string(),
            step,
            epoch,
            framework: framework.to_string(),
            world_size: self.world_size,
            generation,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            logical_size: shards.iter().map(|s| s.size).sum(),
            stored_size: shards.iter().map(|s| s.stored_size).sum(),
            shards,
            user_meta,
        };
        let layout = &self.store.layout;
        let store = &self.store.loc.store;
        let fsync = crate::store::PutOptions {
            fsync: true,
            ..Default::default()
        };
        // The manifest goes under a name of this save's own; the one
        // put_if_absent of this generation's commit record decides which
        // save of the step wins.
        let manifest_bytes = manifest.to_json()?;
        let manifest_name = Layout::manifest_name(&super::layout::save_tag());
        let dir = layout.step_dir(step);
        let manifest_key = join_key(&dir, &manifest_name);
        let record = CommitRecord {
            step,
            generation,
            manifest: Some(manifest_name.clone()),
            manifest_size: Some(manifest_bytes.len() as u64),
            manifest_crc32c: Some(crate::codec::crc::crc32c(&manifest_bytes)),
        };
        store
            .put(&manifest_key, Bytes::from(manifest_bytes), &fsync)
            .await?;
        let record_key = layout.commit_record(step, generation);
        let created = store
            .put_if_absent(&record_key, Bytes::from(record.to_json()?))
            .await?;
        if !created {
            self.remove_lost(step, &manifest, &manifest_name).await;
            return Err(Error::AlreadyExists {
                uri: format!(
                    "{} (another save committed step {step} (generation {generation}) at the same time; this save was not committed, the other one is kept)",
                    store.uri(&record_key)
                ),
            });
        }
        if let Some((old, old_name)) = replaced {
            self.remove_replaced(step, &old, &old_name, &manifest)
                .await?;
        }
        // Past the commit point a failure must not read as a lost save:
        // the caller would retry and be told the step already exists.
        self.store.write_latest().await.map_err(|e| {
            Error::backend(
                store.uri(&layout.latest()),
                format!("step {step} was committed, but updating the latest-step hint failed: {e}"),
                false,
            )
        })?;
        Ok(manifest)
    }

    async fn gather_records(
        &self,
        step: u64,
        generation: u64,
        wait: Duration,
    ) -> Result<Vec<ShardMeta>> {
        let deadline = Instant::now() + wait;
        let store = &self.store.loc.store;
        let mut found: BTreeMap<u32, ShardMeta> = BTreeMap::new();
        loop {
            for rank in 0..self.world_size {
                if found.contains_key(&rank) {
                    continue;
                }
                let key = self.store.layout.shard_record(step, rank, self.world_size);
                match store.get(&key).await {
                    Ok(bytes) => {
                        let rec: ShardMeta = serde_json::from_slice(&bytes).map_err(|e| {
                            Error::corrupt(store.uri(&key), format!("unreadable shard record: {e}"))
                        })?;
                        if rec.generation == generation {
                            found.insert(rank, rec);
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            if found.len() == self.world_size as usize || Instant::now() >= deadline {
                return Ok(found.into_values().collect());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every rank exactly once, from this save, and its object really there.
    async fn check_shards(
        &self,
        step: u64,
        generation: u64,
        shards: Vec<ShardMeta>,
    ) -> Result<Vec<ShardMeta>> {
        let at = self.store.loc.store.uri(&self.store.layout.step_dir(step));
        let mut by_rank: BTreeMap<u32, ShardMeta> = BTreeMap::new();
        for s in shards {
            crate::keys::check_name(
                &format!("cannot finalize {at}: shard of rank {}", s.rank),
                &s.key,
            )?;
            if s.world_size != self.world_size || s.rank >= self.world_size {
                return Err(Error::invalid(format!(
                    "cannot finalize {at}: shard of rank {} was written for world_size {}, expected {}",
                    s.rank, s.world_size, self.world_size
                )));
            }
            if s.step != step || s.generation != generation {
                return Err(Error::invalid(format!(
                    "cannot finalize {at}: shard of rank {} belongs to step {} (generation {}), not step {step} (generation {generation})",
                    s.rank, s.step, s.generation
                )));
            }
            if by_rank.insert(s.rank, s).is_some() {
                return Err(Error::invalid(format!(
                    "cannot finalize {at}: two shards for the same rank"
                )));
            }
        }
        let missing: Vec<String> = (0..self.world_size)
            .filter(|r| !by_rank.contains_key(r))
            .map(|r| r.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Error::NotFound {
                uri: format!(
                    "{at} (cannot finalize step {step}: missing shard for rank(s) {} of world_size {})",
                    missing.join(", "),
                    self.world_size
                ),
            });
        }
        let dir = self.store.layout.step_dir(step);
        for s in by_rank.values() {
            let key = join_key(&dir, &s.key);
            let meta = self.store.loc.store.head(&key).await?;
            if meta.size != s.stored_size {
                return Err(Error::corrupt(
                    self.store.loc.store.uri(&key),
                    format!(
                        "shard of rank {} has {} stored bytes, its record says {}",
                        s.rank, meta.size, s.stored_size
                    ),
                ));
            }
        }
        Ok(by_rank.into_values().collect())
    }

    /// A save that lost the race for its commit record: remove what only
    /// it wrote (its manifest, its shards the winner does not use). Best
    /// effort: the loss is what the caller is told about, and leftovers
    /// are invisible to readers.
    async fn remove_lost(&self, step: u64, lost: &Manifest, manifest_name: &str) {
        let dir = self.store.layout.step_dir(step);
        let store = &self.store.loc.store;
        let _ = store.delete(&join_key(&dir, manifest_name)).await;
        let Ok((winner, _)) = self.store.committed_manifest(step).await else {
            return;
        };
        for s in &lost.shards {
            if !winner.shards.iter().any(|w| w.key == s.key) {
                let _ = store.delete(&join_key(&dir, &s.key)).await;
            }
        }
    }

    /// After an overwrite committed, drop the replaced generation's objects.
    async fn remove_replaced(
        &self,
        step: u64,
        old: &Manifest,
        old_manifest: &str,
        new: &Manifest,
    ) -> Result<()> {
        let dir = self.store.layout.step_dir(step);
        let mut keys: Vec<&str> = old
            .shards
            .iter()
            .filter(|s| !new.shards.iter().any(|n| n.key == s.key))
            .map(|s| s.key.as_str())
            .collect();
        // A manifest named by its save is this generation's alone; the
        // shared `manifest.json` of older records is left alone.
        if old_manifest != super::layout::MANIFEST {
            keys.push(old_manifest);
        }
        for key in keys {
            match self.store.loc.store.delete(&join_key(&dir, key)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::backend(
                        self.store.loc.store.uri(&dir),
                        format!(
                        "step {step} was committed, but removing the replaced shards failed: {e}"
                    ),
                        false,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// A rank's object being written. Dropping it without `finish` leaves
/// nothing visible.
pub struct ShardStream {
    writer: EncodingWriter,
    store: CheckpointStore,
    record: ShardMeta,
}

impl ShardStream {
    pub async fn write(&mut self, buf: Bytes) -> Result<()> {
        self.writer.write(buf).await
    }

    pub async fn write_slice(&mut self, buf: &[u8]) -> Result<()> {
        self.writer.write_slice(buf).await
    }

    /// Make the object visible and store this rank's record for finalize.
    pub async fn finish(self) -> Result<ShardMeta> {
        let encoded = self.writer.finish().await?;
        let mut record = self.record;
        record.size = encoded.logical_size;
        record.stored_size = encoded.stored_size;
        record.crc32c = encoded.crc32c;
        record.byte_group = encoded.byte_group;
        let key = self
            .store
            .layout
            .shard_record(record.step, record.rank, record.world_size);
        let body = serde_json::to_vec(&record)
            .map_err(|e| Error::invalid(format!("shard record: {e}")))?;
        self.store
            .loc
            .store
            .put(&key, Bytes::from(body), &Default::default())
            .await?;
        Ok(record)
    }

    pub async fn abort(self) -> Result<()> {
        self.writer.abort().await
    }
}
