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
        Ok(m)
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(format!("manifest: {e}")))
    }
}

pub fn ratio(stored: u64, logical: u64) -> f64 {
    if logical == 0 {
        1.0
    } else {
        stored as f64 / logical as f64
    }
}
