//! The report's tables, built once as rows of strings and rendered either as aligned
//! plain text for the terminal or as HTML, so both outputs always agree.

use super::format as fmt;
use super::{by_size, is_recommended, pick, shown_plan, Point, ReportData};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub cells: Vec<String>,
    /// Emphasis for the HTML rendering (`rec`, `pass`, `fail`); plain text shows
    /// the same information in a column instead.
    pub class: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub columns: Vec<(&'static str, Align)>,
    pub rows: Vec<Row>,
    /// Shown instead of the table when there are no rows.
    pub empty: &'static str,
}

const GAP: &str = "  ";

impl Table {
    /// Columns named as `d`'s quality names them (1-cos for an encoder's KL columns).
    fn new(d: &ReportData, columns: &[(&'static str, Align)], empty: &'static str) -> Self {
        Table {
            columns: columns
                .iter()
                .map(|&(h, a)| (d.quality.relabel(h), a))
                .collect(),
            rows: Vec::new(),
            empty,
        }
    }

    fn push(&mut self, cells: Vec<String>, class: Option<&'static str>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(Row { cells, class });
    }

    /// Aligned plain text: header, dashes, rows; two spaces between columns, no
    /// trailing spaces, one newline after each line.
    pub(crate) fn text(&self) -> String {
        if self.rows.is_empty() {
            return format!("{}\n", self.empty);
        }
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .map(|r| width(&r.cells[i]))
                    .chain([width(h)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    out.push_str(GAP);
                }
                let pad = widths[i].saturating_sub(width(cell));
                match self.columns[i].1 {
                    Align::Left => {
                        out.push_str(cell);
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        out.extend(std::iter::repeat_n(' ', pad));
                        out.push_str(cell);
                    }
                }
            }
            let mut out = out.trim_end().to_string();
            out.push('\n');
            out
        };
        let mut out = line(&mut self.columns.iter().map(|(h, _)| *h));
        let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&mut dashes.iter().map(String::as_str)));
        for r in &self.rows {
            out.push_str(&line(&mut r.cells.iter().map(String::as_str)));
        }
        out
    }
}

use Align::{Left as L, Right as R};

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

pub(crate) fn recommended(d: &ReportData) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Layer", L),
            ("Weight format", L),
            ("Weight bits", R),
            ("Act bits", R),
            ("Scheme", L),
        ],
        "No recommended plan.",
    );
    for r in &d.recommended_plan {
        t.push(
            vec![
                r.unit.clone(),
                r.weight_format.clone(),
                fmt::bits(r.weight_bits),
                r.act_bits.to_string(),
                r.scheme.clone(),
            ],
            None,
        );
    }
    t
}

