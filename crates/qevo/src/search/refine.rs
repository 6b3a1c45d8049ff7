//! Stage 5, `refine`: at a size limit, the evolution's best plans are finished by a
//! greedy local search on measured KL, so the recommended plan fills the budget and is
//! never worse than the Lagrangian plan at the limit.
//!
//! Why: the evolution spreads its evaluations over the whole front, and a plan at the
//! limit usually leaves bytes unspent; the Lagrangian allocation fills them from the
//! sensitivity table alone. Here the start is the best of the recommendation's shortlist
//! and the Lagrangian plan at the limit (`start`): the one with the lowest validation KL
//! among those no worse than the Lagrangian plan on the calibration windows. From it,
//! moves (`moves`: one unit up or down, or a swap that downgrades one unit to pay for
//! another's upgrade) are ranked by the table's predicted gain (moves it predicts to lose
//! included: the KL is not additive), scored for real in batches of `BATCH`; the
//! round's improving moves merged into one (`merge`) and then the best alone that lower
//! the calibration KL are accepted only if it
//! lowers the validation KL too. So every accepted plan is better on both than the start,
//! and the start is no worse than the Lagrangian plan on both. It stops after `PATIENCE`
//! batches without an accepted move, at `max_evaluations`, or when its share of the time
//! budget is spent.
//!
//! Without a time budget it is deterministic: moves are ordered by gain and genome, and
//! every score is a pure function of its genome.

use super::baselines::{lagrangian_at, Sensitivity};
use super::finalize::{entry, validation_of, Finalized};
use super::prepare::Prepared;
use super::problem::{QuantProblem, Scored};
use super::seed::Seeded;
use super::{FrontEntry, SearchConfig};
use crate::error::Result;
use crate::eval::Metrics;
use evo::dominance::dominates;
use std::collections::HashSet;
use std::time::Instant;

/// Candidate moves scored per round (a fixed count, so the result does not depend on
/// the thread count).
pub const BATCH: usize = 8;
/// Improving candidates of a round checked on the validation slice, best first.
pub const ACCEPT_TRIES: usize = 2;
/// Rounds in a row without an accepted move before the search stops.
const PATIENCE: usize = 3;

/// Where the local search started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefineStart {
    /// A plan of the evolved front.
    Evolved,
    /// The Lagrangian plan at the limit.
    Lagrangian,
}

impl RefineStart {
    pub fn as_str(self) -> &'static str {
        match self {
            RefineStart::Evolved => "evolved",
            RefineStart::Lagrangian => "lagrangian",
        }
    }
}

/// Why the local search stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefineStop {
    /// `PATIENCE` rounds of the best-predicted moves without one that improves both
    /// scores, or no move left within the limit.
    NoImprovingMove,
    /// Its share of the time budget was spent.
    TimeShare,
    /// `max_evaluations` moves were scored.
    MoveLimit,
}

impl RefineStop {
    pub fn as_str(self) -> &'static str {
        match self {
            RefineStop::NoImprovingMove => "no improving move",
            RefineStop::TimeShare => "time share spent",
            RefineStop::MoveLimit => "move limit",
        }
    }
}

/// A plan at the size limit, scored on the three texts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitScores {
    pub size_bytes: u64,
    pub kl: f64,
    pub validation_kl: f64,
    pub heldout_kl: f64,
}

/// One gene of an accepted move.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeneChange {
    pub unit: String,
    pub from: String,
    pub to: String,
}

/// An accepted move and the plan it made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefineStep {
    pub changes: Vec<GeneChange>,
    pub size_bytes: u64,
    pub kl: f64,
    pub validation_kl: f64,
}

/// What the stage did: the report's refine rows. No wall time: `report.json` holds this
/// record and is a pure function of the seed and inputs; the stage's seconds are
/// `StageSeconds::refine`, in `run.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefineSummary {
    pub limit_bytes: u64,
    pub start: RefineStart,
    pub start_scores: LimitScores,
    /// The Lagrangian plan at the limit (None when it breaks another limit).
    pub lagrangian: Option<LimitScores>,
    /// The plan refined to: the recommended plan.
    pub chosen: LimitScores,
    pub steps: Vec<RefineStep>,
    /// Moves scored in full, and plans scored on the validation slice.
    pub evaluations: u64,
    pub validations: u64,
    pub stop: RefineStop,
}

/// A plan with its calibration and validation scores.
#[derive(Clone)]
struct Point {
    genome: Vec<u16>,
    scored: Scored,
    validation: Metrics,
}

/// Whether the stage runs: asked for, with a size limit.
pub fn runs(cfg: &SearchConfig) -> bool {
    cfg.refine.enabled && cfg.limits.max_size_bytes().is_some()
}

