//! A URI from the command line resolved to its store, plus the facts the
//! commands need that a store key alone loses: whether it is a local
//! directory and whether the user wrote a trailing `/`.

use std::path::PathBuf;

use s3dlio_core::store::{join_key, open_parsed, Location, StoreOptions};
use s3dlio_core::uri::StoreUri;

use crate::error::CliResult;

#[derive(Debug, Clone)]
pub struct Target {
    /// What the user typed, for messages.
    pub raw: String,
    pub loc: Location,
    /// The path for `file://`, `direct://` and plain paths.
    pub local: Option<PathBuf>,
}

impl Target {
    pub fn open(uri: &str, options: &StoreOptions) -> CliResult<Self> {
        let parsed = StoreUri::parse(uri)?;
        let local = match &parsed {
            StoreUri::File { path } | StoreUri::Direct { path } => Some(path.clone()),
            _ => None,
        };
        let loc = open_parsed(&parsed, options)?;
        Ok(Target {
            raw: uri.to_string(),
            loc,
            local,
        })
    }

    pub fn uri(&self) -> String {
        self.loc.uri()
    }

    pub fn is_local_dir(&self) -> bool {
        self.local.as_ref().is_some_and(|p| p.is_dir())
    }

    pub fn is_local_root(&self) -> bool {
        self.local.is_some() && self.loc.key.is_empty()
    }

    /// The URI names a container (a directory, a prefix ending in `/`, a
    /// bucket) rather than one object.
    pub fn names_container(&self) -> bool {
        self.loc.key.is_empty() || self.raw.ends_with('/') || self.is_local_dir()
    }

    /// The key prefix of everything "inside" this URI: `a/b` -> `a/b/`, so
    /// that `a/bc` is not swept up with `a/b`.
    pub fn dir_prefix(&self) -> String {
        dir_prefix(&self.loc.key)
    }

    /// The same store at another key.
    pub fn at(&self, key: String) -> Location {
        Location {
            store: self.loc.store.clone(),
            key,
        }
    }

    /// The location of `name` inside this container.
    pub fn child(&self, name: &str) -> Location {
        self.at(join_key(&self.loc.key, name))
    }
}

pub fn dir_prefix(key: &str) -> String {
    if key.is_empty() || key.ends_with('/') {
        key.to_string()
    } else {
        format!("{key}/")
    }
}

/// The last path segment of a key (what `cp a/b.bin dir/` names the copy).
pub fn basename(key: &str) -> &str {
    let key = key.trim_end_matches('/');
    key.rsplit('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_names() {
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("a/b"), "a/b/");
        assert_eq!(dir_prefix("a/b/"), "a/b/");
        assert_eq!(basename("a/b/c.bin"), "c.bin");
        assert_eq!(basename("c.bin"), "c.bin");
    }

    #[test]
    fn local_paths_are_rooted() {
        let t = Target::open("/tmp/x/", &StoreOptions::default()).unwrap();
        assert_eq!(t.loc.key, "tmp/x");
        assert_eq!(t.dir_prefix(), "tmp/x/");
        assert!(t.names_container());
        let root = Target::open("file:///", &StoreOptions::default()).unwrap();
        assert!(root.is_local_root());
    }
}