/// A performance row's name and how to read its value from a point.
type Metric = (&'static str, fn(&Point) -> f64);

// One piece: one table, a linear list of rows.
pub(crate) fn performance(d: &ReportData) -> Table {
    let shown = shown_plan(d);
    // When nothing is feasible the column shows the least-violating plan, and says so.
    let plan_column = match shown {
        Some((_, true)) => "Least-violating",
        _ => "Recommended",
    };
    let mut t = Table::new(
        d,
        &[
            ("Metric", L),
            (plan_column, R),
            ("FP model", R),
            ("Change", R),
        ],
        "",
    );
    let fp = &d.fp;
    let rec = shown.map(|(p, _)| p);
    // Each row: label, how to read the value from a point, and how to compare.
    let dash = || "-".to_string();
    let mut row = |name: &str, r: String, f: String, change: String| {
        t.push(vec![name.into(), r, f, change], None)
    };
    row(
        d.quality.relabel("KL to FP (nats/token)"),
        rec.map_or_else(dash, |r| fmt::kl(r.kl)),
        fmt::kl(fp.kl),
        dash(),
    );
    if let Some(h) = rec.and_then(|r| r.heldout_kl) {
        row(
            d.quality.relabel("Held-out KL"),
            fmt::kl(h),
            opt(fp.heldout_kl, fmt::kl),
            dash(),
        );
    }
    row(
        d.quality.relabel("Top-1 agreement"),
        rec.map_or_else(dash, |r| fmt::pct(r.top1)),
        fmt::pct(fp.top1),
        rec.map_or_else(dash, |r| format!("{:+.2} pts", (r.top1 - fp.top1) * 100.0)),
    );
    let rec_ppl = rec.and_then(|r| r.perplexity);
    // An encoder predicts no tokens: it has no perplexity to show.
    let has_ppl = d.quality == crate::eval::Quality::Kl;
    if has_ppl && (rec_ppl.is_some() || fp.perplexity.is_some()) {
        let change = match (rec_ppl, fp.perplexity) {
            (Some(a), Some(b)) => fmt::change(a, b),
            _ => dash(),
        };
        row(
            "Perplexity",
            opt(rec_ppl, |v| fmt::sig(v, 4)),
            opt(fp.perplexity, |v| fmt::sig(v, 4)),
            change,
        );
    }
    row(
        "Compression",
        rec.map_or_else(dash, |r| fmt::ratio(d.compression(r))),
        fmt::ratio(1.0),
        dash(),
    );
    let metrics: [Metric; 3] = [
        ("Size (MB)", |p| p.size_bytes as f64 / 1e6),
        ("Latency (ms)", |p| p.latency_ms),
        ("Energy (mJ)", |p| p.energy_mj),
    ];
    for (name, get) in metrics {
        row(
            name,
            rec.map_or_else(dash, |r| fmt::sig(get(r), 4)),
            fmt::sig(get(fp), 4),
            rec.map_or_else(dash, |r| fmt::change(get(r), get(fp))),
        );
    }
    row(
        "Meets constraints",
        rec.map_or_else(dash, |r| yes_no(r.feasible)),
        yes_no(fp.feasible),
        dash(),
    );
    t
}

pub(crate) fn constraints(d: &ReportData) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Constraint", L),
            ("Limit", R),
            ("Value", R),
            ("Over by", R),
            ("Result", L),
        ],
        "No constraints.",
    );
    for c in &d.constraints {
        let (word, class) = if c.pass {
            ("pass", "pass")
        } else {
            ("FAIL", "fail")
        };
        t.push(
            vec![
                c.name.clone(),
                fmt::sig(c.limit, 4),
                fmt::sig(c.value, 4),
                opt(c.excess(), |x| format!("{:+.1}%", x * 100.0)),
                word.into(),
            ],
            Some(class),
        );
    }
    t
}

/// What the plan table is about, as a heading.
pub(crate) fn plan_heading(d: &ReportData) -> &'static str {
    match shown_plan(d) {
        Some((_, true)) => "Least-violating plan (no plan meets every constraint)",
        _ => "Recommended plan",
    }
}

/// What the constraint table is about, as a heading.
pub(crate) fn constraints_heading(d: &ReportData) -> &'static str {
    match shown_plan(d) {
        Some((_, true)) => {
            "Constraints of the least-violating plan (no plan meets every constraint)"
        }
        _ => "Hardware constraints",
    }
}

pub(crate) fn matched(d: &ReportData) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Size of", L),
            ("MB", R),
            ("Uniform KL", R),
            ("Evolved KL", R),
            ("Lagrangian KL", R),
            ("Random KL", R),
            ("Evolved/uniform", R),
            ("Evolved/Lagrangian", R),
            ("Evolved/random", R),
            ("Uniform held-out", R),
            ("Evolved held-out", R),
            ("Lagrangian held-out", R),
        ],
        "No matched-size comparison was run.",
    );
    for m in &d.matched {
        t.push(
            vec![
                m.size_of.clone(),
                fmt::mb(m.size_bytes),
                fmt::kl(m.uniform_kl),
                opt(m.evolved_kl, fmt::kl),
                opt(m.lagrangian_kl, fmt::kl),
                opt(m.random_kl, fmt::kl),
                opt(m.evolved_vs_uniform, fmt::ratio),
                opt(m.evolved_vs_lagrangian, fmt::ratio),
                opt(m.evolved_vs_random, fmt::ratio),
                fmt::kl(m.uniform_heldout_kl),
                opt(m.evolved_heldout_kl, fmt::kl),
                opt(m.lagrangian_heldout_kl, fmt::kl),
            ],
            None,
        );
    }
    t
}

