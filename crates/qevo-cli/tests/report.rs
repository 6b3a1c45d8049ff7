//! `qevo report DIR` on the embedded model: the report a search wrote is redrawn byte
//! for byte from its output directory, and a search where nothing is feasible gets a
//! report that says so.

mod common;

use common::{qevo, search, text};
use std::path::Path;

const DRAWN: [&str; 3] = ["report.html", "pareto.svg", "convergence.svg"];

/// Deletes the drawn files, runs `qevo report DIR`, and checks they come back byte-equal
/// and that it prints the same summary as the search did. Returns the HTML.
fn rebuild_matches(dir: &Path, cache: &Path, search_stdout: &[u8]) -> String {
    let before: Vec<Vec<u8>> = DRAWN
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    for f in DRAWN {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let o = qevo(&["report", dir.to_str().unwrap()], cache);
    assert!(o.status.success(), "{}", text(&o));
    for (f, b) in DRAWN.iter().zip(&before) {
        assert!(std::fs::read(dir.join(f)).unwrap() == *b, "{f} differs");
    }
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(search_stdout)
    );
    String::from_utf8(before[0].clone()).unwrap()
}

#[test]
fn report_rebuilt_from_a_search_dir_equals_the_one_the_search_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("o"), tmp.path().join("c"));
    let o = search(&dir, &cache, &["--generations", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let html = rebuild_matches(&dir, &cache, &o.stdout);
    assert!(
        html.contains("At matched sizes"),
        "matched-size table missing"
    );
}

#[test]
fn report_of_an_infeasible_search_shows_the_least_violating_plans_violations() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("o"), tmp.path().join("c"));
    let o = search(
        &dir,
        &cache,
        &["--generations", "1", "--max-size-mb", "0.01"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        summary.contains("Least-violating plan (no plan meets every constraint)"),
        "{summary}"
    );
    let failing = summary
        .lines()
        .find(|l| l.starts_with("max_size_mb (user)"))
        .unwrap_or_else(|| panic!("no size check in:\n{summary}"));
    assert!(
        failing.ends_with("FAIL") && failing.contains('%'),
        "{failing}"
    );
    // The FP model fails the same size limit, and the report says so.
    let meets = summary
        .lines()
        .find(|l| l.starts_with("Meets constraints"))
        .unwrap();
    assert_eq!(
        meets.split_whitespace().collect::<Vec<_>>()[2..],
        ["no", "no", "-"]
    );
    let html = rebuild_matches(&dir, &cache, &o.stdout);
    assert!(html.contains("Constraints of the least-violating plan"));
}

#[test]
fn report_of_a_dir_without_report_json_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let o = qevo(
        &["report", tmp.path().to_str().unwrap()],
        &tmp.path().join("c"),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("report.json"), "{}", text(&o));
}
