//! Text formatting of sizes, times, ratios and tables for human output.
//! Done by hand: a few lines here beat a dependency per helper.

use std::time::{SystemTime, UNIX_EPOCH};

/// `1536` -> `1.5 KiB`; bytes below 1 KiB stay exact.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1048576 (1.0 MiB)`: exact for scripts that scrape, short for people.
pub fn size_both(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{bytes} ({})", size(bytes))
    }
}

/// Stored bytes / logical bytes, 1.0 for an empty object (nothing to save).
pub fn ratio(stored: u64, logical: u64) -> f64 {
    if logical == 0 {
        1.0
    } else {
        stored as f64 / logical as f64
    }
}

/// Four decimals, or scientific below 0.001: large all-zero tensors
/// compress to ratios like 4e-5, which fixed decimals would print as 0.
pub fn ratio_text(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.001 {
        format!("{ratio:.1e}")
    } else {
        format!("{ratio:.4}")
    }
}

pub fn crc(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Seconds since the Unix epoch; times before it (clock skew) count as 0.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// ISO 8601 UTC, second precision: `2024-03-01T12:00:05Z`. UTC because
/// local time would need the platform's time-zone database.
pub fn iso_time(unix: f64) -> String {
    let secs = if unix.is_finite() && unix > 0.0 {
        unix as i64
    } else {
        0
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn iso_system_time(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| iso_time(unix_seconds(t)))
}

/// Proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Column alignment in [`table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows padded into columns two spaces apart; the last column is not
/// padded so long names do not drag trailing blanks.
pub fn table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> Vec<String> {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i].saturating_sub(cell.chars().count());
            let right = align.get(i).copied() == Some(Align::Right);
            if right {
                line.push_str(&" ".repeat(pad));
            }
            line.push_str(cell);
            if !right && i + 1 < cols {
                line.push_str(&" ".repeat(pad));
            }
        }
        line
    };
    let mut out = vec![render(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| render(r.iter().map(String::as_str).collect())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
        assert_eq!(size_both(1 << 20), "1048576 (1.0 MiB)");
    }

    #[test]
    fn times() {
        assert_eq!(iso_time(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_709_294_405.9), "2024-03-01T12:00:05Z");
        assert_eq!(iso_time(f64::NAN), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(0, 0), 1.0);
        assert_eq!(ratio_text(ratio(1, 4)), "0.2500");
        assert_eq!(ratio_text(0.0000379), "3.8e-5");
        assert_eq!(ratio_text(0.0), "0.0000");
    }

    #[test]
    fn tables_align() {
        let rows = vec![vec!["1".to_string(), "abc".to_string(), "x".to_string()]];
        let lines = table(
            &["STEP", "NAME", "Z"],
            &[Align::Right, Align::Left, Align::Left],
            &rows,
        );
        assert_eq!(lines, vec!["STEP  NAME  Z", "   1  abc   x"]);
    }
}
