//! The search: joins model, formats, cost model and the `evo` engine. `run` builds the
//! reference on calibration text, calibrates activation ranges, fills the sensitivity
//! table, seeds NSGA-II with uniform and Lagrangian plans, evolves, scores the baselines
//! on the same tokens, re-scores the front on held-out text, and picks the recommended
//! plan.

pub mod baselines;
pub mod evaluator;
pub mod output;
pub mod problem;
pub mod space;

use crate::error::{Error, Result};
use crate::eval::{Metrics, Reference, TokenWindows};
use crate::hw::{Profile, Workload};
use crate::model::Model;
use crate::quant::{calibrate_act_ranges, ActScheme, TensorPlan, WeightCache, WeightFormat};
use baselines::{
    fp_choice, lagrangian_at, lagrangian_sweep, pareto_indices, random_search, BaselinePoint,
    Sensitivity,
};
use evaluator::Evaluator;
use evo::{GenerationRecord, Nsga2, RunOptions, Termination};
use problem::{price, QuantProblem, Scored, UserLimits};
use rayon::prelude::*;
use space::{SearchSpace, UnitMode};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Weights of the product brief's fitness `w1·accuracy + w2·compression + w3·latency +
/// w4·energy`, each term normalised to the FP model: accuracy is top-1 agreement with
/// FP, the others are `1 − value / FP value` (0 for FP, → 1 as the cost vanishes).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct FitnessWeights {
    pub accuracy: f64,
    pub compression: f64,
    pub latency: f64,
    pub energy: f64,
}

impl Default for FitnessWeights {
    fn default() -> Self {
        FitnessWeights {
            accuracy: 0.4,
            compression: 0.3,
            latency: 0.15,
            energy: 0.15,
        }
    }
}

impl FitnessWeights {
    pub fn parse(s: &str) -> Result<FitnessWeights> {
        let v: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                Error::Invalid(format!("--weights `{s}`: expected four numbers a,c,l,e"))
            })?;
        if v.len() != 4
            || v.iter().any(|x| !x.is_finite() || *x < 0.0)
            || v.iter().sum::<f64>() <= 0.0
        {
            return Err(Error::Invalid(format!(
                "--weights `{s}`: expected four non-negative numbers, not all zero"
            )));
        }
        Ok(FitnessWeights {
            accuracy: v[0],
            compression: v[1],
            latency: v[2],
            energy: v[3],
        })
    }

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

/// Everything `qevo search` can be told.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub unit: UnitMode,
    pub tie_qkv: bool,
    pub formats: Vec<WeightFormat>,
    pub act_bits: Vec<u8>,
    pub target: Profile,
    pub workload: Workload,
    pub limits: UserLimits,
    pub population: usize,
    pub generations: u64,
    pub seed: u64,
    pub time_budget: Option<Duration>,
    pub seq_len: usize,
    pub calib_windows: usize,
    pub screen_windows: usize,
    pub heldout_windows: usize,
    /// Distribution entries kept per position; 0 = exact when affordable (`auto_topk`).
    pub topk: usize,
    /// Fitness, prefix and multi-fidelity caches (off: the baseline for the speed-up).
    pub caching: bool,
    /// Lagrangian baseline at the uniform plans' sizes.
    pub baselines: bool,
    /// Random search with the evolution's genome budget (doubles the run time).
    pub random_search: bool,
    pub weights: FitnessWeights,
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
    pub act_scheme: ActScheme,
    pub act_percentile: Option<f64>,
    pub weight_cache_bytes: usize,
    pub prefix_cache_bytes: usize,
}

impl SearchConfig {
    /// Defaults for a target: role units, GGUF-exportable formats, int8 or float activations.
    pub fn new(target: Profile) -> Result<SearchConfig> {
        let workload = target.workload;
        Ok(SearchConfig {
            unit: UnitMode::Role,
            tie_qkv: false,
            formats: space::parse_formats("ggml")?,
            act_bits: vec![8, 16],
            target,
            workload,
            limits: UserLimits::default(),
            population: 32,
            generations: 40,
            seed: 0,
            time_budget: None,
            seq_len: 128,
            calib_windows: 8,
            screen_windows: 2,
            heldout_windows: 8,
            topk: 0,
            caching: true,
            baselines: true,
            random_search: false,
            weights: FitnessWeights::default(),
            checkpoint: None,
            resume: false,
            act_scheme: ActScheme::Asym,
            act_percentile: None,
            weight_cache_bytes: 2 << 30,
            prefix_cache_bytes: 512 << 20,
        })
    }
}

