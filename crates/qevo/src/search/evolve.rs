//! Stage 3, `evolve`: NSGA-II over the quantization problem, seeded, with the target's
//! termination (generations, wall time), a checkpoint after every generation and exact
//! resume (the engine's state and the problem's memos and records both come back).

use super::problem::QuantProblem;
use super::seed::Seeded;
use super::surrogate::Surrogate;
use super::{Progress, SearchConfig};
use crate::error::{Error, Result};
use evo::operators::LayerwiseCrossover;
use evo::{GenerationRecord, Individual, Nsga2, RunOptions, Termination};
use std::time::{Duration, Instant};

/// What the evolution leaves for the later stages.
pub struct Evolved {
    /// Every non-dominated feasible genome evaluated (screened scores may be optimistic).
    pub archive: Vec<Individual>,
    pub population: Vec<Individual>,
    pub history: Vec<GenerationRecord>,
    /// Genomes evaluated (the random-search baseline gets the same budget).
    pub evaluations: u64,
    pub seconds: f64,
    /// Why it ended (`Observer`: the caller stopped it, e.g. on Ctrl-C).
    pub stop: evo::StopReason,
}

/// Runs NSGA-II from `seeded`'s seeds for at most `max_time` (the evolution's part of
/// the time budget, `clock::Deadlines`), with `surrogate` screening offspring (it stays
/// with the problem for the later stages); resumes from the checkpoint when asked.
pub fn evolve(
    problem: &QuantProblem,
    seeded: &Seeded,
    surrogate: Surrogate,
    cfg: &SearchConfig,
    progress: Option<Progress>,
    max_time: Option<std::time::Duration>,
) -> Result<Evolved> {
    problem.set_surrogate(surrogate);
    let mut termination = Termination::generations(cfg.evolution.generations);
    termination.max_time = max_time;
    let crossover = cfg.evolution.crossover.kind(cfg.space.unit);
    // A resumed run keeps the population its checkpoint was made with.
    let (resume, population) = match resume_from(cfg, problem)? {
        Some((path, pop)) => (Some(path), pop),
        None => (None, affordable_population(cfg, seeded, max_time)),
    };
    let algo = Nsga2::new(population)
        .with_crossover(LayerwiseCrossover::new(crossover, 0.9))
        .with_seeds(seeded.seeds.iter().cloned().map(evo::Genome).collect())
        .with_termination(termination)
        .with_reference_point(seeded.reference_point.clone());
    let options = RunOptions {
        checkpoint: cfg.checkpoint.path.clone(),
        resume,
        observer: progress,
    };
    let started = Instant::now();
    let result = algo.run(problem, cfg.evolution.seed, options)?;
    Ok(Evolved {
        archive: result.archive,
        population: result.population,
        history: result.history,
        evaluations: result.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        stop: result.stop,
    })
}

/// Share of the evolution's time its first generation may take: the initial population
/// is scored whole, whatever the clock says.
const FIRST_GENERATION_SHARE: f64 = 0.5;

/// The smallest population a time budget shrinks to: room for the caller's plan, the
/// Lagrangian plans at the limit and a few samples.
const MIN_TIMED_POPULATION: usize = 8;

/// The configured population, or, when one full score (timed on the uniform plans)
/// times the population would take more than `FIRST_GENERATION_SHARE` of `max_time`,
/// the population that fits it (at least `MIN_TIMED_POPULATION`). On Gemma-3-270M a first
/// generation of 24 plans took 514 s of a 958 s search.
fn affordable_population(cfg: &SearchConfig, seeded: &Seeded, max_time: Option<Duration>) -> usize {
    let pop = cfg.evolution.population;
    let Some(t) = max_time else {
        return pop;
    };
    let per_plan = seeded.seconds.1 / seeded.uniform.len().max(1) as f64;
    if per_plan <= 0.0 {
        return pop;
    }
    let fits = (FIRST_GENERATION_SHARE * t.as_secs_f64() / per_plan) as usize;
    fits.clamp(MIN_TIMED_POPULATION.min(pop), pop)
}

/// The checkpoint to continue from, with its population: asking to resume without one
/// is an error, not a silent fresh start, and so is one made with other settings (each
/// is named).
fn resume_from(
    cfg: &SearchConfig,
    problem: &QuantProblem,
) -> Result<Option<(std::path::PathBuf, usize)>> {
    if !cfg.checkpoint.resume {
        return Ok(None);
    }
    match &cfg.checkpoint.path {
        Some(p) if p.is_file() => {
            let population = check_settings(p, problem)?;
            Ok(Some((p.clone(), population)))
        }
        Some(p) => Err(Error::setting(
            "resume",
            format!("no checkpoint at {} to resume from", p.display()),
        )),
        None => Err(Error::setting(
            "resume",
            "needs a checkpoint path to resume from",
        )),
    }
}

/// Refuses a checkpoint whose recorded settings differ from this search's, naming each;
/// the population it was made with.
fn check_settings(path: &std::path::Path, problem: &QuantProblem) -> Result<usize> {
    let ck = evo::Checkpoint::load(path)?;
    let run = ck.problem_state.as_ref().and_then(|s| s.get("run"));
    let then: Vec<(String, String)> = match run {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, "problem_state.run", e.to_string()))?,
        None => Vec::new(),
    };
    if then.is_empty() {
        return Err(Error::config(
            path,
            "problem_state.run",
            "missing: the checkpoint does not record the settings it was made with \
             (an older qevo's), so it cannot be resumed",
        ));
    }
    let differences = crate::error::differences(&then, problem.run_settings());
    match differences.is_empty() {
        true => Ok(ck.pop_size),
        false => Err(Error::ResumeMismatch {
            path: path.to_path_buf(),
            differences,
        }),
    }
}
