//! Names no other writer in any process picks at the same time: local temp
//! files (`name.tmp-<tag>`) and Azure block ids share this one recipe.

use std::sync::atomic::{AtomicU64, Ordering};

/// A tag unique to this call: `hash` mixes the process id, the clock and
/// `seq`, this process's count of tags handed out so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UniqueTag {
    pub hash: u32,
    pub seq: u64,
}

pub(crate) fn unique_tag() -> UniqueTag {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hash = crate::crc::crc32c(format!("{}-{nanos}-{seq}", std::process::id()).as_bytes());
    UniqueTag { hash, seq }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_within_a_process() {
        let (a, b) = (unique_tag(), unique_tag());
        assert_ne!(a.seq, b.seq);
        assert_ne!((a.hash, a.seq), (b.hash, b.seq));
    }
}