/// One plan on the evolved front (or a baseline), with held-out scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrontEntry {
    pub genome: Vec<u16>,
    pub scored: Scored,
    pub heldout: Metrics,
    pub fitness: f64,
}

/// A row of the matched-size comparison: at a uniform plan's size, each method's best KL.
#[derive(Debug, Clone, serde::Serialize)]
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
    pub fitness_stats: problem::FitnessStats,
    pub prefix_stats: evaluator::PrefixStats,
    pub weight_stats: crate::quant::CacheStats,
    pub search_seconds: f64,
    pub total_seconds: f64,
    pub seed: u64,
    /// When nothing was feasible: the least-violating plan and its failing checks.
    pub infeasible_closest: Option<FrontEntry>,
}

impl SearchOutcome {
    pub fn plan(&self, model: &Model, genome: &[u16]) -> TensorPlan {
        self.space.plan(model, genome)
    }
}

/// Progress callback: one call per generation.
pub type Progress<'a> = Box<dyn FnMut(&GenerationRecord) -> ControlFlow<()> + 'a>;

/// Runs the whole search.
pub fn run(
    model: &Model,
    calib_text: &str,
    heldout_text: &str,
    cfg: &SearchConfig,
    progress: Option<Progress>,
) -> Result<SearchOutcome> {
    let t0 = Instant::now();
    if cfg.population < 4 {
        return Err(Error::Invalid("--population must be at least 4".into()));
    }
    let seq = cfg.seq_len.min(model.arch.max_positions());
    let calib = TokenWindows::from_text(model, calib_text, seq, cfg.calib_windows)
        .map_err(|e| Error::Invalid(format!("calibration text: {e}")))?;
    let heldout = TokenWindows::from_text(model, heldout_text, seq, cfg.heldout_windows)
        .map_err(|e| Error::Invalid(format!("held-out text: {e}")))?;
    let full_windows = calib.len();
    let screen_windows = cfg.screen_windows.clamp(1, full_windows);
    let ranges = calibrate_act_ranges(model, &calib, cfg.act_percentile)?;
    let k_for = |w: &TokenWindows| match cfg.topk {
        0 => crate::eval::auto_topk(model.arch.vocab(), w.tokens(), 64),
        k => k,
    };
    let (k_calib, k_heldout) = (k_for(&calib), k_for(&heldout));
    let reference = Reference::build(model, calib, k_calib)?;
    let heldout_ref = Reference::build(model, heldout, k_heldout)?;
    let prefix_bytes = if cfg.caching {
        cfg.prefix_cache_bytes
    } else {
        0
    };
    let ev = Evaluator::new(
        model,
        reference,
        WeightCache::new(cfg.weight_cache_bytes),
        ranges,
        cfg.act_scheme,
        prefix_bytes,
    );
    let space = SearchSpace::new(
        model,
        cfg.unit,
        cfg.tie_qkv,
        &cfg.formats,
        &cfg.act_bits,
        &cfg.target,
    )?;

    let fp_choices = vec![fp_choice(); model.tensors.len()];
    let (fp_cost, _, _) = price(
        model,
        &fp_choices,
        &cfg.target,
        &cfg.workload,
        &UserLimits::default(),
        None,
    )?;
    let fp = FpCost {
        size_bytes: model.tensors.iter().map(|t| t.params() as u64 * 4).sum(),
        latency_ms: fp_cost.latency_ms,
        energy_mj: fp_cost.energy_mj,
        peak_memory_bytes: fp_cost.peak_memory_bytes,
        ppl: ev.reference.fp.ppl,
        heldout_ppl: heldout_ref.fp.ppl,
    };

    let sens = baselines::sensitivity(&ev, &space, screen_windows)?;
    let problem = QuantProblem::new(
        space.clone(),
        &ev,
        cfg.target.clone(),
        cfg.workload,
        cfg.limits,
        screen_windows,
        full_windows,
        cfg.caching,
    )?
    .with_fitness(move |s| cfg.weights.fitness(s, &fp));

    // Uniform plans: every choice that every unit has.
    let mut uniform = Vec::new();
    for c in &space.choices[0] {
        if let Some(g) = space.uniform_genome(c) {
            let s = problem.full(&g)?;
            uniform.push(BaselinePoint {
                name: c.format.name()
                    + &if c.act_bits < 16 {
                        format!(" a{}", c.act_bits)
                    } else {
                        String::new()
                    },
                genome: g,
                scored: s,
            });
        }
    }
    let sweep = lagrangian_sweep(&sens);

    // Seeds (at most three quarters of the population, the rest random): every uniform
    // plan, the Lagrangian plan at each uniform plan's size (sensitivity-guided), then
    // Lagrangian plans spread over the whole size range.
    let room = cfg.population * 3 / 4;
    let uni_g: Vec<Vec<u16>> = uniform.iter().map(|b| b.genome.clone()).collect();
    let lag_at: Vec<Vec<u16>> = uniform
        .iter()
        .filter_map(|u| lagrangian_at(&sweep, u.scored.size_bytes))
        .collect();
    let lag_g: Vec<Vec<u16>> = sweep.iter().map(|p| p.0.clone()).collect();
    let mut seeds: Vec<Vec<u16>> = Vec::new();
    for g in spread(&uni_g, room / 2)
        .into_iter()
        .chain(lag_at)
        .chain(spread(&lag_g, room))
    {
        if !seeds.contains(&g) && seeds.len() < room {
            seeds.push(g);
        }
    }

    // Reference point for the hypervolume: just beyond the worst uniform plan and FP cost.
    let kl_ref = uniform
        .iter()
        .map(|b| b.scored.metrics.kl)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let reference_point = vec![
        kl_ref,
        fp.size_bytes as f64 * 1.1,
        fp.latency_ms * 1.1,
        fp.energy_mj * 1.1,
    ];
    let mut termination = Termination::generations(cfg.generations);
    termination.max_time = cfg.time_budget;
    let algo = Nsga2::new(cfg.population)
        .with_seeds(seeds.into_iter().map(evo::Genome).collect())
        .with_termination(termination)
        .with_reference_point(reference_point);
    let options = RunOptions {
        checkpoint: cfg.checkpoint.clone(),
        resume: if cfg.resume {
            cfg.checkpoint.clone().filter(|p| p.exists())
        } else {
            None
        },
        observer: progress,
    };
    let ts = Instant::now();
    let result = algo
        .run(&problem, cfg.seed, options)
        .map_err(|e| Error::Invalid(format!("search: {e}")))?;
    let search_seconds = ts.elapsed().as_secs_f64();

    // The evolved front: the archive, fully evaluated.
    let front: Vec<FrontEntry> = result
        .archive
        .par_iter()
        .map(|ind| {
            let g = ind.genome.levels().to_vec();
            let scored = problem.full(&g)?;
            entry(&ev, &heldout_ref, &space, g, scored, &cfg.weights, &fp)
        })
        .collect::<Result<_>>()?;
    // Screened values can be optimistic: keep what is still non-dominated at full fidelity.
    let objs: Vec<Vec<f64>> = front.iter().map(|f| f.scored.objectives()).collect();
    let feas: Vec<bool> = front.iter().map(|f| f.scored.violation <= 0.0).collect();
    let keep = pareto_indices(&objs, &feas);
    let mut front: Vec<FrontEntry> = keep.into_iter().map(|i| front[i].clone()).collect();
    front.sort_by(|a, b| {
        a.scored
            .size_bytes
            .cmp(&b.scored.size_bytes)
            .then(a.scored.metrics.kl.total_cmp(&b.scored.metrics.kl))
    });

    let infeasible_closest = if front.is_empty() {
        let best = result
            .population
            .iter()
            .min_by(|a, b| a.violation.total_cmp(&b.violation))
            .map(|i| i.genome.levels().to_vec());
        match best {
            Some(g) => {
                let s = problem.full(&g)?;
                Some(entry(&ev, &heldout_ref, &space, g, s, &cfg.weights, &fp)?)
            }
            None => None,
        }
    } else {
        None
    };

    let recommended = recommend(&front, &cfg.limits);

    // Baselines at matched sizes.
    let genome_budget = result.evaluations as usize;
    let mut lagrangian = Vec::new();
    let mut random = Vec::new();
    let mut matched = Vec::new();
    if cfg.baselines {
        for u in &uniform {
            if let Some(g) = lagrangian_at(&sweep, u.scored.size_bytes) {
                let s = problem.full(&g)?;
                lagrangian.push(BaselinePoint {
                    name: format!("lagrangian @ {}", u.name),
                    genome: g,
                    scored: s,
                });
            }
        }
        if cfg.random_search {
            random = random_search(&problem, genome_budget, cfg.seed)?;
        }
        let heldout_of = |g: &[u16]| -> Result<f64> {
            let choices = space.tensor_choices(model, g);
            Ok(ev.score_with(&heldout_ref, &choices)?.kl)
        };
        for u in &uniform {
            let size = u.scored.size_bytes;
            let best_under = |pts: &mut dyn Iterator<Item = (&Vec<u16>, &Scored)>| {
                pts.filter(|(_, s)| s.size_bytes <= size && s.violation <= 0.0)
                    .min_by(|a, b| a.1.metrics.kl.total_cmp(&b.1.metrics.kl))
                    .map(|(g, s)| (g.clone(), s.metrics.kl))
            };
            let evolved = best_under(&mut front.iter().map(|f| (&f.genome, &f.scored)));
            let lag = best_under(&mut lagrangian.iter().map(|b| (&b.genome, &b.scored)));
            let rnd = best_under(&mut random.iter().map(|b| (&b.genome, &b.scored)));
            matched.push(MatchedRow {
                uniform: u.name.clone(),
                size_bytes: size,
                uniform_kl: u.scored.metrics.kl,
                uniform_heldout_kl: heldout_of(&u.genome)?,
                evolved_kl: evolved.as_ref().map(|e| e.1),
                evolved_heldout_kl: match &evolved {
                    Some((g, _)) => Some(heldout_of(g)?),
                    None => None,
                },
                lagrangian_kl: lag.as_ref().map(|e| e.1),
                lagrangian_heldout_kl: match &lag {
                    Some((g, _)) => Some(heldout_of(g)?),
                    None => None,
                },
                random_kl: rnd.map(|e| e.1),
            });
        }
    }

    Ok(SearchOutcome {
        fitness_stats: problem.fitness_stats(),
        prefix_stats: ev.prefix_stats(),
        weight_stats: ev.weights.stats(),
        space,
        fp,
        front,
        recommended,
        history: result.history,
        convergence: problem.convergence(),
        uniform,
        lagrangian,
        random,
        matched,
        sensitivity: sens,
        search_seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        seed: cfg.seed,
        infeasible_closest,
    })
}

