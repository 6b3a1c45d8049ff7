//! The report's summary at the end of `qevo search`, and `qevo report DIR`, which redraws
//! the report from the files a search wrote. The library assembles, renders and writes;
//! this file prints.

use anyhow::Result;
use qevo::report::{self, ReportData};
use std::path::Path;

/// Front rows the terminal shows; the files list every plan.
const FRONT_ROWS: usize = 20;

/// The terminal summary of a search's report.
pub fn print_summary(d: &ReportData) {
    print!("{}", report::summary_text(d, FRONT_ROWS));
}

/// `qevo report DIR`: redraws the SVGs and `report.html` from `DIR/report.json` (and
/// `DIR/run.json`, for wall times and per-process cache counters) and prints the summary.
pub fn rebuild(dir: &Path) -> Result<()> {
    let d = report::rebuild(dir)?;
    print_summary(&d);
    eprintln!(
        "report.html, pareto.svg and convergence.svg rewritten in {}",
        dir.display()
    );
    Ok(())
}
