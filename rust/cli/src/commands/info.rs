//! `s3dlio info`: what the manifests of committed checkpoints say, without
//! reading any shard.

use s3dlio_core::checkpoint::{CheckpointStore, Manifest, ShardMeta, Strategy};
use s3dlio_core::object::WriteOptions;
use s3dlio_core::store::{join_key, open_store, Location};
use s3dlio_core::Error;
use serde_json::json;

use super::Ctx;
use crate::args::InfoArgs;
use crate::error::{CliResult, EXIT_OK};
use crate::format::{self, Align};
use crate::ui;

pub async fn run(ctx: &Ctx, args: InfoArgs) -> CliResult<i32> {
    if let Some(code) = super::orbax::info(ctx, &args.uri, args.step).await? {
        return Ok(code);
    }
    if args.step.is_none() {
        if let Some(dcp) = crate::dcp::open(&args.uri, &ctx.store).await? {
            if ctx.ui.json {
                ui::print_json(&dcp.info_json());
            } else {
                ui::print_lines(&dcp.info_lines());
            }
            return Ok(EXIT_OK);
        }
    }
    let store = open_checkpoints(&args.uri, ctx)?;
    match args.step {
        Some(step) => {
            let manifest = store.manifest(step).await?;
            if ctx.ui.json {
                ui::print_json(&manifest_json(&store, &manifest, true));
            } else {
                ui::print_lines(&step_text(&store, &manifest));
            }
        }
        None => {
            let spinner = ctx.ui.spinner("reading manifests");
            let manifests = store.list_checkpoints().await;
            spinner.finish_and_clear();
            let manifests = manifests?;
            if manifests.is_empty() {
                return Err(no_checkpoints(&store).into());
            }
            if ctx.ui.json {
                ui::print_json(&json!({
                    "uri": store.uri(),
                    "checkpoints": manifests
                        .iter()
                        .map(|m| manifest_json(&store, m, false))
                        .collect::<Vec<_>>(),
                }));
            } else {
                ui::print_lines(&list_text(&store, &manifests));
            }
        }
    }
    Ok(EXIT_OK)
}

/// A checkpoint base, plus its raw store: `CheckpointStore` does not hand
/// out its location, and messages need the URI of step directories.
pub struct Checkpoints {
    store: CheckpointStore,
    loc: Location,
}

impl Checkpoints {
    pub fn uri_of(&self, key: &str) -> String {
        self.loc.store.uri(key)
    }
}

impl std::ops::Deref for Checkpoints {
    type Target = CheckpointStore;

    fn deref(&self) -> &CheckpointStore {
        &self.store
    }
}

/// The checkpoint store at `uri`. Only reads happen here, so the strategy
/// and write options are irrelevant: shard names come from the manifests.
pub fn open_checkpoints(uri: &str, ctx: &Ctx) -> CliResult<Checkpoints> {
    let store = CheckpointStore::open(uri, Strategy::Flat, WriteOptions::default(), &ctx.store)?;
    let loc = open_store(uri, &ctx.store)?;
    Ok(Checkpoints { store, loc })
}

pub fn no_checkpoints(store: &Checkpoints) -> Error {
    Error::NotFound {
        uri: format!("{} (no committed checkpoint there)", store.uri()),
    }
}

fn list_text(store: &Checkpoints, manifests: &[Manifest]) -> Vec<String> {
    let rows: Vec<Vec<String>> = manifests
        .iter()
        .map(|m| {
            vec![
                m.step.to_string(),
                m.epoch.to_string(),
                m.framework.clone(),
                m.world_size.to_string(),
                format::size(m.logical_size),
                format::size(m.stored_size),
                format::ratio_text(m.ratio()),
                format::iso_time(m.created_unix),
            ]
        })
        .collect();
    let mut lines = vec![format!("checkpoints under {}", store.uri())];
    lines.extend(format::table(
        &[
            "STEP",
            "EPOCH",
            "FRAMEWORK",
            "RANKS",
            "LOGICAL",
            "STORED",
            "RATIO",
            "CREATED",
        ],
        &[
            Align::Right,
            Align::Right,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Left,
        ],
        &rows,
    ));
    lines
}

fn step_text(store: &Checkpoints, m: &Manifest) -> Vec<String> {
    let mut lines = vec![
        format!(
            "checkpoint {}",
            store.uri_of(&store.layout().step_dir(m.step))
        ),
        format!("step:          {}", m.step),
        format!("epoch:         {}", m.epoch),
        format!("framework:     {}", m.framework),
        format!("world size:    {}", m.world_size),
        format!("generation:    {}", m.generation),
        format!("created:       {}", format::iso_time(m.created_unix)),
        format!("logical size:  {}", format::size_both(m.logical_size)),
        format!("stored size:   {}", format::size_both(m.stored_size)),
        format!(
            "ratio:         {} (stored / logical)",
            format::ratio_text(m.ratio())
        ),
    ];
    if !m.user_meta.is_null() {
        lines.push(format!("user meta:     {}", m.user_meta));
    }
    lines.push(String::new());
    let rows: Vec<Vec<String>> = m.shards.iter().map(shard_row).collect();
    lines.extend(format::table(
        &["RANK", "SIZE", "STORED", "RATIO", "CRC32C", "CODEC", "KEY"],
        &[
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Left,
        ],
        &rows,
    ));
    lines
}

fn shard_row(s: &ShardMeta) -> Vec<String> {
    let codec = match s.level {
        Some(level) => format!("{} ({level})", s.codec.name()),
        None => s.codec.name().to_string(),
    };
    vec![
        s.rank.to_string(),
        format::size(s.size),
        format::size(s.stored_size),
        format::ratio_text(format::ratio(s.stored_size, s.size)),
        format::crc(s.crc32c),
        codec,
        s.key.clone(),
    ]
}

fn manifest_json(store: &Checkpoints, m: &Manifest, shards: bool) -> serde_json::Value {
    let dir = store.layout().step_dir(m.step);
    let mut doc = json!({
        "uri": store.uri_of(&dir),
        "step": m.step,
        "epoch": m.epoch,
        "framework": m.framework,
        "world_size": m.world_size,
        "generation": m.generation,
        "created_unix": m.created_unix,
        "created": format::iso_time(m.created_unix),
        "logical_size": m.logical_size,
        "stored_size": m.stored_size,
        "ratio": m.ratio(),
        "user_meta": m.user_meta,
    });
    if shards {
        doc["shards"] = m
            .shards
            .iter()
            .map(|s| {
                json!({
                    "rank": s.rank,
                    "key": s.key,
                    "uri": store.uri_of(&join_key(&dir, &s.key)),
                    "size": s.size,
                    "stored_size": s.stored_size,
                    "ratio": format::ratio(s.stored_size, s.size),
                    "crc32c": format::crc(s.crc32c),
                    "codec": s.codec.name(),
                    "level": s.level,
                })
            })
            .collect();
    }
    doc
}
