//! The report's files in a search's output directory: `report.json` (the
//! [`ReportInput`]), `pareto.svg`, `convergence.svg` and `report.html`. A search writes
//! them with [`write_report`]; `qevo report DIR` redraws them with [`rebuild`], which
//! gives the same bytes because both render the same input.

use super::assemble::REPORT_SCHEMA_VERSION;
use super::{assemble, convergence_svg, html, pareto_svg, ReportData, ReportInput, Result};
use crate::error::Error;
use crate::fsutil::write_atomic;
use std::path::Path;

/// The file a search writes its [`ReportInput`] to, inside its output directory.
pub const REPORT_INPUT_FILE: &str = "report.json";

/// Writes `report.json`, both SVGs and `report.html` into `dir`, each atomically, and
/// returns what was drawn (for the terminal summary).
pub fn write_report(dir: &Path, input: &ReportInput) -> Result<ReportData> {
    let json = serde_json::to_string_pretty(input)
        .map_err(|e| Error::serialize(dir.join(REPORT_INPUT_FILE), e))?;
    write_atomic(&dir.join(REPORT_INPUT_FILE), json.as_bytes())?;
    draw(dir, input)
}

/// Reads `dir/report.json`, checking its schema version.
pub fn read_input(dir: &Path) -> Result<ReportInput> {
    let path = dir.join(REPORT_INPUT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let input: ReportInput = serde_json::from_str(&text)
        .map_err(|e| Error::format(&path, format!("not a qevo report input: {e}")))?;
    if input.schema_version != REPORT_SCHEMA_VERSION {
        return Err(Error::config(
            &path,
            "schema_version",
            format!(
                "version {} is not supported (expected {REPORT_SCHEMA_VERSION})",
                input.schema_version
            ),
        )
        .into());
    }
    check_input(&path, &input)?;
    Ok(input)
}

/// What a redraw trusts from `report.json`: every plan's KL not negative, its top-1
/// agreement a fraction, its perplexity at least 1, its latency and energy not negative,
/// and the recommended index inside the front. A hand-edited file fails naming the key.
fn check_input(path: &Path, input: &ReportInput) -> Result<()> {
    let bad = |key: String, msg: String| Err(Error::config(path, &key, msg).into());
    if let Some(i) = input.recommended {
        if i >= input.front.len() {
            return bad(
                "recommended".into(),
                format!("index {i}, but the front holds {} plans", input.front.len()),
            );
        }
    }
    let series: [(&str, &[super::Point]); 4] = [
        ("front", &input.front),
        ("uniform", &input.uniform),
        ("lagrangian", &input.lagrangian),
        ("random", &input.random),
    ];
    let single = [("fp", Some(&input.fp)), ("closest", input.closest.as_ref())];
    let points = series
        .iter()
        .flat_map(|(name, ps)| {
            ps.iter()
                .enumerate()
                .map(move |(i, p)| (format!("{name}[{i}]"), p))
        })
        .chain(
            single
                .iter()
                .filter_map(|(name, p)| p.map(|p| (name.to_string(), p))),
        );
    for (key, p) in points {
        let checks = [
            ("kl", p.kl, p.kl >= 0.0, "a KL divergence is not negative"),
            (
                "heldout_kl",
                p.heldout_kl.unwrap_or(0.0),
                p.heldout_kl.is_none_or(|v| v >= 0.0),
                "a KL divergence is not negative",
            ),
            (
                "top1",
                p.top1,
                (0.0..=1.0).contains(&p.top1),
                "top-1 agreement is a fraction from 0 to 1",
            ),
            (
                "perplexity",
                p.perplexity.unwrap_or(1.0),
                p.perplexity.is_none_or(|v| v >= 1.0),
                "a perplexity is at least 1",
            ),
            (
                "latency_ms",
                p.latency_ms,
                p.latency_ms >= 0.0,
                "a latency is not negative",
            ),
            (
                "energy_mj",
                p.energy_mj,
                p.energy_mj >= 0.0,
                "an energy is not negative",
            ),
        ];
        if let Some((name, v, _, why)) = checks.iter().find(|c| !c.2) {
            return bad(format!("{key}.{name}"), format!("{v}: {why}"));
        }
    }
    Ok(())
}

/// Redraws the SVGs and `report.html` in `dir` from its `report.json`, and returns
/// what was drawn.
pub fn rebuild(dir: &Path) -> Result<ReportData> {
    draw(dir, &read_input(dir)?)
}

fn draw(dir: &Path, input: &ReportInput) -> Result<ReportData> {
    let d = assemble(input);
    let write = |name: &str, s: String| write_atomic(&dir.join(name), s.as_bytes());
    write("pareto.svg", pareto_svg(&d)?)?;
    write("convergence.svg", convergence_svg(&d)?)?;
    write("report.html", html(&d)?)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn rebuilt_report_is_byte_equal_to_the_written_one() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_report(dir.path(), &fixture::input()).unwrap();
        let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
        let files = ["report.html", "pareto.svg", "convergence.svg"];
        let before: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();
        for f in files {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let rebuilt = rebuild(dir.path()).unwrap();
        assert_eq!(rebuilt, written);
        for (f, b) in files.iter().zip(&before) {
            assert!(read(f) == *b, "{f} differs after rebuild");
        }
    }

    #[test]
    fn rebuild_names_the_missing_or_foreign_input() {
        let dir = tempfile::tempdir().unwrap();
        let e = rebuild(dir.path()).unwrap_err().to_string();
        assert!(e.contains("report.json"), "{e}");
        let mut input = fixture::input();
        input.schema_version = 99;
        let json = serde_json::to_string(&input).unwrap();
        std::fs::write(dir.path().join(REPORT_INPUT_FILE), json).unwrap();
        let e = rebuild(dir.path()).unwrap_err().to_string();
        assert!(e.contains("schema_version") && e.contains("99"), "{e}");
    }
}
