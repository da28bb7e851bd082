//! Ranges of the numbers callers hand us (threads, part sizes, waits).
//!
//! Checked here, in the core, so every front end (Python, CLI, Rust)
//! refuses the same inputs with the same message: an unchecked count
//! reaches an allocation (`2**40` threads aborts the process), a capacity
//! overflow (a panic, `PanicException` across pyo3) or a loop that never
//! ends (`direct://` with a part size near `u64::MAX`).

use std::time::Duration;

use crate::error::{Error, Result};

/// More compression workers than this only costs memory.
pub const MAX_THREADS: u64 = 4096;
/// Parts above this are refused by S3 (5 GiB) and Azure (4000 MiB blocks).
pub const MAX_PART_SIZE: u64 = 4 << 30;
/// The longest wait we accept (finalize, retries): a week.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `what` is a worker count: 1..=[`MAX_THREADS`].
pub fn threads(what: &str, n: u64) -> Result<usize> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(Error::invalid(format!(
            "{what} must be between 1 and {MAX_THREADS}, got {n}"
        )));
    }
    Ok(n as usize)
}

/// `what` is a part (chunk) size in bytes: 1..=[`MAX_PART_SIZE`].
pub fn part_size(what: &str, n: u64) -> Result<usize> {
    if !(1..=MAX_PART_SIZE).contains(&n) {
        return Err(Error::invalid(format!(
            "{what} must be between 1 and {MAX_PART_SIZE} bytes, got {n}"
        )));
    }
    Ok(n as usize)
}

/// `what` is a wait in seconds: finite, >= 0 (> 0 unless `zero_ok`) and at
/// most [`MAX_WAIT`].
pub fn seconds(what: &str, secs: f64, zero_ok: bool) -> Result<Duration> {
    let low_ok = if zero_ok { secs >= 0.0 } else { secs > 0.0 };
    if !(secs.is_finite() && low_ok && secs <= MAX_WAIT.as_secs_f64()) {
        let low = if zero_ok { ">= 0" } else { "> 0" };
        return Err(Error::invalid(format!(
            "{what} must be a number of seconds {low} and at most {} (a week), got {secs}",
            MAX_WAIT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_inputs_are_named() {
        assert!(threads("compression_threads", 1 << 40)
            .unwrap_err()
            .to_string()
            .contains("compression_threads must be between 1 and 4096"));
        assert!(threads("t", 0).is_err());
        assert_eq!(threads("t", 8).unwrap(), 8);
        assert!(part_size("part_size", u64::MAX).is_err());
        assert!(part_size("part_size", 0).is_err());
        for bad in [1e300, f64::NAN, f64::INFINITY, -1.0] {
            assert!(seconds("timeout", bad, true).is_err(), "{bad}");
        }
        assert!(seconds("t", 0.0, false).is_err());
        assert_eq!(seconds("t", 0.0, true).unwrap(), Duration::ZERO);
        assert_eq!(
            seconds("t", 1.5, false).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
