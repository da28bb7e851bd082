//! The JSON records of a checkpoint: one per rank while saving, one
//! manifest for the whole checkpoint once committed.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};

pub const FORMAT: &str = "s3dlio-checkpoint/1";

/// What one rank wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub rank: u32,
    pub world_size: u32,
    pub step: u64,
    pub generation: u64,
    /// Object name relative to the step directory.
    pub key: String,
    /// Logical (uncompressed) bytes.
    pub size: u64,
    pub stored_size: u64,
    /// CRC32C of the logical bytes.
    pub crc32c: u32,
    pub codec: Codec,
    pub level: Option<i32>,
    /// Element width of the byte-grouping filter, when the shard uses it
    /// (absent from records written without it, and by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_group: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub step: u64,
    pub epoch: u64,
    pub framework: String,
    pub world_size: u32,
    pub generation: u64,
    /// Seconds since the Unix epoch when the checkpoint was committed.
    pub created_unix: f64,
    pub logical_size: u64,
    pub stored_size: u64,
    pub shards: Vec<ShardMeta>,
    #[serde(default)]
    pub user_meta: serde_json::Value,
}

impl Manifest {
    /// stored / logical bytes (1.0 for an empty checkpoint).
    pub fn ratio(&self) -> f64 {
        ratio(self.stored_size, self.logical_size)
    }

    pub fn shard(&self, rank: u32, uri: &str) -> Result<&ShardMeta> {
        self.shards.iter().find(|s| s.rank == rank).ok_or_else(|| {
            Error::invalid(format!(
                "rank {rank} is out of range for checkpoint {uri} with world_size {}",
                self.world_size
            ))
        })
    }

    pub fn from_json(uri: &str, bytes: &[u8]) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(uri, format!("unreadable manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::corrupt(
                uri,
                format!("unknown manifest format '{}' (expected {FORMAT})", m.format),
            ));
        }
        m.check(uri)?;
        Ok(m)
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(format!("manifest: {e}")))
    }

    /// The structure a load relies on: a world size in range, exactly one
    /// shard per rank of this step and generation, plain shard names, and
    /// totals that add up. Loads and `verify` both check it, so verify
    /// never passes what a load would refuse.
    pub fn check(&self, uri: &str) -> Result<()> {
        let bad = |why: String| Err(Error::corrupt(uri, format!("invalid manifest: {why}")));
        if !(1..=99_999).contains(&self.world_size) {
            return bad(format!(
                "world_size {} is out of range 1-99999",
                self.world_size
            ));
        }
        if self.shards.len() != self.world_size as usize {
            return bad(format!(
                "{} shards for world_size {}",
                self.shards.len(),
                self.world_size
            ));
        }
        let mut seen = vec![false; self.world_size as usize];
        for s in &self.shards {
            crate::keys::check_name(&format!("{uri}: shard of rank {}", s.rank), &s.key)?;
            if s.rank >= self.world_size {
                return bad(format!(
                    "shard rank {} is out of range for world_size {}",
                    s.rank, self.world_size
                ));
            }
            if std::mem::replace(&mut seen[s.rank as usize], true) {
                return bad(format!("rank {} has two shards", s.rank));
            }
            if s.world_size != self.world_size || s.step != self.step {
                return bad(format!(
                    "shard of rank {} is for step {} world_size {}, the manifest for step {} world_size {}",
                    s.rank, s.step, s.world_size, self.step, self.world_size
                ));
            }
            if s.codec == Codec::None && s.size != s.stored_size {
                return bad(format!(
                    "uncompressed shard of rank {} has size {} but stored_size {}",
                    s.rank, s.size, s.stored_size
                ));
            }
        }
        let logical = self
            .shards
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.size));
        let stored = self
            .shards
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.stored_size));
        if logical != Some(self.logical_size) || stored != Some(self.stored_size) {
            return bad(format!(
                "totals {} logical / {} stored bytes do not add up to the shards'",
                self.logical_size, self.stored_size
            ));
        }
        Ok(())
    }
}

pub fn ratio(stored: u64, logical: u64) -> f64 {
    if logical == 0 {
        1.0
    } else {
        stored as f64 / logical as f64
    }
}

/// What a commit record (`COMMITTED`, `COMMITTED.g<n>`) holds: the
/// generation it commits and the manifest that generation wrote, with the
/// manifest's size and CRC32C so a damaged manifest is never trusted.
/// Records written before manifests had names of their own carry only
/// `step` and `generation`; their manifest is `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub step: u64,
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_crc32c: Option<u32>,
}

impl CommitRecord {
    pub fn from_json(uri: &str, bytes: &[u8]) -> Result<Self> {
        let r: CommitRecord = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(uri, format!("unreadable commit record: {e}")))?;
        if let Some(name) = &r.manifest {
            crate::keys::check_name(&format!("{uri}: manifest"), name)?;
        }
        Ok(r)
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::invalid(format!("commit record: {e}")))
    }
}
