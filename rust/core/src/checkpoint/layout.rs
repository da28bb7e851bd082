//! Where each part of a checkpoint lives under the base location:
//!
//! ```text
//! <base>/step-000000000100/rank-00000-of-00004.bin[.zst]   one object per rank
//! <base>/step-000000000100/shard-00000-of-00004.json       rank's shard record (for finalize)
//! <base>/step-000000000100/manifest.json                   every shard's sizes and CRC32C
//! <base>/step-000000000100/COMMITTED                       written last, put_if_absent
//! <base>/latest                                            highest committed step
//! ```
//!
//! A save that replaces a committed step (`overwrite`) writes generation
//! `g > 0` shards (`rank-…g<g>.bin`) beside the old ones, so the old
//! checkpoint stays whole until the new manifest replaces it.

use crate::crc::crc32c;
use crate::error::{Error, Result};
use crate::store::join_key;

pub const MANIFEST: &str = "manifest.json";
pub const COMMITTED: &str = "COMMITTED";
pub const LATEST: &str = "latest";
const STEP_PREFIX: &str = "step-";

/// How rank objects are named inside a step directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `rank-00000-of-00004.bin`
    Flat,
    /// `<8 hex>-rank-00000-of-00004.bin`: spreads keys over object-store partitions.
    Hashed,
}

impl Strategy {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "flat" => Ok(Strategy::Flat),
            "hashed" => Ok(Strategy::Hashed),
            other => Err(Error::invalid(format!(
                "unknown strategy '{other}': expected 'flat' or 'hashed'"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub base: String,
    pub strategy: Strategy,
}

impl Layout {
    pub fn step_dir(&self, step: u64) -> String {
        join_key(&self.base, &format!("{STEP_PREFIX}{step:012}"))
    }

    pub fn manifest(&self, step: u64) -> String {
        join_key(&self.step_dir(step), MANIFEST)
    }

    pub fn committed(&self, step: u64) -> String {
        join_key(&self.step_dir(step), COMMITTED)
    }

    pub fn latest(&self) -> String {
        join_key(&self.base, LATEST)
    }

    pub fn shard_record(&self, step: u64, rank: u32, world_size: u32) -> String {
        join_key(
            &self.step_dir(step),
            &format!("shard-{rank:05}-of-{world_size:05}.json"),
        )
    }

    /// Name of a rank's object relative to the step directory.
    pub fn shard_name(
        &self,
        step: u64,
        rank: u32,
        world_size: u32,
        generation: u64,
        compressed: bool,
    ) -> String {
        let gen = if generation == 0 {
            String::new()
        } else {
            format!(".g{generation}")
        };
        let ext = if compressed { ".bin.zst" } else { ".bin" };
        let name = format!("rank-{rank:05}-of-{world_size:05}{gen}{ext}");
        match self.strategy {
            Strategy::Flat => name,
            Strategy::Hashed => {
                let h = crc32c(format!("{step}/{rank}/{world_size}").as_bytes());
                format!("{h:08x}-{name}")
            }
        }
    }

    /// The step a step directory (`<base>/step-…/`, as a delimiter listing
    /// names it) holds; None for anything else under the base.
    pub fn step_of_dir(&self, dir: &str) -> Option<u64> {
        let rel = dir.strip_prefix(&self.base)?.trim_start_matches('/');
        let name = rel.strip_suffix('/')?;
        let digits = name.strip_prefix(STEP_PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// Check `rank` against `world_size`.
pub fn check_rank(rank: i64, world_size: i64) -> Result<(u32, u32)> {
    if !(1..=99_999).contains(&world_size) {
        return Err(Error::invalid(format!(
            "world_size must be between 1 and 99999, got {world_size}"
        )));
    }
    if rank < 0 || rank >= world_size {
        return Err(Error::invalid(format!(
            "rank {rank} is out of range for world_size {world_size}: expected 0 <= rank < {world_size}"
        )));
    }
    Ok((rank as u32, world_size as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_step_and_parse_back() {
        let l = Layout {
            base: "run".into(),
            strategy: Strategy::Flat,
        };
        assert_eq!(l.committed(42), "run/step-000000000042/COMMITTED");
        assert_eq!(l.step_of_dir("run/step-000000000042/"), Some(42));
        assert_eq!(l.step_of_dir("run/step-000000000042"), None);
        assert_eq!(l.step_of_dir("run/step-+42/"), None);
        assert_eq!(l.step_of_dir("run/other/"), None);
        assert_eq!(
            l.shard_name(1, 2, 4, 0, true),
            "rank-00002-of-00004.bin.zst"
        );
        assert_eq!(
            l.shard_name(1, 2, 4, 3, false),
            "rank-00002-of-00004.g3.bin"
        );
        let h = Layout {
            base: "run".into(),
            strategy: Strategy::Hashed,
        };
        assert!(h
            .shard_name(1, 2, 4, 0, false)
            .ends_with("-rank-00002-of-00004.bin"));
    }

    #[test]
    fn bad_ranks_are_named() {
        assert!(check_rank(4, 4)
            .unwrap_err()
            .to_string()
            .contains("rank 4 is out of range"));
        assert!(check_rank(-1, 4).is_err());
        assert!(check_rank(0, 0)
            .unwrap_err()
            .to_string()
            .contains("world_size"));
        assert_eq!(check_rank(3, 4).unwrap(), (3, 4));
        assert!(Strategy::parse("zigzag")
            .unwrap_err()
            .to_string()
            .contains("'flat' or 'hashed'"));
    }
}
