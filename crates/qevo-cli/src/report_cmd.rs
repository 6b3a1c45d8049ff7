//! The report at the end of `qevo search`, and `qevo report DIR`, which redraws it from
//! the files a search wrote. The library assembles and renders; this file prints.

use anyhow::{Context, Result};
use qevo::report::{self, ReportData, ReportInput};
use qevo::search::{SearchConfig, SearchOutcome};
use qevo::Model;
use std::path::Path;

/// Front rows the terminal shows; the files list every plan.
const FRONT_ROWS: usize = 20;

fn print_summary(d: &ReportData) {
    print!("{}", report::summary_text(d, FRONT_ROWS));
}

/// Writes `report.json`, the SVGs and `report.html` of a finished search into `dir`
/// and prints the summary.
pub fn write_and_print(
    dir: &Path,
    model: &Model,
    cfg: &SearchConfig,
    o: &SearchOutcome,
) -> Result<()> {
    let input = ReportInput::from_outcome(model, cfg, o)?;
    let d = report::write_report(dir, &input)
        .with_context(|| format!("writing the report into {}", dir.display()))?;
    print_summary(&d);
    Ok(())
}

/// `qevo report DIR`: redraws the SVGs and `report.html` from `DIR/report.json` and
/// prints the summary.
pub fn rebuild(dir: &Path) -> Result<()> {
    let d = report::rebuild(dir)?;
    print_summary(&d);
    eprintln!(
        "report.html, pareto.svg and convergence.svg rewritten in {}",
        dir.display()
    );
    Ok(())
}
