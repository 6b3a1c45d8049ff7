//! `QuantProblem`: quantization search as an `evo::Problem`. A genome picks one choice per
//! unit; its objectives are [KL to FP, size in bytes, latency in ms, energy in mJ] (all
//! minimised); the target's limits and the user's are constraints (summed relative
//! excess, 0 = feasible).
//!
//! Multi-fidelity rule: every offspring is first scored on the screening windows (a
//! prefix of the calibration windows). If even an optimistic KL (screened KL × (1 −
//! margin)) would be dominated by a member of the current archive on all four
//! objectives, the offspring cannot enter the front and keeps its screened KL; otherwise
//! it gets the full evaluation. Screened and full scores are each pure functions of the
//! genome (memoised in the fitness cache), so the outcome depends only on the genome and
//! the archive, which the checkpoint holds: resumed runs stay exact.

use super::evaluator::Evaluator;
use super::space::SearchSpace;
use crate::error::{Error, Result};
use crate::eval::Metrics;
use crate::hw::{check_constraints, cost, Cost, LinearCounts, ModelCounts, Profile, Workload};
use crate::model::{Arch, Model, Role};
use crate::quant::TensorChoice;
use evo::{BoxError, EvalContext, Evaluation, GeneSpace, Genome, Problem, ProblemStats};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Limits the user adds on top of the target's own.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct UserLimits {
    /// 10^6 bytes of tensor data.
    pub max_size_mb: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub max_energy_mj: Option<f64>,
    pub max_kl: Option<f64>,
}

/// One constraint's outcome for a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimitCheck {
    pub name: String,
    pub limit: f64,
    pub value: f64,
    pub pass: bool,
}

/// Everything known about one evaluated plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    pub metrics: Metrics,
    pub full: bool,
    pub size_bytes: u64,
    pub latency_ms: f64,
    pub energy_mj: f64,
    pub peak_memory_bytes: u64,
    pub violation: f64,
    pub checks: Vec<LimitCheck>,
}

impl Scored {
    pub fn objectives(&self) -> Vec<f64> {
        vec![
            self.metrics.kl,
            self.size_bytes as f64,
            self.latency_ms,
            self.energy_mj,
        ]
    }
}

/// Counters behind the fitness cache and multi-fidelity screening.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FitnessStats {
    pub lookups: u64,
    pub hits: u64,
    pub full_evaluations: u64,
    pub screenings: u64,
    pub screened_out: u64,
}

/// The best weighted fitness found by the end of a generation (for convergence tables).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct GenerationBest {
    pub generation: u64,
    pub fitness: f64,
    pub kl: f64,
    pub top1: f64,
    pub size_bytes: u64,
}

#[derive(Default)]
struct Memo {
    full: HashMap<Vec<u16>, Scored>,
    screened: HashMap<Vec<u16>, Scored>,
    stats: FitnessStats,
}

/// The hardware counts of a per-tensor choice list (pure).
pub fn model_counts(model: &Model, choices: &[TensorChoice]) -> ModelCounts {
    let mut linears: Vec<LinearCounts> = model
        .tensors
        .iter()
        .zip(choices)
        .map(|(t, c)| LinearCounts {
            name: t.name.clone(),
            in_features: t.cols as u64,
            out_features: t.rows as u64,
            weight_bytes: c.format.tensor_bytes(t.rows, t.cols).unwrap_or(0),
            weight_bits: c.format.compute_bits(),
            act_bits: c.act_bits,
            is_embedding_lookup: t.role == Role::Embedding,
            tied: false,
            format: Some(c.format.name()),
        })
        .collect();
    if model.tied_output() {
        if let Some((i, t)) = model
            .tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.role == Role::Embedding)
        {
            let c = &choices[i];
            linears.push(LinearCounts {
                name: "output (tied)".into(),
                in_features: t.cols as u64,
                out_features: t.rows as u64,
                weight_bytes: c.format.tensor_bytes(t.rows, t.cols).unwrap_or(0),
                weight_bits: c.format.compute_bits(),
                act_bits: 16,
                is_embedding_lookup: false,
                tied: true,
                format: Some(c.format.name()),
            });
        }
    }
    let (n_heads, n_kv, head_dim) = match &model.arch {
        Arch::Llama(c) => (c.n_heads, c.n_kv_heads, c.head_dim),
        Arch::Gpt2(c) => (c.n_heads, c.n_heads, c.hidden / c.n_heads),
        Arch::Bert(c) => (c.n_heads, c.n_heads, c.hidden / c.n_heads),
    };
    ModelCounts {
        linears,
        n_blocks: model.n_blocks() as u64,
        n_heads: n_heads as u64,
        n_kv_heads: n_kv as u64,
        head_dim: head_dim as u64,
        hidden: model.arch.hidden() as u64,
        vocab: model.arch.vocab() as u64,
        other_bytes: model.aux_params() as u64 * 4,
        causal: model.arch.is_decoder(),
    }
}

