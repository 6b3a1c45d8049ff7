//! Stage 4, `finalize`: the evolved front as the user sees it. Every archive member (and
//! every uniform plan, which the seed stage scored in full) is re-scored at full
//! fidelity (screened scores can be optimistic) and on the held-out text, what is still
//! non-dominated is kept, sorted by size, and one plan is recommended: the best on the
//! validation slice among the `SHORTLIST` best on the calibration windows, so the choice
//! is not fitted to the windows the plans were scored on. When nothing is feasible, the
//! least-violating plan of the last population is kept instead, so the user learns which
//! limit fails and by how much.

use super::evolve::Evolved;
use super::prepare::Prepared;
use super::problem::{QuantProblem, Scored};
use super::{FrontEntry, SearchConfig};
use crate::error::Result;
use crate::eval::Metrics;
use crate::plan::UserLimits;
use evo::dominance::dominates;
use rayon::prelude::*;
use std::time::Instant;

/// The front, the recommendation, and the fallback when nothing is feasible.
pub struct Finalized {
    /// Non-dominated feasible plans at full fidelity, smallest first.
    pub front: Vec<FrontEntry>,
    pub recommended: Option<usize>,
    /// When nothing was feasible: the least-violating plan and its failing checks.
    pub infeasible_closest: Option<FrontEntry>,
}

/// Re-scores the archive with the uniform plans (`also`: fully scored by this search, so
/// the front is never worse than one of them), filters them, and recommends. With a
/// `deadline`, the archive is scored best first (`by_priority`) until it passes.
pub fn finalize(
    p: &Prepared,
    problem: &QuantProblem,
    evolved: &Evolved,
    also: &[Vec<u16>],
    cfg: &SearchConfig,
    deadline: Option<Instant>,
) -> Result<Finalized> {
    let archive: Vec<Vec<u16>> = by_priority(&evolved.archive, cfg)
        .into_iter()
        .chain(also.iter().cloned())
        .collect();
    let score = |g: Vec<u16>| {
        let s = problem.full(&g)?;
        entry(p, g, s, cfg)
    };
    let scored = match deadline {
        None => score_all(archive, &score)?,
        Some(d) => score_until(archive, d, &score)?,
    };
    let objs: Vec<Vec<f64>> = scored.iter().map(|f| f.scored.objectives()).collect();
    let feas: Vec<bool> = scored.iter().map(|f| f.scored.violation <= 0.0).collect();
    let mut front: Vec<FrontEntry> = pareto_indices(&objs, &feas)
        .into_iter()
        .map(|i| scored[i].clone())
        .collect();
    front.sort_by(|a, b| {
        a.scored
            .size_bytes
            .cmp(&b.scored.size_bytes)
            .then(a.scored.metrics.kl.total_cmp(&b.scored.metrics.kl))
    });
    let infeasible_closest = match front.is_empty() {
        true => least_violating(p, problem, evolved, cfg)?,
        false => None,
    };
    let recommended = choose_on_validation(p, &mut front, cfg)?;
    Ok(Finalized {
        recommended,
        front,
        infeasible_closest,
    })
}

/// Scores every genome, in genome order, so neighbours share early blocks and the
/// held-out scores reuse each other's states.
fn score_all(
    mut genomes: Vec<Vec<u16>>,
    score: &(dyn Fn(Vec<u16>) -> Result<FrontEntry> + Sync),
) -> Result<Vec<FrontEntry>> {
    genomes.sort_unstable();
    genomes.dedup();
    genomes.into_par_iter().map(score).collect()
}

/// Scores `genomes` (duplicates dropped) in their order until `deadline`
/// (`clock::batches_until`), each batch in genome order for the states' reuse.
fn score_until(
    genomes: Vec<Vec<u16>>,
    deadline: Instant,
    score: &(dyn Fn(Vec<u16>) -> Result<FrontEntry> + Sync),
) -> Result<Vec<FrontEntry>> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<Vec<u16>> = genomes
        .into_iter()
        .filter(|g| seen.insert(g.clone()))
        .collect();
    super::clock::batches_until(&unique, deadline, |mut chunk| {
        chunk.sort_unstable();
        chunk.into_par_iter().map(score).collect()
    })
}

/// The archive's genomes, those the recommendation would pick first: feasible before
/// infeasible, then by screened KL with a user limit (the recommendation is the lowest KL
/// within it), else in genome order.
fn by_priority(archive: &[evo::Individual], cfg: &SearchConfig) -> Vec<Vec<u16>> {
    let mut v: Vec<&evo::Individual> = archive.iter().collect();
    v.sort_by(|a, b| {
        let kl = |i: &evo::Individual| match cfg.limits.any() {
            true => i.objectives[0],
            false => 0.0,
        };
        (!a.is_feasible())
            .cmp(&!b.is_feasible())
            .then(kl(a).total_cmp(&kl(b)))
            .then(a.genome.levels().cmp(b.genome.levels()))
    });
    v.into_iter().map(|i| i.genome.levels().to_vec()).collect()
}

/// The population member with the smallest violation, fully scored.
fn least_violating(
    p: &Prepared,
    problem: &QuantProblem,
    evolved: &Evolved,
    cfg: &SearchConfig,
) -> Result<Option<FrontEntry>> {
    let best = evolved
        .population
        .iter()
        .min_by(|a, b| a.violation.total_cmp(&b.violation));
    match best {
        Some(ind) => {
            let g = ind.genome.levels().to_vec();
            let s = problem.full(&g)?;
            Ok(Some(entry(p, g, s, cfg)?))
        }
        None => Ok(None),
    }
}

