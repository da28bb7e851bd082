//! Where output goes: results on stdout, progress bars and errors on
//! stderr, so `--json` and pipes get clean data.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How one command presents itself.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
    progress: bool,
}

impl Ui {
    pub fn new(json: bool, quiet: bool) -> Self {
        Ui {
            json,
            quiet,
            // A bar in a log file or in front of a JSON consumer is noise.
            progress: !json && !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Per-object lines (`copy: a to b`) are text mode only and muted by -q.
    pub fn chatty(&self) -> bool {
        !self.json && !self.quiet
    }

    /// A bar counting bytes.
    pub fn bytes_bar(&self, total: u64) -> ProgressBar {
        self.bar(
            total,
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
    }

    /// A bar counting items (objects, shards).
    pub fn count_bar(&self, total: u64) -> ProgressBar {
        self.bar(
            total,
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
    }

    /// A spinner for one call of unknown length (a large listing).
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        let bar = self.bar(0, "{spinner} {msg} [{elapsed}]");
        bar.set_message(msg.to_string());
        bar
    }

    fn bar(&self, total: u64, template: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style);
        // Ticks keep the spinner moving while one large object is in flight.
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

/// One line on stdout without tearing an active bar. Write errors (a
/// closed pipe: `s3dlio ls | head`) are ignored rather than panicking.
pub fn println(bar: &ProgressBar, line: &str) {
    bar.suspend(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    });
}

/// One line on stderr (warnings, per-object failures).
pub fn eprintln(bar: &ProgressBar, line: &str) {
    bar.suspend(|| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", s3dlio_core::redact::redact(line));
    });
}

/// Lines on stdout when no bar is active.
pub fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

/// The `--json` document: exactly one per run, on stdout.
pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    // Per-object errors inside the JSON echo URIs and messages too.
    let text = s3dlio_core::redact::redact(&text).into_owned();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
