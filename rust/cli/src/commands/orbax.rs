//! `s3dlio info` / `s3dlio verify` on an Orbax run written by `s3dlio_jax`:
//! `<base>/<step>/<item>/s3dlio_index.json` (JSON: leaves, each with the
//! stored pieces' file, range, size, CRC32C and encoding), committed by
//! Orbax's `<step>/commit_success.txt`. Detected before the checkpoint
//! store layout is assumed; `verify` re-reads every piece through the pack
//! reader, which checks each CRC32C.

use std::sync::Arc;

use s3dlio_core::pack::{self, Encoding, Grouping, ItemRead, ReadOptions, Target};
use s3dlio_core::store::{join_key, open_store, Location, ObjectStore};
use s3dlio_core::Error;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::{exit_code, CliResult, EXIT_FAILURE, EXIT_INTEGRITY, EXIT_OK};
use crate::format::{self, Align};
use crate::ui;

const INDEX: &str = "s3dlio_index.json";
const COMMIT: &str = "commit_success.txt";

/// One item (`<step>/<item>/`) holding an s3dlio_jax index.
struct Item {
    step: u64,
    committed: bool,
    name: String,
    dir: String,
    index: Value,
}

/// The steps of an Orbax run under `loc`, or None when `loc` is not one
/// (no step directory there holds an s3dlio_jax item).
async fn find(loc: &Location, only: Option<u64>) -> CliResult<Option<Vec<Item>>> {
    let store = &loc.store;
    let root = dir_key(&loc.key);
    let listing = store.list_dir(&root).await?;
    let mut steps: Vec<(u64, String)> = listing
        .prefixes
        .iter()
        .filter_map(|p| {
            let name = p.trim_end_matches('/').rsplit('/').next()?;
            let digits = name.rsplit('_').next()?;
            let step = digits.parse::<u64>().ok()?;
            (digits == name || name.ends_with(&format!("_{digits}"))).then(|| (step, p.clone()))
        })
        .collect();
    steps.sort();
    let mut items = Vec::new();
    let mut orbax = false;
    for (step, dir) in steps {
        let inside = store.list_dir(&dir).await?;
        let committed = inside.objects.iter().any(|o| o.key.ends_with(COMMIT));
        for sub in &inside.prefixes {
            let key = join_key(sub, INDEX);
            let data = match store.get(&key).await {
                Ok(d) => d,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            orbax = true;
            if only.is_some_and(|s| s != step) {
                continue;
            }
            let index: Value = serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt(store.uri(&key), format!("not JSON: {e}")))?;
            if index["format"] != "s3dlio-orbax" {
                return Err(Error::corrupt(store.uri(&key), "not an s3dlio_jax index").into());
            }
            let name = sub
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default();
            items.push(Item {
                step,
                committed,
                name: name.to_string(),
                dir: sub.clone(),
                index,
            });
        }
        if !orbax
            && inside
                .objects
                .iter()
                .any(|o| o.key.ends_with("manifest.json"))
        {
            // The checkpoint store's own layout: not an Orbax run.
            return Ok(None);
        }
    }
    if !orbax {
        return Ok(None);
    }
    if let Some(step) = only {
        if items.is_empty() {
            return Err(Error::NotFound {
                uri: format!("{} (no step {step} in this Orbax run)", store.uri(&root)),
            }
            .into());
        }
    }
    Ok(Some(items))
}

fn dir_key(key: &str) -> String {
    match key.trim_end_matches('/') {
        "" => String::new(),
        k => format!("{k}/"),
    }
}

