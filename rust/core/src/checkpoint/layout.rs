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
//! Every save names its objects with a tag of its own
//! (`rank-00000-of-00004.<tag>.bin`, `manifest.<tag>.json`), so two saves
//! of one step never write the same object. What commits a save is one
//! `put_if_absent` of its generation's commit record: `COMMITTED` for
//! generation 0, `COMMITTED.g<generation>` for an overwrite. The record
//! names the manifest (with its size and CRC32C), so exactly one save of
//! each generation wins, and the old checkpoint stays whole until it has.
//! Records written before tags existed (no manifest named) point at
//! `manifest.json`.

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

    /// The record that commits `generation` of `step`.
    pub fn commit_record(&self, step: u64, generation: u64) -> String {
        if generation == 0 {
            self.committed(step)
        } else {
            join_key(
                &self.step_dir(step),
                &format!("{COMMITTED}.g{generation:012}"),
            )
        }
    }

    /// A save's own manifest name inside the step directory.
    pub fn manifest_name(tag: &str) -> String {
        format!("manifest.{tag}.json")
    }

    /// The generation a commit record's name (inside a step directory)
    /// commits; None for any other object.
    pub fn generation_of_record(name: &str) -> Option<u64> {
        let rest = name.strip_prefix(COMMITTED)?;
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(".g")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
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
        tag: &str,
        compressed: bool,
    ) -> String {
        let ext = if compressed { ".bin.zst" } else { ".bin" };
        let name = format!("rank-{rank:05}-of-{world_size:05}.{tag}{ext}");
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

/// A tag no other save picks: 64 random bits from the OS (time, process
/// and a counter when the OS has none to give).
pub fn save_tag() -> String {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got != buf.len() as isize {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mixed = nanos ^ (u64::from(std::process::id()) << 40) ^ n.rotate_left(20);
        buf = mixed.to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
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
            l.shard_name(1, 2, 4, "ab12", true),
            "rank-00002-of-00004.ab12.bin.zst"
        );
        assert_eq!(
            l.shard_name(1, 2, 4, "cd", false),
            "rank-00002-of-00004.cd.bin"
        );
        assert_eq!(l.commit_record(7, 0), "run/step-000000000007/COMMITTED");
        assert_eq!(
            l.commit_record(7, 3),
            "run/step-000000000007/COMMITTED.g000000000003"
        );
        assert_eq!(Layout::generation_of_record("COMMITTED"), Some(0));
        assert_eq!(
            Layout::generation_of_record("COMMITTED.g000000000003"),
            Some(3)
        );
        assert_eq!(Layout::generation_of_record("COMMITTED.tmp"), None);
        assert_ne!(save_tag(), save_tag());
        let h = Layout {
            base: "run".into(),
            strategy: Strategy::Hashed,
        };
        assert!(h
            .shard_name(1, 2, 4, "t", false)
            .ends_with("-rank-00002-of-00004.t.bin"));
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
