//! The report: turns a finished search into terminal tables, SVG plots and one
//! self-contained HTML page, in two steps.
//!
//! 1. Assembly ([`ReportInput::from_outcome`], then [`assemble`]): the search's facts
//!    are copied into a [`ReportInput`] (serialisable; a search writes it as
//!    `report.json`), and [`assemble`] derives everything the report shows from it
//!    into a [`ReportData`]: the random search's front, the matched-size table, cache
//!    hit rates, the constraint table of the recommended (or least-violating) plan.
//!    Each derived number has one function here. `report.json` is a pure function of
//!    the seed and inputs; how the process ran (wall times, per-process cache counters)
//!    is a [`RunRecord`], written beside it as `run.json`.
//! 2. Rendering: every renderer is a pure function of a [`ReportData`] and never
//!    computes; [`write_report`] and [`rebuild`] are the only functions that touch the
//!    file system (with [`read_run`]), so `qevo report DIR` redraws exactly what the
//!    search wrote.
//!
//! [`write_all`] writes every output file of a search, the report among them.

mod assemble;
mod files;
mod format;
mod html;
mod outputs;
mod pick;
mod plot;
mod run;
mod tables;

pub use assemble::{
    assemble, hit_rate, CacheCounts, GenerationInput, MatchedInput, ReportInput, TunedRow,
    REPORT_SCHEMA_VERSION,
};
pub use files::{read_input, rebuild, write_report, REPORT_INPUT_FILE};
pub use html::{html, write_html};
pub use outputs::write_all;
pub use pick::representative;
pub use plot::{convergence_svg, pareto_svg};
pub use run::{read_run, ProcessCaches, RunRecord, RUN_RECORD_FILE, RUN_SCHEMA_VERSION};
pub use tables::{
    baseline_table, constraints_table, convergence_table, convergence_table_every, front_table,
    front_table_at_most, header_text, matched_table, performance_table, recommended_table,
    summary_text,
};

/// One evaluated quantization plan (or the unquantized model itself).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Short name of the plan (e.g. genome hash, `uniform q4_k`).
    pub label: String,
    /// Mean KL divergence to the FP model on calibration tokens (nats/token).
    pub kl: f64,
    /// The same KL measured on held-out tokens, when it was checked.
    pub heldout_kl: Option<f64>,
    /// Perplexity on the calibration text, when it was measured.
    pub perplexity: Option<f64>,
    /// Top-1 agreement with the FP model, as a fraction in 0..=1.
    pub top1: f64,
    pub size_bytes: u64,
    pub latency_ms: f64,
    pub energy_mj: f64,
    /// Whether the plan meets every hardware constraint.
    pub feasible: bool,
}

/// A named set of comparison points, e.g. `uniform`, `lagrangian`, `random search`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

/// The state of the search after one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRow {
    pub generation: usize,
    /// Evaluations done so far (cumulative).
    pub evaluations: u64,
    pub hypervolume: f64,
    pub best_kl: f64,
    pub front_size: usize,
    /// Weighted fitness of the best plan of this generation.
    pub fitness: f64,
    /// Top-1 agreement (fraction) of that plan.
    pub top1: f64,
    /// Compression (FP size / plan size) of that plan.
    pub compression: f64,
    /// Fraction of evaluations answered from the fitness cache, 0..=1.
    pub cache_hit_rate: f64,
}

/// One decision unit of a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanRow {
    /// Layer, role or tensor name.
    pub unit: String,
    /// Weight format, e.g. `q4_k`, `int4-asym-g128`.
    pub weight_format: String,
    /// Exact bits per weight, scales included.
    pub weight_bits: f64,
    pub act_bits: u8,
    /// `SYMMETRIC`, `ASYMMETRIC`, `POWER_OF_TWO`, `GGML block`, ...
    pub scheme: String,
}

/// One weight matrix of the shown plan, for the block × role heatmap.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorCell {
    /// Transformer block, or `None` for the embedding and the output.
    pub block: Option<usize>,
    /// `attn_q`, `ffn_down`, `embedding`, ...
    pub role: String,
    pub format: String,
    /// Exact bits per weight, scales included.
    pub bits: f64,
}

/// A hardware or user limit and how a plan fares against it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConstraintRow {
    /// The limit's key, e.g. `max_memory_mb`, `max_size_mb (user)`.
    pub name: String,
    pub limit: f64,
    pub value: f64,
    pub pass: bool,
}

