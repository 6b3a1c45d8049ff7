//! The search's time budget as deadlines: one split, decided here, of the whole budget
//! (counted from the search's start, so the sensitivity table and the uniform plans
//! spend it too) among the stages.
//!
//! In order: the sensitivity table measures until `SENSITIVITY_SHARE` of it (a scaled
//! table predicts what it had no time for); the uniform plans are scored until
//! `UNIFORM_SHARE` more (the ones nearest the size limit first); the evolution gets
//! whatever is left before `finalize`'s `FINALIZE_SHARE`, the refine stage's
//! `RefineConfig::time_share` and the baselines' `BASELINE_SHARE` at the end. Each
//! stage ends at its deadline or sooner; one that overran its share shortens the next,
//! so the search as a whole ends near its budget.

use super::refine;
use super::SearchConfig;
use std::time::{Duration, Instant};

/// Share of the budget kept for re-scoring the archive at full fidelity and on the
/// held-out and validation windows (on SmolLM2, 60 plans took a fifth of a 12-minute
/// search when nothing bounded them).
pub const FINALIZE_SHARE: f64 = 0.1;

/// Share of the budget the sensitivity table may measure for; a scaled table cut there
/// predicts the rest (`sensitivity`).
pub const SENSITIVITY_SHARE: f64 = 0.3;

/// Share after the sensitivity table's for the uniform plans' full scores. On a large
/// vocabulary each is a long forward (Gemma-3-270M: 17 of them took 288 s of a 958 s
/// search), and only those near the size limit seed the search there.
pub const UNIFORM_SHARE: f64 = 0.1;

/// Share at the end for the baselines (the Lagrangian plans at the uniform plans'
/// sizes and at the limit, with their held-out scores): 130 s of Gemma-3's search when
/// they ran after the budget's end.
pub const BASELINE_SHARE: f64 = 0.05;

/// When each stage must end; all None without a time budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadlines {
    pub sensitivity: Option<Instant>,
    pub uniform: Option<Instant>,
    pub evolution: Option<Instant>,
    pub finalize: Option<Instant>,
    pub refine: Option<Instant>,
    /// The baselines', which is the search's end.
    pub end: Option<Instant>,
}

impl Deadlines {
    /// The deadlines of a search started at `t0`.
    pub fn new(cfg: &SearchConfig, t0: Instant) -> Deadlines {
        let Some(b) = cfg.evolution.time_budget else {
            return Deadlines::default();
        };
        // `parse_duration` bounds a budget far below where an Instant overflows.
        let at = |share: f64| {
            Some(
                t0.checked_add(b.mul_f64(share.clamp(0.0, 1.0)))
                    .unwrap_or(t0),
            )
        };
        let refine_share = match refine::runs(cfg) {
            true => cfg.refine.time_share.clamp(0.0, 1.0),
            false => 0.0,
        };
        let baselines = match cfg.baselines.lagrangian {
            true => BASELINE_SHARE,
            false => 0.0,
        };
        let refine_end = 1.0 - baselines;
        let finalize_end = refine_end - refine_share;
        Deadlines {
            sensitivity: at(SENSITIVITY_SHARE),
            uniform: at(SENSITIVITY_SHARE + UNIFORM_SHARE),
            evolution: at(finalize_end - FINALIZE_SHARE),
            finalize: at(finalize_end),
            refine: at(refine_end),
            end: at(1.0),
        }
    }

    /// Time left until `at` (zero once passed); None without a budget.
    pub fn left(at: Option<Instant>) -> Option<Duration> {
        at.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether `at` has passed.
    pub fn passed(at: Option<Instant>) -> bool {
        at.is_some_and(|d| Instant::now() >= d)
    }
}

/// `f` over `items` in order, a batch of one item per thread a round, until `deadline`
/// passes; the first batch always runs, so some results always come back (kept small:
/// past the deadline it is pure overrun, and on Gemma-3 a batch of four uniform plans
/// took 400 s). `f` takes a whole batch, to run it in parallel in the order it prefers.
pub fn batches_until<T: Clone, R>(
    items: &[T],
    deadline: Instant,
    mut f: impl FnMut(Vec<T>) -> crate::error::Result<Vec<R>>,
) -> crate::error::Result<Vec<R>> {
    let batch = rayon::current_num_threads().max(1);
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch) {
        if !out.is_empty() && Deadlines::passed(Some(deadline)) {
            break;
        }
        out.extend(f(chunk.to_vec())?);
    }
    Ok(out)
}

