//! What a key may look like before any store is asked to touch it.
//!
//! Keys come from callers (URIs, finalize records) and from storage itself
//! (manifests, shard records, DCP metadata). A `..` in any of them must
//! never reach a backend: the local store would follow it out of the base,
//! and the Azure client collapses dot segments in URLs, so a blob of
//! another container would be written while the message names this one.
//! Keys are refused, never normalised, so what is touched is always what
//! was named.

use crate::error::{Error, Result};

/// Why `key` (an object key or a prefix) is unsafe, if it is. A key is
/// relative (no leading `/`), has no `.` or `..` segment, no empty segment
/// (`a//b`) and no NUL or backslash; a single trailing `/` (a prefix) is
/// allowed.
pub fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return None;
    }
    if key.starts_with('/') {
        return Some("it is absolute (starts with '/')");
    }
    if key.contains('\0') {
        return Some("it contains a NUL byte");
    }
    if key.contains('\\') {
        return Some("it contains a backslash");
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    for segment in body.split('/') {
        match segment {
            "" => return Some("it has an empty path segment ('//')"),
            "." | ".." => return Some("it has a '.' or '..' path segment"),
            _ => {}
        }
    }
    None
}

/// Refuse an unsafe key; `what` says where it came from (for the message).
pub fn check_key(what: &str, key: &str) -> Result<()> {
    match key_problem(key) {
        None => Ok(()),
        Some(why) => Err(Error::invalid(format!(
            "{what}: key '{}' is refused because {why}; keys are used as written, never normalised",
            key.escape_debug()
        ))),
    }
}

/// Why `name` is not a plain object name inside one directory (a shard
/// key of a manifest, a DCP data file): non-empty, no `/`, not `.`/`..`.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.contains('/') {
        return Some("it contains '/'");
    }
    key_problem(name)
}

/// Refuse a name that is not a plain object name in its directory.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(Error::invalid(format!(
            "{what}: name '{}' is refused because {why}",
            name.escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keys_are_refused() {
        for bad in [
            "/etc/passwd",
            "a/../b",
            "..",
            "../x",
            "x/..",
            "a/./b",
            "a//b",
            "a\\b",
            "a\0b",
        ] {
            assert!(key_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["", "a", "a/b", "run/", "a/b.c/..d", "x..y"] {
            assert_eq!(key_problem(good), None, "{good:?} refused");
        }
        assert!(check_key("az://a/c/x/../y", "x/../y")
            .unwrap_err()
            .to_string()
            .contains("never normalised"));
    }

    #[test]
    fn names_are_one_segment() {
        for bad in ["", "a/b", "..", ".", "../../etc/x"] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert_eq!(name_problem("rank-00000-of-00001.bin.zst"), None);
    }
}
