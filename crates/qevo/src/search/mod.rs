//! The search: joins model, formats, cost model and the `evo` engine. `run` is a
//! pipeline of stages, each returning a plain struct and each testable alone:
//!
//! - `prepare` (prepare.rs): token windows, activation ranges, FP references, the
//!   evaluator, the search space, the FP cost;
//! - `seed` (seed.rs): sensitivity table, uniform plans, Lagrangian seeds, the
//!   hypervolume reference point;
//! - `evolve` (evolve.rs): NSGA-II over `QuantProblem` (problem.rs), checkpointed;
//! - `finalize` (finalize.rs): full re-score of the archive, Pareto filter, held-out
//!   scores, the recommendation (chosen on the validation slice) or, when nothing is
//!   feasible, the least-violating plan;
//! - `refine` (refine.rs, at a size limit): a greedy local search on measured KL from
//!   the best plans and the Lagrangian plan at the limit, which fills the budget;
//! - `compare` (compare.rs): baselines and the matched-size rows;
//! - `tune_front` (tune_front.rs, only when asked and not stopped): the front plans
//!   nearest the recommended size, tuned toward the FP model.
//!
//! Who scores the evolution's batches is pluggable (`Executor`, executor.rs): this
//! machine's threads by default, or remote workers (the Python package's Ray actors).

pub mod baselines;
pub mod budget;
pub mod clock;
mod compare;
pub mod config;
mod evolve;
pub mod executor;
pub mod finalize;
pub mod memo;
pub mod memory;
pub mod optuna;
pub mod output;
mod prepare;
pub mod problem;
pub mod refine;
mod screen;
mod seed;
pub mod sensitivity;
pub mod settings;
pub mod space;
pub mod surrogate;
pub mod tune_front;

pub use compare::{compare, Compared};
pub use config::{defaults, FitnessWeights, Importance, SearchConfig, TuneFrontConfig};
pub use evolve::{evolve, Evolved};
pub use executor::{Executor, Job};
pub use finalize::{finalize, pareto_indices, recommend, Finalized};
pub use prepare::{prepare, Prepared};
pub use seed::{seed, Seeded};
pub use settings::{split_texts, Settings};

use crate::error::Result;
use crate::eval::{Metrics, PrefixStats};
use crate::model::Model;
use crate::plan::TensorPlan;
use baselines::{BaselinePoint, Sensitivity};
use evo::GenerationRecord;
use problem::{QuantProblem, Scored};
use space::SearchSpace;
use std::ops::ControlFlow;
use std::time::Instant;

impl FitnessWeights {
    /// Fitness of a scored plan relative to the FP model's cost (higher is better).
    pub fn fitness(&self, s: &Scored, fp: &FpCost) -> f64 {
        let rel = |v: f64, base: f64| if base > 0.0 { 1.0 - v / base } else { 0.0 };
        self.accuracy * s.metrics.top1
            + self.compression * rel(s.size_bytes as f64, fp.size_bytes as f64)
            + self.latency * rel(s.latency_ms, fp.latency_ms)
            + self.energy * rel(s.energy_mj, fp.energy_mj)
    }
}

/// The unquantized model's cost on the target.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FpCost {
    pub size_bytes: u64,
    pub latency_ms: f64,
    pub energy_mj: f64,
    pub peak_memory_bytes: u64,
    pub ppl: f64,
    pub heldout_ppl: f64,
}

/// One plan on the evolved front (or a baseline), with held-out scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrontEntry {
    pub genome: Vec<u16>,
    pub scored: Scored,
    pub heldout: Metrics,
    /// The score on the validation slice, for the plans the recommendation was chosen
    /// among (None for the others, or without a validation slice).
    pub validation: Option<Metrics>,
    pub fitness: f64,
}

/// A row of the matched-size comparison: at a uniform plan's size, each method's best KL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchedRow {
    pub uniform: String,
    pub size_bytes: u64,
    pub uniform_kl: f64,
    pub uniform_heldout_kl: f64,
    pub evolved_kl: Option<f64>,
    pub evolved_heldout_kl: Option<f64>,
    pub lagrangian_kl: Option<f64>,
    pub lagrangian_heldout_kl: Option<f64>,
    pub random_kl: Option<f64>,
}