/// Most moves scored without a time budget: eight per plan of the population.
pub fn max_evaluations(cfg: &SearchConfig) -> u64 {
    8 * cfg.evolution.population as u64
}

/// Runs the stage on `fin` until `deadline` (the front gains the refined plan, which
/// becomes the recommendation); None when it does not run or no plan within the limits
/// exists.
pub fn refine(
    p: &Prepared,
    problem: &QuantProblem,
    seeded: &Seeded,
    fin: &mut Finalized,
    cfg: &SearchConfig,
    deadline: Option<Instant>,
) -> Result<Option<RefineSummary>> {
    let Some(limit) = cfg.limits.max_size_bytes().filter(|_| runs(cfg)) else {
        return Ok(None);
    };
    let lagrangian = lagrangian_point(p, problem, seeded, limit)?;
    let Some((start, from)) = start(fin, lagrangian.as_ref()) else {
        return Ok(None);
    };
    let walk = Walk {
        p,
        problem,
        sens: &seeded.sensitivity,
        limit,
        deadline,
        max_evaluations: max_evaluations(cfg),
    };
    let climbed = walk.climb(start.clone())?;
    let chosen = climbed.point.clone();
    let mut e = entry(p, chosen.genome, chosen.scored, cfg)?;
    e.validation = Some(chosen.validation);
    let scores = |pt: &Point, heldout: f64| LimitScores {
        size_bytes: pt.scored.size_bytes,
        kl: pt.scored.metrics.kl,
        validation_kl: pt.validation.kl,
        heldout_kl: heldout,
    };
    let chosen_scores = scores(&climbed.point, e.heldout.kl);
    let lagrangian = match &lagrangian {
        Some(l) => Some(scores(l, heldout_kl(p, &l.genome)?)),
        None => None,
    };
    let start_scores = scores(&start, heldout_kl(p, &start.genome)?);
    recommend_refined(fin, e);
    Ok(Some(RefineSummary {
        limit_bytes: limit,
        start: from,
        start_scores,
        lagrangian,
        chosen: chosen_scores,
        steps: climbed.steps,
        evaluations: climbed.evaluations,
        validations: climbed.validations,
        stop: climbed.stop,
    }))
}

fn heldout_kl(p: &Prepared, genome: &[u16]) -> Result<f64> {
    let choices = p.space.tensor_choices(p.model, genome);
    Ok(p.evaluator.score_with(&p.heldout, &choices)?.kl)
}

/// The Lagrangian plan at the limit, fully scored, when it meets every limit.
fn lagrangian_point(
    p: &Prepared,
    problem: &QuantProblem,
    seeded: &Seeded,
    limit: u64,
) -> Result<Option<Point>> {
    let Some(genome) = lagrangian_at(&seeded.sensitivity, &seeded.sweep, limit) else {
        return Ok(None);
    };
    let scored = problem.full(&genome)?;
    if scored.violation > 0.0 {
        return Ok(None);
    }
    let validation = validation_of(p, &genome, &scored)?;
    Ok(Some(Point {
        genome,
        scored,
        validation,
    }))
}

/// The start: among the shortlist (front plans with a validation score) and the
/// Lagrangian plan, those no worse than the Lagrangian plan on calibration, the lowest
/// validation KL; ties to the lower calibration KL, then the smaller genome.
fn start(fin: &Finalized, lagrangian: Option<&Point>) -> Option<(Point, RefineStart)> {
    let shortlist = fin.front.iter().filter_map(|f| {
        let validation = f.validation?;
        (f.scored.violation <= 0.0).then(|| Point {
            genome: f.genome.clone(),
            scored: f.scored.clone(),
            validation,
        })
    });
    let lag_kl = lagrangian.map_or(f64::INFINITY, |l| l.scored.metrics.kl);
    shortlist
        .filter(|pt| pt.scored.metrics.kl <= lag_kl)
        .map(|pt| (pt, RefineStart::Evolved))
        .chain(lagrangian.map(|l| (l.clone(), RefineStart::Lagrangian)))
        .min_by(|(a, _), (b, _)| {
            a.validation
                .kl
                .total_cmp(&b.validation.kl)
                .then(a.scored.metrics.kl.total_cmp(&b.scored.metrics.kl))
                .then(a.genome.cmp(&b.genome))
        })
}

