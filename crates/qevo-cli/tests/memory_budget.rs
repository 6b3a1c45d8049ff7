//! `--max-memory` refusals through the CLI: a run whose estimate does not fit its budget
//! is refused before it loads or starts, naming the estimate, the budget and the smallest
//! budget that works; and that smallest budget, given back as printed, does work.

mod common;

use common::{qevo, text};

/// The `N` of "the smallest budget that works is N MB" in `out`.
fn smallest_mb(out: &str) -> u64 {
    let tail = out
        .split("the smallest budget that works is ")
        .nth(1)
        .unwrap_or_else(|| panic!("no smallest budget in: {out}"));
    tail.split(" MB")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("smallest budget not in whole MB: {out}"))
}

/// The refusal names what refuses, the estimate by part and the budget as given.
fn assert_refusal(out: &str, what: &str, budget: &str) {
    for part in [
        format!("{what} needs an estimated "),
        "weight cache at least".to_string(),
        format!("more than the memory budget of {budget}"),
        "the smallest budget that works is ".to_string(),
    ] {
        assert!(out.contains(&part), "missing `{part}` in: {out}");
    }
}

/// `eval` and `quantize` below the smallest budget (the model, references, one forward
/// pass and one block's working set) are refused naming it; that budget in whole MB, as
/// printed, runs, and one MB less is refused again.
#[test]
fn a_budget_below_one_blocks_working_set_is_refused_with_the_smallest_budget_that_works() {
    let cache = tempfile::tempdir().unwrap();
    let runs: [&[&str]; 2] = [
        &["eval", "--max-windows", "1", "--seq-len", "32"],
        &[
            "quantize",
            "--format",
            "q4_k",
            "--max-windows",
            "1",
            "--seq-len",
            "32",
        ],
    ];
    for run in runs {
        let with = |budget: &str| {
            let mut args = run.to_vec();
            args.extend(["--max-memory", budget]);
            qevo(&args, cache.path())
        };
        let o = with("1M");
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert_refusal(&out, "the evaluation", "1.0 MB");
        let n = smallest_mb(&out);
        assert!(n > 1, "{out}");
        let o = with(&format!("{n}M"));
        assert!(o.status.success(), "{run:?} at {n}M: {}", text(&o));
        let o = with(&format!("{}M", n - 1));
        let out = text(&o);
        assert!(!o.status.success(), "{run:?} at {}M ran: {out}", n - 1);
        assert_eq!(smallest_mb(&out), n, "{out}");
    }
}

/// A search that cannot fit its budget refuses before it starts (before the model is
/// loaded or a file is written), saying what it needs and what it has.
#[test]
fn a_search_over_its_memory_budget_refuses_before_it_starts() {
    let cache = tempfile::tempdir().unwrap();
    let out_dir = cache.path().join("search");
    let dir = out_dir.to_str().unwrap();
    let o = qevo(
        &["search", "--max-memory", "100M", "--out", dir],
        cache.path(),
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert_refusal(&out, "the search", "100.0 MB");
    assert!(smallest_mb(&out) > 100, "{out}");
    assert!(!out.contains("searching "), "the search started: {out}");
    for name in ["report.json", "plan.json", "checkpoint.json"] {
        assert!(!out_dir.join(name).exists(), "{name} written");
    }
}
