//! The report's files in a search's output directory: `report.json` (the
//! [`ReportInput`]), `run.json` (the [`RunRecord`]), `pareto.svg`, `convergence.svg`
//! and `report.html`. A search writes them with [`write_report`]; `qevo report DIR`
//! redraws them with [`rebuild`], which gives the same bytes because both render the
//! same two inputs.

use super::assemble::REPORT_SCHEMA_VERSION;
use super::run::{read_run, RunRecord, RUN_RECORD_FILE};
use super::{assemble, convergence_svg, html, pareto_svg, ReportData, ReportInput, Result};
use crate::error::Error;
use crate::fsutil::write_atomic;
use std::path::Path;

/// The file a search writes its [`ReportInput`] to, inside its output directory.
pub const REPORT_INPUT_FILE: &str = "report.json";

/// Writes `report.json`, `run.json`, both SVGs and `report.html` into `dir`, each
/// atomically, and returns what was drawn (for the terminal summary).
pub fn write_report(dir: &Path, input: &ReportInput, run: &RunRecord) -> Result<ReportData> {
    write_json(&dir.join(REPORT_INPUT_FILE), input)?;
    write_json(&dir.join(RUN_RECORD_FILE), run)?;
    draw(dir, input, Some(run))
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(v).map_err(|e| Error::serialize(path, e))?;
    Ok(write_atomic(path, json.as_bytes())?)
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

/// Redraws the SVGs and `report.html` in `dir` from its `report.json` and, when there is
/// one, its `run.json` (without it, the report leaves out wall times and per-process
/// cache counters), and returns what was drawn.
pub fn rebuild(dir: &Path) -> Result<ReportData> {
    let input = read_input(dir)?;
    let run = read_run(dir)?;
    draw(dir, &input, run.as_ref())
}

fn draw(dir: &Path, input: &ReportInput, run: Option<&RunRecord>) -> Result<ReportData> {
    let d = assemble(input, run);
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
        let written = write_report(dir.path(), &fixture::input(), &fixture::run()).unwrap();
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

    #[test]
    fn report_json_holds_no_wall_time_or_process_cache_counter() {
        let dir = tempfile::tempdir().unwrap();
        write_report(dir.path(), &fixture::input(), &fixture::run()).unwrap();
        let report = std::fs::read_to_string(dir.path().join(REPORT_INPUT_FILE)).unwrap();
        let process = [
            "seconds",
            "prefix_hits",
            "prefix_lookups",
            "weight_hits",
            "weight_lookups",
            "blocks_reused",
            "blocks_run",
            "segments_reused",
        ];
        for key in process {
            assert!(!report.contains(key), "report.json holds {key}");
        }
        let run = std::fs::read_to_string(dir.path().join(RUN_RECORD_FILE)).unwrap();
        for key in [
            "total_seconds",
            "stage_seconds",
            "prefix_hits",
            "weight_hits",
        ] {
            assert!(run.contains(key), "run.json lacks {key}");
        }
    }

    #[test]
    fn report_without_run_json_leaves_out_times_and_process_caches() {
        let dir = tempfile::tempdir().unwrap();
        let with = write_report(dir.path(), &fixture::input(), &fixture::run()).unwrap();
        assert!(with.notes.iter().any(|n| n.starts_with("stages:")));
        assert!(with.notes.iter().any(|n| n.starts_with("prefix cache:")));
        std::fs::remove_file(dir.path().join(RUN_RECORD_FILE)).unwrap();
        let without = rebuild(dir.path()).unwrap();
        let timed = |n: &String| {
            n.starts_with("stages:") || n.starts_with("prefix cache:") || n.ends_with(" s")
        };
        assert!(!without.notes.iter().any(timed), "{:?}", without.notes);
        assert!(without
            .notes
            .iter()
            .any(|n| n == "sensitivity table: 4 of 12 cells measured"));
        // Everything else the report shows is the same.
        assert_eq!(
            ReportData {
                notes: Vec::new(),
                ..with
            },
            ReportData {
                notes: Vec::new(),
                ..without
            }
        );
    }

    #[test]
    fn rebuild_names_a_run_json_of_another_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = fixture::run();
        run.schema_version = 7;
        write_report(dir.path(), &fixture::input(), &run).unwrap();
        let e = rebuild(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("run.json") && e.contains("schema_version"),
            "{e}"
        );
    }
}
