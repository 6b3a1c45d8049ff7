//! Stage 2, `seed`: what the evolution starts from. The per-unit sensitivity table, every
//! uniform plan the space allows (fully scored: they are also baselines), the Lagrangian
//! sweep over the sensitivity table, the seed genomes, and the hypervolume reference
//! point just beyond the worst uniform plan and the FP cost.

use super::baselines::{lagrangian_at, lagrangian_sweep, BaselinePoint};
use super::clock::{each_until, Deadlines};
use super::prepare::Prepared;
use super::problem::QuantProblem;
use super::sensitivity::{sensitivity, table_scales, Sensitivity};
use super::SearchConfig;
use crate::calib::collect_imatrix;
use crate::error::Result;
use std::time::Instant;

/// A Lagrangian plan: genome, bytes, and the KL the additive model predicts.
pub type SweepPoint = (Vec<u16>, u64, f64);

/// The evolution's starting material.
pub struct Seeded {
    pub sensitivity: Sensitivity,
    pub uniform: Vec<BaselinePoint>,
    /// Lagrangian plans, smallest first.
    pub sweep: Vec<SweepPoint>,
    /// At most three quarters of the population; the rest is sampled.
    pub seeds: Vec<Vec<u16>>,
    /// Hypervolume reference: [KL, bytes, ms, mJ].
    pub reference_point: Vec<f64>,
    /// Wall seconds of the sensitivity table and of the uniform plans.
    pub seconds: (f64, f64),
}

/// Scores the sensitivity table and the uniform plans, each until its deadline
/// (`clock::Deadlines`), and picks the seeds.
pub fn seed(
    p: &Prepared,
    problem: &QuantProblem,
    cfg: &SearchConfig,
    deadlines: &Deadlines,
) -> Result<Seeded> {
    let t0 = Instant::now();
    let importance = match table_scales(cfg.data.sensitivity, &p.model.tensors, &p.space) {
        true => Some(input_importance(p)?),
        false => None,
    };
    let sens = sensitivity(
        &p.evaluator,
        &p.space,
        p.screen_windows,
        importance.as_deref(),
        deadlines.sensitivity,
    )?;
    let t1 = Instant::now();
    let limit = cfg.limits.max_size_bytes();
    let uniform = uniform_plans(p, problem, limit, deadlines.uniform)?;
    let seconds = ((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64());
    let sweep = lagrangian_sweep(&sens);
    let room = cfg.evolution.population * 3 / 4;
    let given = given_seeds(p, cfg, limit);
    let seeds = seed_genomes(&given, &uniform, &sens, &sweep, limit, room);
    let reference_point = reference_point(&uniform, p);
    Ok(Seeded {
        sensitivity: sens,
        uniform,
        sweep,
        seeds,
        reference_point,
        seconds,
    })
}

/// Per tensor, its input channels' mean square on the calibration windows: the search's
/// importance matrix when it has one, else collected for the scaled table alone.
fn input_importance(p: &Prepared) -> Result<Vec<Option<Vec<f32>>>> {
    match &p.imatrix {
        Some(im) => im.for_model(p.model),
        None => collect_imatrix(p.model, &p.evaluator.reference.windows)?.for_model(p.model),
    }
}

/// The caller's seed plans that the space encodes and that fit the size limit.
fn given_seeds(p: &Prepared, cfg: &SearchConfig, limit: Option<u64>) -> Vec<Vec<u16>> {
    cfg.evolution
        .seed_plans
        .iter()
        .filter(|plan| limit.is_none_or(|l| plan.size_bytes(p.model) <= l))
        .filter_map(|plan| p.space.genome_of(p.model, plan))
        .collect()
}

/// Every choice that every unit has, as a fully scored uniform plan, in the space's
/// order. With a deadline they are scored nearest the size limit first (`by_nearness`)
/// until it passes, and the rest are dropped.
fn uniform_plans(
    p: &Prepared,
    problem: &QuantProblem,
    limit: Option<u64>,
    deadline: Option<Instant>,
) -> Result<Vec<BaselinePoint>> {
    let mut plans: Vec<(usize, (String, Vec<u16>))> = Vec::new();
    for (i, c) in p.space.choices[0].iter().enumerate() {
        if let Some(g) = p.space.uniform_genome(c) {
            let act = match c.act_bits {
                16 => String::new(),
                a => format!(" a{a}"),
            };
            plans.push((i, (c.format.name() + &act, g)));
        }
    }
    if deadline.is_some() {
        let bytes = |g: &[u16]| p.space.plan(p.model, g).size_bytes(p.model);
        plans.sort_by_cached_key(|(i, (_, g))| (by_nearness(bytes(g), limit), *i));
    }
    let scored = each_until(&plans, deadline, |(name, genome)| {
        Ok(BaselinePoint {
            name: name.clone(),
            genome: genome.clone(),
            scored: problem.full(genome)?,
        })
    })?;
    Ok(scored.into_iter().map(|(_, b)| b).collect())
}

/// Order of a plan of `bytes` when time is short: the largest within the size limit
/// first, then the others smallest first (the nearest above it); without a limit,
/// largest first.
pub(super) fn by_nearness(bytes: u64, limit: Option<u64>) -> (bool, u64) {
    match limit {
        Some(l) if bytes <= l => (false, l - bytes),
        Some(l) => (true, bytes - l),
        None => (false, u64::MAX - bytes),
    }
}

/// Up to `room` seeds: the caller's (`given`) first; with a size limit, the Lagrangian
/// plans at and just below it next (the plans the search must beat there); then every uniform plan (spread, half
/// the room), the Lagrangian plan at each uniform plan's size (sensitivity-guided), then
/// Lagrangian plans spread over the whole size range; duplicates dropped.
pub fn seed_genomes(
    given: &[Vec<u16>],
    uniform: &[BaselinePoint],
    sens: &Sensitivity,
    sweep: &[SweepPoint],
    limit: Option<u64>,
    room: usize,
) -> Vec<Vec<u16>> {
    let uni_g: Vec<Vec<u16>> = uniform.iter().map(|b| b.genome.clone()).collect();
    let lag_at: Vec<Vec<u16>> = uniform
        .iter()
        .filter_map(|u| lagrangian_at(sens, sweep, u.scored.size_bytes))
        .collect();
    let lag_g: Vec<Vec<u16>> = sweep.iter().map(|p| p.0.clone()).collect();
    let mut seeds: Vec<Vec<u16>> = Vec::new();
    for g in given
        .iter()
        .cloned()
        .chain(at_limit(sens, sweep, limit))
        .chain(spread(&uni_g, room / 2))
        .chain(lag_at)
        .chain(spread(&lag_g, room))
    {
        if !seeds.contains(&g) && seeds.len() < room {
            seeds.push(g);
        }
    }
    seeds
}

/// The Lagrangian plans at a size limit: the one `lagrangian_at` picks, and the
/// `LIMIT_SEEDS - 1` largest sweep plans below it (other multipliers near the limit).
fn at_limit(sens: &Sensitivity, sweep: &[SweepPoint], limit: Option<u64>) -> Vec<Vec<u16>> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let first = lagrangian_at(sens, sweep, limit);
    let below = sweep
        .iter()
        .rev()
        .filter(|p| p.1 <= limit && Some(&p.0) != first.as_ref())
        .map(|p| p.0.clone());
    first
        .clone()
        .into_iter()
        .chain(below)
        .take(LIMIT_SEEDS)
        .collect()
}

