//! torch DCP checkpoints (`.metadata` + `*.distcp`) for `info` and
//! `verify`: the layout `s3dlio_torch.S3DlioWriter` writes (and torch's
//! own `FileSystemWriter`).
//!
//! The `.metadata` pickle is read by [`crate::pickle`] without Python.
//! Each item's `_StorageInfo` gives its data file and byte range; items
//! written by s3dlio also carry `s3dlio = {size, crc32c, grouping?}`, so
//! verify re-reads and decodes every such item and checks its CRC32C, and
//! checks the structure of every item (names, ranges inside their files)
//! whoever wrote it.

use std::collections::BTreeMap;
use std::sync::Arc;

use s3dlio_core::keys::check_name;
use s3dlio_core::pack::{read_items, Encoding, Grouping, ItemRead, ReadOptions, Target};
use s3dlio_core::store::{join_key, open_store, Location, ObjectStore};
use s3dlio_core::Error;
use serde_json::json;

use crate::pickle::{self, Value};

pub const METADATA: &str = ".metadata";
/// torch's descriptor of one zstd frame per item.
const ZSTD_DESCRIPTOR: &str = "stream.zstd/1";
/// s3dlio's byte-grouped descriptor starts with this.
const GROUPED_PREFIX: &str = "s3dlio.byte_grouped";

/// How an item's stored bytes turn into its logical bytes.
#[derive(Debug, Clone)]
pub enum ItemCodec {
    Plain,
    Zstd,
    Grouped(Grouping),
    /// Transforms s3dlio does not decode (torch extensions of the user's).
    Other(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Item {
    pub label: String,
    pub file: String,
    pub offset: u64,
    pub length: u64,
    pub codec: ItemCodec,
    /// From s3dlio's record: logical bytes and their CRC32C.
    pub size: Option<u64>,
    pub crc32c: Option<u32>,
}

/// One DCP checkpoint directory.
pub struct Checkpoint {
    pub loc: Location,
    pub items: Vec<Item>,
}

/// What verify found for one item.
pub struct ItemCheck {
    pub label: String,
    pub uri: String,
    /// Logical bytes checked (0 when only the structure was).
    pub checked: u64,
    /// Why nothing beyond the structure was checked, if so.
    pub note: Option<String>,
    pub error: Option<String>,
    pub damaged: bool,
}

impl Checkpoint {
    pub fn uri(&self) -> String {
        self.loc.uri()
    }

    fn file_uri(&self, file: &str) -> String {
        self.loc.store.uri(&join_key(&self.loc.key, file))
    }

    /// The data files and the bytes their items cover.
    pub fn files(&self) -> BTreeMap<&str, u64> {
        let mut out: BTreeMap<&str, u64> = BTreeMap::new();
        for it in &self.items {
            *out.entry(it.file.as_str()).or_default() += it.length;
        }
        out
    }

    pub fn logical_size(&self) -> u64 {
        self.items.iter().map(|i| i.size.unwrap_or(i.length)).sum()
    }

    pub fn stored_size(&self) -> u64 {
        self.items.iter().map(|i| i.length).sum()
    }

    pub fn info_json(&self) -> serde_json::Value {
        json!({
            "uri": self.uri(),
            "layout": "torch-dcp",
            "items": self.items.len(),
            "items_with_crc32c": self.items.iter().filter(|i| i.crc32c.is_some()).count(),
            "files": self.files().into_iter().map(|(f, b)| json!({
                "uri": self.file_uri(f), "item_bytes": b,
            })).collect::<Vec<_>>(),
            "logical_size": self.logical_size(),
            "stored_size": self.stored_size(),
        })
    }

    pub fn info_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("torch DCP checkpoint at {}", self.uri()),
            format!(
                "  {} items ({} with CRC32C), {} logical bytes, {} stored",
                self.items.len(),
                self.items.iter().filter(|i| i.crc32c.is_some()).count(),
                self.logical_size(),
                self.stored_size()
            ),
        ];
        for (f, b) in self.files() {
            lines.push(format!("  {}  {b} item bytes", self.file_uri(f)));
        }
        lines
    }

