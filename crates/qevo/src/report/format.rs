//! Number formatting shared by the tables and plots, so a value reads the same
//! everywhere in a report.

/// `v` with `sig` significant digits; scientific notation below 1e-3 and from 1e6 up,
/// where fixed notation would hide the digits or grow too wide.
pub(crate) fn sig(v: f64, sig: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor();
    if !(-3.0..6.0).contains(&mag) {
        return format!("{:.*e}", sig.saturating_sub(1), v);
    }
    let decimals = (sig as i32 - 1 - mag as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// A KL divergence (nats/token).
pub(crate) fn kl(v: f64) -> String {
    sig(v, 4)
}

/// A fraction in 0..=1 as a percentage with two decimals.
pub(crate) fn pct(frac: f64) -> String {
    format!("{:.2}%", frac * 100.0)
}

/// Bytes as decimal megabytes (1 MB = 10^6 bytes).
pub(crate) fn mb(bytes: u64) -> String {
    sig(bytes as f64 / 1e6, 4)
}

/// A compression ratio, e.g. `6.20x`.
pub(crate) fn ratio(v: f64) -> String {
    format!("{v:.2}x")
}

/// Bits per weight without trailing zeros: `4.5`, `6.5625`, `16`.
pub(crate) fn bits(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Signed relative change of `new` against `old`, e.g. `-75.6%`; `-` when `old` is 0.
pub(crate) fn change(new: f64, old: f64) -> String {
    if old == 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", (new - old) / old * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_switches_to_scientific_for_tiny_and_huge_values() {
        assert_eq!(sig(0.0123456, 4), "0.01235");
        assert_eq!(sig(12.34567, 4), "12.35");
        assert_eq!(sig(7000.0, 4), "7000");
        assert_eq!(sig(0.000012345, 4), "1.234e-5");
        assert_eq!(sig(1234567.0, 3), "1.23e6");
        assert_eq!(sig(-0.5, 2), "-0.50");
        assert_eq!(sig(0.0, 4), "0");
    }

    #[test]
    fn bits_trims_trailing_zeros() {
        assert_eq!(bits(4.5), "4.5");
        assert_eq!(bits(6.5625), "6.5625");
        assert_eq!(bits(16.0), "16");
    }

    #[test]
    fn change_is_signed_and_guards_zero() {
        assert_eq!(change(110.0, 450.0), "-75.6%");
        assert_eq!(change(2.0, 1.0), "+100.0%");
        assert_eq!(change(1.0, 0.0), "-");
    }
}
