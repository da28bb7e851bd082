//! `s3dlio stat`: one object's stored and logical sizes, codec, ratio and
//! CRC32C, read from its trailer (no full read).

use s3dlio_core::codec::ObjectReader;
use serde_json::json;

use super::Ctx;
use crate::args::StatArgs;
use crate::error::{CliResult, EXIT_OK};
use crate::format;
use crate::target::Target;
use crate::ui;

pub async fn run(ctx: &Ctx, args: StatArgs) -> CliResult<i32> {
    let target = Target::open(&args.uri, &ctx.store)?;
    let loc = &target.loc;
    let (head, reader) = ObjectReader::open_with_head(loc.store.clone(), &loc.key).await?;
    let logical = reader.logical_size();
    let stored = reader.stored_size();
    let ratio = format::ratio(stored, logical);
    let codec = reader.codec();
    let crc = reader.crc32c();
    let modified = format::iso_system_time(head.last_modified);

    if ctx.ui.json {
        ui::print_json(&json!({
            "uri": target.uri(),
            "size": logical,
            "logical_size": logical,
            "stored_size": stored,
            "codec": codec.name(),
            "ratio": ratio,
            "crc32c": crc.map(format::crc),
            "last_modified": modified,
            "etag": head.etag,
        }));
        return Ok(EXIT_OK);
    }
    let mut lines = vec![
        format!("uri:           {}", target.uri()),
        format!("logical size:  {}", format::size_both(logical)),
        format!("stored size:   {}", format::size_both(stored)),
        format!("codec:         {}", codec.name()),
        format!(
            "ratio:         {} (stored / logical)",
            format::ratio_text(ratio)
        ),
        format!(
            "crc32c:        {}",
            crc.map(format::crc)
                .unwrap_or_else(|| "- (not recorded in the object)".to_string())
        ),
        format!(
            "last modified: {}",
            modified.unwrap_or_else(|| "-".to_string())
        ),
    ];
    if let Some(etag) = head.etag {
        lines.push(format!("etag:          {etag}"));
    }
    ui::print_lines(&lines);
    Ok(EXIT_OK)
}
