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

use super::prepare::Prepared;
use super::space::SearchSpace;
use super::SearchConfig;
use crate::error::Result;
use crate::eval::{Evaluator, Metrics};
use crate::hw::{Profile, Workload};
use crate::plan::{price, LimitCheck, UserLimits};
use evo::dominance::dominates;
use evo::{BoxError, EvalContext, Evaluation, GeneSpace, Genome, Problem, ProblemStats};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Everything known about one evaluated plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitnessStats {
    pub lookups: u64,
    pub hits: u64,
    pub full_evaluations: u64,
    pub screenings: u64,
    pub screened_out: u64,
}

/// The best weighted fitness found by the end of a generation (for convergence tables).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// The best plan so far, and one record per generation.
type Tracker = (Option<GenerationBest>, Vec<GenerationBest>);

/// What a checkpoint keeps of the problem: both memos (sorted by genome, so the bytes
/// do not depend on hash order), their counters and the convergence record. With it a
/// resumed run hits the same memo entries, counts the same, and reports every
/// generation, as an uninterrupted run does.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState {
    full: Vec<(Vec<u16>, Scored)>,
    screened: Vec<(Vec<u16>, Scored)>,
    stats: FitnessStats,
    best: Option<GenerationBest>,
    convergence: Vec<GenerationBest>,
}

fn sorted(m: &HashMap<Vec<u16>, Scored>) -> Vec<(Vec<u16>, Scored)> {
    let mut v: Vec<_> = m.iter().map(|(g, s)| (g.clone(), s.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
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
    best: Mutex<Tracker>,
}

impl<'a> QuantProblem<'a> {
    /// The problem over `prepared`'s space and evaluator, priced on `cfg`'s target.
    pub fn new(prepared: &'a Prepared<'a>, cfg: &SearchConfig) -> Result<Self> {
        let space = prepared.space.clone();
        let levels: Vec<u16> = space.choices.iter().map(|c| c.len() as u16).collect();
        Ok(QuantProblem {
            gene_space: GeneSpace::new(levels)?,
            space,
            evaluator: &prepared.evaluator,
            target: cfg.target.clone(),
            workload: cfg.workload,
            limits: cfg.limits,
            screen_windows: prepared.screen_windows,
            full_windows: prepared.full_windows,
            margin: 0.25,
            caching: cfg.caches.enabled,
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
        let p = price(
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
            size_bytes: p.tensor_bytes,
            latency_ms: p.cost.latency_ms,
            energy_mj: p.cost.energy_mj,
            peak_memory_bytes: p.cost.peak_memory_bytes,
            violation: p.violation,
            checks: p.checks,
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
        let hopeless = s.violation > 0.0 || archive.iter().any(|a| dominates(a, &optimistic));
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
        sorted(&self.memo.lock().unwrap_or_else(|e| e.into_inner()).full)
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
    fn save_state(&self) -> Option<serde_json::Value> {
        let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let b = self.best.lock().unwrap_or_else(|e| e.into_inner());
        let state = SavedState {
            full: sorted(&m.full),
            screened: sorted(&m.screened),
            stats: m.stats,
            best: b.0,
            convergence: b.1.clone(),
        };
        serde_json::to_value(state).ok()
    }
    fn restore_state(&self, state: &serde_json::Value) -> std::result::Result<(), BoxError> {
        let s: SavedState = serde_json::from_value(state.clone())?;
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.full = s.full.into_iter().collect();
        m.screened = s.screened.into_iter().collect();
        m.stats = s.stats;
        *self.best.lock().unwrap_or_else(|e| e.into_inner()) = (s.best, s.convergence);
        Ok(())
    }
}