/// Exact bytes of every quantizable tensor under per-tensor `choices` (what the exported
/// file holds apart from metadata and norms).
pub fn choice_bytes(model: &Model, choices: &[TensorChoice]) -> u64 {
    model
        .tensors
        .iter()
        .zip(choices)
        .map(|(t, ch)| ch.format.tensor_bytes(t.rows, t.cols).unwrap_or(0))
        .sum()
}

/// Cost and constraint outcome of a choice list on a target (pure, no model run).
pub fn price(
    model: &Model,
    choices: &[TensorChoice],
    target: &Profile,
    workload: &Workload,
    limits: &UserLimits,
    kl: Option<f64>,
) -> Result<(Cost, f64, Vec<LimitCheck>)> {
    let counts = model_counts(model, choices);
    let c = cost(&counts, target, workload).map_err(|e| Error::Invalid(e.to_string()))?;
    let report = check_constraints(&c, target);
    let mut checks: Vec<LimitCheck> = report
        .checks
        .iter()
        .map(|k| LimitCheck {
            name: k.name.to_string(),
            limit: k.limit,
            value: k.value,
            pass: k.pass,
        })
        .collect();
    let mut violation = report.violation;
    let tensor_bytes = choice_bytes(model, choices);
    let user = [
        (
            "max_size_mb (user)",
            limits.max_size_mb,
            tensor_bytes as f64 / 1e6,
        ),
        ("max_latency_ms (user)", limits.max_latency_ms, c.latency_ms),
        ("max_energy_mj (user)", limits.max_energy_mj, c.energy_mj),
        ("max_kl (user)", limits.max_kl, kl.unwrap_or(0.0)),
    ];
    for (name, limit, value) in user {
        if let Some(l) = limit {
            let pass = value <= l;
            if !pass {
                violation += (value - l) / l.max(1e-12);
            }
            checks.push(LimitCheck {
                name: name.into(),
                limit: l,
                value,
                pass,
            });
        }
    }
    Ok((c, violation, checks))
}

/// Scores a plan for the convergence record.
type FitnessFn<'a> = Box<dyn Fn(&Scored) -> f64 + Send + Sync + 'a>;

pub struct QuantProblem<'a> {
    // Sync: evaluated from rayon workers; caches sit behind mutexes.
    pub space: SearchSpace,
    pub evaluator: &'a Evaluator<'a>,
    pub target: Profile,
    pub workload: Workload,
    pub limits: UserLimits,
    pub screen_windows: usize,
    pub full_windows: usize,
    /// Screening margin (fraction the screened KL may overstate the full KL).
    pub margin: f64,
    /// Off: every genome gets the full evaluation, and nothing is memoised.
    pub caching: bool,
    gene_space: GeneSpace,
    memo: Mutex<Memo>,
    /// Scores a plan for the convergence record (the recommendation fitness).
    fitness: Option<FitnessFn<'a>>,
    best: Mutex<(Option<GenerationBest>, Vec<GenerationBest>)>,
}