/// Seeds from the Lagrangian sweep at a size limit.
const LIMIT_SEEDS: usize = 4;

/// Just beyond the worst uniform plan's KL and the FP model's size, latency and energy.
fn reference_point(uniform: &[BaselinePoint], p: &Prepared) -> Vec<f64> {
    let kl_ref = uniform
        .iter()
        .map(|b| b.scored.metrics.kl)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    vec![
        kl_ref,
        p.fp.size_bytes as f64 * 1.1,
        p.fp.latency_ms * 1.1,
        p.fp.energy_mj * 1.1,
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_both_ends() {
        let list: Vec<Vec<u16>> = (0..10u16).map(|i| vec![i]).collect();
        assert_eq!(spread(&list, 3), vec![vec![0], vec![4], vec![9]]);
        assert_eq!(spread(&list, 1), vec![vec![5]]);
        assert!(spread(&list, 0).is_empty());
        assert_eq!(spread(&list[..2], 5).len(), 2);
    }

    /// One unit whose choice `i` has the bytes and predicted KL of the sweep's plan `[i]`.
    fn table(sweep: &[SweepPoint]) -> Sensitivity {
        Sensitivity {
            kl: vec![sweep.iter().map(|p| p.2).collect()],
            bytes: vec![sweep.iter().map(|p| p.1).collect()],
            windows: 1,
            measured: vec![vec![true; sweep.len()]],
        }
    }

    #[test]
    fn seed_genomes_fit_the_room_without_duplicates() {
        let sweep: Vec<SweepPoint> = (0..20u16).map(|i| (vec![i], i as u64, 0.0)).collect();
        let seeds = seed_genomes(&[], &[], &table(&sweep), &sweep, None, 6);
        assert_eq!(seeds.len(), 6);
        let mut uniq = seeds.clone();
        uniq.dedup();
        assert_eq!(uniq, seeds);
        assert_eq!(seeds[0], vec![0]);
        assert_eq!(seeds[5], vec![19]);
    }

    #[test]
    fn a_size_limit_seeds_the_lagrangian_plans_at_the_limit_first() {
        // Sizes 0, 10, ..., 190; the predicted KL falls with size.
        let sweep: Vec<SweepPoint> = (0..20u16)
            .map(|i| (vec![i], 10 * i as u64, 1.0 / (1.0 + i as f64)))
            .collect();
        let seeds = seed_genomes(&[], &[], &table(&sweep), &sweep, Some(105), 8);
        assert_eq!(seeds[..LIMIT_SEEDS], [vec![10], vec![9], vec![8], vec![7]]);
        assert!(seeds
            .iter()
            .all(|g| seeds.iter().filter(|h| *h == g).count() == 1));
    }

    #[test]
    fn the_callers_seed_plans_come_first() {
        let sweep: Vec<SweepPoint> = (0..20u16).map(|i| (vec![i], 10 * i as u64, 0.0)).collect();
        let seeds = seed_genomes(&[vec![99]], &[], &table(&sweep), &sweep, Some(105), 8);
        assert_eq!(seeds[0], vec![99]);
        assert_eq!(seeds[1], vec![10]);
    }
}