impl ConstraintRow {
    /// How far a failing value is over its limit, relative to the limit (0.5 = 50 %
    /// over); `None` when it passes. The one rule the report uses for "by how much".
    pub fn excess(&self) -> Option<f64> {
        (!self.pass && self.limit != 0.0).then(|| (self.value - self.limit) / self.limit)
    }
}

/// At one uniform plan's size, the best KL each method reached at that size or below
/// (feasible plans only), and the evolved plan's KL relative to each other method.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchedRow {
    /// The uniform plan whose size this row is at, e.g. `q4_k`.
    pub size_of: String,
    pub size_bytes: u64,
    pub uniform_kl: f64,
    pub evolved_kl: Option<f64>,
    pub lagrangian_kl: Option<f64>,
    pub random_kl: Option<f64>,
    pub uniform_heldout_kl: f64,
    pub evolved_heldout_kl: Option<f64>,
    pub lagrangian_heldout_kl: Option<f64>,
    /// Evolved KL / uniform KL (below 1: the evolved plan is better).
    pub evolved_vs_uniform: Option<f64>,
    /// Evolved KL / Lagrangian KL.
    pub evolved_vs_lagrangian: Option<f64>,
    /// Evolved KL / random-search KL.
    pub evolved_vs_random: Option<f64>,
}

/// Everything a report shows. Filled by the caller; the report computes only
/// derived ratios (compression, relative change).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub title: String,
    pub model: String,
    /// What the `kl` fields measure: names every KL label (`Quality::relabel`).
    pub quality: crate::eval::Quality,
    pub fingerprint: String,
    pub target: String,
    pub seed: u64,
    pub qevo_version: String,
    /// The unquantized model: the reference for compression and the "was" values.
    pub fp: Point,
    pub recommended: Option<Point>,
    /// When no plan meets every constraint: the least-violating plan, shown in place
    /// of the recommended one and marked as such.
    pub closest: Option<Point>,
    /// The units of the recommended plan (or of `closest` when nothing is feasible).
    pub recommended_plan: Vec<PlanRow>,
    /// The same plan per weight matrix (the heatmap); empty when not recorded.
    pub plan_tensors: Vec<TensorCell>,
    pub front: Vec<Point>,
    /// Per front plan (same order), a one-line summary of its formats for the plot's
    /// hover text; empty when not recorded.
    pub front_plans: Vec<String>,
    pub baselines: Vec<Series>,
    pub history: Vec<GenerationRow>,
    /// The limits checked on the recommended plan, or on `closest`.
    pub constraints: Vec<ConstraintRow>,
    /// Best KL of each method at the uniform plans' sizes.
    pub matched: Vec<MatchedRow>,
    /// The refine stage at the size limit (`tables::at_limit`).
    pub refine: Option<crate::search::refine::RefineSummary>,
    /// Free-text lines (cache hit rates, timings, held-out check).
    pub notes: Vec<String>,
}

/// Why a report could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A number that would make a plot or ratio meaningless (NaN, ±inf).
    #[error("report field `{field}` is {value}: reports need finite numbers")]
    NonFinite { field: String, value: f64 },
    #[error("report field `{field}`: {msg}")]
    Invalid { field: String, msg: String },
    /// The plotting library refused to draw (should not happen for validated input).
    #[error("drawing the {plot} plot: {msg}")]
    Draw { plot: &'static str, msg: String },
    /// Reading or writing a report file (`report.json`, the SVGs, `report.html`).
    #[error(transparent)]
    File(#[from] crate::Error),
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

impl ReportData {
    /// Compression of `p` relative to the FP model (FP size / plan size).
    pub fn compression(&self, p: &Point) -> f64 {
        self.fp.size_bytes as f64 / p.size_bytes as f64
    }
}

fn finite(field: impl FnOnce() -> String, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ReportError::NonFinite {
            field: field(),
            value,
        })
    }
}

fn check_point(p: &Point, name: &str) -> Result<()> {
    let f = |key: &str| format!("{name} `{}`.{key}", p.label);
    finite(|| f("kl"), p.kl)?;
    if let Some(v) = p.heldout_kl {
        finite(|| f("heldout_kl"), v)?;
    }
    if let Some(v) = p.perplexity {
        finite(|| f("perplexity"), v)?;
    }
    finite(|| f("top1"), p.top1)?;
    finite(|| f("latency_ms"), p.latency_ms)?;
    finite(|| f("energy_mj"), p.energy_mj)?;
    if p.size_bytes == 0 {
        return Err(ReportError::Invalid {
            field: f("size_bytes"),
            msg: "is 0, so compression is undefined".into(),
        });
    }
    Ok(())
}

