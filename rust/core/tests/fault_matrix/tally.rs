//! What every faulted call came to, judged as it returns: the right bytes,
//! or an error of a kind that says what happened and names the object.
//! Wrong bytes, an error blaming the caller's input for damaged storage,
//! or a message that names nothing are violations: collected, so one run
//! shows every kind of failure, and fatal at the end of the backend.

use std::io::Write;
use std::time::Instant;

use s3dlio_core::Error;

#[derive(Default)]
pub struct Tally {
    /// Faulted operations tried.
    pub cases: usize,
    /// Faults the wrapper injected over all cases.
    pub injected: usize,
    /// Reads that came back whole and exact despite the fault.
    pub exact: usize,
    /// Damage reported as damage (`Integrity`, `Corrupt`).
    pub damaged: usize,
    /// Failures reported as I/O errors (`Backend`).
    pub io: usize,
    /// Saves that failed and left every committed step loading bit-exact.
    pub saves_failed: usize,
    /// Saves that succeeded despite the fault (it hit nothing fatal).
    pub saves_ok: usize,
    /// Saves that failed after their commit point, saying so.
    pub committed_then_failed: usize,
    /// What went wrong, one line per case.
    pub violations: Vec<String>,
}

impl Tally {
    /// An error from a faulted call: one of the kinds a fault can cause,
    /// naming the object (`names`: the base URI everything lies under).
    pub fn error(&mut self, what: &str, e: &Error, names: &str) {
        let msg = e.to_string();
        if !msg.contains(names) {
            self.violation(format!(
                "{what}: the error names nothing under {names}: {msg}"
            ));
        }
        match e {
            Error::Integrity { .. } | Error::Corrupt { .. } => self.damaged += 1,
            Error::Backend { .. } => self.io += 1,
            other => self.violation(format!("{what}: a fault in storage reported as {other:?}")),
        }
    }

    pub fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// `what` holds, else it is a violation.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.violation(what());
        }
    }

    /// A faulted read: `Ok` must be exactly `want`.
    pub fn read(&mut self, what: &str, got: Result<Vec<u8>, Error>, want: &[u8], names: &str) {
        self.cases += 1;
        match got {
            Ok(bytes) if bytes == want => self.exact += 1,
            Ok(bytes) => self.violation(format!(
                "{what}: WRONG BYTES ({} bytes back, {} expected, first difference at {:?})",
                bytes.len(),
                want.len(),
                bytes.iter().zip(want).position(|(a, b)| a != b)
            )),
            Err(e) => self.error(what, &e, names),
        }
    }

    pub fn add(&mut self, other: &Tally) {
        self.cases += other.cases;
        self.injected += other.injected;
        self.exact += other.exact;
        self.damaged += other.damaged;
        self.io += other.io;
        self.saves_failed += other.saves_failed;
        self.saves_ok += other.saves_ok;
        self.committed_then_failed += other.committed_then_failed;
        self.violations.extend(other.violations.iter().cloned());
    }
}

/// One line per backend, straight to fd 2 (the test harness captures
/// `eprintln!`), so `make test` shows the counts the docs quote; then
/// every violation, fatal.
pub fn report(backend: &str, saves: &Tally, reads: &[(&str, &Tally)], started: Instant) {
    let mut r = Tally::default();
    let mut by_part = Vec::new();
    for (name, t) in reads {
        r.add(t);
        by_part.push(format!("{name} {}", t.cases));
    }
    let line = format!(
        "FAULT-MATRIX {backend}: {} faults injected into {} operations; \
         {} faulted saves: {} failed with every committed step intact, {} failed after \
         committing and said so, {} succeeded, 0 checkpoints lost; \
         {} faulted reads ({}): {} exact, {} integrity errors, {} I/O errors, 0 wrong bytes; \
         {:.1} s\n",
        saves.injected + r.injected,
        saves.cases + r.cases,
        saves.cases,
        saves.saves_failed,
        saves.committed_then_failed,
        saves.saves_ok,
        r.cases,
        by_part.join(", "),
        r.exact,
        r.damaged,
        r.io,
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    let violations: Vec<&String> = saves.violations.iter().chain(&r.violations).collect();
    if !violations.is_empty() {
        const SHOWN: usize = 40;
        let shown: Vec<&str> = violations.iter().take(SHOWN).map(|v| v.as_str()).collect();
        panic!(
            "{backend}: {} violations{}:\n{}",
            violations.len(),
            if violations.len() > SHOWN {
                ", the first shown"
            } else {
                ""
            },
            shown.join("\n")
        );
    }
}