/// A front entry: the full score, the held-out score and the recommendation fitness.
pub(crate) fn entry(
    p: &Prepared,
    genome: Vec<u16>,
    scored: Scored,
    cfg: &SearchConfig,
) -> Result<FrontEntry> {
    let choices = p.space.tensor_choices(p.model, &genome);
    let heldout = p.evaluator.score_with(&p.heldout, &choices)?;
    let fitness = cfg.evolution.weights.fitness(&scored, &p.fp);
    Ok(FrontEntry {
        genome,
        scored,
        heldout,
        validation: None,
        fitness,
    })
}

/// Plans the recommendation is chosen among on the validation slice: the best this many
/// by the calibration criterion (`recommend`). More would cost validation scores and
/// give the noise of the slice more plans to pick from.
pub const SHORTLIST: usize = 8;

/// The validation score of `genome`: on the validation slice, or the calibration score
/// `cal` without one.
pub(crate) fn validation_of(p: &Prepared, genome: &[u16], cal: &Scored) -> Result<Metrics> {
    match &p.validation {
        Some(v) => {
            let choices = p.space.tensor_choices(p.model, genome);
            p.evaluator.score_with(v, &choices)
        }
        None => Ok(cal.metrics),
    }
}

/// Scores the shortlist (`SHORTLIST` front plans best by `recommend`'s criterion) on the
/// validation slice and recommends the best of them there: lowest validation KL within
/// user limits, else the highest fitness with validation top-1.
fn choose_on_validation(
    p: &Prepared,
    front: &mut [FrontEntry],
    cfg: &SearchConfig,
) -> Result<Option<usize>> {
    let mut rest: Vec<usize> = (0..front.len()).collect();
    let mut shortlist = Vec::new();
    while shortlist.len() < SHORTLIST {
        let pool: Vec<FrontEntry> = rest.iter().map(|&i| front[i].clone()).collect();
        let Some(k) = recommend(&pool, &cfg.limits) else {
            break;
        };
        shortlist.push(rest.remove(k));
    }
    let scores: Vec<Metrics> = shortlist
        .par_iter()
        .map(|&i| validation_of(p, &front[i].genome, &front[i].scored))
        .collect::<Result<_>>()?;
    for (&i, v) in shortlist.iter().zip(scores) {
        front[i].validation = Some(v);
    }
    let key = |i: usize| {
        let (f, v) = (
            &front[i],
            front[i].validation.unwrap_or(front[i].scored.metrics),
        );
        match cfg.limits.any() {
            true => v.kl,
            false => {
                let s = Scored {
                    metrics: v,
                    ..f.scored.clone()
                };
                -cfg.evolution.weights.fitness(&s, &p.fp)
            }
        }
    };
    // Ties go to the plan first on the calibration criterion.
    Ok(shortlist
        .iter()
        .copied()
        .min_by(|&a, &b| key(a).total_cmp(&key(b))))
}

/// Indices of the non-dominated feasible points (minimising all objectives).
pub fn pareto_indices(points: &[Vec<f64>], feasible: &[bool]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| feasible[i])
        .filter(|&i| {
            !(0..points.len()).any(|j| j != i && feasible[j] && dominates(&points[j], &points[i]))
        })
        .collect()
}

/// With user limits: the lowest-KL plan within them. Without: the highest fitness.
pub fn recommend(front: &[FrontEntry], limits: &UserLimits) -> Option<usize> {
    let feasible = front
        .iter()
        .enumerate()
        .filter(|(_, f)| f.scored.violation <= 0.0);
    if limits.any() {
        feasible
            .min_by(|a, b| a.1.scored.metrics.kl.total_cmp(&b.1.scored.metrics.kl))
            .map(|(i, _)| i)
    } else {
        feasible
            .max_by(|a, b| a.1.fitness.total_cmp(&b.1.fitness))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Metrics;

    fn plan(kl: f64, size: u64, fitness: f64, violation: f64) -> FrontEntry {
        let metrics = Metrics {
            kl,
            ppl: 1.0,
            top1: 1.0,
            tokens: 1,
        };
        FrontEntry {
            genome: vec![],
            scored: Scored {
                metrics,
                full: true,
                size_bytes: size,
                latency_ms: 1.0,
                energy_mj: 1.0,
                peak_memory_bytes: 1,
                violation,
                checks: vec![],
                predicted: false,
            },
            heldout: metrics,
            validation: None,
            fitness,
        }
    }

    #[test]
    fn pareto_indices_drop_dominated_and_infeasible() {
        let pts = vec![
            vec![1.0, 1.0],
            vec![2.0, 2.0],
            vec![0.5, 3.0],
            vec![0.1, 0.1],
        ];
        assert_eq!(pareto_indices(&pts, &[true, true, true, false]), vec![0, 2]);
    }

    #[test]
    fn recommend_takes_best_fitness_without_limits_and_lowest_kl_within_them() {
        let front = vec![
            plan(0.30, 100, 0.9, 0.0),
            plan(0.10, 200, 0.5, 0.0),
            plan(0.01, 400, 0.2, 0.5),
        ];
        assert_eq!(recommend(&front, &UserLimits::default()), Some(0));
        let limits = UserLimits {
            max_size_mb: Some(1.0),
            ..Default::default()
        };
        // Lowest KL among the feasible ones; the infeasible 0.01 is never picked.
        assert_eq!(recommend(&front, &limits), Some(1));
        assert_eq!(recommend(&[plan(0.1, 1, 1.0, 0.2)], &limits), None);
    }
}
