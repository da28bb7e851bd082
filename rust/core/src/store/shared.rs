//! A small process-wide cache of opened clients, keyed by their fully
//! resolved configuration.
//!
//! Why: the TensorFlow plugin and the Python one-object functions open
//! their store again for every call. A fresh cloud client means a fresh
//! HTTP connection pool (a new TCP connection, the CA bundle loaded again,
//! credentials fetched again), which costs more than a small request.
//! Handing out the client built earlier for the same configuration keeps
//! one pool per configuration and process.
//!
//! Semantics stay those of opening fresh, because the key is everything
//! that decides how the client behaves (endpoint, account or bucket,
//! credentials, retries, timeouts, and the environment they were read
//! from), never the URI: a changed option or variable is another key and
//! so another client on the very next open. Keys may hold secrets; they
//! stay in memory, and nothing here formats a key.
//!
//! A client's pool is driven by the runtime threads of the process that
//! built it, which do not exist in a child after `fork()`: the first use in
//! another process drops the whole cache (leaked, as
//! [`crate::runtime`] leaks the parent's runtime, because dropping it
//! could wait for those threads). The cache holds at most
//! [`Shared::CAPACITY`] entries and evicts the least recently used one, so
//! a process touching many buckets or containers stays bounded.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::Mutex;

/// The environment variables whose names start with one of the prefixes,
/// sorted by name: the part of a cache key that says what a backend's SDK
/// would read from the environment. Holds secrets: compare it, never
/// format it.
#[derive(PartialEq, Eq)]
pub(crate) struct EnvSnapshot(Vec<(OsString, OsString)>);

pub(crate) fn env_snapshot(prefixes: &[&str]) -> EnvSnapshot {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            prefixes.iter().any(|p| name.starts_with(p))
        })
        .collect();
    vars.sort();
    EnvSnapshot(vars)
}

/// Clients by configuration, for this process only.
pub(crate) struct Shared<K, V> {
    slot: Mutex<Option<Entries<K, V>>>,
}

struct Entries<K, V> {
    /// The process the clients were built in.
    pid: u32,
    /// Most recently used first. Few entries, so a scan is cheapest.
    items: VecDeque<(K, V)>,
}

impl<K: Eq, V: Clone> Shared<K, V> {
    /// Entries kept; more distinct configurations than this in one process
    /// evict the least recently used.
    pub const CAPACITY: usize = 64;

    pub const fn new() -> Self {
        Shared {
            slot: Mutex::new(None),
        }
    }

    /// The client built for `key` in this process, if still cached.
    pub fn get(&self, key: &K) -> Option<V> {
        self.get_in(std::process::id(), key)
    }

    /// Keep `value` for `key`, or hand back the one another thread cached
    /// for the same key meanwhile (so every caller shares one client).
    pub fn insert(&self, key: K, value: V) -> V {
        self.insert_in(std::process::id(), key, value)
    }

    /// [`Shared::get`], else build with `make` and cache the result;
    /// errors are not cached (the next call tries again, as a fresh open
    /// would).
    pub fn get_or_try_insert<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        // Built outside the lock: building may be slow and must not block
        // other configurations.
        let built = make()?;
        Ok(self.insert(key, built))
    }

    fn get_in(&self, pid: u32, key: &K) -> Option<V> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let entries = Self::owned_by(&mut slot, pid)?;
        let at = entries.items.iter().position(|(k, _)| k == key)?;
        let hit = entries.items.remove(at)?;
        let value = hit.1.clone();
        entries.items.push_front(hit);
        Some(value)
    }

    fn insert_in(&self, pid: u32, key: K, value: V) -> V {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        // Another process's entries go first (see `owned_by`).
        Self::owned_by(&mut slot, pid);
        let entries = slot.get_or_insert_with(|| Entries {
            pid,
            items: VecDeque::new(),
        });
        if let Some(at) = entries.items.iter().position(|(k, _)| *k == key) {
            if let Some(raced) = entries.items.remove(at) {
                let value = raced.1.clone();
                entries.items.push_front(raced);
                return value;
            }
        }
        entries.items.truncate(Self::CAPACITY - 1);
        entries.items.push_front((key, value.clone()));
        value
    }

    /// The entries when they belong to `pid`; a forked child's inherited
    /// entries are leaked and the slot emptied.
    fn owned_by(slot: &mut Option<Entries<K, V>>, pid: u32) -> Option<&mut Entries<K, V>> {
        if slot.as_ref().is_some_and(|e| e.pid != pid) {
            if let Some(inherited) = slot.take() {
                std::mem::forget(inherited);
            }
        }
        slot.as_mut()
    }

    /// Entries cached now (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map_or(0, |e| e.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn same_key_shares_other_key_builds() {
        let cache: Shared<String, Arc<u32>> = Shared::new();
        let a = cache.insert("a".into(), Arc::new(1));
        let again = cache
            .get_or_try_insert::<()>("a".into(), || Ok(Arc::new(2)))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = cache
            .get_or_try_insert::<()>("b".into(), || Ok(Arc::new(3)))
            .unwrap();
        assert_eq!(*b, 3);
        // A second insert under a cached key (a racing builder) gets the
        // first value, so both callers share one client.
        let raced = cache.insert("a".into(), Arc::new(4));
        assert!(Arc::ptr_eq(&a, &raced));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn errors_are_not_cached() {
        let cache: Shared<u8, u8> = Shared::new();
        assert_eq!(cache.get_or_try_insert(1, || Err("down")), Err("down"));
        assert_eq!(cache.get_or_try_insert::<&str>(1, || Ok(7)), Ok(7));
    }

    #[test]
    fn another_pid_drops_the_cache() {
        let cache: Shared<u8, Arc<u8>> = Shared::new();
        let parent = cache.insert_in(100, 1, Arc::new(1));
        assert!(cache.get_in(100, &1).is_some());
        // The same key seen from a forked child: nothing inherited.
        assert!(cache.get_in(101, &1).is_none());
        assert_eq!(cache.len(), 0);
        let child = cache.insert_in(101, 1, Arc::new(2));
        assert!(!Arc::ptr_eq(&parent, &child));
        assert!(cache.get_in(100, &1).is_none(), "the parent's is gone too");
    }

    #[test]
    fn bounded_least_recently_used_goes_first() {
        let cache: Shared<usize, usize> = Shared::new();
        let cap = Shared::<usize, usize>::CAPACITY;
        for i in 0..cap {
            cache.insert(i, i);
        }
        // Touch 0, so 1 is now the least recently used.
        assert_eq!(cache.get(&0), Some(0));
        cache.insert(cap, cap);
        assert_eq!(cache.len(), cap);
        assert_eq!(cache.get(&0), Some(0));
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&cap), Some(cap));
    }
}
