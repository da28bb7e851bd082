//! Parse the URIs users write: `file://`, `direct://`, `s3://`, `az://` and
//! the in-process `memory://` used by tests. Plain paths mean `file://`.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// Absolute, normalised local path.
    File {
        path: PathBuf,
    },
    /// Like `File`, read and written with O_DIRECT.
    Direct {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        key: String,
    },
    Azure {
        account: String,
        container: String,
        key: String,
    },
    Memory {
        name: String,
        key: String,
    },
}

const SCHEMES: &str = "file://, direct://, s3://, az://, memory://";

impl StoreUri {
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.is_empty() {
            return Err(Error::invalid("empty URI"));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            // `file:/x` or `s3:bkt` is a mistyped URI, not a relative path
            // named `file:` (which would silently write under the cwd).
            if let Some((scheme, _)) = uri.split_once(':') {
                if matches!(scheme, "file" | "direct" | "s3" | "az" | "memory") {
                    return Err(Error::invalid(format!(
                        "{uri}: expected {scheme}:// followed by the location (e.g. file:///abs/path)"
                    )));
                }
            }
            // A plain path, as torch and numpy users write them.
            return Ok(StoreUri::File {
                path: absolute(uri, uri)?,
            });
        };
        match scheme {
            "file" => Ok(StoreUri::File {
                path: absolute(rest, uri)?,
            }),
            "direct" => Ok(StoreUri::Direct {
                path: absolute(rest, uri)?,
            }),
            "s3" => {
                let (bucket, key) = split_first(rest);
                if bucket.is_empty() {
                    return Err(Error::invalid(format!("{uri}: missing bucket name")));
                }
                crate::keys::check_key(uri, key)?;
                Ok(StoreUri::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
            "az" => {
                let (account, rest) = split_first(rest);
                let (container, key) = split_first(rest);
                if account.is_empty() || container.is_empty() {
                    return Err(Error::invalid(format!(
                        "{uri}: expected az://<account>/<container>/<path>"
                    )));
                }
                crate::keys::check_key(uri, key)?;
                Ok(StoreUri::Azure {
                    account: account.to_string(),
                    container: container.to_string(),
                    key: key.to_string(),
                })
            }
            "memory" => {
                let (name, key) = split_first(rest);
                if name.is_empty() {
                    return Err(Error::invalid(format!("{uri}: missing memory store name")));
                }
                crate::keys::check_key(uri, key)?;
                Ok(StoreUri::Memory {
                    name: name.to_string(),
                    key: key.to_string(),
                })
            }
            other => Err(Error::invalid(format!(
                "{uri}: unknown scheme '{other}://' (expected one of {SCHEMES})"
            ))),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            StoreUri::File { .. } => "file://",
            StoreUri::Direct { .. } => "direct://",
            StoreUri::S3 { .. } => "s3://",
            StoreUri::Azure { .. } => "az://",
            StoreUri::Memory { .. } => "memory://",
        }
    }
}

fn split_first(s: &str) -> (&str, &str) {
    match s.split_once('/') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

/// Resolve a local path against the working directory and drop `.`/`..`
/// lexically, so keys never escape through `..`.
fn absolute(path: &str, uri: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid(format!("{uri}: empty path")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(format!("{uri}: path contains a NUL byte")));
    }
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::invalid(format!("{uri}: cannot resolve relative path: {e}")))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for comp in joined.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            StoreUri::parse("file:///tmp/a/../b").unwrap(),
            StoreUri::File {
                path: "/tmp/b".into()
            }
        );
        assert_eq!(
            StoreUri::parse("s3://bkt/run/step-1").unwrap(),
            StoreUri::S3 {
                bucket: "bkt".into(),
                key: "run/step-1".into()
            }
        );
        assert_eq!(
            StoreUri::parse("az://acct/ctr/run").unwrap(),
            StoreUri::Azure {
                account: "acct".into(),
                container: "ctr".into(),
                key: "run".into()
            }
        );
        assert!(matches!(
            StoreUri::parse("direct:///x").unwrap(),
            StoreUri::Direct { .. }
        ));
        assert!(matches!(
            StoreUri::parse("memory://t/k").unwrap(),
            StoreUri::Memory { .. }
        ));
    }

    #[test]
    fn relative_paths_resolve_against_cwd() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            StoreUri::parse("file://some/dir").unwrap(),
            StoreUri::File {
                path: cwd.join("some/dir")
            }
        );
        assert_eq!(
            StoreUri::parse("rel").unwrap(),
            StoreUri::File {
                path: cwd.join("rel")
            }
        );
    }

    #[test]
    fn bad_uris_name_the_problem() {
        let msg = |u: &str| StoreUri::parse(u).unwrap_err().to_string();
        assert!(msg("gs://b/k").contains("unknown scheme 'gs://'"));
        assert!(msg("s3://").contains("missing bucket"));
        assert!(msg("s3:///key").contains("missing bucket"));
        assert!(msg("az://acct").contains("az://<account>/<container>"));
        assert!(msg("file://").contains("empty path"));
        assert!(msg("").contains("empty URI"));
        assert!(msg("file:/x").contains("expected file://"));
        assert!(msg("s3:bkt/k").contains("expected s3://"));
        // Dot segments are refused, never collapsed: the Azure client
        // would otherwise address another container.
        for u in [
            "az://acct/ctrone/x/../../ctrtwo/evil",
            "s3://bkt/a/../../b",
            "s3://bkt//abs",
            "memory://m/a/./b",
        ] {
            assert!(msg(u).contains("never normalised"), "{u} accepted");
        }
    }
}