/// At the size limit: the refined (recommended) plan, the plan refining started from and
/// the Lagrangian plan, on calibration, validation and held-out text.
pub(crate) fn at_limit(d: &ReportData) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Plan", L),
            ("MB", R),
            ("KL", R),
            ("Validation KL", R),
            ("Held-out KL", R),
        ],
        "No refine stage ran (it runs at a size limit).",
    );
    let Some(r) = &d.refine else { return t };
    let start = format!("start ({})", r.start.as_str());
    let rows = [
        ("refined (recommended)", Some(&r.chosen)),
        (start.as_str(), Some(&r.start_scores)),
        ("lagrangian @ limit", r.lagrangian.as_ref()),
    ];
    for (name, s) in rows {
        let Some(s) = s else { continue };
        t.push(
            vec![
                name.to_string(),
                fmt::mb(s.size_bytes),
                fmt::kl(s.kl),
                fmt::kl(s.validation_kl),
                fmt::kl(s.heldout_kl),
            ],
            None,
        );
    }
    t
}

pub(crate) fn front(d: &ReportData) -> Table {
    front_rows(d, usize::MAX)
}

/// The front sorted by size; with more than `max` plans, only the rows
/// [`pick::representative`] chooses (numbered by their rank in the whole front).
fn front_rows(d: &ReportData, max: usize) -> Table {
    let sorted = by_size(&d.front);
    let rec = sorted.iter().position(|p| is_recommended(d, p));
    let shown = pick::representative(sorted.len(), rec, max);
    let mut t = Table::new(
        d,
        &[
            ("#", R),
            ("Plan", L),
            ("KL", R),
            ("Held-out KL", R),
            ("Top-1", R),
            ("Size MB", R),
            ("Compr.", R),
            ("Latency ms", R),
            ("Energy mJ", R),
            ("Feasible", L),
            ("Rec.", L),
        ],
        "The Pareto front is empty.",
    );
    for i in shown {
        let p = sorted[i];
        let rec = Some(i) == rec;
        t.push(
            vec![
                (i + 1).to_string(),
                p.label.clone(),
                fmt::kl(p.kl),
                opt(p.heldout_kl, fmt::kl),
                fmt::pct(p.top1),
                fmt::mb(p.size_bytes),
                fmt::ratio(d.compression(p)),
                fmt::sig(p.latency_ms, 4),
                fmt::sig(p.energy_mj, 4),
                yes_no(p.feasible),
                if rec { "*" } else { "" }.into(),
            ],
            rec.then_some("rec"),
        );
    }
    t
}

/// Lowest KL among feasible front plans no larger than `size_bytes`.
fn best_evolved_at_size(d: &ReportData, size_bytes: u64) -> Option<f64> {
    d.front
        .iter()
        .filter(|p| p.feasible && p.size_bytes <= size_bytes)
        .map(|p| p.kl)
        .min_by(f64::total_cmp)
}

pub(crate) fn baselines(d: &ReportData) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Series", L),
            ("Plan", L),
            ("KL", R),
            ("Top-1", R),
            ("Size MB", R),
            ("Compr.", R),
            ("Latency ms", R),
            ("Energy mJ", R),
            ("Feasible", L),
            ("Evolved KL at <= size", R),
        ],
        "No baselines were run.",
    );
    for s in &d.baselines {
        for p in by_size(&s.points) {
            let evolved = match best_evolved_at_size(d, p.size_bytes) {
                Some(e) => format!("{} ({})", fmt::kl(e), fmt::change(e, p.kl)),
                None => "-".into(),
            };
            t.push(
                vec![
                    s.name.clone(),
                    p.label.clone(),
                    fmt::kl(p.kl),
                    fmt::pct(p.top1),
                    fmt::mb(p.size_bytes),
                    fmt::ratio(d.compression(p)),
                    fmt::sig(p.latency_ms, 4),
                    fmt::sig(p.energy_mj, 4),
                    yes_no(p.feasible),
                    evolved,
                ],
                None,
            );
        }
    }
    t
}