/// Puts the refined plan on the front (dropping the plans it dominates) and recommends
/// it. A front plan may dominate it on the calibration windows while losing on the
/// validation slice; it stays, beside the recommended plan.
fn recommend_refined(fin: &mut Finalized, e: FrontEntry) {
    let o = e.scored.objectives();
    match fin.front.iter().position(|f| f.genome == e.genome) {
        Some(i) => fin.front[i].validation = e.validation,
        None => {
            fin.front
                .retain(|f| !dominates(&o, &f.scored.objectives()) || f.genome == e.genome);
            fin.front.push(e.clone());
            fin.front.sort_by(|a, b| {
                (a.scored.size_bytes, &a.genome)
                    .cmp(&(b.scored.size_bytes, &b.genome))
                    .then(a.scored.metrics.kl.total_cmp(&b.scored.metrics.kl))
            });
        }
    }
    fin.recommended = fin.front.iter().position(|f| f.genome == e.genome);
    fin.infeasible_closest = None;
}

/// A move: genes set to new choices, with the table's predicted KL gain and the bytes
/// it adds (negative when it frees bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub changes: Vec<(usize, u16)>,
    pub gain: f64,
    pub bytes: i64,
}

/// Per unit, the choices no other choice beats on both bytes and predicted KL, by
/// bytes ascending (KL then descending).
pub fn frontier(sens: &Sensitivity) -> Vec<Vec<u16>> {
    sens.kl
        .iter()
        .zip(&sens.bytes)
        .map(|(kl, bytes)| {
            let mut order: Vec<usize> = (0..kl.len()).collect();
            order.sort_by(|&a, &b| bytes[a].cmp(&bytes[b]).then(kl[a].total_cmp(&kl[b])));
            let mut out: Vec<u16> = Vec::new();
            let mut best = f64::INFINITY;
            for c in order {
                if kl[c] < best {
                    best = kl[c];
                    out.push(c as u16);
                }
            }
            out
        })
        .collect()
}

/// The moves from `genome` that add at most `headroom` bytes, best predicted gain first
/// (ties by genes, so the order is fixed): every unit to each of its frontier choices,
/// and swaps of one unit a frontier step down with another up to two steps up, where
/// that upgrade alone would not fit. Moves the table predicts to lose are kept, ranked
/// last: the KL is not additive, and at the Lagrangian plan (optimal for the additive
/// estimate at its size) only they can find what a measurement would.
pub fn moves(
    sens: &Sensitivity,
    frontier: &[Vec<u16>],
    genome: &[u16],
    headroom: i64,
) -> Vec<Move> {
    let bytes = |u: usize, c: u16| sens.bytes[u][c as usize] as i64;
    let delta = |u: usize, c: u16| {
        let cur = genome[u];
        (
            sens.kl[u][c as usize] - sens.kl[u][cur as usize],
            bytes(u, c) - bytes(u, cur),
        )
    };
    let mut out = Vec::new();
    for (u, f) in frontier.iter().enumerate() {
        for &c in f.iter().filter(|&&c| c != genome[u]) {
            let (dk, db) = delta(u, c);
            if db <= headroom {
                out.push(Move {
                    changes: vec![(u, c)],
                    gain: -dk,
                    bytes: db,
                });
            }
        }
    }
    let cheaper = |u: usize| {
        let f = &frontier[u];
        f.iter()
            .rev()
            .copied()
            .find(|&c| bytes(u, c) < bytes(u, genome[u]))
    };
    let dearer = |u: usize| -> Vec<u16> {
        let f = &frontier[u];
        let up = f
            .iter()
            .copied()
            .filter(|&c| bytes(u, c) > bytes(u, genome[u]));
        up.take(2).collect()
    };
    let ups: Vec<Vec<u16>> = (0..frontier.len()).map(dearer).collect();
    for a in 0..frontier.len() {
        let Some(d) = cheaper(a) else { continue };
        let (dka, dba) = delta(a, d);
        for (b, list) in ups.iter().enumerate().filter(|(b, _)| *b != a) {
            for &c in list {
                let (dkb, dbb) = delta(b, c);
                if dbb > headroom && dba + dbb <= headroom {
                    let mut changes = vec![(a, d), (b, c)];
                    changes.sort_unstable();
                    out.push(Move {
                        changes,
                        gain: -(dka + dkb),
                        bytes: dba + dbb,
                    });
                }
            }
        }
    }
    out.sort_by(|x, y| y.gain.total_cmp(&x.gain).then(x.changes.cmp(&y.changes)));
    out
}

