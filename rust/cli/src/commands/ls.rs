//! `s3dlio ls`: like `aws s3 ls`, sub-prefixes first as `PRE name/`, then
//! objects with their stored size and modification time.

use std::path::PathBuf;

use s3dlio_core::store::ObjectMeta;
use s3dlio_core::Error;
use serde_json::json;

use super::Ctx;
use crate::args::LsArgs;
use crate::error::{CliResult, EXIT_OK};
use crate::format;
use crate::target::Target;
use crate::ui;

use s3dlio_core::store::local::TEMP_MARKER;

/// What a listing found, relative to `base` (the prefix up to its last `/`).
struct Listing {
    prefix: String,
    base: String,
    prefixes: Vec<String>,
    objects: Vec<ObjectMeta>,
}

pub async fn run(ctx: &Ctx, args: LsArgs) -> CliResult<i32> {
    let target = Target::open(&args.uri, &ctx.store)?;
    let spinner = ctx.ui.spinner("listing");
    let listing = list(&target, args.recursive).await;
    spinner.finish_and_clear();
    let listing = listing?;

    if ctx.ui.json {
        ui::print_json(&to_json(&target, &listing, args.recursive));
    } else {
        ui::print_lines(&to_text(&listing, args.human_readable));
    }
    Ok(EXIT_OK)
}

async fn list(target: &Target, recursive: bool) -> CliResult<Listing> {
    let store = &target.loc.store;
    let key = &target.loc.key;
    // A local path is a directory to look into, or one file; the store
    // itself only knows key prefixes.
    let prefix = match &target.local {
        Some(path) if path.is_file() => {
            let meta = store.head(key).await?;
            return Ok(Listing {
                prefix: key.clone(),
                base: parent_prefix(key),
                prefixes: Vec::new(),
                objects: vec![meta],
            });
        }
        Some(path) if !path.is_dir() => {
            return Err(Error::NotFound { uri: target.uri() }.into());
        }
        // The store lists whole subtrees; one level of a local directory
        // (`ls /`) must not walk the filesystem below it.
        Some(path) if !recursive => return list_local_dir(target, path.clone()).await,
        Some(_) => target.dir_prefix(),
        None => key.clone(),
    };
    let base = parent_prefix(&prefix);
    let (prefixes, objects) = if recursive {
        (Vec::new(), store.list(&prefix).await?)
    } else {
        let dir = store.list_dir(&prefix).await?;
        (dir.prefixes, dir.objects)
    };
    if prefixes.is_empty() && objects.is_empty() && !key.is_empty() && target.local.is_none() {
        return Err(Error::NotFound {
            uri: format!("{} (no objects under this prefix)", target.uri()),
        }
        .into());
    }
    Ok(Listing {
        prefix,
        base,
        prefixes,
        objects,
    })
}

/// One level of a local directory, in the shape of a store listing.
async fn list_local_dir(target: &Target, path: PathBuf) -> CliResult<Listing> {
    let prefix = target.dir_prefix();
    let uri = target.uri();
    let read_prefix = prefix.clone();
    let read = move || -> std::io::Result<(Vec<String>, Vec<ObjectMeta>)> {
        let mut prefixes = Vec::new();
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // In-flight writes of the local store, which `list` hides too.
            if name.contains(TEMP_MARKER) {
                continue;
            }
            // Follows symlinks, as the store's `head` does.
            let Ok(md) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if md.is_dir() {
                prefixes.push(format!("{read_prefix}{name}/"));
            } else {
                let mut meta = ObjectMeta::new(format!("{read_prefix}{name}"), md.len());
                meta.last_modified = md.modified().ok();
                objects.push(meta);
            }
        }
        prefixes.sort();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((prefixes, objects))
    };
    let (prefixes, objects) = tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| Error::backend(&uri, format!("listing task failed: {e}"), false))?
        .map_err(|e| Error::from_io(&uri, e))?;
    Ok(Listing {
        base: prefix.clone(),
        prefix,
        prefixes,
        objects,
    })
}

/// `a/b/c` -> `a/b/`; `abc` -> ``.
fn parent_prefix(key: &str) -> String {
    match key.rfind('/') {
        Some(i) => key[..=i].to_string(),
        None => String::new(),
    }
}

fn relative<'a>(key: &'a str, base: &str) -> &'a str {
    key.strip_prefix(base).unwrap_or(key)
}

fn to_text(listing: &Listing, human: bool) -> Vec<String> {
    const TIME_WIDTH: usize = 20; // 2024-03-01T12:00:05Z
    let sizes: Vec<String> = listing
        .objects
        .iter()
        .map(|m| {
            if human {
                format::size(m.size)
            } else {
                m.size.to_string()
            }
        })
        .collect();
    let size_width = sizes.iter().map(String::len).max().unwrap_or(0);
    let mut lines = Vec::new();
    for p in &listing.prefixes {
        lines.push(format!(
            "{:>w$} {}",
            "PRE",
            relative(p, &listing.base),
            w = TIME_WIDTH + 1 + size_width
        ));
    }
    for (meta, size) in listing.objects.iter().zip(&sizes) {
        let time = format::iso_system_time(meta.last_modified).unwrap_or_else(|| "-".to_string());
        lines.push(format!(
            "{time:<TIME_WIDTH$} {size:>size_width$} {}",
            relative(&meta.key, &listing.base)
        ));
    }
    lines
}

fn to_json(target: &Target, listing: &Listing, recursive: bool) -> serde_json::Value {
    let store = &target.loc.store;
    let prefixes: Vec<_> = listing
        .prefixes
        .iter()
        .map(|p| json!({ "prefix": p, "uri": store.uri(p) }))
        .collect();
    let objects: Vec<_> = listing
        .objects
        .iter()
        .map(|m| {
            json!({
                "key": m.key,
                "uri": store.uri(&m.key),
                "name": relative(&m.key, &listing.base),
                "size": m.size,
                "last_modified": format::iso_system_time(m.last_modified),
                "etag": m.etag,
            })
        })
        .collect();
    json!({
        "uri": target.uri(),
        "prefix": listing.prefix,
        "recursive": recursive,
        "prefixes": prefixes,
        "objects": objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_groups_prefixes_first() {
        let mut obj = ObjectMeta::new("run/a.bin", 12);
        obj.last_modified = Some(std::time::UNIX_EPOCH);
        let listing = Listing {
            prefix: "run/".into(),
            base: "run/".into(),
            prefixes: vec!["run/step-1/".into()],
            objects: vec![obj],
        };
        assert_eq!(
            to_text(&listing, false),
            vec![
                "                    PRE step-1/".to_string(),
                "1970-01-01T00:00:00Z 12 a.bin".to_string(),
            ]
        );
    }
}