    /// Check every item: structure always, bytes and CRC32C where s3dlio
    /// recorded them.
    pub async fn verify(&self) -> Vec<ItemCheck> {
        let store = &self.loc.store;
        let mut sizes: BTreeMap<String, Result<u64, Error>> = BTreeMap::new();
        for f in self.files().keys() {
            let key = join_key(&self.loc.key, f);
            sizes.insert(f.to_string(), store.head(&key).await.map(|m| m.size));
        }
        let mut out = Vec::with_capacity(self.items.len());
        for it in &self.items {
            let uri = self.file_uri(&it.file);
            let mut check = ItemCheck {
                label: it.label.clone(),
                uri: uri.clone(),
                checked: 0,
                note: None,
                error: None,
                damaged: false,
            };
            let end = it.offset.checked_add(it.length);
            match sizes.get(&it.file) {
                Some(Err(e)) => {
                    check.damaged = e.is_not_found();
                    check.error = Some(e.to_string());
                }
                Some(Ok(size)) if end.is_none_or(|e| e > *size) => {
                    check.damaged = true;
                    check.error = Some(format!(
                        "item bytes {}..{} lie outside the {size}-byte data file",
                        it.offset,
                        it.offset.saturating_add(it.length)
                    ));
                }
                _ => {}
            }
            if check.error.is_none() {
                match (&it.codec, it.size, it.crc32c) {
                    (ItemCodec::Other(d), _, _) => {
                        check.note = Some(format!("transforms {d:?} not decoded here"))
                    }
                    (_, Some(size), Some(crc)) => {
                        match read_one(store.clone(), &self.loc.key, it, size, crc).await {
                            Ok(()) => check.checked = size,
                            Err(e) => {
                                check.damaged =
                                    matches!(e, Error::Integrity { .. } | Error::Corrupt { .. });
                                check.error = Some(e.to_string());
                            }
                        }
                    }
                    _ => check.note = Some("no CRC32C recorded (not written by s3dlio)".into()),
                }
            }
            out.push(check);
        }
        out
    }
}

/// Read and decode one item, checking its CRC32C, keeping nothing.
async fn read_one(
    store: Arc<dyn ObjectStore>,
    base: &str,
    it: &Item,
    size: u64,
    crc: u32,
) -> Result<(), Error> {
    let encoding = match &it.codec {
        ItemCodec::Plain => Encoding::Plain,
        ItemCodec::Zstd => Encoding::Zstd,
        ItemCodec::Grouped(g) => Encoding::Grouped(*g),
        ItemCodec::Other(_) => return Ok(()),
    };
    let skip = usize::try_from(size)
        .map_err(|_| Error::invalid(format!("{}: item size {size} too large", it.label)))?;
    let read = ItemRead {
        key: join_key(base, &it.file),
        offset: it.offset,
        length: it.length,
        encoding,
        crc32c: Some(crc),
        label: it.label.clone(),
        targets: vec![Target::Skip(skip)],
    };
    // read_items blocks on the core runtime: not from one of its tasks.
    tokio::task::spawn_blocking(move || read_items(store, vec![read], &ReadOptions::default()))
        .await
        .map_err(|e| Error::invalid(format!("item check stopped: {e}")))?
}

