//! `QuantProblem`: quantization search as an `evo::Problem`. A genome picks one choice per
//! unit; its objectives are [KL to FP, size in bytes, latency in ms, energy in mJ] (all
//! minimised); the target's limits and the user's are constraints (summed relative
//! excess, 0 = feasible).
//!
//! Its parts: the memo of every score (memo.rs), the screening of offspring before a
//! full score (screen.rs: the surrogate, then the screening windows), and the executor
//! that scores jobs (executor.rs).
//!
//! An evolution batch is scored in two rounds (screening, then full scores for the
//! promising), each a list of `Job`s for the genomes the memo lacks, handed to an
//! `Executor` (executor.rs): this machine's threads by default, or remote workers. Memo
//! lookups, counters and screening decisions stay here, in batch order, so they do not
//! depend on who scored the jobs.

use super::executor::{check_answer, Executor, Job};
use super::memo::{sorted, Evaluated, FitnessStats, Memo};
use super::prepare::Prepared;
use super::screen::Screening;
use super::space::SearchSpace;
use super::surrogate::{spearman, Surrogate};
use super::SearchConfig;
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Metrics};
use crate::hw::{Profile, Workload};
use crate::plan::{price, LimitCheck, TensorChoice, UserLimits};
use evo::{BoxError, EvalContext, Evaluation, GeneSpace, Genome, Problem, ProblemStats};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// FNV-1a of `bytes` as 16 hex digits.
fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What a search's scores and costs depend on, by its `Settings` field: the model, the
/// target's profile (with its constraints), the workload, the limits, the space, the
/// calibration windows and their tokens, the rounding and its importance matrix, and the
/// caches' screening (which plans get a full score).
fn run_settings(prepared: &Prepared, cfg: &SearchConfig) -> Vec<(String, String)> {
    let e = &prepared.evaluator;
    let w = &e.reference.windows;
    let ids: Vec<u8> = w.ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    let formats: Vec<String> = cfg.space.formats.iter().map(|f| f.to_string()).collect();
    let opt = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |x| x.to_string());
    let l = &cfg.limits;
    [
        ("model", e.model.fingerprint.clone()),
        (
            "target",
            format!(
                "{} (profile {})",
                cfg.target.name,
                fnv(format!("{:?}", cfg.target).as_bytes())
            ),
        ),
        ("prefill_tokens", cfg.workload.prefill_tokens.to_string()),
        ("decode_tokens", cfg.workload.decode_tokens.to_string()),
        ("max_size_mb", opt(l.max_size_mb)),
        ("max_latency_ms", opt(l.max_latency_ms)),
        ("max_energy_mj", opt(l.max_energy_mj)),
        ("max_kl", opt(l.max_kl)),
        ("formats", formats.join(",")),
        ("act_bits", format!("{:?}", cfg.space.act_bits)),
        (
            "unit",
            format!(
                "{:?} (tied qkv {}, gate/up {})",
                cfg.space.unit, cfg.space.tie_qkv, cfg.space.tie_gate_up
            )
            .to_lowercase(),
        ),
        ("seq_len", w.seq_len.to_string()),
        ("calib_windows", prepared.full_windows.to_string()),
        ("screen_windows", prepared.screen_windows.to_string()),
        ("text", format!("tokens {}", fnv(&ids))),
        (
            "rounding",
            format!("{:?}", cfg.data.rounding).to_lowercase(),
        ),
        (
            "imatrix",
            prepared
                .imatrix
                .as_ref()
                .map_or_else(|| "none".to_string(), |m| m.fingerprint()),
        ),
        (
            "head",
            match e.reference.sampled() {
                true => "sampled",
                false => "full",
            }
            .to_string(),
        ),
        ("cache", cfg.caches.enabled.to_string()),
        ("surrogate", cfg.caches.surrogate.to_string()),
        ("epsilon", format!("{:?}", cfg.caches.epsilon)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

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
    /// KL from the surrogate, not from a forward pass (a screened-out offspring).
    #[serde(default)]
    pub predicted: bool,
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

/// How the surrogate screened (`QuantProblem::surrogate_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SurrogateStats {
    pub rejected: u64,
    /// Plans fully scored after a fit that did not include them.
    pub checked: usize,
    /// Spearman rank correlation of its fitted KL with their full KL.
    pub spearman: Option<f64>,
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

/// The best plan so far, and one record per generation.
type Tracker = (Option<GenerationBest>, Vec<GenerationBest>);

/// What a checkpoint keeps of the problem: both memos (sorted by genome, so the bytes
/// do not depend on hash order), their counters and the convergence record. With it a
/// resumed run hits the same memo entries, counts the same, and reports every
/// generation, as an uninterrupted run does.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState {
    /// The settings the run was started with (`run_settings`).
    #[serde(default)]
    run: Vec<(String, String)>,
    full: Vec<(Vec<u16>, Scored)>,
    screened: Vec<(Vec<u16>, Scored)>,
    stats: FitnessStats,
    best: Option<GenerationBest>,
    convergence: Vec<GenerationBest>,
    #[serde(default)]
    log: Vec<Evaluated>,
    #[serde(default)]
    checks: Vec<(f64, f64)>,
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
    /// Off: every genome gets the full evaluation, and nothing is memoised.
    pub caching: bool,
    gene_space: GeneSpace,
    pub(super) memo: Mutex<Memo>,
    /// How offspring are screened before a full score (screen.rs).
    pub(super) screening: Screening,
    /// Scores a plan for the convergence record (the recommendation fitness).
    fitness: Option<FitnessFn<'a>>,
    best: Mutex<Tracker>,
    /// Scores the evolution's batches; None: this machine's threads.
    executor: Option<&'a dyn Executor>,
    /// Every setting a score or a cost depends on, by field (`run_settings`): what a
    /// checkpoint records and a resume must match.
    run: Vec<(String, String)>,
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
            caching: cfg.caches.enabled,
            memo: Mutex::new(Memo::default()),
            screening: Screening::new(
                cfg.caches.epsilon,
                cfg.caches.enabled && cfg.caches.surrogate,
            ),
            fitness: None,
            best: Mutex::new((None, Vec::new())),
            executor: None,
            run: run_settings(prepared, cfg),
        })
    }

    /// The settings this search's scores and costs depend on, by field; a checkpoint
    /// records them (`save_state`) and a resume compares them (`evolve`).
    pub fn run_settings(&self) -> &[(String, String)] {
        &self.run
    }

    /// Scores the evolution's batches with `executor` instead of this machine's threads.
    /// Seeding, the final re-scores and the baselines still run here.
    pub fn with_executor(mut self, executor: Option<&'a dyn Executor>) -> Self {
        self.executor = executor;
        self
    }

    /// Lets the surrogate screen offspring (the search's sensitivity table); `evolve`
    /// hands it over.
    pub(super) fn set_surrogate(&self, s: Surrogate) {
        self.screening.set_surrogate(s);
    }

    /// How the surrogate did: offspring it rejected, plans it was checked on, and its
    /// rank correlation with their full KL (None before enough checks).
    pub fn surrogate_stats(&self) -> SurrogateStats {
        let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        SurrogateStats {
            rejected: m.stats.surrogate_rejected,
            checked: m.checks.len(),
            spearman: spearman(&m.checks),
        }
    }

    /// Names everything a job's score depends on besides the job: the model's weights,
    /// the calibration tokens, the space, the target, workload and limits, the windows
    /// of each fidelity, the activation scheme. A worker whose fingerprint differs would
    /// score differently, so an executor refuses it.
    pub fn fingerprint(&self) -> String {
        let e = self.evaluator;
        let setup = format!(
            "{:?}|{}|{:?}|{:?}|{}|{}|{:?}|{:?}|{}",
            self.space.choices,
            self.target.name,
            self.workload,
            self.limits,
            self.screen_windows,
            self.full_windows,
            e.act_scheme,
            e.reference.windows.ids,
            e.reference.windows.seq_len,
        );
        let mut h: u64 = 0xcbf29ce484222325;
        for b in setup.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{}-{h:016x}", e.model.fingerprint)
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

    pub(super) fn run(&self, genome: &[u16], windows: usize, full: bool) -> Result<Scored> {
        let choices = self.space.tensor_choices(self.evaluator.model, genome);
        let metrics = self.evaluator.score(&choices, windows)?;
        self.priced(&choices, metrics, full)
    }

    /// A score from `metrics` and the plan's price on the target.
    pub(super) fn priced(
        &self,
        choices: &[TensorChoice],
        metrics: Metrics,
        full: bool,
    ) -> Result<Scored> {
        let model = self.evaluator.model;
        let p = price(
            model,
            choices,
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
            predicted: false,
        })
    }

    /// One job's score on this machine: the pure function every executor computes. The
    /// genome is checked against the space first, since a remote driver sends it.
    pub fn score_job(&self, job: &Job) -> Result<Scored> {
        self.gene_space
            .check(&Genome(job.genome.clone()))
            .map_err(|e| Error::Executor(format!("job for an unknown genome: {e}")))?;
        let windows = match job.full {
            true => self.full_windows,
            false => self.screen_windows,
        };
        self.run(&job.genome, windows, job.full)
    }

    fn score_jobs(&self, jobs: &[Job], executor: Option<&dyn Executor>) -> Result<Vec<Scored>> {
        match executor {
            _ if jobs.is_empty() => Ok(Vec::new()),
            Some(x) => {
                let scored = x.score(jobs)?;
                check_answer(jobs, &scored)?;
                Ok(scored)
            }
            // Each job's score depends only on the job, so scoring them in parallel keeps
            // the batch deterministic.
            None => jobs.par_iter().map(|j| self.score_job(j)).collect(),
        }
    }

    /// Scores of `genomes` at one fidelity, in order: memo hits first (a screening
    /// request is also answered by a full score), the misses scored in one round. A
    /// genome that occurs twice is scored once and counts as a hit the second time.
    /// With caching off every full request is scored and nothing is memoised.
    pub(super) fn memoised(
        &self,
        genomes: &[&[u16]],
        full: bool,
        executor: Option<&dyn Executor>,
    ) -> Result<Vec<Scored>> {
        enum Slot {
            Hit(Scored),
            Job(usize),
        }
        let mut slots = Vec::with_capacity(genomes.len());
        let mut jobs: Vec<Job> = Vec::new();
        let mut pending: HashMap<&[u16], usize> = HashMap::new();
        {
            let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            for &g in genomes {
                let memo = self.caching || !full;
                if memo {
                    m.stats.lookups += 1;
                    let hit = m
                        .full
                        .get(g)
                        .or(if full { None } else { m.screened.get(g) });
                    if let Some(s) = hit.cloned() {
                        m.stats.hits += 1;
                        slots.push(Slot::Hit(s));
                        continue;
                    }
                    if let Some(&k) = pending.get(g) {
                        m.stats.hits += 1;
                        slots.push(Slot::Job(k));
                        continue;
                    }
                    pending.insert(g, jobs.len());
                }
                slots.push(Slot::Job(jobs.len()));
                jobs.push(Job {
                    genome: g.to_vec(),
                    full,
                });
            }
        }
        let scored = self.score_jobs(&jobs, executor)?;
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        for (j, s) in jobs.iter().zip(&scored) {
            match full {
                true => m.stats.full_evaluations += 1,
                false => m.stats.screenings += 1,
            }
            if full && self.caching {
                m.full.insert(j.genome.clone(), s.clone());
            } else if !full {
                m.screened.insert(j.genome.clone(), s.clone());
            }
        }
        drop(m);
        Ok(slots
            .into_iter()
            .map(|s| match s {
                Slot::Hit(s) => s,
                Slot::Job(k) => scored[k].clone(),
            })
            .collect())
    }

    /// The full-fidelity score of a genome (memoised when caching is on).
    pub fn full(&self, genome: &[u16]) -> Result<Scored> {
        Ok(self.memoised(&[genome], true, None)?.remove(0))
    }

    /// Full-fidelity scores of `genomes`, in order, scored in parallel on this machine
    /// (each a pure function of its genome, so the order of work does not matter).
    pub fn full_batch(&self, genomes: &[&[u16]]) -> Result<Vec<Scored>> {
        self.memoised(genomes, true, None)
    }

    /// Screened-then-full evaluation of one genome against an archive front.
    pub fn evaluate_one(&self, genome: &[u16], archive: &[Vec<f64>]) -> Result<Scored> {
        Ok(self.evaluate_batch(&[genome], archive, None)?.remove(0))
    }

    fn log(&self, generation: u64, genomes: &[&[u16]], scored: &[Scored]) {
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.log_batch(generation, genomes, scored);
    }

    /// Every plan the evolution scored, in the order first scored, each with its full
    /// score where one was made (the Optuna journal's trials).
    pub fn evaluations(&self) -> Vec<Evaluated> {
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evaluations()
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
        let genomes: Vec<&[u16]> = batch.iter().map(|g| g.levels()).collect();
        let scored = self
            .evaluate_batch(&genomes, &archive, self.executor)
            .map_err(|e| Box::new(e) as BoxError)?;
        self.log(ctx.generation, &genomes, &scored);
        self.track(ctx.generation, &scored);
        Ok(scored
            .into_iter()
            .map(|s| Evaluation {
                objectives: s.objectives(),
                violation: s.violation,
                // A screening score or a surrogate guess never enters the archive, even
                // when a screening tolerance skipped a plan the archive did not dominate.
                estimated: !s.full,
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
            run: self.run.clone(),
            full: sorted(&m.full),
            screened: sorted(&m.screened),
            stats: m.stats,
            best: b.0,
            convergence: b.1.clone(),
            log: m.log.clone(),
            checks: m.checks.clone(),
        };
        serde_json::to_value(state).ok()
    }
    fn restore_state(&self, state: &serde_json::Value) -> std::result::Result<(), BoxError> {
        let s: SavedState = serde_json::from_value(state.clone())?;
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.full = s.full.into_iter().collect();
        m.screened = s.screened.into_iter().collect();
        m.stats = s.stats;
        m.log = s.log;
        m.checks = s.checks;
        *self.best.lock().unwrap_or_else(|e| e.into_inner()) = (s.best, s.convergence);
        Ok(())
    }
}