/// Wall seconds of each stage of a search, so a user sees where a long run went.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageSeconds {
    /// Windows, references, activation ranges, importance, the evaluator.
    pub prepare: f64,
    /// The per-unit sensitivity table.
    pub sensitivity: f64,
    /// The uniform plans' full scores.
    pub uniform: f64,
    pub evolution: f64,
    /// Full, held-out and validation scores of the archive.
    pub finalize: f64,
    /// The local search at the size limit (absent from reports written before it).
    #[serde(default)]
    pub refine: f64,
    /// The Lagrangian (and random-search) baselines.
    pub baselines: f64,
}

/// What a search returns.
pub struct SearchOutcome {
    pub space: SearchSpace,
    pub fp: FpCost,
    pub front: Vec<FrontEntry>,
    pub recommended: Option<usize>,
    pub history: Vec<GenerationRecord>,
    pub convergence: Vec<problem::GenerationBest>,
    pub uniform: Vec<BaselinePoint>,
    pub lagrangian: Vec<BaselinePoint>,
    pub random: Vec<BaselinePoint>,
    pub matched: Vec<MatchedRow>,
    pub sensitivity: Sensitivity,
    /// The refine stage at the size limit (None: no size limit, or turned off).
    pub refine: Option<refine::RefineSummary>,
    pub fitness_stats: memo::FitnessStats,
    /// The surrogate's screening during the evolution.
    pub surrogate_stats: problem::SurrogateStats,
    pub prefix_stats: PrefixStats,
    pub weight_stats: crate::eval::CacheStats,
    pub search_seconds: f64,
    pub total_seconds: f64,
    pub stage_seconds: StageSeconds,
    pub seed: u64,
    /// When nothing was feasible: the least-violating plan and its failing checks.
    pub infeasible_closest: Option<FrontEntry>,
    /// The importance matrix every plan was scored with (`data.imatrix`); an export of
    /// these plans must quantize with it.
    pub imatrix: Option<crate::calib::Imatrix>,
    /// Every plan the evolution scored, in the order first scored (the Optuna journal).
    pub evaluations: Vec<memo::Evaluated>,
    /// The output-rounding record every plan was scored with (`data.rounding`).
    pub rounding: Option<crate::calib::OutputRounding>,
    /// Front plans tuned after the search (`tune_front`), in the order tuned.
    pub tuned: Vec<tune_front::TunedEntry>,
    /// The calibration scores ran the sampled output layer (`eval::head`).
    pub head_sampled: bool,
}

impl SearchOutcome {
    pub fn plan(&self, model: &Model, genome: &[u16]) -> TensorPlan {
        self.space.plan(model, genome)
    }

    /// The recommended plan, or, when nothing is feasible, the least-violating one.
    pub fn chosen(&self) -> Option<&FrontEntry> {
        self.recommended
            .map(|i| &self.front[i])
            .or(self.infeasible_closest.as_ref())
    }
}

/// Progress callback: one call per generation.
pub type Progress<'a> = Box<dyn FnMut(&GenerationRecord) -> ControlFlow<()> + 'a>;

/// What a caller plugs into a search besides its config.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called after every generation; `Break` stops the evolution there.
    pub progress: Option<Progress<'a>>,
    /// Scores the evolution's batches (None: this machine's threads).
    pub executor: Option<&'a dyn Executor>,
}

/// Runs the whole search: prepare → seed → evolve → finalize → refine → compare →
/// tune_front.
pub fn run(
    model: &Model,
    calib_text: &str,
    heldout_text: &str,
    cfg: &SearchConfig,
    progress: Option<Progress>,
) -> Result<SearchOutcome> {
    let hooks = Hooks {
        progress,
        executor: None,
    };
    run_with(model, calib_text, heldout_text, cfg, hooks)
}