fn leaves(index: &Value) -> &[Value] {
    index["leaves"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn pieces(leaf: &Value) -> &[Value] {
    leaf["chunks"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// (logical, stored) bytes of a leaf's pieces.
fn sizes(leaf: &Value) -> (u64, u64) {
    pieces(leaf).iter().fold((0, 0), |(l, s), p| {
        (
            l + p["size"].as_u64().unwrap_or(0),
            s + p["length"].as_u64().unwrap_or(0),
        )
    })
}

fn item_sizes(item: &Item) -> (u64, u64) {
    leaves(&item.index)
        .iter()
        .map(sizes)
        .fold((0, 0), |(a, b), (l, s)| (a + l, b + s))
}

/// `s3dlio info` on an Orbax run; None when `uri` is not one.
pub async fn info(ctx: &Ctx, uri: &str, step: Option<u64>) -> CliResult<Option<i32>> {
    let loc = open_store(uri, &ctx.store)?;
    let Some(items) = find(&loc, step).await? else {
        return Ok(None);
    };
    let store = &loc.store;
    if ctx.ui.json {
        let docs: Vec<Value> = items
            .iter()
            .map(|it| {
                let (logical, stored) = item_sizes(it);
                let mut doc = json!({
                    "step": it.step,
                    "item": it.name,
                    "uri": store.uri(&it.dir),
                    "committed": it.committed,
                    "framework": "orbax (s3dlio_jax)",
                    "processes": it.index["process_count"],
                    "compression_level": it.index["compression_level"],
                    "leaves": leaves(&it.index).len(),
                    "logical_size": logical,
                    "stored_size": stored,
                    "ratio": format::ratio(stored, logical),
                });
                if step.is_some() {
                    doc["leaves"] = leaves(&it.index).iter().map(leaf_json).collect();
                }
                doc
            })
            .collect();
        ui::print_json(&json!({"uri": store.uri(&loc.key), "orbax": docs}));
        return Ok(Some(EXIT_OK));
    }
    let mut lines = vec![format!(
        "Orbax run (s3dlio_jax) under {}",
        store.uri(&loc.key)
    )];
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| {
            let (logical, stored) = item_sizes(it);
            vec![
                it.step.to_string(),
                it.name.clone(),
                if it.committed { "yes" } else { "no" }.to_string(),
                it.index["process_count"].to_string(),
                leaves(&it.index).len().to_string(),
                format::size(logical),
                format::size(stored),
                format::ratio_text(format::ratio(stored, logical)),
            ]
        })
        .collect();
    lines.extend(format::table(
        &[
            "STEP",
            "ITEM",
            "COMMITTED",
            "PROCESSES",
            "LEAVES",
            "LOGICAL",
            "STORED",
            "RATIO",
        ],
        &[
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
        &rows,
    ));
    if step.is_some() {
        for it in &items {
            lines.push(String::new());
            lines.push(format!("item {} ({})", it.name, store.uri(&it.dir)));
            let rows: Vec<Vec<String>> = leaves(&it.index)
                .iter()
                .map(|leaf| {
                    let (logical, stored) = sizes(leaf);
                    vec![
                        leaf["key"].as_str().unwrap_or("?").to_string(),
                        leaf["kind"].as_str().unwrap_or("?").to_string(),
                        leaf["dtype"].as_str().unwrap_or("-").to_string(),
                        leaf.get("shape").map_or("-".into(), Value::to_string),
                        pieces(leaf).len().to_string(),
                        format::size(logical),
                        format::size(stored),
                    ]
                })
                .collect();
            lines.extend(format::table(
                &[
                    "LEAF", "KIND", "DTYPE", "SHAPE", "PIECES", "LOGICAL", "STORED",
                ],
                &[
                    Align::Left,
                    Align::Left,
                    Align::Left,
                    Align::Left,
                    Align::Right,
                    Align::Right,
                    Align::Right,
                ],
                &rows,
            ));
        }
    }
    ui::print_lines(&lines);
    Ok(Some(EXIT_OK))
}

fn leaf_json(leaf: &Value) -> Value {
    let (logical, stored) = sizes(leaf);
    json!({
        "key": leaf["key"],
        "kind": leaf["kind"],
        "dtype": leaf.get("dtype"),
        "shape": leaf.get("shape"),
        "pieces": pieces(leaf).len(),
        "logical_size": logical,
        "stored_size": stored,
    })
}

fn encoding(piece: &Value) -> Result<Encoding, String> {
    match &piece["encoding"] {
        Value::Bool(false) => Ok(Encoding::Plain),
        Value::Bool(true) => Ok(Encoding::Zstd),
        Value::Array(g) if g.len() == 4 => {
            let n = |i: usize| g[i].as_u64().ok_or("bad grouping");
            Ok(Encoding::Grouped(Grouping {
                start: n(0)?,
                length: n(1)?,
                width: n(2)? as usize,
                frame: n(3)? as usize,
            }))
        }
        other => Err(format!("unknown encoding {other}")),
    }
}

/// Re-read every piece of one leaf (CRC32C checked by the pack reader).
fn verify_leaf(store: Arc<dyn ObjectStore>, dir: &str, leaf: &Value) -> Result<u64, Error> {
    let key = leaf["key"].as_str().unwrap_or("?");
    let mut reads = Vec::new();
    let mut total = 0;
    for piece in pieces(leaf) {
        let field = |name: &str| {
            piece[name].as_u64().ok_or_else(|| {
                Error::corrupt(store.uri(dir), format!("leaf {key}: piece without {name}"))
            })
        };
        let size = field("size")?;
        total += size;
        let file = piece["file"].as_str().unwrap_or_default();
        reads.push(ItemRead {
            key: join_key(dir, file),
            offset: field("offset")?,
            length: field("length")?,
            encoding: encoding(piece)
                .map_err(|e| Error::corrupt(store.uri(dir), format!("leaf {key}: {e}")))?,
            crc32c: piece["crc32c"].as_u64().map(|c| c as u32),
            label: format!("{key} piece {}", piece["box"]),
            targets: vec![Target::Skip(size as usize)],
        });
    }
    pack::read_items(store, reads, &ReadOptions::default())?;
    Ok(total)
}

/// `s3dlio verify` on an Orbax run; None when `uri` is not one.
pub async fn verify(ctx: &Ctx, uri: &str, step: Option<u64>) -> CliResult<Option<i32>> {
    let loc = open_store(uri, &ctx.store)?;
    let Some(items) = find(&loc, step).await? else {
        return Ok(None);
    };
    let items: Vec<Item> = items
        .into_iter()
        .filter(|it| it.committed || step.is_some())
        .collect();
    let total: u64 = items.iter().map(|it| item_sizes(it).0).sum();
    let bar = ctx.ui.bytes_bar(total);
    let mut results: Vec<Value> = Vec::new();
    let mut code = EXIT_OK;
    let (mut checked, mut failed) = (0usize, 0usize);
    for it in &items {
        for leaf in leaves(&it.index) {
            let store = loc.store.clone();
            let dir = it.dir.clone();
            let leaf_doc = leaf.clone();
            // The pack reader blocks on the core runtime: a plain thread.
            let outcome = tokio::task::spawn_blocking(move || {
                std::thread::spawn(move || verify_leaf(store, &dir, &leaf_doc))
                    .join()
                    .unwrap_or_else(|_| Err(Error::invalid("verify thread panicked")))
            })
            .await
            .unwrap_or_else(|e| Err(Error::invalid(format!("verify task failed: {e}"))));
            checked += 1;
            let key = leaf["key"].as_str().unwrap_or("?");
            let error = match outcome {
                Ok(bytes) => {
                    bar.inc(bytes);
                    None
                }
                Err(e) => {
                    failed += 1;
                    if exit_code(&e) == EXIT_INTEGRITY {
                        code = EXIT_INTEGRITY;
                    } else if code == EXIT_OK {
                        code = EXIT_FAILURE;
                    }
                    Some(e.to_string())
                }
            };
            if !ctx.ui.json && (!ctx.ui.quiet || error.is_some()) {
                let line = match &error {
                    None => format!("step {} {} leaf {key} OK", it.step, it.name),
                    Some(e) => format!("step {} {} leaf {key} FAILED: {e}", it.step, it.name),
                };
                ui::println(&bar, &line);
            }
            results.push(json!({"step": it.step, "item": it.name, "leaf": key, "ok": error.is_none(), "error": error}));
        }
    }
    bar.finish_and_clear();
    let root = loc.store.uri(&loc.key);
    if ctx.ui.json {
        ui::print_json(&json!({
            "uri": root,
            "ok": code == EXIT_OK,
            "leaves_checked": checked,
            "leaves_failed": failed,
            "leaves": results,
        }));
    } else if code == EXIT_OK {
        ui::print_lines(&[format!(
            "verified {checked} leaves in {} Orbax item(s) under {root}: all OK",
            items.len()
        )]);
    } else {
        ui::print_lines(&[format!(
            "verify FAILED under {root}: {failed} of {checked} leaves failed"
        )]);
    }
    Ok(Some(code))
}
