//! Report assembly: a finished search → [`ReportInput`] (the facts, serialisable, written
//! by a search as `report.json`) → [`ReportData`] (what the renderers show).
//!
//! `report.json` holds only what the seed and inputs decide, so a resumed search writes
//! it byte for byte as an uninterrupted one; how the process ran (wall times, the
//! per-process caches' counters) is a [`RunRecord`] in `run.json`, which [`assemble`]
//! takes beside it for the report's time and cache lines.
//!
//! [`ReportInput::from_outcome`] only copies numbers out of the search, plus one pricing
//! call: the FP model's constraint checks, which the outcome does not keep. [`assemble`]
//! derives the rest, each in one function: the random search's front ([`feasible_front`]),
//! the matched-size rows ([`matched_row`]), cache hit rates ([`hit_rate`]), the history
//! rows ([`generation_row`]) and the plan the constraint table describes (the recommended
//! one, or the least-violating one when nothing is feasible).

use super::run::RunRecord;
use super::{
    ConstraintRow, GenerationRow, MatchedRow, PlanRow, Point, ReportData, Series, TensorCell,
};
use crate::error::Result;
use crate::eval::Quality;
use crate::model::Model;
use crate::plan::fp_choices;
use crate::plan::{price, LimitCheck};
use crate::quant::{Scheme, WeightFormat};
use crate::search::baselines::BaselinePoint;
use crate::search::problem::Scored;
use crate::search::{FrontEntry, SearchConfig, SearchOutcome};
use serde::{Deserialize, Serialize};

/// Version of the `report.json` layout; [`super::read_input`] refuses other versions.
/// Version 2 moved wall times and per-process cache counters out, into `run.json`.
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// Everything a report is drawn from, as plain numbers, each a function of the seed and
/// inputs alone (nothing a process measures: that is [`RunRecord`]). A search writes it
/// as `report.json`; `qevo report DIR` reads it back and redraws the same report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    pub schema_version: u32,
    pub model: String,
    /// What the `kl` fields measure (1 − cosine for an encoder).
    #[serde(default)]
    pub quality: Quality,
    pub fingerprint: String,
    pub target: String,
    pub seed: u64,
    pub qevo_version: String,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    /// `role`, `block` or `tensor`.
    pub unit: String,
    pub formats: Vec<String>,
    /// The unquantized model, `feasible` from its own constraint checks.
    pub fp: Point,
    /// The FP model priced against the same limits as every plan.
    pub fp_checks: Vec<ConstraintRow>,
    pub front: Vec<Point>,
    /// Index into `front`.
    pub recommended: Option<usize>,
    /// When no plan is feasible: the least-violating plan the search found.
    pub closest: Option<Point>,
    /// The units of the recommended plan, or of `closest`.
    pub plan: Vec<PlanRow>,
    /// The same plan per weight matrix (absent from reports written before it).
    #[serde(default)]
    pub tensors: Vec<TensorCell>,
    /// Per front plan, its formats in one line (`plan_summary`).
    #[serde(default)]
    pub front_plans: Vec<String>,
    /// Limit checks of the recommended plan, or of `closest`.
    pub checks: Vec<ConstraintRow>,
    pub uniform: Vec<Point>,
    pub lagrangian: Vec<Point>,
    /// Every fully scored random-search plan (the report keeps their front).
    pub random: Vec<Point>,
    pub matched: Vec<MatchedInput>,
    pub generations: Vec<GenerationInput>,
    pub caches: CacheCounts,
    /// Sensitivity-table cells measured, and all cells (the rest scaled).
    #[serde(default)]
    pub sensitivity_cells: [usize; 2],
    /// The calibration scores ran the sampled output layer (`eval::head`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_sampled: bool,
    pub fp_heldout_perplexity: f64,
    /// Front plans tuned after the search (`--tune-front`), untuned against tuned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuned: Vec<TunedRow>,
    /// The refine stage at the size limit: the refined plan, where it started and the
    /// Lagrangian plan at the limit, on calibration, validation and held-out text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<crate::search::refine::RefineSummary>,
}

