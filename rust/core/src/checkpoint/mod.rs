//! Multi-rank checkpoints on any store: each rank streams one object, rank 0
//! writes the manifest and then the `COMMITTED` marker. A checkpoint exists
//! only once its marker does, so a crash mid-save never hides the previous one.

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::object::WriteOptions;
use crate::store::{join_key, open_store, Location, StoreOptions};

pub mod layout;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use layout::{Layout, Strategy};
pub use manifest::{CommitRecord, Manifest, ShardMeta};
pub use reader::{CheckpointReader, ShardHandle};
pub use writer::{CheckpointWriter, ShardStream};

/// Marker HEADs in flight while finding committed steps: hides object-store
/// latency without a burst of thousands of requests.
const MARKER_CHECKS_IN_FLIGHT: usize = 16;

/// A base location holding checkpoints, plus how new ones are written.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pub(crate) loc: Location,
    pub(crate) layout: Layout,
    pub(crate) write: WriteOptions,
}

impl CheckpointStore {
    pub fn open(
        uri: &str,
        strategy: Strategy,
        write: WriteOptions,
        store_options: &StoreOptions,
    ) -> Result<Self> {
        Self::at(open_store(uri, store_options)?, strategy, write)
    }

    /// Checkpoints under an already opened location (e.g. a wrapped store).
    pub fn at(loc: Location, strategy: Strategy, write: WriteOptions) -> Result<Self> {
        write.check()?;
        let layout = Layout {
            base: loc.key.trim_end_matches('/').to_string(),
            strategy,
        };
        Ok(CheckpointStore { loc, layout, write })
    }

