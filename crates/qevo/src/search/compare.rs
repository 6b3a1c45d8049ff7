//! Stage 5, `compare`: the baselines scored on the same tokens as the evolution, and
//! the matched-size rows: at each uniform plan's size and at the user's size limit, the
//! best KL each method reached without exceeding it, on calibration and held-out text.

use super::baselines::{lagrangian_at, random_search, BaselinePoint};
use super::clock::each_until;
use super::evolve::Evolved;
use super::finalize::Finalized;
use super::prepare::Prepared;
use super::problem::{QuantProblem, Scored};
use super::seed::{by_nearness, Seeded};
use super::{MatchedRow, SearchConfig};
use crate::error::Result;
use std::time::Instant;

/// Baselines beside the evolved front.
#[derive(Default)]
pub struct Compared {
    pub lagrangian: Vec<BaselinePoint>,
    pub random: Vec<BaselinePoint>,
    pub matched: Vec<MatchedRow>,
}

/// Scores the Lagrangian plans at the uniform sizes (and random search with the
/// evolution's budget when asked), then builds one matched row per uniform plan. With a
/// deadline the sizes are taken nearest the limit first (the limit's own row first)
/// until it passes; a size without its Lagrangian plan gets no row.
pub fn compare(
    p: &Prepared,
    problem: &QuantProblem,
    seeded: &Seeded,
    finalized: &Finalized,
    evolved: &Evolved,
    cfg: &SearchConfig,
    deadline: Option<Instant>,
) -> Result<Compared> {
    // Without any baseline there is nothing to match sizes against (and the held-out
    // scores the table needs are skipped); `--no-baselines --random-search` still runs
    // random search.
    if !cfg.baselines.lagrangian && !cfg.baselines.random_search {
        return Ok(Compared::default());
    }
    let limit = cfg.limits.max_size_bytes();
    let mut targets: Vec<(usize, Target)> =
        size_targets(seeded, cfg).into_iter().enumerate().collect();
    if deadline.is_some() {
        targets.sort_by_key(|(i, t)| (by_nearness(t.1, limit), *i));
    }
    let lagrangian_of = |(name, size, _): &Target| -> Result<Option<BaselinePoint>> {
        let plan = lagrangian_at(&seeded.sensitivity, &seeded.sweep, *size)
            .filter(|_| cfg.baselines.lagrangian);
        let Some(g) = plan else { return Ok(None) };
        Ok(Some(BaselinePoint {
            name: format!("lagrangian @ {name}"),
            scored: problem.full(&g)?,
            genome: g,
        }))
    };
    let points = each_until(&targets, deadline, lagrangian_of)?;
    targets.retain(|(i, _)| points.iter().any(|(j, _)| j == i));
    let lagrangian: Vec<BaselinePoint> = points.into_iter().filter_map(|(_, b)| b).collect();
    let random = match cfg.baselines.random_search {
        true => random_search(problem, evolved.evaluations as usize, cfg.evolution.seed)?,
        false => Vec::new(),
    };
    let row =
        |(name, size, u): &Target| matched_row(p, name, *size, u, finalized, &lagrangian, &random);
    let matched = each_until(&targets, deadline, row)?;
    Ok(Compared {
        lagrangian,
        random,
        matched: matched.into_iter().map(|(_, r)| r).collect(),
    })
}

/// A size methods are matched at: its row's name, the size, and the uniform plan it is
/// compared with.
type Target<'a> = (String, u64, &'a BaselinePoint);

/// Name under which the user's size limit is a matched size (with the uniform plan it is
/// compared with: `limit (q4_1)`).
pub const SIZE_LIMIT_ROW: &str = "limit";

/// The sizes methods are matched at, each with the uniform plan it is compared with:
/// every uniform plan's own size, and the user's size limit (`--max-size-mb`) with the
/// best uniform plan within it, since that is the size a limited search is for.
fn size_targets<'a>(seeded: &'a Seeded, cfg: &SearchConfig) -> Vec<Target<'a>> {
    let mut out: Vec<Target> = seeded
        .uniform
        .iter()
        .map(|u| (u.name.clone(), u.scored.size_bytes, u))
        .collect();
    let limit = cfg.limits.max_size_bytes();
    let best_uniform = |size: u64| {
        seeded
            .uniform
            .iter()
            .filter(|u| u.scored.size_bytes <= size && u.scored.violation <= 0.0)
            .min_by(|a, b| a.scored.metrics.kl.total_cmp(&b.scored.metrics.kl))
    };
    if let Some((size, u)) = limit.and_then(|l| best_uniform(l).map(|u| (l, u))) {
        out.push((format!("{SIZE_LIMIT_ROW} ({})", u.name), size, u));
    }
    out
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

/// At `size`: uniform plan `u`'s KL against the best of each method within the size.
fn matched_row(
    p: &Prepared,
    name: &str,
    size: u64,
    u: &BaselinePoint,
    finalized: &Finalized,
    lagrangian: &[BaselinePoint],
    random: &[BaselinePoint],
) -> Result<MatchedRow> {
    let heldout_of = |g: &[u16]| -> Result<f64> {
        let choices = p.space.tensor_choices(p.model, g);
        Ok(p.evaluator.score_with(&p.heldout, &choices)?.kl)
    };
    let evolved = best_under(finalized.front.iter().map(|f| (&f.genome, &f.scored)), size);
    let lag = best_under(lagrangian.iter().map(|b| (&b.genome, &b.scored)), size);
    let rnd = best_under(random.iter().map(|b| (&b.genome, &b.scored)), size);
    Ok(MatchedRow {
        uniform: name.to_string(),
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
