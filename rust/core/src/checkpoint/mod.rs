//! Multi-rank checkpoints on any store: each rank streams one object, rank 0
//! writes the manifest and then the `COMMITTED` marker. A checkpoint exists
//! only once its marker does, so a crash mid-save never hides the previous one.

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::object::WriteOptions;
use crate::store::{open_store, Location, StoreOptions};

pub mod layout;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use layout::{Layout, Strategy};
pub use manifest::{Manifest, ShardMeta};
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
        if let Some(level) = write.encode.level {
            crate::codec::check_level(level)?;
        }
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
        let key = self.layout.manifest(step);
        let bytes = self.loc.store.get(&key).await?;
        Manifest::from_json(&self.loc.store.uri(&key), &bytes)
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