    pub fn uri(&self) -> String {
        self.loc.store.uri(&self.layout.base)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn write_options(&self) -> &WriteOptions {
        &self.write
    }

    pub fn writer(&self, world_size: i64, rank: i64, overwrite: bool) -> Result<CheckpointWriter> {
        CheckpointWriter::new(self.clone(), world_size, rank, overwrite)
    }

    pub fn reader(&self) -> CheckpointReader {
        CheckpointReader::new(self.clone())
    }

    /// Steps with a `COMMITTED` marker, ascending. Lists one level (the
    /// step directories, a delimiter listing on object stores) and checks
    /// each one's marker, so the cost grows with the number of steps, not
    /// with every shard object of every checkpoint under the base.
    pub async fn committed_steps(&self) -> Result<Vec<u64>> {
        let prefix = format!("{}/", self.layout.base);
        let prefix = prefix.trim_start_matches('/');
        let listing = self.loc.store.list_dir(prefix).await?;
        let candidates: Vec<u64> = listing
            .prefixes
            .iter()
            .filter_map(|dir| self.layout.step_of_dir(dir))
            .collect();
        let checked: Vec<Result<(u64, bool)>> = futures::stream::iter(candidates)
            .map(|step| async move { Ok((step, self.is_committed(step).await?)) })
            .buffer_unordered(MARKER_CHECKS_IN_FLIGHT)
            .collect()
            .await;
        let mut steps = Vec::new();
        for res in checked {
            let (step, committed) = res?;
            if committed {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    pub async fn is_committed(&self, step: u64) -> Result<bool> {
        match self.loc.store.head(&self.layout.committed(step)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The manifest of committed `step`; `NotFound` lists the steps there are.
    pub async fn manifest(&self, step: u64) -> Result<Manifest> {
        if !self.is_committed(step).await? {
            let steps = self.committed_steps().await?;
            return Err(Error::NotFound {
                uri: format!(
                    "{} (no committed checkpoint at step {step}; committed steps: {})",
                    self.uri(),
                    describe_steps(&steps)
                ),
            });
        }
        Ok(self.committed_manifest(step).await?.0)
    }

    /// The manifest of committed `step` and the name of its file. An
    /// overwrite that commits between finding the record and reading the
    /// manifest removes the manifest found: look again (the new one is
    /// then there), a bounded number of times.
    pub(crate) async fn committed_manifest(&self, step: u64) -> Result<(Manifest, String)> {
        const LOOKS: usize = 4;
        let mut last = None;
        for _ in 0..LOOKS {
            match self.read_committed_manifest(step).await {
                Err(e) if e.is_not_found() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound { uri: self.uri() }))
    }

    /// The newest commit record of `step` (the highest generation), if any.
    pub(crate) async fn newest_record(&self, step: u64) -> Result<Option<(String, CommitRecord)>> {
        let dir = format!("{}/", self.layout.step_dir(step));
        let listing = self.loc.store.list_dir(dir.trim_start_matches('/')).await?;
        let newest = listing
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.key.rsplit('/').next()?;
                Some((Layout::generation_of_record(name)?, o.key.clone()))
            })
            .max();
        let Some((generation, key)) = newest else {
            return Ok(None);
        };
        let uri = self.loc.store.uri(&key);
        let record = CommitRecord::from_json(&uri, &self.loc.store.get(&key).await?)?;
        if record.step != step || (record.manifest.is_some() && record.generation != generation) {
            return Err(Error::corrupt(
                uri,
                format!(
                    "commit record says step {} generation {}, its name says step {step} generation {generation}",
                    record.step, record.generation
                ),
            ));
        }
        Ok(Some((key, record)))
    }

    async fn read_committed_manifest(&self, step: u64) -> Result<(Manifest, String)> {
        let Some((record_key, record)) = self.newest_record(step).await? else {
            return Err(Error::NotFound {
                uri: format!("{} (no committed checkpoint at step {step})", self.uri()),
            });
        };
        let name = record
            .manifest
            .clone()
            .unwrap_or_else(|| layout::MANIFEST.to_string());
        let key = join_key(&self.layout.step_dir(step), &name);
        let uri = self.loc.store.uri(&key);
        let bytes = self.loc.store.get(&key).await?;
        if let (Some(size), Some(crc)) = (record.manifest_size, record.manifest_crc32c) {
            let actual = crate::codec::crc::crc32c(&bytes);
            if bytes.len() as u64 != size || actual != crc {
                return Err(Error::corrupt(
                    uri,
                    format!(
                        "manifest has {} bytes with CRC32C {actual:08x}, its commit record {} says {size} bytes with {crc:08x}",
                        bytes.len(),
                        self.loc.store.uri(&record_key)
                    ),
                ));
            }
        }
        let manifest = Manifest::from_json(&uri, &bytes)?;
        if manifest.step != step {
            return Err(Error::corrupt(
                uri,
                format!("manifest is for step {}, not {step}", manifest.step),
            ));
        }
        Ok((manifest, name))
    }

    /// The highest committed step, if any.
    pub async fn latest_step(&self) -> Result<Option<u64>> {
        Ok(self.committed_steps().await?.last().copied())
    }

    pub async fn list_checkpoints(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for step in self.committed_steps().await? {
            out.push(self.manifest(step).await?);
        }
        Ok(out)
    }

    /// Remove a committed checkpoint: its marker first, so it disappears
    /// atomically for readers, then its objects.
    pub async fn delete_checkpoint(&self, step: u64) -> Result<()> {
        // Fails with a clear NotFound when the step is not committed.
        self.manifest(step).await?;
        let store = &self.loc.store;
        store.delete(&self.layout.committed(step)).await?;
        let dir = format!("{}/", self.layout.step_dir(step));
        for obj in store.list(dir.trim_start_matches('/')).await? {
            match store.delete(&obj.key).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.write_latest().await
    }

    /// Point `latest` at the highest committed step (remove it when none).
    pub(crate) async fn write_latest(&self) -> Result<()> {
        let key = self.layout.latest();
        match self.latest_step().await? {
            Some(step) => {
                let body = serde_json::json!({ "step": step, "dir": self.layout.step_dir(step) });
                self.loc
                    .store
                    .put(&key, Bytes::from(body.to_string()), &Default::default())
                    .await?;
            }
            None => match self.loc.store.delete(&key).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            },
        }
        Ok(())
    }
}

pub(crate) fn describe_steps(steps: &[u64]) -> String {
    if steps.is_empty() {
        "none".to_string()
    } else {
        steps
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