/// One front plan before and after `tune`, as `search --tune-front` measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedRow {
    /// Index into `front`.
    pub front_index: usize,
    pub size_bytes: u64,
    pub kl: f64,
    pub tuned_kl: f64,
    pub heldout_kl: f64,
    pub tuned_heldout_kl: f64,
}

impl TunedRow {
    /// The row of a tuned front plan: calibration and held-out KL before and after.
    pub fn of(e: &crate::search::tune_front::TunedEntry) -> TunedRow {
        TunedRow {
            front_index: e.front_index,
            size_bytes: e.size_bytes,
            kl: e.before.calibration.kl,
            tuned_kl: e.after.calibration.kl,
            heldout_kl: e.before.heldout.kl,
            tuned_heldout_kl: e.after.heldout.kl,
        }
    }

    /// The report's line for this row, with its wall time when `run.json` has it.
    fn note(&self, seconds: Option<f64>) -> String {
        let change = |a: f64, b: f64| 100.0 * (b - a) / a.max(1e-30);
        format!(
            "tuned front plan #{} ({} bytes): KL {:.5} -> {:.5} ({:+.1}%), held-out KL {:.5} -> {:.5} ({:+.1}%){}",
            self.front_index,
            self.size_bytes,
            self.kl,
            self.tuned_kl,
            change(self.kl, self.tuned_kl),
            self.heldout_kl,
            self.tuned_heldout_kl,
            change(self.heldout_kl, self.tuned_heldout_kl),
            seconds.map_or_else(String::new, |s| format!(", {s:.1} s"))
        )
    }
}

/// The search's matched-size comparison, as the search computed it (the search's own
/// row type: one definition for both).
pub use crate::search::MatchedRow as MatchedInput;

/// One generation: the engine's record joined with the best weighted fitness of
/// that generation (absent while nothing feasible was found).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationInput {
    pub generation: u64,
    pub evaluations: u64,
    pub hypervolume: Option<f64>,
    pub best_kl: Option<f64>,
    pub front_size: usize,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    pub best_fitness: Option<f64>,
    pub best_top1: Option<f64>,
    pub best_size_bytes: Option<u64>,
}

/// The search's own counters at its end: the fitness memo's and the surrogate's. Both
/// travel in the checkpoint, so a resumed search ends with the same numbers; the
/// per-process caches' counters are [`super::ProcessCaches`], in `run.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCounts {
    pub fitness_hits: u64,
    pub fitness_lookups: u64,
    pub full_evaluations: u64,
    pub screenings: u64,
    pub screened_out: u64,
    /// Offspring the surrogate screened out before any forward pass.
    #[serde(default)]
    pub surrogate_rejected: u64,
    /// Plans its accuracy was checked on, and its Spearman rank correlation there.
    #[serde(default)]
    pub surrogate_checked: usize,
    #[serde(default)]
    pub surrogate_spearman: Option<f64>,
}

/// Fraction of `lookups` answered from a cache, 0..=1; 0 when nothing was looked up.
/// The one rule for every hit rate the report (and the CLI's progress bar) shows.
pub fn hit_rate(hits: u64, lookups: u64) -> f64 {
    if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    }
}

fn scheme_name(f: &WeightFormat) -> &'static str {
    match f {
        WeightFormat::Int(i) => match i.scheme {
            Scheme::Sym => "SYMMETRIC",
            Scheme::Asym => "ASYMMETRIC",
            Scheme::Pow2 => "POWER_OF_TWO",
        },
        WeightFormat::Ggml(g) if g.is_quantized() => "GGML block",
        WeightFormat::Ggml(_) => "FLOAT",
    }
}

fn point(label: &str, s: &Scored, heldout_kl: Option<f64>) -> Point {
    Point {
        label: label.to_string(),
        kl: s.metrics.kl,
        heldout_kl,
        perplexity: Some(s.metrics.ppl),
        top1: s.metrics.top1,
        size_bytes: s.size_bytes,
        latency_ms: s.latency_ms,
        energy_mj: s.energy_mj,
        feasible: s.violation <= 0.0,
    }
}

