//! `s3dlio rm`: delete one object, or with `-r` everything under a prefix.

use std::path::Path;

use futures::StreamExt;
use s3dlio_core::Error;
use serde_json::json;

use super::Ctx;
use crate::args::RmArgs;
use crate::error::{CliError, CliResult, EXIT_OK};
use crate::target::Target;
use crate::ui;

/// Deletes in flight at once: deletes are small and latency-bound.
const PARALLEL: usize = 8;

pub async fn run(ctx: &Ctx, args: RmArgs) -> CliResult<i32> {
    let target = Target::open(&args.uri, &ctx.store)?;
    let keys = if args.recursive {
        plan_tree(&target).await?
    } else {
        if target.is_local_dir() {
            return Err(CliError::failure(format!(
                "{} is a directory (use --recursive to delete its contents)",
                target.raw
            )));
        }
        vec![target.loc.key.clone()]
    };

    let count = keys.len();
    let bar = ctx.ui.count_bar(count as u64);
    let store = target.loc.store.clone();
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    let mut results = futures::stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move {
                let res = store.delete(&key).await;
                (key, res)
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some((key, res)) = results.next().await {
        bar.inc(1);
        let uri = store.uri(&key);
        match res {
            // Gone already (a concurrent delete) is what was asked for,
            // except for the one object named on the command line.
            Err(e) if !(args.recursive && e.is_not_found()) => {
                if count > 1 {
                    ui::eprintln(&bar, &format!("s3dlio: error: delete {uri} failed: {e}"));
                }
                failed.push((uri, e));
            }
            _ => {
                if ctx.ui.chatty() {
                    ui::println(&bar, &format!("delete: {uri}"));
                }
                deleted.push(uri);
            }
        }
    }
    drop(results);
    bar.finish_and_clear();

    if args.recursive {
        if let Some(dir) = target.local.clone() {
            let _ = tokio::task::spawn_blocking(move || remove_empty_dirs(&dir)).await;
        }
    }
    deleted.sort();
    if ctx.ui.json {
        ui::print_json(&json!({
            "deleted": deleted,
            "failed": failed.iter().map(|(uri, e)| json!({ "uri": uri, "error": e.to_string() }))
                .collect::<Vec<_>>(),
        }));
    }
    match failed.len() {
        0 => Ok(EXIT_OK),
        1 if count == 1 => Err(failed.remove(0).1.into()),
        n => Err(CliError::failure(format!("{n} of {count} deletes failed"))),
    }
}

async fn plan_tree(target: &Target) -> CliResult<Vec<String>> {
    if target.is_local_root() {
        return Err(CliError::failure(format!(
            "refusing to delete everything under the filesystem root ({})",
            target.raw
        )));
    }
    let store = &target.loc.store;
    let keys: Vec<String> = store
        .list(&target.dir_prefix())
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    if !keys.is_empty() {
        return Ok(keys);
    }
    // `rm -r one-object` deletes it, as `rm -r` does for a file.
    if !target.loc.key.is_empty() && store.head(&target.loc.key).await.is_ok() {
        return Ok(vec![target.loc.key.clone()]);
    }
    if target.is_local_dir() {
        // Only empty directories left: cleaning them up is all there is to do.
        return Ok(Vec::new());
    }
    Err(Error::NotFound {
        uri: format!("{} (nothing to delete under it)", target.uri()),
    }
    .into())
}

/// Object stores have no directories, so after `rm -r` a prefix is gone;
/// locally the same command should not leave an empty tree behind.
/// Directories that still hold anything are kept; failures are ignored.
fn remove_empty_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
