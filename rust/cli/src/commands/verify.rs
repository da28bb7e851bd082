//! `s3dlio verify`: re-read every shard of committed checkpoints and check
//! the CRC32C its manifest recorded. Exit 1 when anything does not match.

use s3dlio_core::checkpoint::Manifest;
use s3dlio_core::Error;
use serde_json::json;

use super::info::{no_checkpoints, open_checkpoints};
use super::Ctx;
use crate::args::VerifyArgs;
use crate::error::{exit_code, CliResult, EXIT_FAILURE, EXIT_INTEGRITY, EXIT_OK};
use crate::format;
use crate::ui;

/// What was found for one step.
struct StepReport {
    step: u64,
    /// The step could not be checked at all (manifest missing or unreadable).
    error: Option<Error>,
    shards: Vec<ShardReport>,
}

struct ShardReport {
    rank: u32,
    uri: String,
    size: u64,
    error: Option<String>,
    /// The error is bad stored data rather than a failed read.
    damaged: bool,
}

pub async fn run(ctx: &Ctx, args: VerifyArgs) -> CliResult<i32> {
    if let Some(code) = super::orbax::verify(ctx, &args.uri, args.step).await? {
        return Ok(code);
    }
    if args.step.is_none() {
        if let Some(dcp) = crate::dcp::open(&args.uri, &ctx.store).await? {
            return Ok(verify_dcp(ctx, &dcp).await);
        }
    }
    let store = open_checkpoints(&args.uri, ctx)?;
    let steps = match args.step {
        Some(step) => vec![step],
        None => store.committed_steps().await?,
    };
    if steps.is_empty() {
        return Err(no_checkpoints(&store).into());
    }
    let reader = store.reader();

    // Manifests first: their sizes size the bar, and one unreadable
    // manifest is a finding about that step, not the end of the run.
    let mut manifests: Vec<(u64, Result<Manifest, Error>)> = Vec::new();
    for step in steps {
        match reader.manifest(step).await {
            // A step named on the command line that does not exist is a
            // usage problem, reported with the steps there are.
            Err(e) if args.step.is_some() && e.is_not_found() => return Err(e.into()),
            res => manifests.push((step, res)),
        }
    }
    let total = manifests
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
        .map(|m| m.logical_size)
        .sum();
    let bar = ctx.ui.bytes_bar(total);

    let mut reports = Vec::new();
    for (step, manifest) in manifests {
        let report = match manifest {
            Err(e) => StepReport {
                step,
                error: Some(e),
                shards: Vec::new(),
            },
            Ok(m) => {
                bar.set_message(format!("step {step}: {} shards", m.shards.len()));
                // verify() re-reads the manifest; cheap next to the shards.
                let report = match reader.verify(step).await {
                    Ok(checks) => StepReport {
                        step,
                        error: None,
                        shards: checks
                            .into_iter()
                            .map(|c| ShardReport {
                                rank: c.rank,
                                uri: c.uri,
                                size: c.size,
                                error: c.error,
                                damaged: c.damaged,
                            })
                            .collect(),
                    },
                    Err(e) => StepReport {
                        step,
                        error: Some(e),
                        shards: Vec::new(),
                    },
                };
                bar.inc(m.logical_size);
                report
            }
        };
        if !ctx.ui.json {
            for line in step_lines(&report, ctx.ui.quiet) {
                ui::println(&bar, &line);
            }
        }
        reports.push(report);
    }
    bar.finish_and_clear();

    let checked: usize = reports.iter().map(|r| r.shards.len()).sum();
    let shards = || reports.iter().flat_map(|r| &r.shards);
    let failed_shards = shards().filter(|s| s.error.is_some()).count();
    let step_errors: Vec<&Error> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    // Bad bytes exit 1; a shard that could not be read (access, network)
    // is a failure to verify, not proof of damage, and exits 2.
    let damaged =
        shards().any(|s| s.damaged) || step_errors.iter().any(|e| exit_code(e) == EXIT_INTEGRITY);
    let code = if damaged {
        EXIT_INTEGRITY
    } else if failed_shards > 0 || !step_errors.is_empty() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    };

    if ctx.ui.json {
        ui::print_json(&json!({
            "uri": store.uri(),
            "ok": code == EXIT_OK,
            "shards_checked": checked,
            "shards_failed": failed_shards,
            "steps": reports.iter().map(step_json).collect::<Vec<_>>(),
        }));
    } else {
        let summary = if code == EXIT_OK {
            format!(
                "verified {checked} shard{} in {} checkpoint{} under {}: all OK",
                plural(checked),
                reports.len(),
                plural(reports.len()),
                store.uri()
            )
        } else {
            let unreadable = match step_errors.len() {
                0 => String::new(),
                n => format!(
                    ", {n} of {} checkpoint{} unreadable",
                    reports.len(),
                    plural(reports.len())
                ),
            };
            format!(
                "verify FAILED under {}: {failed_shards} of {checked} shard{} failed{unreadable}",
                store.uri(),
                plural(checked),
            )
        };
        ui::print_lines(&[summary]);
    }
    Ok(code)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One line per shard; with `quiet` only the failures.