/// `run` with hooks: a progress callback and an executor for the evolution's batches.
/// Before the evolution, `hooks.executor` is given the setup's fingerprint to check
/// its workers against (`Executor::score` jobs only make sense on the same setup).
pub fn run_with(
    model: &Model,
    calib_text: &str,
    heldout_text: &str,
    cfg: &SearchConfig,
    hooks: Hooks,
) -> Result<SearchOutcome> {
    let t0 = Instant::now();
    cfg.validate()?;
    let deadlines = clock::Deadlines::new(cfg, t0);
    let prepared = prepare(model, calib_text, heldout_text, cfg)?;
    let prepare_seconds = t0.elapsed().as_secs_f64();
    let fp = prepared.fp;
    let problem = QuantProblem::new(&prepared, cfg)?
        .with_fitness(move |s| cfg.evolution.weights.fitness(s, &fp))
        .with_executor(hooks.executor);
    if let Some(x) = hooks.executor {
        x.start(&problem.fingerprint())?;
    }
    let seeded = seed(&prepared, &problem, cfg, &deadlines)?;
    let surrogate = surrogate::Surrogate::new(&seeded.sensitivity);
    let max_time = clock::Deadlines::left(deadlines.evolution);
    let evolved = evolve(&problem, &seeded, surrogate, cfg, hooks.progress, max_time)?;
    let surrogate_stats = problem.surrogate_stats();
    // Held-out scores come next; they keep states of their own.
    prepared.evaluator.release_states();
    let t_final = Instant::now();
    let uniform: Vec<Vec<u16>> = seeded.uniform.iter().map(|u| u.genome.clone()).collect();
    let mut finalized = finalize(
        &prepared,
        &problem,
        &evolved,
        &uniform,
        cfg,
        deadlines.finalize,
    )?;
    let t_refine = Instant::now();
    // A search the caller stopped writes what it had: no refining.
    let refined = match evolved.stop {
        evo::StopReason::Observer => None,
        _ => refine::refine(
            &prepared,
            &problem,
            &seeded,
            &mut finalized,
            cfg,
            deadlines.refine,
        )?,
    };
    prepared.evaluator.release_states();
    let t_compare = Instant::now();
    let compared = compare(
        &prepared,
        &problem,
        &seeded,
        &finalized,
        &evolved,
        cfg,
        deadlines.end,
    )?;
    let stage_seconds = StageSeconds {
        prepare: prepare_seconds,
        sensitivity: seeded.seconds.0,
        uniform: seeded.seconds.1,
        evolution: evolved.seconds,
        finalize: (t_refine - t_final).as_secs_f64(),
        refine: (t_compare - t_refine).as_secs_f64(),
        baselines: t_compare.elapsed().as_secs_f64(),
    };
    let mut outcome = SearchOutcome {
        fitness_stats: problem.fitness_stats(),
        surrogate_stats,
        prefix_stats: prepared.evaluator.prefix_stats(),
        weight_stats: prepared.evaluator.weights.stats(),
        convergence: problem.convergence(),
        evaluations: problem.evaluations(),
        space: problem.space.clone(),
        fp,
        front: finalized.front,
        recommended: finalized.recommended,
        infeasible_closest: finalized.infeasible_closest,
        history: evolved.history,
        uniform: seeded.uniform,
        sensitivity: seeded.sensitivity,
        refine: refined,
        lagrangian: compared.lagrangian,
        random: compared.random,
        matched: compared.matched,
        search_seconds: evolved.seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        stage_seconds,
        seed: cfg.evolution.seed,
        imatrix: prepared.imatrix.clone(),
        rounding: prepared.rounding.clone(),
        tuned: Vec::new(),
        head_sampled: prepared.evaluator.reference.sampled(),
    };
    // A search the caller stopped ends here: its outputs are what it had.
    if cfg.tune_front.plans > 0 && evolved.stop != evo::StopReason::Observer {
        drop(problem);
        drop(prepared);
        outcome.tuned = tune_front::run(model, &outcome, (calib_text, heldout_text), cfg)?;
    }
    Ok(outcome)
}
