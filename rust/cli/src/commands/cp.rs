//! `s3dlio cp`: copies *logical* bytes. The source is read through the
//! codec (a compressed s3dlio object is decompressed and its CRC32C
//! checked; anything else is read as it is) and the destination is written
//! plain, or compressed with `--compression-level`. The same path serves
//! local -> URI, URI -> local and URI -> URI, so every direction behaves alike.

use futures::StreamExt;
use indicatif::ProgressBar;
use s3dlio_core::codec::ObjectReader;
use s3dlio_core::object::{copy_object, WriteOptions};
use s3dlio_core::store::Location;
use s3dlio_core::Error;
use serde_json::json;

use super::Ctx;
use crate::args::CpArgs;
use crate::error::{CliError, CliResult, EXIT_FAILURE, EXIT_INTEGRITY, EXIT_OK};
use crate::format;
use crate::target::{basename, Target};
use crate::ui;

/// Objects copied at once in a recursive copy: enough to hide per-object
/// latency on object stores without flooding a local disk.
const PARALLEL: usize = 4;

struct Job {
    src: Location,
    dst: Location,
    /// Source bytes as listed (stored size), until the reader knows better.
    size: u64,
}

struct Copied {
    logical: u64,
    stored: u64,
}

pub async fn run(ctx: &Ctx, args: CpArgs) -> CliResult<i32> {
    let src = Target::open(&args.src, &ctx.store)?;
    let dst = Target::open(&args.dst, &ctx.store)?;
    let opts = WriteOptions::with_level(args.compression_level);
    let jobs = if args.recursive {
        plan_tree(&src, &dst).await?
    } else {
        vec![plan_one(&src, &dst).await?]
    };
    let count = jobs.len();
    let bar = ctx.ui.bytes_bar(jobs.iter().map(|j| j.size).sum());

    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut results = futures::stream::iter(jobs)
        .map(|job| {
            let (opts, bar) = (&opts, &bar);
            async move {
                let res = copy_one(&job, opts, bar).await;
                (job, res)
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some((job, res)) = results.next().await {
        match res {
            Ok(c) => {
                if ctx.ui.chatty() {
                    ui::println(
                        &bar,
                        &format!("copy: {} to {}", job.src.uri(), job.dst.uri()),
                    );
                }
                done.push((job, c));
            }
            Err(e) => {
                if count > 1 {
                    ui::eprintln(
                        &bar,
                        &format!(
                            "s3dlio: error: copy {} to {} failed: {e}",
                            job.src.uri(),
                            job.dst.uri()
                        ),
                    );
                }
                failed.push((job, e));
            }
        }
    }
    drop(results);
    bar.finish_and_clear();
    done.sort_by(|a, b| a.0.src.key.cmp(&b.0.src.key));

    let logical: u64 = done.iter().map(|(_, c)| c.logical).sum();
    let stored: u64 = done.iter().map(|(_, c)| c.stored).sum();
    if ctx.ui.json {
        ui::print_json(&json!({
            "copied": done.iter().map(|(j, c)| json!({
                "src": j.src.uri(),
                "dst": j.dst.uri(),
                "size": c.logical,
                "stored_size": c.stored,
                "ratio": format::ratio(c.stored, c.logical),
            })).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(j, e)| json!({
                "src": j.src.uri(),
                "dst": j.dst.uri(),
                "error": e.to_string(),
            })).collect::<Vec<_>>(),
            "bytes": logical,
            "stored_bytes": stored,
        }));
    } else if ctx.ui.chatty() && !done.is_empty() {
        ui::print_lines(&[format!(
            "copied {} object{}: {} logical, {} stored (ratio {})",
            done.len(),
            if done.len() == 1 { "" } else { "s" },
            format::size(logical),
            format::size(stored),
            format::ratio_text(format::ratio(stored, logical)),
        )]);
    }
    summarize_failures(failed, count)
}

/// One failure is reported as itself; several as a count (each was printed
/// as it happened). Bad data anywhere is exit 1 only if nothing else failed.
fn summarize_failures(mut failed: Vec<(Job, Error)>, count: usize) -> CliResult<i32> {
    match failed.len() {
        0 => Ok(EXIT_OK),
        1 if count == 1 => Err(failed.remove(0).1.into()),
        n => {
            let all_bad_data = failed
                .iter()
                .all(|(_, e)| crate::error::exit_code(e) == EXIT_INTEGRITY);
            Err(CliError {
                code: if all_bad_data {
                    EXIT_INTEGRITY
                } else {
                    EXIT_FAILURE
                },
                message: format!("{n} of {count} copies failed"),
            })
        }
    }
}

async fn plan_one(src: &Target, dst: &Target) -> CliResult<Job> {
    if src.is_local_dir() {
        return Err(CliError::failure(format!(
            "{} is a directory (use --recursive to copy its contents)",
            src.raw
        )));
    }
    let meta = src.loc.store.head(&src.loc.key).await?;
    let dst = if dst.names_container() {
        dst.child(basename(&src.loc.key))
    } else {
        dst.loc.clone()
    };
    Ok(Job {
        src: src.loc.clone(),
        dst,
        size: meta.size,
    })
}

/// Every object under the source prefix, mirrored under the destination
/// (`cp -r src/ dst/` puts `src/a/b` at `dst/a/b`, as `aws s3 cp` does).
async fn plan_tree(src: &Target, dst: &Target) -> CliResult<Vec<Job>> {
    let prefix = src.dir_prefix();
    let objects = src.loc.store.list(&prefix).await?;
    if objects.is_empty() {
        // `cp -r one-file dst` copies that file, as `cp -r` does.
        if !src.loc.key.is_empty() && src.loc.store.head(&src.loc.key).await.is_ok() {
            return Ok(vec![plan_one(src, dst).await?]);
        }
        return Err(Error::NotFound {
            uri: format!("{} (nothing to copy under it)", src.uri()),
        }
        .into());
    }
    Ok(objects
        .into_iter()
        .map(|m| Job {
            dst: dst.child(&m.key[prefix.len()..]),
            src: src.at(m.key),
            size: m.size,
        })
        .collect())
}

async fn copy_one(job: &Job, opts: &WriteOptions, bar: &ProgressBar) -> Result<Copied, Error> {
    let reader = ObjectReader::open(job.src.store.clone(), &job.src.key).await?;
    // The bar counts logical bytes; the listing only knew stored ones.
    let logical = reader.logical_size();
    if logical != job.size {
        let len = bar.length().unwrap_or(0);
        bar.set_length((len + logical).saturating_sub(job.size));
    }
    let meta = copy_object(&reader, &job.dst, opts, &|n| bar.inc(n)).await?;
    Ok(Copied {
        logical: meta.logical_size,
        stored: meta.stored_size,
    })
}