impl<'a> QuantProblem<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        space: SearchSpace,
        evaluator: &'a Evaluator<'a>,
        target: Profile,
        workload: Workload,
        limits: UserLimits,
        screen_windows: usize,
        full_windows: usize,
        caching: bool,
    ) -> Result<Self> {
        let levels: Vec<u16> = space.choices.iter().map(|c| c.len() as u16).collect();
        let weights = space.unit_params(evaluator.model);
        let gene_space =
            GeneSpace::with_weights(levels, weights).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(QuantProblem {
            space,
            evaluator,
            target,
            workload,
            limits,
            screen_windows,
            full_windows,
            margin: 0.25,
            caching,
            gene_space,
            memo: Mutex::new(Memo::default()),
            fitness: None,
            best: Mutex::new((None, Vec::new())),
        })
    }

    /// Records, per generation, the best plan under this fitness among full evaluations.
    pub fn with_fitness(mut self, f: impl Fn(&Scored) -> f64 + Send + Sync + 'a) -> Self {
        self.fitness = Some(Box::new(f));
        self
    }

    /// Best fitness by generation (generations evaluated in this process only).
    pub fn convergence(&self) -> Vec<GenerationBest> {
        self.best
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn track(&self, generation: u64, scored: &[Scored]) {
        let Some(f) = &self.fitness else { return };
        let mut b = self.best.lock().unwrap_or_else(|e| e.into_inner());
        for s in scored.iter().filter(|s| s.full && s.violation <= 0.0) {
            let fit = f(s);
            if b.0.is_none_or(|cur| fit > cur.fitness) {
                b.0 = Some(GenerationBest {
                    generation,
                    fitness: fit,
                    kl: s.metrics.kl,
                    top1: s.metrics.top1,
                    size_bytes: s.size_bytes,
                });
            }
        }
        if let Some(mut cur) = b.0 {
            cur.generation = generation;
            b.1.push(cur);
        }
    }

    pub fn fitness_stats(&self) -> FitnessStats {
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    fn run(&self, genome: &[u16], windows: usize, full: bool) -> Result<Scored> {
        let model = self.evaluator.model;
        let choices = self.space.tensor_choices(model, genome);
        let metrics = self.evaluator.score(&choices, windows)?;
        let (c, violation, checks) = price(
            model,
            &choices,
            &self.target,
            &self.workload,
            &self.limits,
            Some(metrics.kl),
        )?;
        Ok(Scored {
            metrics,
            full,
            size_bytes: choice_bytes(model, &choices),
            latency_ms: c.latency_ms,
            energy_mj: c.energy_mj,
            peak_memory_bytes: c.peak_memory_bytes,
            violation,
            checks,
        })
    }

    /// The full-fidelity score of a genome (memoised when caching is on).
    pub fn full(&self, genome: &[u16]) -> Result<Scored> {
        if self.caching {
            let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            m.stats.lookups += 1;
            if let Some(s) = m.full.get(genome).cloned() {
                m.stats.hits += 1;
                return Ok(s);
            }
        }
        let s = self.run(genome, self.full_windows, true)?;
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.stats.full_evaluations += 1;
        if self.caching {
            m.full.insert(genome.to_vec(), s.clone());
        }
        Ok(s)
    }

    fn screened(&self, genome: &[u16]) -> Result<Scored> {
        {
            let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            m.stats.lookups += 1;
            if let Some(s) = m.full.get(genome).cloned() {
                m.stats.hits += 1;
                return Ok(s);
            }
            if let Some(s) = m.screened.get(genome).cloned() {
                m.stats.hits += 1;
                return Ok(s);
            }
        }
        let s = self.run(genome, self.screen_windows, false)?;
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.stats.screenings += 1;
        m.screened.insert(genome.to_vec(), s.clone());
        Ok(s)
    }

    /// Screened-then-full evaluation against an archive front (objective vectors).
    pub fn evaluate_one(&self, genome: &[u16], archive: &[Vec<f64>]) -> Result<Scored> {
        if !self.caching || self.screen_windows >= self.full_windows || archive.is_empty() {
            return self.full(genome);
        }
        let s = self.screened(genome)?;
        if s.full {
            return Ok(s);
        }
        let mut optimistic = s.objectives();
        optimistic[0] *= 1.0 - self.margin;
        let hopeless = s.violation > 0.0
            || archive.iter().any(|a| {
                a.iter().zip(&optimistic).all(|(x, y)| x <= y)
                    && a.iter().zip(&optimistic).any(|(x, y)| x < y)
            });
        if hopeless {
            self.memo
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stats
                .screened_out += 1;
            Ok(s)
        } else {
            self.full(genome)
        }
    }

    /// Everything evaluated at full fidelity so far.
    pub fn full_evaluations(&self) -> Vec<(Vec<u16>, Scored)> {
        let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.full.iter().map(|(g, s)| (g.clone(), s.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Problem for QuantProblem<'_> {
    fn space(&self) -> &GeneSpace {
        &self.gene_space
    }
    fn n_objectives(&self) -> usize {
        4
    }
    fn evaluate(
        &self,
        batch: &[Genome],
        ctx: &EvalContext,
    ) -> std::result::Result<Vec<Evaluation>, BoxError> {
        let archive: Vec<Vec<f64>> = ctx.archive.iter().map(|i| i.objectives.clone()).collect();
        // Each genome's score depends only on the genome and the archive the batch started
        // from, so the batch can be scored in parallel without losing determinism.
        let scored = batch
            .par_iter()
            .map(|g| self.evaluate_one(g.levels(), &archive))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Box::new(e) as BoxError)?;
        self.track(ctx.generation, &scored);
        Ok(scored
            .into_iter()
            .map(|s| Evaluation {
                objectives: s.objectives(),
                violation: s.violation,
            })
            .collect())
    }
    fn stats(&self) -> ProblemStats {
        let s = self.fitness_stats();
        ProblemStats {
            cache_hits: s.hits,
            cache_lookups: s.lookups,
            full_evaluations: s.full_evaluations,
            screenings: s.screenings,
        }
    }
}