/// The DCP checkpoint at `uri`, or None when there is no `.metadata`.
pub async fn open(
    uri: &str,
    options: &s3dlio_core::store::StoreOptions,
) -> Result<Option<Checkpoint>, Error> {
    let loc = open_store(uri, options)?;
    let key = join_key(&loc.key, METADATA);
    let bytes = match loc.store.get(&key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta_uri = loc.store.uri(&key);
    let items = parse(&meta_uri, &bytes)?;
    Ok(Some(Checkpoint { loc, items }))
}

/// The items of a pickled torch `Metadata`.
pub fn parse(uri: &str, bytes: &[u8]) -> Result<Vec<Item>, Error> {
    let bad = |why: String| Error::corrupt(uri, format!("not readable DCP metadata: {why}"));
    let root = pickle::load(bytes).map_err(bad)?;
    match root.class_name().as_deref() {
        Some("torch.distributed.checkpoint.metadata.Metadata") => {}
        other => return Err(bad(format!("top-level object is {other:?}, not Metadata"))),
    }
    let data = root
        .attr("storage_data")
        .ok_or_else(|| bad("no storage_data".into()))?;
    let Value::Dict(entries) = data else {
        return Err(bad("storage_data is not a dict".into()));
    };
    let mut items = Vec::new();
    for (index, info) in entries.borrow().iter() {
        let label = label_of(index);
        let field = |name: &str| info.attr(name);
        let file = field("relative_path")
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| bad(format!("{label}: no relative_path")))?;
        check_name(&format!("{uri}: item {label}"), &file)?;
        let num = |name: &str| -> Result<u64, Error> {
            field(name)
                .and_then(|v| v.as_int())
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| bad(format!("{label}: {name} is missing or negative")))
        };
        let (offset, length) = (num("offset")?, num("length")?);
        let descriptors: Vec<String> = field("transform_descriptors")
            .and_then(|v| v.items())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        let record = field("s3dlio");
        let rec_num = |name: &str| {
            record
                .as_ref()
                .and_then(|r| r.get(name))
                .and_then(|v| v.as_int())
        };
        let size = rec_num("size").and_then(|v| u64::try_from(v).ok());
        let crc32c = rec_num("crc32c").and_then(|v| u32::try_from(v).ok());
        let codec = match descriptors.as_slice() {
            [] => ItemCodec::Plain,
            [d] if d == ZSTD_DESCRIPTOR => ItemCodec::Zstd,
            [d] if d.starts_with(GROUPED_PREFIX) => {
                let g = record
                    .as_ref()
                    .and_then(|r| r.get("grouping"))
                    .and_then(|v| v.items())
                    .map(|v| v.iter().filter_map(Value::as_int).collect::<Vec<_>>())
                    .unwrap_or_default();
                let [start, len, width, frame] = g[..] else {
                    return Err(bad(format!("{label}: byte-grouped without its grouping")));
                };
                let conv = |v: i64| u64::try_from(v).map_err(|_| bad(format!("{label}: grouping")));
                let grouping = Grouping {
                    start: conv(start)?,
                    length: conv(len)?,
                    width: conv(width)? as usize,
                    frame: conv(frame)? as usize,
                };
                if let Some(size) = size {
                    grouping.check(&label, size)?;
                }
                ItemCodec::Grouped(grouping)
            }
            other => ItemCodec::Other(other.to_vec()),
        };
        if matches!(codec, ItemCodec::Plain) && size.is_some_and(|s| s != length) {
            return Err(bad(format!(
                "{label}: plain item of {length} stored bytes records {} logical",
                size.unwrap_or(0)
            )));
        }
        items.push(Item {
            label,
            file,
            offset,
            length,
            codec,
            size,
            crc32c,
        });
    }
    items.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    Ok(items)
}

/// `fqn` or `fqn chunk [offsets]`, as s3dlio_torch labels items.
fn label_of(index: &Value) -> String {
    let fqn = index
        .attr("fqn")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let offsets = index.attr("offset").and_then(|o| match o {
        Value::None => None,
        obj @ Value::Object(_) => obj.args()?.first()?.items(),
        other => other.items(),
    });
    match offsets {
        Some(v) => format!(
            "{fqn} chunk {:?}",
            v.iter().filter_map(Value::as_int).collect::<Vec<_>>()
        ),
        None => fqn,
    }
}
