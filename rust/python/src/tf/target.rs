//! What a path handed over by TensorFlow names: a store location, and for
//! direct:// the local path (local directories are real, object-store ones
//! are key prefixes).

use std::path::PathBuf;

use s3dlio_core::store::{open_store, Location, StoreOptions};
use s3dlio_core::Result;

pub struct Target {
    pub loc: Location,
    /// The file system path for direct://; `None` on object stores.
    pub local: Option<PathBuf>,
}

impl Target {
    pub fn open(uri: &str) -> Result<Target> {
        // Every op opens its path afresh, so environment changes apply to
        // the next op; the cloud clients (connection pools, credentials)
        // behind it come from the core's per-configuration cache
        // (`store::shared`), so this costs no new connection.
        let loc = open_store(uri, &StoreOptions::default())?;
        let local = uri
            .strip_prefix("direct://")
            .map(|_| PathBuf::from(format!("/{}", loc.key)));
        Ok(Target { loc, local })
    }

    pub fn uri(&self) -> String {
        self.loc.uri()
    }

    pub fn key(&self) -> &str {
        &self.loc.key
    }

    /// The key prefix of this path taken as a directory (`""` at the root).
    pub fn dir_prefix(&self) -> String {
        let k = self.loc.key.trim_end_matches('/');
        if k.is_empty() {
            String::new()
        } else {
            format!("{k}/")
        }
    }
}

/// TF's path normalisation, keeping the scheme and the bucket (TF's
/// default drops both): repeated and trailing slashes of the path go.
pub fn translate(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    // direct:///abs/path has an empty authority; the path keeps its root.
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut out = format!("{scheme}://{authority}");
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if parts.is_empty() && authority.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn translate_keeps_scheme_and_bucket() {
        assert_eq!(translate("s3://bucket/data//x/"), "s3://bucket/data/x");
        assert_eq!(translate("az://acct/ctr/a/./b"), "az://acct/ctr/a/b");
        assert_eq!(translate("direct:///data//run/"), "direct:///data/run");
        assert_eq!(translate("direct:///"), "direct:///");
        assert_eq!(translate("s3://bucket"), "s3://bucket");
    }
}
