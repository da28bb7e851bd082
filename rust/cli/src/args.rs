//! Command-line grammar. Verbs and flags follow `aws s3` so users need no
//! new vocabulary; `info` and `verify` are ours.

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
URIs: file:///path or a plain path, direct:///path (O_DIRECT), s3://bucket/key,
az://account/container/key, memory://name/key. Times are UTC (ISO 8601).

Exit codes:
  0  success
  1  integrity failure: a CRC32C mismatch or a corrupt object or checkpoint
     (what `verify` reports; a copy that reads corrupt data ends the same way)
  2  usage error, bad input, not found, or any other failure";

#[derive(Debug, Parser)]
#[command(
    name = "s3dlio",
    version,
    about = "Inspect, copy and verify s3dlio objects and checkpoints",
    long_about = "Inspect, copy and verify s3dlio objects and checkpoints on local disk, \
                  O_DIRECT, S3 and Azure Blob. Compressed objects (zstd seekable) are \
                  decompressed transparently and every read is checked against its CRC32C.",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Print no progress bars and no per-object lines
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// direct://: fall back to buffered I/O where O_DIRECT is refused (tmpfs)
    #[arg(long, global = true)]
    pub direct_fallback: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List objects under a prefix (sub-prefixes show as `PRE name/`)
    ///
    /// Sizes are stored bytes (compressed size for compressed objects); use
    /// `stat` for an object's logical size and compression ratio.
    Ls(LsArgs),
    /// Show one object's sizes, codec, compression ratio and CRC32C
    Stat(StatArgs),
    /// Copy objects between local paths and URIs, optionally compressing
    ///
    /// Copies logical bytes: a compressed s3dlio source is decompressed and
    /// checked against its CRC32C, anything else is read as it is. The
    /// destination is written plain unless --compression-level is given, and
    /// becomes visible only once the copy is complete and verified.
    Cp(CpArgs),
    /// Delete objects
    Rm(RmArgs),
    /// Show the committed checkpoints under a checkpoint base URI
    Info(InfoArgs),
    /// Re-read every shard of a checkpoint and check its CRC32C
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Prefix to list; a local directory lists its contents
    pub uri: String,
    /// List every object below the prefix instead of grouping by `/`
    #[arg(short, long)]
    pub recursive: bool,
    /// Show sizes as KiB/MiB/GiB instead of bytes
    #[arg(short = 'H', long)]
    pub human_readable: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    pub uri: String,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local path or URI (a prefix or directory with --recursive)
    pub src: String,
    /// Destination; ending in `/` (or an existing directory) keeps the source name
    pub dst: String,
    /// Copy every object under the source prefix / directory into DST
    /// (`src/a/b` lands at `DST/a/b`, as with `aws s3 cp --recursive`)
    #[arg(short, long)]
    pub recursive: bool,
    /// Write the destination compressed (zstd seekable) at this level
    #[arg(long, value_name = "N", value_parser = parse_level)]
    pub compression_level: Option<i32>,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub uri: String,
    /// Delete every object under the prefix / directory
    #[arg(short, long)]
    pub recursive: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Checkpoint base URI (the location given to the checkpoint store)
    pub uri: String,
    /// Show this checkpoint's shards instead of the list of checkpoints
    #[arg(long, value_name = "N")]
    pub step: Option<u64>,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Checkpoint base URI (the location given to the checkpoint store)
    pub uri: String,
    /// Verify only this step (default: every committed step)
    #[arg(long, value_name = "N")]
    pub step: Option<u64>,
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

/// The same range check and message as every other entry point.
fn parse_level(s: &str) -> Result<i32, String> {
    let level: i32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a compression level (1-22)"))?;
    s3dlio_core::codec::check_level(level).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