pub(crate) fn convergence(d: &ReportData, every: usize) -> Table {
    let mut t = Table::new(
        d,
        &[
            ("Gen", R),
            ("Evals", R),
            ("Hypervolume", R),
            ("Best KL", R),
            ("Front", R),
            ("Fitness", R),
            ("Top-1", R),
            ("Compr.", R),
            ("Cache hits", R),
        ],
        "No generations recorded.",
    );
    let every = every.max(1);
    let last = d.history.len().saturating_sub(1);
    for (i, h) in d.history.iter().enumerate() {
        if h.generation % every != 0 && i != last {
            continue;
        }
        t.push(
            vec![
                h.generation.to_string(),
                h.evaluations.to_string(),
                fmt::sig(h.hypervolume, 4),
                fmt::kl(h.best_kl),
                h.front_size.to_string(),
                format!("{:.4}", h.fitness),
                fmt::pct(h.top1),
                fmt::ratio(h.compression),
                fmt::pct(h.cache_hit_rate),
            ],
            None,
        );
    }
    t
}

/// Title and provenance lines (model, fingerprint, target, seed, version).
pub fn header_text(d: &ReportData) -> String {
    let mut t = Table::new(d, &[("Field", L), ("Value", L)], "");
    for (k, v) in header_fields(d) {
        t.push(vec![k.into(), v], None);
    }
    // The provenance block reads better without the table's header lines.
    let body: String = t.text().lines().skip(2).map(|l| format!("{l}\n")).collect();
    format!("{}\n{body}", d.title)
}

pub(crate) fn header_fields(d: &ReportData) -> Vec<(&'static str, String)> {
    vec![
        ("Model", d.model.clone()),
        ("Fingerprint", d.fingerprint.clone()),
        ("Target", d.target.clone()),
        ("Seed", d.seed.to_string()),
        ("qevo version", d.qevo_version.clone()),
    ]
}

/// The recommended plan: one row per decision unit with its weight format, exact
/// bits per weight, activation bits and scheme.
pub fn recommended_table(d: &ReportData) -> String {
    recommended(d).text()
}

/// The recommended plan against the FP model: KL, held-out KL, top-1 agreement,
/// perplexity (when measured), compression, size, latency, energy, constraints.
pub fn performance_table(d: &ReportData) -> String {
    performance(d).text()
}

/// The whole terminal summary: provenance, the recommended (or least-violating) plan,
/// performance against FP, constraints, the front (at most `max_front_rows` rows, see
/// [`front_table_at_most`]), baselines, matched sizes, convergence and the notes.
pub fn summary_text(d: &ReportData, max_front_rows: usize) -> String {
    let mut out = format!("{}\n", header_text(d));
    let mut section = |title: &str, body: String| {
        out.push_str(title);
        out.push('\n');
        out.push_str(&body);
        out.push('\n');
    };
    section(plan_heading(d), recommended_table(d));
    section("Performance against FP", performance_table(d));
    section(constraints_heading(d), constraints_table(d));
    section(
        &format!("Pareto front ({} plans)", d.front.len()),
        front_table_at_most(d, max_front_rows),
    );
    section("Baselines", baseline_table(d));
    if !d.matched.is_empty() {
        section(
            d.quality.relabel("At matched sizes (KL to FP, nats/token)"),
            matched_table(d),
        );
    }
    if d.refine.is_some() {
        section(
            d.quality
                .relabel("At the size limit (KL to FP, nats/token)"),
            at_limit(d).text(),
        );
    }
    section("Convergence", convergence_table(d));
    for n in &d.notes {
        out.push_str(n);
        out.push('\n');
    }
    out
}

/// Each hardware constraint with its limit, the recommended plan's value and pass/FAIL.
pub fn constraints_table(d: &ReportData) -> String {
    constraints(d).text()
}