fn step_lines(report: &StepReport, quiet: bool) -> Vec<String> {
    let step = report.step;
    if let Some(e) = &report.error {
        return vec![format!("step {step} FAILED: {e}")];
    }
    report
        .shards
        .iter()
        .filter(|s| !quiet || s.error.is_some())
        .map(|s| match &s.error {
            None => format!(
                "step {step} rank {} {} OK ({})",
                s.rank,
                s.uri,
                format::size(s.size)
            ),
            Some(e) => format!("step {step} rank {} {} FAILED: {e}", s.rank, s.uri),
        })
        .collect()
}

fn step_json(report: &StepReport) -> serde_json::Value {
    json!({
        "step": report.step,
        "ok": report.error.is_none() && report.shards.iter().all(|s| s.error.is_none()),
        "error": report.error.as_ref().map(|e| e.to_string()),
        "shards": report.shards.iter().map(|s| json!({
            "rank": s.rank,
            "uri": s.uri,
            "size": s.size,
            "ok": s.error.is_none(),
            "error": s.error,
        })).collect::<Vec<_>>(),
    })
}

/// A torch DCP checkpoint: every item's structure, and its bytes against
/// the CRC32C s3dlio recorded.
async fn verify_dcp(ctx: &Ctx, dcp: &crate::dcp::Checkpoint) -> i32 {
    let checks = dcp.verify().await;
    let failed = checks.iter().filter(|c| c.error.is_some()).count();
    let code = if checks.iter().any(|c| c.damaged) {
        EXIT_INTEGRITY
    } else if failed > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    };
    let crc_checked = checks
        .iter()
        .filter(|c| c.error.is_none() && c.note.is_none())
        .count();
    if ctx.ui.json {
        ui::print_json(&json!({
            "uri": dcp.uri(),
            "layout": "torch-dcp",
            "ok": code == EXIT_OK,
            "items_checked": checks.len(),
            "items_crc_checked": crc_checked,
            "items_failed": failed,
            "items": checks.iter().map(|c| json!({
                "item": c.label, "uri": c.uri, "size": c.checked,
                "ok": c.error.is_none(), "error": c.error, "note": c.note,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut lines: Vec<String> = checks
            .iter()
            .filter(|c| !ctx.ui.quiet || c.error.is_some())
            .map(|c| match (&c.error, &c.note) {
                (Some(e), _) => format!("{} in {} FAILED: {e}", c.label, c.uri),
                (None, Some(n)) => format!("{} in {} structure OK ({n})", c.label, c.uri),
                (None, None) => {
                    format!("{} in {} OK ({})", c.label, c.uri, format::size(c.checked))
                }
            })
            .collect();
        lines.push(if code == EXIT_OK {
            format!(
                "verified {} items of the DCP checkpoint {} ({crc_checked} by CRC32C): all OK",
                checks.len(),
                dcp.uri()
            )
        } else {
            format!(
                "verify FAILED for the DCP checkpoint {}: {failed} of {} items failed",
                dcp.uri(),
                checks.len()
            )
        });
        ui::print_lines(&lines);
    }
    code
}