fn rows(checks: &[LimitCheck]) -> Vec<ConstraintRow> {
    checks
        .iter()
        .map(|c| ConstraintRow {
            name: c.name.clone(),
            limit: c.limit,
            value: c.value,
            pass: c.pass,
        })
        .collect()
}

fn baseline_points(b: &[BaselinePoint]) -> Vec<Point> {
    b.iter().map(|b| point(&b.name, &b.scored, None)).collect()
}

/// One row per decision unit of `genome`: format, exact bits per weight, scheme.
fn plan_rows(model: &Model, o: &SearchOutcome, genome: &[u16]) -> Vec<PlanRow> {
    o.space
        .units
        .iter()
        .zip(genome)
        .enumerate()
        .map(|(u, (unit, &gene))| {
            let c = o.space.choices[u][gene as usize];
            let cols = model.tensors[unit.tensors[0]].cols;
            PlanRow {
                unit: unit.name.clone(),
                weight_format: c.format.name(),
                weight_bits: c.format.bits_per_weight(cols),
                act_bits: c.act_bits,
                scheme: scheme_name(&c.format).to_string(),
            }
        })
        .collect()
}

/// Units listed one by one up to this many; above it, a count per format.
const SUMMARY_UNITS: usize = 12;

/// A plan in one line: `unit format` per unit for a few units, else `format ×count`
/// per format (most units first, then by name).
fn plan_summary(o: &SearchOutcome, genome: &[u16]) -> String {
    let choice = |u: usize| o.space.choices[u][genome[u] as usize];
    let name = |u: usize| {
        let c = choice(u);
        match c.act_bits {
            16 => c.format.name(),
            a => format!("{} a{a}", c.format.name()),
        }
    };
    if o.space.units.len() <= SUMMARY_UNITS {
        return o
            .space
            .units
            .iter()
            .enumerate()
            .map(|(u, unit)| format!("{} {}", unit.name, name(u)))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for u in 0..o.space.units.len() {
        let n = name(u);
        match counts.iter_mut().find(|(k, _)| *k == n) {
            Some((_, c)) => *c += 1,
            None => counts.push((n, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .iter()
        .map(|(f, c)| format!("{f} ×{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every weight matrix of `genome`'s plan with its block, role, format and bits.
fn tensor_cells(model: &Model, o: &SearchOutcome, genome: &[u16]) -> Vec<TensorCell> {
    model
        .tensors
        .iter()
        .zip(o.space.tensor_choices(model, genome))
        .map(|(t, c)| TensorCell {
            block: t.block,
            role: t.role.as_str().to_string(),
            format: c.format.name(),
            bits: c.format.bits_per_weight(t.cols),
        })
        .collect()
}

/// One row per generation: the engine's record joined with the convergence record.
fn generation_rows(o: &SearchOutcome) -> Vec<GenerationInput> {
    o.history
        .iter()
        .map(|r| {
            let best = o.convergence.iter().find(|b| b.generation == r.generation);
            GenerationInput {
                generation: r.generation,
                evaluations: r.evaluations,
                hypervolume: r.hypervolume,
                best_kl: r.best.as_ref().and_then(|b| b.first().copied()),
                front_size: r.front_size,
                cache_hits: r.problem.cache_hits,
                cache_lookups: r.problem.cache_lookups,
                best_fitness: best.map(|b| b.fitness),
                best_top1: best.map(|b| b.top1),
                best_size_bytes: best.map(|b| b.size_bytes),
            }
        })
        .collect()
}

impl CacheCounts {
    /// The fitness memo's and surrogate's counters.
    fn of(o: &SearchOutcome) -> CacheCounts {
        let fs = &o.fitness_stats;
        CacheCounts {
            fitness_hits: fs.hits,
            fitness_lookups: fs.lookups,
            full_evaluations: fs.full_evaluations,
            screenings: fs.screenings,
            screened_out: fs.screened_out,
            surrogate_rejected: o.surrogate_stats.rejected,
            surrogate_checked: o.surrogate_stats.checked,
            surrogate_spearman: o.surrogate_stats.spearman,
        }
    }
}

impl ReportInput {
    /// Copies a finished search's facts. Prices the FP model once on the search's
    /// target, workload and limits, because the outcome keeps only its cost, not its
    /// checks.
    pub fn from_outcome(model: &Model, cfg: &SearchConfig, o: &SearchOutcome) -> Result<Self> {
        let fp_checks = price(
            model,
            &fp_choices(model),
            &cfg.target,
            &cfg.workload,
            &cfg.limits,
            Some(0.0),
        )?
        .checks;
        let fp = Point {
            label: "FP32".into(),
            kl: 0.0,
            heldout_kl: Some(0.0),
            perplexity: Some(o.fp.ppl),
            top1: 1.0,
            size_bytes: o.fp.size_bytes,
            latency_ms: o.fp.latency_ms,
            energy_mj: o.fp.energy_mj,
            feasible: meets(&rows(&fp_checks)),
        };
        let front = o
            .front
            .iter()
            .enumerate()
            .map(|(i, f)| point(&format!("evolved #{i}"), &f.scored, Some(f.heldout.kl)))
            .collect();
        let shown: Option<&FrontEntry> = match o.recommended {
            Some(i) => o.front.get(i),
            None => o.infeasible_closest.as_ref(),
        };
        let closest = match (o.recommended, &o.infeasible_closest) {
            (None, Some(c)) => Some(point("least-violating", &c.scored, Some(c.heldout.kl))),
            _ => None,
        };
        let matched = o.matched.clone();
        Ok(ReportInput {
            schema_version: REPORT_SCHEMA_VERSION,
            model: model.source.display().to_string(),
            quality: Quality::of(model),
            fingerprint: model.fingerprint.clone(),
            target: cfg.target.name.clone(),
            seed: o.seed,
            qevo_version: env!("CARGO_PKG_VERSION").to_string(),
            prefill_tokens: cfg.workload.prefill_tokens,
            decode_tokens: cfg.workload.decode_tokens,
            unit: format!("{:?}", o.space.mode).to_lowercase(),
            formats: cfg.space.formats.iter().map(|f| f.name()).collect(),
            fp,
            fp_checks: rows(&fp_checks),
            front,
            recommended: o.recommended,
            closest,
            plan: shown.map_or_else(Vec::new, |f| plan_rows(model, o, &f.genome)),
            tensors: shown.map_or_else(Vec::new, |f| tensor_cells(model, o, &f.genome)),
            front_plans: o.front.iter().map(|f| plan_summary(o, &f.genome)).collect(),
            checks: shown.map_or_else(Vec::new, |f| rows(&f.scored.checks)),
            uniform: baseline_points(&o.uniform),
            lagrangian: baseline_points(&o.lagrangian),
            random: baseline_points(&o.random),
            matched,
            generations: generation_rows(o),
            caches: CacheCounts::of(o),
            sensitivity_cells: o.sensitivity.measured_count().into(),
            head_sampled: o.head_sampled,
            fp_heldout_perplexity: o.fp.heldout_ppl,
            tuned: o.tuned.iter().map(TunedRow::of).collect(),
            refine: o.refine.clone(),
        })
    }
}

/// The feasible, non-dominated points of `points` (KL, size, latency, energy all
/// minimised), in their original order.
pub(crate) fn feasible_front(points: &[Point]) -> Vec<Point> {
    let objectives = |p: &Point| [p.kl, p.size_bytes as f64, p.latency_ms, p.energy_mj];
    points
        .iter()
        .filter(|p| p.feasible)
        .filter(|p| {
            let o = objectives(p);
            !points
                .iter()
                .any(|q| q.feasible && evo::dominance::dominates(&objectives(q), &o))
        })
        .cloned()
        .collect()
}

/// Whether every checked limit passes (true when nothing is checked).
fn meets(checks: &[ConstraintRow]) -> bool {
    checks.iter().all(|c| c.pass)
}

/// `a / b`, or `None` when either is missing or `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// A matched-size row with the evolved plan's KL relative to each other method.
pub(crate) fn matched_row(m: &MatchedInput) -> MatchedRow {
    MatchedRow {
        size_of: m.uniform.clone(),
        size_bytes: m.size_bytes,
        uniform_kl: m.uniform_kl,
        evolved_kl: m.evolved_kl,
        lagrangian_kl: m.lagrangian_kl,
        random_kl: m.random_kl,
        uniform_heldout_kl: m.uniform_heldout_kl,
        evolved_heldout_kl: m.evolved_heldout_kl,
        lagrangian_heldout_kl: m.lagrangian_heldout_kl,
        evolved_vs_uniform: ratio(m.evolved_kl, Some(m.uniform_kl)),
        evolved_vs_lagrangian: ratio(m.evolved_kl, m.lagrangian_kl),
        evolved_vs_random: ratio(m.evolved_kl, m.random_kl),
    }
}

/// A history row, or `None` for a generation without a feasible best plan (nothing
/// to plot for it).
pub(crate) fn generation_row(g: &GenerationInput, fp_size_bytes: u64) -> Option<GenerationRow> {
    let (best_kl, fitness) = (g.best_kl?, g.best_fitness?);
    if !best_kl.is_finite() || !fitness.is_finite() {
        return None;
    }
    Some(GenerationRow {
        generation: g.generation as usize,
        evaluations: g.evaluations,
        hypervolume: g.hypervolume.unwrap_or(0.0),
        best_kl,
        front_size: g.front_size,
        fitness,
        top1: g.best_top1.unwrap_or(f64::NAN),
        compression: g
            .best_size_bytes
            .map_or(f64::NAN, |s| fp_size_bytes as f64 / s.max(1) as f64),
        cache_hit_rate: hit_rate(g.cache_hits, g.cache_lookups),
    })
}

/// One line of stage times, in pipeline order.
fn stage_line(t: &crate::search::StageSeconds, [measured, cells]: [usize; 2]) -> String {
    format!(
        "stages: prepare {:.1} s, sensitivity table {:.1} s ({measured} of {cells} cells measured), uniform plans {:.1} s, evolution {:.1} s, final, validation and held-out scores {:.1} s, refine {:.1} s, baselines {:.1} s",
        t.prepare, t.sensitivity, t.uniform, t.evolution, t.finalize, t.refine, t.baselines
    )
}

/// The refine stage's line: where it started, what it did, why it stopped, and its wall
/// time when `run.json` has it.
fn refine_line(r: &crate::search::refine::RefineSummary, seconds: Option<f64>) -> String {
    let moves: Vec<String> = r
        .steps
        .iter()
        .map(|s| {
            let genes: Vec<String> = s
                .changes
                .iter()
                .map(|c| format!("{} {}->{}", c.unit, c.from, c.to))
                .collect();
            genes.join(" + ")
        })
        .collect();
    format!(
        "refine at {} MB: from the {} plan, {} moves accepted ({}), {} moves scored, {} validation scores, stopped: {}{}",
        super::format::mb(r.limit_bytes),
        r.start.as_str(),
        r.steps.len(),
        match moves.is_empty() {
            true => "none".to_string(),
            false => moves.join("; "),
        },
        r.evaluations,
        r.validations,
        r.stop.as_str(),
        seconds.map_or_else(String::new, |s| format!(", {s:.1} s"))
    )
}

/// The free-text lines at the end of a report: caches, timings, settings. Wall times and
/// the per-process caches' counters come from `run` (`run.json`); without it, those
/// lines are left out and the rest stand.
fn notes(input: &ReportInput, run: Option<&RunRecord>) -> Vec<String> {
    let mut lines = cache_notes(input, run);
    let times = run.map(|r| {
        format!(
            "search {:.1} s, total {:.1} s",
            r.search_seconds, r.total_seconds
        )
    });
    lines.extend(match input.quality {
        Quality::Kl => Some(format!(
            "{}FP perplexity calibration {:.3}, held-out {:.3}",
            times.map_or_else(String::new, |t| format!("{t}; ")),
            input.fp.perplexity.unwrap_or(f64::NAN),
            input.fp_heldout_perplexity
        )),
        // An encoder predicts no tokens: no perplexity to state.
        Quality::Cosine => times,
    });
    lines.push(match run {
        Some(r) => stage_line(&r.stage_seconds, input.sensitivity_cells),
        None => format!(
            "sensitivity table: {} of {} cells measured",
            input.sensitivity_cells[0], input.sensitivity_cells[1]
        ),
    });
    if input.head_sampled {
        lines.push(format!(
            "calibration KL through the sampled output layer (per position the FP top-k, the next {} ranked tokens and the next token; the rest's mass by ratio); validation and held-out KL through the full one",
            crate::eval::head::SAMPLE_ROWS
        ));
    }
    lines.push(format!(
        "workload: {} prompt + {} generated tokens; units: {}; formats: {}",
        input.prefill_tokens,
        input.decode_tokens,
        input.unit,
        input.formats.join(",")
    ));
    let tuned_seconds = |i: usize| run.and_then(|r| r.tuned_seconds.get(i).copied());
    lines.extend(
        input
            .tuned
            .iter()
            .enumerate()
            .map(|(i, t)| t.note(tuned_seconds(i))),
    );
    let refine_seconds = run.map(|r| r.stage_seconds.refine);
    lines.extend(
        input
            .refine
            .as_ref()
            .map(|r| refine_line(r, refine_seconds)),
    );
    lines
}

/// The fitness memo's, prefix and weight caches' (from `run`) and the surrogate's lines.
fn cache_notes(input: &ReportInput, run: Option<&RunRecord>) -> Vec<String> {
    let c = &input.caches;
    let pct = |h, n| super::format::pct(hit_rate(h, n));
    let mut lines = vec![format!(
        "fitness cache: {} hits / {} lookups ({}); {} full evaluations, {} screenings, {} screened out",
        c.fitness_hits,
        c.fitness_lookups,
        pct(c.fitness_hits, c.fitness_lookups),
        c.full_evaluations,
        c.screenings,
        c.screened_out
    )];
    lines.extend(run.map(|r| {
        let p = &r.caches;
        format!(
            "prefix cache: {} hits / {} lookups ({}), {} of block work reused, {} full scores continued their screening; weight cache: {} hits / {} lookups ({})",
            p.prefix_hits,
            p.prefix_lookups,
            pct(p.prefix_hits, p.prefix_lookups),
            pct(p.blocks_reused, p.blocks_reused + p.blocks_run),
            p.segments_reused,
            p.weight_hits,
            p.weight_lookups,
            pct(p.weight_hits, p.weight_lookups)
        )
    }));
    lines.push(format!(
        "surrogate: {} offspring screened out before any forward pass; rank correlation with the full KL {} on {} plans it did not train on",
        c.surrogate_rejected,
        c.surrogate_spearman
            .map_or_else(|| "-".to_string(), |r| format!("{r:.3}")),
        c.surrogate_checked
    ));
    lines
}

/// Everything the report shows, derived from the search's facts and, for its time and
/// cache lines, from how the process ran (`run`, when there is a `run.json`). Pure.
pub fn assemble(input: &ReportInput, run: Option<&RunRecord>) -> ReportData {
    let recommended = input.recommended.and_then(|i| input.front.get(i).cloned());
    let mut baselines = vec![Series {
        name: "uniform".into(),
        points: input.uniform.clone(),
    }];
    if !input.lagrangian.is_empty() {
        baselines.push(Series {
            name: "lagrangian".into(),
            points: input.lagrangian.clone(),
        });
    }
    if !input.random.is_empty() {
        baselines.push(Series {
            name: "random search".into(),
            points: feasible_front(&input.random),
        });
    }
    ReportData {
        title: format!("qevo search: {} on {}", input.model, input.target),
        model: input.model.clone(),
        quality: input.quality,
        fingerprint: input.fingerprint.clone(),
        target: input.target.clone(),
        seed: input.seed,
        qevo_version: input.qevo_version.clone(),
        // The FP model meets the constraints only if its own checks say so.
        fp: Point {
            feasible: meets(&input.fp_checks),
            ..input.fp.clone()
        },
        closest: if recommended.is_none() {
            input.closest.clone()
        } else {
            None
        },
        recommended,
        recommended_plan: input.plan.clone(),
        plan_tensors: input.tensors.clone(),
        front: input.front.clone(),
        front_plans: input.front_plans.clone(),
        baselines,
        history: input
            .generations
            .iter()
            .filter_map(|g| generation_row(g, input.fp.size_bytes))
            .collect(),
        constraints: input.checks.clone(),
        matched: input.matched.iter().map(matched_row).collect(),
        refine: input.refine.clone(),
        notes: notes(input, run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn hit_rate_is_a_fraction_and_zero_without_lookups() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(1, 4), 0.25);
        assert_eq!(hit_rate(4, 4), 1.0);
    }

    #[test]
    fn random_search_front_keeps_feasible_non_dominated_points() {
        let mut bad = fixture::point("infeasible-best", 0.0, 1.0, 1, 1.0, 1.0);
        bad.feasible = false;
        let pts = vec![
            fixture::point("a", 0.1, 0.9, 100, 10.0, 1.0),
            fixture::point("dominated", 0.2, 0.9, 200, 10.0, 1.0),
            fixture::point("b", 0.05, 0.9, 300, 10.0, 1.0),
            bad,
        ];
        let labels: Vec<String> = feasible_front(&pts).into_iter().map(|p| p.label).collect();
        assert_eq!(labels, ["a", "b"]);
    }

    #[test]
    fn matched_row_ratios_compare_evolved_with_each_method() {
        let m = MatchedInput {
            uniform: "q4_k".into(),
            size_bytes: 1000,
            uniform_kl: 0.2,
            uniform_heldout_kl: 0.25,
            evolved_kl: Some(0.05),
            evolved_heldout_kl: Some(0.06),
            lagrangian_kl: Some(0.1),
            lagrangian_heldout_kl: None,
            random_kl: Some(0.0),
        };
        let r = matched_row(&m);
        assert_eq!(r.evolved_vs_uniform, Some(0.25));
        assert_eq!(r.evolved_vs_lagrangian, Some(0.5));
        // A zero KL gives no ratio rather than an infinite one.
        assert_eq!(r.evolved_vs_random, None);
        let none = matched_row(&MatchedInput {
            evolved_kl: None,
            ..m
        });
        assert_eq!(none.evolved_vs_uniform, None);
    }

    #[test]
    fn generation_without_a_feasible_best_is_not_a_history_row() {
        let g = GenerationInput {
            generation: 3,
            evaluations: 40,
            hypervolume: None,
            best_kl: Some(0.1),
            front_size: 0,
            cache_hits: 5,
            cache_lookups: 20,
            best_fitness: None,
            best_top1: None,
            best_size_bytes: None,
        };
        assert_eq!(generation_row(&g, 1000), None);
        let row = generation_row(
            &GenerationInput {
                best_fitness: Some(0.7),
                best_top1: Some(0.9),
                best_size_bytes: Some(250),
                ..g
            },
            1000,
        )
        .unwrap();
        assert_eq!(row.cache_hit_rate, 0.25);
        assert_eq!(row.compression, 4.0);
        assert_eq!(row.hypervolume, 0.0);
    }

    #[test]
    fn fp_meets_constraints_is_computed_from_its_checks_not_assumed() {
        let mut input = fixture::input();
        input.fp.feasible = true;
        assert!(
            !input.fp_checks[0].pass,
            "fixture: FP fails its latency limit"
        );
        let d = assemble(&input, None);
        assert!(!d.fp.feasible);
        let perf = crate::report::performance_table(&d);
        let line = perf
            .lines()
            .find(|l| l.starts_with("Meets constraints"))
            .unwrap();
        assert!(line.contains("no"), "{perf}");
        input.fp_checks.retain(|c| c.pass);
        assert!(assemble(&input, None).fp.feasible);
    }

    #[test]
    fn least_violating_plan_is_shown_only_when_nothing_is_recommended() {
        let mut input = fixture::input();
        input.recommended = None;
        let d = assemble(&input, None);
        assert_eq!(d.recommended, None);
        assert_eq!(
            d.closest.as_ref().map(|p| p.label.as_str()),
            Some("least-violating")
        );
        assert_eq!(d.constraints, input.checks);
        let mut input = fixture::input();
        input.recommended = Some(1);
        let d = assemble(&input, None);
        assert!(d.closest.is_none());
        assert_eq!(d.recommended.unwrap().label, "evolved #1");
    }
}