fn entry(
    ev: &Evaluator,
    heldout: &Reference,
    space: &SearchSpace,
    genome: Vec<u16>,
    scored: Scored,
    w: &FitnessWeights,
    fp: &FpCost,
) -> Result<FrontEntry> {
    let choices = space.tensor_choices(ev.model, &genome);
    let h = ev.score_with(heldout, &choices)?;
    let fitness = w.fitness(&scored, fp);
    Ok(FrontEntry {
        genome,
        scored,
        heldout: h,
        fitness,
    })
}

/// With user limits: the lowest-KL plan within them. Without: the highest fitness.
pub fn recommend(front: &[FrontEntry], limits: &UserLimits) -> Option<usize> {
    let has_limits = limits.max_size_mb.is_some()
        || limits.max_latency_ms.is_some()
        || limits.max_energy_mj.is_some()
        || limits.max_kl.is_some();
    let feasible = front
        .iter()
        .enumerate()
        .filter(|(_, f)| f.scored.violation <= 0.0);
    if has_limits {
        feasible
            .min_by(|a, b| a.1.scored.metrics.kl.total_cmp(&b.1.scored.metrics.kl))
            .map(|(i, _)| i)
    } else {
        feasible
            .max_by(|a, b| a.1.fitness.total_cmp(&b.1.fitness))
            .map(|(i, _)| i)
    }
}

/// Up to `k` items spread evenly over `list`, ends included.
fn spread(list: &[Vec<u16>], k: usize) -> Vec<Vec<u16>> {
    let k = k.min(list.len());
    match k {
        0 => vec![],
        1 => vec![list[list.len() / 2].clone()],
        _ => (0..k)
            .map(|i| list[i * (list.len() - 1) / (k - 1)].clone())
            .collect(),
    }
}
