//! Layers point one way (the table in `src/lib.rs`): a module may name its
//! own layer and the layers below it, never one above. This reads the
//! library's sources (test-only modules left out: tests may use anything)
//! and fails on every `crate::<module>` path that points up, and on a
//! top-level module missing from the table, so a new module must be given
//! a place.
//!
//! `S3DLIO_LAYERING_SRC` points the check at another source tree (to show
//! that it catches the imports of an older layout).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules and their layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("crc", 0),
    ("keys", 0),
    ("limits", 0),
    ("redact", 0),
    ("runtime", 0),
    ("format", 1),
    ("uri", 2),
    ("store", 2),
    ("codec", 3),
    ("pack", 3),
    ("object", 4),
    ("checkpoint", 5),
];

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a source file belongs to (`store/s3/mod.rs` ->
/// `store`, `uri.rs` -> `uri`); `None` for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib").then_some(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Files that are test-only modules: declared `#[cfg(test)] mod name;`.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(file).expect("read source");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] != "#[cfg(test)]" {
                continue;
            }
            let decl = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) else {
                continue;
            };
            let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
                file.parent().map(Path::to_path_buf)
            } else {
                // `a/b.rs` declares its children in `a/b/`.
                Some(file.with_extension(""))
            };
            if let Some(dir) = dir {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// The library part of a file: everything before its first inline
/// `#[cfg(test)] mod … {` (test modules close our files).
fn library_part(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, pair) in lines.windows(2).enumerate() {
        if pair[0].trim() == "#[cfg(test)]"
            && pair[1].trim_start().starts_with("mod ")
            && pair[1].trim_end().ends_with('{')
        {
            end = i;
            break;
        }
    }
    lines[..end].join("\n")
}

/// The top-level modules a piece of code names through `crate::`, with
/// the line each is named on (doc comments left out: a link is no import).
fn named_modules(code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let names: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                inner
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                    .collect()
            } else {
                vec![after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()]
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                // `crate::Result` and friends are root re-exports of layer 0.
                if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    out.push((name, line.trim().to_string()));
                }
            }
            rest = after;
        }
    }
    out
}

/// Every upward import (and unplaced module) under `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let tests = test_only_files(&files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !tests.contains(*f)) {
        let Some(module) = module_of(src, file) else {
            continue;
        };
        let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
        let Some(own) = layer_of(&module) else {
            found.push(format!("{shown}: module `{module}` has no layer in LAYERS"));
            continue;
        };
        let text = fs::read_to_string(file).expect("read source");
        for (target, line) in named_modules(&library_part(&text)) {
            match layer_of(&target) {
                Some(theirs) if theirs > own => found.push(format!(
                    "{shown}: `{module}` (layer {own}) imports `{target}` (layer {theirs}): {line}"
                )),
                Some(_) => {}
                None => found.push(format!(
                    "{shown}: names `crate::{target}`, which has no layer in LAYERS: {line}"
                )),
            }
        }
    }
    found
}

#[test]
fn layers_point_down() {
    let src = std::env::var_os("S3DLIO_LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports that point up a layer:\n{}",
        found.join("\n")
    );
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fs::create_dir_all(&store).unwrap();
    fs::write(
        store.join("local.rs"),
        "//! [`crate::codec`] in a doc line is fine\nuse crate::error::Result;\nuse crate::{codec::crc, uri};\n\
         #[cfg(test)]\nmod tests {\n    use crate::checkpoint::Manifest;\n}\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("format.rs"),
        "fn f() { crate::store::join_key(\"a\", \"b\"); }\n",
    )
    .unwrap();
    let found = violations(dir.path());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("format.rs: `format` (layer 1) imports `store` (layer 2)"));
    assert!(found[1].starts_with("store/local.rs: `store` (layer 2) imports `codec` (layer 3)"));
}
