//! Stage 5, `compare`: the baselines scored on the same tokens as the evolution, and
//! the matched-size rows: at each uniform plan's size, the best KL each method reached
//! without exceeding it, on calibration and held-out text.

use super::baselines::{lagrangian_at, random_search, BaselinePoint};
use super::evolve::Evolved;
use super::finalize::Finalized;
use super::prepare::Prepared;
use super::problem::{QuantProblem, Scored};
use super::seed::Seeded;
use super::{MatchedRow, SearchConfig};
use crate::error::Result;

/// Baselines beside the evolved front.
#[derive(Default)]
pub struct Compared {
    pub lagrangian: Vec<BaselinePoint>,
    pub random: Vec<BaselinePoint>,
    pub matched: Vec<MatchedRow>,
}

/// Scores the Lagrangian plans at the uniform sizes (and random search with the
/// evolution's budget when asked), then builds one matched row per uniform plan.
pub fn compare(
    p: &Prepared,
    problem: &QuantProblem,
    seeded: &Seeded,
    finalized: &Finalized,
    evolved: &Evolved,
    cfg: &SearchConfig,
) -> Result<Compared> {
    // Without any baseline there is nothing to match sizes against (and the held-out
    // scores the table needs are skipped); `--no-baselines --random-search` still runs
    // random search.
    if !cfg.baselines.lagrangian && !cfg.baselines.random_search {
        return Ok(Compared::default());
    }
    let mut lagrangian = Vec::new();
    let sizes = seeded.uniform.iter().filter(|_| cfg.baselines.lagrangian);
    for u in sizes {
        if let Some(g) = lagrangian_at(&seeded.sweep, u.scored.size_bytes) {
            lagrangian.push(BaselinePoint {
                name: format!("lagrangian @ {}", u.name),
                scored: problem.full(&g)?,
                genome: g,
            });
        }
    }
    let random = match cfg.baselines.random_search {
        true => random_search(problem, evolved.evaluations as usize, cfg.evolution.seed)?,
        false => Vec::new(),
    };
    let matched = seeded
        .uniform
        .iter()
        .map(|u| matched_row(p, u, finalized, &lagrangian, &random))
        .collect::<Result<_>>()?;
    Ok(Compared {
        lagrangian,
        random,
        matched,
    })
}

/// The lowest-KL feasible plan no larger than `size`, with its KL.
fn best_under<'a>(
    plans: impl Iterator<Item = (&'a Vec<u16>, &'a Scored)>,
    size: u64,
) -> Option<(&'a Vec<u16>, f64)> {
    plans
        .filter(|(_, s)| s.size_bytes <= size && s.violation <= 0.0)
        .min_by(|a, b| a.1.metrics.kl.total_cmp(&b.1.metrics.kl))
        .map(|(g, s)| (g, s.metrics.kl))
}

fn matched_row(
    p: &Prepared,
    u: &BaselinePoint,
    finalized: &Finalized,
    lagrangian: &[BaselinePoint],
    random: &[BaselinePoint],
) -> Result<MatchedRow> {
    let size = u.scored.size_bytes;
    let heldout_of = |g: &[u16]| -> Result<f64> {
        let choices = p.space.tensor_choices(p.model, g);
        Ok(p.evaluator.score_with(&p.heldout, &choices)?.kl)
    };
    let evolved = best_under(finalized.front.iter().map(|f| (&f.genome, &f.scored)), size);
    let lag = best_under(lagrangian.iter().map(|b| (&b.genome, &b.scored)), size);
    let rnd = best_under(random.iter().map(|b| (&b.genome, &b.scored)), size);
    Ok(MatchedRow {
        uniform: u.name.clone(),
        size_bytes: size,
        uniform_kl: u.scored.metrics.kl,
        uniform_heldout_kl: heldout_of(&u.genome)?,
        evolved_kl: evolved.map(|e| e.1),
        evolved_heldout_kl: evolved.map(|(g, _)| heldout_of(g)).transpose()?,
        lagrangian_kl: lag.map(|e| e.1),
        lagrangian_heldout_kl: lag.map(|(g, _)| heldout_of(g)).transpose()?,
        random_kl: rnd.map(|e| e.1),
    })
}