/// Improving moves as one, best first: each that touches no unit an earlier one did,
/// while their bytes fit `headroom` (bytes add up exactly, KL nearly). Scored once, it
/// goes as far as several rounds would; None when fewer than two merge.
pub fn merge(improving: &[&Move], headroom: i64) -> Option<Move> {
    let mut merged = Move {
        changes: Vec::new(),
        gain: 0.0,
        bytes: 0,
    };
    let mut count = 0;
    for m in improving {
        let clash = m
            .changes
            .iter()
            .any(|(u, _)| merged.changes.iter().any(|(v, _)| u == v));
        if clash || merged.bytes + m.bytes > headroom {
            continue;
        }
        merged.changes.extend(m.changes.iter().copied());
        merged.gain += m.gain;
        merged.bytes += m.bytes;
        count += 1;
    }
    merged.changes.sort_unstable();
    (count >= 2).then_some(merged)
}

/// `genome` with `m` applied.
fn apply(genome: &[u16], m: &Move) -> Vec<u16> {
    let mut g = genome.to_vec();
    for &(u, c) in &m.changes {
        g[u] = c;
    }
    g
}

/// The local search's fixed inputs.
struct Walk<'a> {
    p: &'a Prepared<'a>,
    problem: &'a QuantProblem<'a>,
    sens: &'a Sensitivity,
    limit: u64,
    deadline: Option<Instant>,
    max_evaluations: u64,
}

/// Where the local search ended, and what it took.
struct Climbed {
    point: Point,
    steps: Vec<RefineStep>,
    evaluations: u64,
    validations: u64,
    stop: RefineStop,
}

