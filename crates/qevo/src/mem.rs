//! Memory sizes: what this machine has available (`/proc/meminfo`), and byte sizes as
//! people write them (`6G`, `1500M`, `2GiB`), for the one memory budget a search and an
//! evaluation run under.

use crate::error::{Error, Result};

/// `MemAvailable` of `/proc/meminfo` in bytes: what can be allocated without swapping;
/// `None` where the file or the line is missing (not Linux).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// A size: a number with an optional unit, decimal (`K`, `M`, `G`, `T`, optionally with
/// `B`) or binary (`KiB`, `MiB`, `GiB`, `TiB`); a bare number is bytes.
pub fn parse_size(field: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = |msg: &str| Error::Setting {
        field: field.to_string(),
        msg: format!("`{s}`: {msg} (e.g. 6G, 1500M, 2GiB)"),
    };
    let n: f64 = num.parse().map_err(|_| bad("not a size"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        _ => return Err(bad("unknown unit")),
    };
    let bytes = n * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

/// Bytes as GB with two decimals, as messages print them.
pub use crate::error::gb;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   21000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(21_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("m", "6G").unwrap(), 6_000_000_000);
        assert_eq!(parse_size("m", "1500M").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("m", "1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("m", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("m", "4096").unwrap(), 4096);
        for bad in ["", "G", "6X", "-1G", "0", "1e400G"] {
            let e = parse_size("max_memory", bad).unwrap_err().to_string();
            assert!(e.contains("max_memory"), "{bad}: {e}");
        }
    }
}