/// Checks that every number a renderer uses is finite and every size is non-zero,
/// naming the first offending field. All renderers that return `Result` call it.
pub fn validate(d: &ReportData) -> Result<()> {
    check_point(&d.fp, "fp")?;
    if let Some(r) = &d.recommended {
        check_point(r, "recommended")?;
    }
    if let Some(r) = &d.closest {
        check_point(r, "closest")?;
    }
    for (i, p) in d.front.iter().enumerate() {
        check_point(p, &format!("front[{i}]"))?;
    }
    for s in &d.baselines {
        for (i, p) in s.points.iter().enumerate() {
            check_point(p, &format!("baselines `{}`[{i}]", s.name))?;
        }
    }
    for r in &d.recommended_plan {
        finite(
            || format!("recommended_plan `{}`.weight_bits", r.unit),
            r.weight_bits,
        )?;
    }
    for t in &d.plan_tensors {
        finite(|| format!("plan_tensors `{}`.bits", t.role), t.bits)?;
    }
    for h in &d.history {
        let f = |key: &str| format!("history[generation {}].{key}", h.generation);
        finite(|| f("hypervolume"), h.hypervolume)?;
        finite(|| f("best_kl"), h.best_kl)?;
        finite(|| f("fitness"), h.fitness)?;
        finite(|| f("top1"), h.top1)?;
        finite(|| f("compression"), h.compression)?;
        finite(|| f("cache_hit_rate"), h.cache_hit_rate)?;
    }
    for c in &d.constraints {
        finite(|| format!("constraints `{}`.limit", c.name), c.limit)?;
        finite(|| format!("constraints `{}`.value", c.name), c.value)?;
    }
    for m in &d.matched {
        let f = |key: &str| format!("matched `{}`.{key}", m.size_of);
        finite(|| f("uniform_kl"), m.uniform_kl)?;
        finite(|| f("uniform_heldout_kl"), m.uniform_heldout_kl)?;
        for (key, v) in [
            ("evolved_kl", m.evolved_kl),
            ("lagrangian_kl", m.lagrangian_kl),
            ("random_kl", m.random_kl),
            ("evolved_heldout_kl", m.evolved_heldout_kl),
            ("lagrangian_heldout_kl", m.lagrangian_heldout_kl),
            ("evolved_vs_uniform", m.evolved_vs_uniform),
            ("evolved_vs_lagrangian", m.evolved_vs_lagrangian),
            ("evolved_vs_random", m.evolved_vs_random),
        ] {
            if let Some(v) = v {
                finite(|| f(key), v)?;
            }
        }
    }
    Ok(())
}

/// Whether `p` is the recommended plan (same label and size).
fn is_recommended(d: &ReportData, p: &Point) -> bool {
    d.recommended
        .as_ref()
        .is_some_and(|r| r.label == p.label && r.size_bytes == p.size_bytes)
}

/// The plan the performance and constraint tables describe: the recommended plan, or
/// the least-violating one when nothing is feasible (`true` in the second field).
fn shown_plan(d: &ReportData) -> Option<(&Point, bool)> {
    match (&d.recommended, &d.closest) {
        (Some(r), _) => Some((r, false)),
        (None, Some(c)) => Some((c, true)),
        (None, None) => None,
    }
}

/// Points sorted by size, smallest first (stable for equal sizes).
fn by_size(points: &[Point]) -> Vec<&Point> {
    let mut v: Vec<&Point> = points.iter().collect();
    v.sort_by_key(|p| p.size_bytes);
    v
}

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_nan_field() {
        let mut d = fixture::small();
        d.front[1].kl = f64::NAN;
        let e = validate(&d).unwrap_err().to_string();
        assert!(e.contains("front[1] `mix-b`.kl"), "{e}");
        assert!(e.contains("NaN"), "{e}");
    }

    #[test]
    fn validate_rejects_infinite_history_and_zero_size() {
        let mut d = fixture::small();
        d.history[0].hypervolume = f64::INFINITY;
        let e = validate(&d).unwrap_err().to_string();
        assert!(e.contains("history[generation 0].hypervolume"), "{e}");
        let mut d = fixture::small();
        d.baselines[0].points[0].size_bytes = 0;
        let e = validate(&d).unwrap_err().to_string();
        assert!(e.contains("baselines `uniform`[0]"), "{e}");
        assert!(e.contains("size_bytes"), "{e}");
    }

    #[test]
    fn fixture_is_valid() {
        validate(&fixture::small()).unwrap();
    }
}