/// `f` of each item, tagged with its index and returned in index order: every one in
/// the given order, or, with a deadline, batches in the given order (the caller's
/// priority) until it passes, the first always (`batches_until`).
pub fn each_until<T: Clone + Sync, R: Send>(
    items: &[(usize, T)],
    deadline: Option<Instant>,
    f: impl Fn(&T) -> crate::error::Result<R> + Sync,
) -> crate::error::Result<Vec<(usize, R)>> {
    use rayon::prelude::*;
    let one = |(i, t): &(usize, T)| Ok((*i, f(t)?));
    let mut out = match deadline {
        None => items
            .iter()
            .map(one)
            .collect::<crate::error::Result<Vec<_>>>()?,
        Some(d) => batches_until(items, d, |batch| batch.par_iter().map(one).collect())?,
    };
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Settings;

    fn embedded() -> crate::model::Model {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        crate::model::Model::load(dir).unwrap()
    }

    fn cfg(budget: &str, size_limit: bool) -> SearchConfig {
        let m = embedded();
        Settings {
            time_budget: Some(budget.into()),
            max_size_mb: size_limit.then_some(1.0),
            ..Settings::default()
        }
        .resolve(&m)
        .unwrap()
    }

    #[test]
    fn the_budget_counts_from_the_search_start_and_keeps_later_stages_their_shares() {
        let t0 = Instant::now();
        let d = Deadlines::new(&cfg("100s", true), t0);
        let at = |i: Option<Instant>| (i.unwrap() - t0).as_secs_f64();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(near(at(d.end), 100.0));
        assert!(near(at(d.sensitivity), 100.0 * SENSITIVITY_SHARE));
        assert!(near(
            at(d.uniform),
            100.0 * (SENSITIVITY_SHARE + UNIFORM_SHARE)
        ));
        let refine = 100.0 * crate::search::defaults::REFINE_TIME_SHARE;
        let baselines = 100.0 * BASELINE_SHARE;
        assert!(near(at(d.refine), 100.0 - baselines));
        assert!(near(at(d.finalize), 100.0 - baselines - refine));
        let evolution = 100.0 - baselines - refine - 100.0 * FINALIZE_SHARE;
        assert!(near(at(d.evolution), evolution));
        assert!(at(d.uniform) < at(d.evolution));
        // Without a size limit the refine stage does not run: no share for it.
        let d = Deadlines::new(&cfg("100s", false), t0);
        assert!(near(at(d.finalize), 100.0 - baselines));
    }

    #[test]
    fn no_budget_no_deadlines() {
        let c = Settings::default().resolve(&embedded()).unwrap();
        let d = Deadlines::new(&c, Instant::now());
        assert!(d.evolution.is_none() && d.finalize.is_none() && d.end.is_none());
        assert!(d.sensitivity.is_none() && d.uniform.is_none() && d.refine.is_none());
        assert_eq!(Deadlines::left(d.end), None);
        assert!(!Deadlines::passed(d.end));
    }

    #[test]
    fn batches_stop_after_the_deadline_but_the_first_always_runs() {
        let items: Vec<u32> = (0..100).collect();
        let all = batches_until(&items, Instant::now() + Duration::from_secs(3600), |b| {
            Ok(b)
        })
        .unwrap();
        assert_eq!(all, items);
        let first = batches_until(&items, Instant::now(), Ok).unwrap();
        assert_eq!(first, items[..first.len()]);
        assert!(!first.is_empty() && first.len() < items.len());
    }
}