impl Walk<'_> {
    /// Rounds of `BATCH` untried moves from the current plan until `PATIENCE` rounds
    /// in a row accept none, the moves run out, or a limit on time or moves is hit.
    fn climb(&self, start: Point) -> Result<Climbed> {
        let frontier = frontier(self.sens);
        let mut tried: HashSet<Vec<u16>> = HashSet::from([start.genome.clone()]);
        let mut c = Climbed {
            point: start,
            steps: Vec::new(),
            evaluations: 0,
            validations: 0,
            stop: RefineStop::NoImprovingMove,
        };
        let mut misses = 0;
        while misses < PATIENCE {
            if super::clock::Deadlines::passed(self.deadline) {
                c.stop = RefineStop::TimeShare;
                break;
            }
            let room = self.max_evaluations.saturating_sub(c.evaluations) as usize;
            if room == 0 {
                c.stop = RefineStop::MoveLimit;
                break;
            }
            let batch = self.next_batch(&frontier, &c.point, &mut tried, room);
            if batch.is_empty() {
                break;
            }
            c.evaluations += batch.len() as u64;
            misses = match self.round(&batch, &mut c)? {
                true => 0,
                false => misses + 1,
            };
        }
        Ok(c)
    }

    /// The best-predicted moves from `cur` not scored before, at most `BATCH` and `room`.
    fn next_batch(
        &self,
        frontier: &[Vec<u16>],
        cur: &Point,
        tried: &mut HashSet<Vec<u16>>,
        room: usize,
    ) -> Vec<(Move, Vec<u16>)> {
        let headroom = self.limit as i64 - cur.scored.size_bytes as i64;
        moves(self.sens, frontier, &cur.genome, headroom)
            .into_iter()
            .filter_map(|m| {
                let g = apply(&cur.genome, &m);
                tried.insert(g.clone()).then_some((m, g))
            })
            .take(BATCH.min(room))
            .collect()
    }

    /// Scores a batch in full; the improving moves merged (`merge`), when that scores
    /// below the best alone, and then the best plans within the limits that lower the
    /// calibration KL are checked on the validation slice, and the first that lowers the
    /// validation KL too becomes the current plan. Whether one did.
    fn round(&self, batch: &[(Move, Vec<u16>)], c: &mut Climbed) -> Result<bool> {
        let genomes: Vec<&[u16]> = batch.iter().map(|(_, g)| g.as_slice()).collect();
        let scored = self.problem.full_batch(&genomes)?;
        let cur_kl = c.point.scored.metrics.kl;
        let mut better: Vec<usize> = (0..batch.len())
            .filter(|&i| scored[i].violation <= 0.0 && scored[i].metrics.kl < cur_kl)
            .collect();
        better.sort_by(|&a, &b| {
            let (x, y) = (&scored[a].metrics.kl, &scored[b].metrics.kl);
            x.total_cmp(y).then(batch[a].1.cmp(&batch[b].1))
        });
        let headroom = self.limit as i64 - c.point.scored.size_bytes as i64;
        let improving: Vec<&Move> = better.iter().map(|&i| &batch[i].0).collect();
        if let Some(m) = merge(&improving, headroom) {
            let g = apply(&c.point.genome, &m);
            let s = self.problem.full(&g)?;
            c.evaluations += 1;
            let best_single = scored[better[0]].metrics.kl;
            if s.violation <= 0.0 && s.metrics.kl < best_single && self.accept(c, &m, &g, &s)? {
                return Ok(true);
            }
        }
        for &i in better.iter().take(ACCEPT_TRIES) {
            let (m, g) = &batch[i];
            if self.accept(c, m, g, &scored[i])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks `g` (move `m` from the current plan, scored `s`) on the validation slice;
    /// it becomes the current plan when its validation KL is lower. Whether it did.
    fn accept(&self, c: &mut Climbed, m: &Move, g: &[u16], s: &Scored) -> Result<bool> {
        let v = validation_of(self.p, g, s)?;
        c.validations += 1;
        if v.kl >= c.point.validation.kl {
            return Ok(false);
        }
        c.steps.push(self.step(&c.point.genome, m, s, &v));
        c.point = Point {
            genome: g.to_vec(),
            scored: s.clone(),
            validation: v,
        };
        Ok(true)
    }

    /// The record of move `m` from `genome`, named by unit and choice.
    fn step(&self, genome: &[u16], m: &Move, s: &Scored, v: &Metrics) -> RefineStep {
        let space = &self.p.space;
        let label = |u: usize, c: u16| {
            let ch = &space.choices[u][c as usize];
            match ch.act_bits {
                16 => ch.format.name(),
                a => format!("{} a{a}", ch.format.name()),
            }
        };
        RefineStep {
            changes: m
                .changes
                .iter()
                .map(|&(u, c)| GeneChange {
                    unit: space.units[u].name.clone(),
                    from: label(u, genome[u]),
                    to: label(u, c),
                })
                .collect(),
            size_bytes: s.size_bytes,
            kl: s.metrics.kl,
            validation_kl: v.kl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Sensitivity {
        // Unit 0 is sensitive, unit 1 is not; choice 1 of unit 1 is dominated by 2.
        Sensitivity {
            kl: vec![vec![0.5, 0.1, 0.0], vec![0.05, 0.06, 0.01]],
            bytes: vec![vec![100, 200, 400], vec![100, 300, 200]],
            windows: 1,
            measured: vec![vec![true; 3]; 2],
        }
    }

    #[test]
    fn frontier_drops_choices_beaten_on_bytes_and_kl() {
        assert_eq!(frontier(&table()), vec![vec![0, 1, 2], vec![0, 2]]);
    }

    #[test]
    fn moves_fill_the_headroom_and_swap_when_an_upgrade_alone_does_not_fit() {
        let s = table();
        let f = frontier(&s);
        // From [0, 2] with 100 bytes to spend: unit 0 up one step (gain 0.4) first.
        let m = moves(&s, &f, &[0, 2], 100);
        assert_eq!(m[0].changes, vec![(0, 1)]);
        assert!((m[0].gain - 0.4).abs() < 1e-12);
        assert!(m.iter().all(|m| m.bytes <= 100));
        assert!(m.windows(2).all(|w| w[0].gain >= w[1].gain));
        // No headroom: a swap first — unit 1 down pays for unit 0 up.
        let m = moves(&s, &f, &[0, 2], 0);
        assert_eq!(m[0].changes, vec![(0, 1), (1, 0)]);
        assert_eq!(m[0].bytes, 0);
        assert!((m[0].gain - 0.36).abs() < 1e-12);
        assert!(m.iter().all(|m| m.bytes <= 0));
        // Nothing predicted to help: the least predicted losses are still offered.
        let m = moves(&s, &f, &[2, 2], 1000);
        assert!(!m.is_empty() && m.iter().all(|m| m.gain <= 0.0));
    }

    #[test]
    fn merging_takes_the_best_moves_on_distinct_units_that_fit_together() {
        let mv = |changes: Vec<(usize, u16)>, gain: f64, bytes: i64| Move {
            changes,
            gain,
            bytes,
        };
        let a = mv(vec![(3, 1)], 0.3, 60);
        let b = mv(vec![(3, 2)], 0.2, 10); // unit 3 again: skipped
        let c = mv(vec![(1, 0), (5, 2)], 0.1, 30);
        let d = mv(vec![(7, 1)], 0.05, 20); // past the headroom once a and c are in
        let m = merge(&[&a, &b, &c, &d], 100).unwrap();
        assert_eq!(m.changes, vec![(1, 0), (3, 1), (5, 2)]);
        assert_eq!(m.bytes, 90);
        assert!((m.gain - 0.4).abs() < 1e-12);
        // One move alone is no merge.
        assert_eq!(merge(&[&a, &b], 100), None);
        assert_eq!(merge(&[], 100), None);
    }
}