/// Every Pareto-front plan, smallest first, the recommended one marked `*`.
pub fn front_table(d: &ReportData) -> String {
    front(d).text()
}

/// The Pareto front for a terminal: at most `max` rows (at least 3) spread evenly over
/// size, always with the smallest, the largest and the recommended plan, and a line
/// saying how many were left out.
pub fn front_table_at_most(d: &ReportData, max: usize) -> String {
    let t = front_rows(d, max);
    let mut out = t.text();
    if t.rows.len() < d.front.len() {
        out.push_str(&format!(
            "({} of {} plans shown, spread over size; front.json and report.html list all)\n",
            t.rows.len(),
            d.front.len()
        ));
    }
    out
}

/// At each uniform plan's size: every method's best KL, the evolved plan's KL
/// relative to each, and the held-out check.
pub fn matched_table(d: &ReportData) -> String {
    matched(d).text()
}

/// Every baseline plan with, for comparison, the best feasible evolved KL at the
/// same or smaller size.
pub fn baseline_table(d: &ReportData) -> String {
    baselines(d).text()
}

/// Search progress every 10 generations plus the last one.
pub fn convergence_table(d: &ReportData) -> String {
    convergence_table_every(d, 10)
}

/// Search progress every `every` generations plus the last one.
pub fn convergence_table_every(d: &ReportData, every: usize) -> String {
    convergence(d, every).text()
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn recommended_table_exact() {
        let want = "\
Layer        Weight format  Weight bits  Act bits  Scheme
-----------  -------------  -----------  --------  ----------
embedding    q6_k                6.5625         8  GGML block
attention_q  int8-sym-ch              8         8  SYMMETRIC
ffn_down     int4-asym-g64          4.5         8  ASYMMETRIC
";
        assert_eq!(recommended_table(&fixture::small()), want);
    }

    #[test]
    fn performance_table_exact() {
        let want = "\
Metric                 Recommended  FP model     Change
---------------------  -----------  --------  ---------
KL to FP (nats/token)      0.01200         0          -
Held-out KL                0.01400         -          -
Top-1 agreement             96.40%   100.00%  -3.60 pts
Perplexity                   12.80     12.34      +3.7%
Compression                  6.00x     1.00x          -
Size (MB)                    1.000     6.000     -83.3%
Latency (ms)                 110.0     450.0     -75.6%
Energy (mJ)                 0.4000     2.100     -81.0%
Meets constraints              yes        no          -
";
        assert_eq!(performance_table(&fixture::small()), want);
    }

    #[test]
    fn front_table_sorted_by_size_with_recommended_marked() {
        let want = "\
#  Plan         KL  Held-out KL   Top-1  Size MB  Compr.  Latency ms  Energy mJ  Feasible  Rec.
-  -----  --------  -----------  ------  -------  ------  ----------  ---------  --------  ----
1  mix-c    0.2000            -  80.00%   0.5000  12.00x       60.00     0.2000  no
2  mix-b   0.01200      0.01400  96.40%    1.000   6.00x       110.0     0.4000  yes       *
3  mix-a  4.000e-4            -  99.50%    3.000   2.00x       250.0      1.200  yes
";
        assert_eq!(front_table(&fixture::small()), want);
    }

    #[test]
    fn baseline_table_compares_with_evolved_kl_at_same_size() {
        let want = "\
Series   Plan        KL   Top-1  Size MB  Compr.  Latency ms  Energy mJ  Feasible  Evolved KL at <= size
-------  ----  --------  ------  -------  ------  ----------  ---------  --------  ---------------------
uniform  q4_0   0.05000  93.00%    1.000   6.00x       105.0     0.3800  yes            0.01200 (-76.0%)
uniform  q8_0  0.002000  99.00%    2.000   3.00x       180.0     0.8000  yes           0.01200 (+500.0%)
";
        assert_eq!(baseline_table(&fixture::small()), want);
    }

    #[test]
    fn convergence_table_every_ten_plus_last() {
        let want = "\
Gen  Evals  Hypervolume  Best KL  Front  Fitness   Top-1  Compr.  Cache hits
---  -----  -----------  -------  -----  -------  ------  ------  ----------
  0     32       0.4000   0.1000      4   0.6200  92.10%   2.10x       0.00%
 10    352       0.7000  0.02000      9   0.7400  94.30%   3.20x      41.00%
 12    416       0.7100  0.01200     10   0.7500  96.40%   6.00x      45.50%
";
        assert_eq!(convergence_table(&fixture::small()), want);
    }

    #[test]
    fn constraints_table_marks_failures_and_says_by_how_much() {
        let mut d = fixture::small();
        d.constraints[1].limit = 100.0;
        d.constraints[1].pass = false;
        let want = "\
Constraint  Limit  Value  Over by  Result
----------  -----  -----  -------  ------
memory MB   2.000  1.000        -  pass
latency ms  100.0  110.0   +10.0%  FAIL
";
        assert_eq!(constraints_table(&d), want);
    }

    #[test]
    fn matched_table_exact() {
        let want = "\
Size of     MB  Uniform KL  Evolved KL  Lagrangian KL  Random KL  Evolved/uniform  Evolved/Lagrangian  Evolved/random  Uniform held-out  Evolved held-out  Lagrangian held-out
-------  -----  ----------  ----------  -------------  ---------  ---------------  ------------------  --------------  ----------------  ----------------  -------------------
q4_0     1.000     0.05000     0.01200        0.02000          -            0.24x               0.60x               -           0.06000           0.01400              0.02500
";
        assert_eq!(matched_table(&fixture::small()), want);
    }

    #[test]
    fn terminal_front_of_a_large_front_shows_at_most_20_rows_with_the_recommended() {
        let d = fixture::large();
        assert_eq!(d.front.len(), 25);
        let t = front_table_at_most(&d, 20);
        let rows: Vec<&str> = t.lines().skip(2).filter(|l| !l.starts_with('(')).collect();
        assert_eq!(rows.len(), 20, "{t}");
        assert!(rows[0].starts_with(" 1  "), "{t}");
        assert!(rows[19].starts_with("25  "), "{t}");
        assert_eq!(rows.iter().filter(|r| r.ends_with('*')).count(), 1, "{t}");
        assert!(t.ends_with(
            "(20 of 25 plans shown, spread over size; front.json and report.html list all)\n"
        ));
        // The report file keeps every plan.
        assert_eq!(front(&d).rows.len(), 25);
    }

    #[test]
    fn summary_of_an_infeasible_search_shows_the_least_violating_plans_violations() {
        let mut input = fixture::input();
        input.recommended = None;
        let s = summary_text(&crate::report::assemble(&input, None), 20);
        assert!(
            s.contains("Least-violating plan (no plan meets every constraint)\n"),
            "{s}"
        );
        assert!(s.contains("Metric                 Least-violating"), "{s}");
        assert!(s.contains("Constraints of the least-violating plan"), "{s}");
        // 150 ms against a 120 ms limit: 25 % over.
        let fail = s.lines().find(|l| l.starts_with("max_latency_ms")).unwrap();
        assert!(fail.contains("+25.0%") && fail.ends_with("FAIL"), "{fail}");
    }

    #[test]
    fn empty_report_tables_say_so() {
        let d = fixture::empty();
        assert_eq!(recommended_table(&d), "No recommended plan.\n");
        assert_eq!(front_table(&d), "The Pareto front is empty.\n");
        assert_eq!(baseline_table(&d), "No baselines were run.\n");
        assert_eq!(convergence_table(&d), "No generations recorded.\n");
        let perf = performance_table(&d);
        assert!(
            perf.contains("KL to FP (nats/token)            -"),
            "{perf}"
        );
    }

    #[test]
    fn header_lists_provenance() {
        let h = header_text(&fixture::small());
        assert!(h.starts_with("qevo report\n"), "{h}");
        assert!(h.contains("Seed          42\n"), "{h}");
        assert!(h.contains("Fingerprint   sha256:abcd\n"), "{h}");
    }
}
