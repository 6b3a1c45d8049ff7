//! Screening: which offspring get a full score. Multi-fidelity rule: every offspring is first scored on the screening windows (a
//! prefix of the calibration windows). If even an optimistic KL (screened KL × (1 −
//! margin)) would be dominated by a member of the current archive on all four
//! objectives, the offspring cannot enter the front and keeps its screened KL; otherwise
//! it gets the full evaluation. Screened and full scores are each pure functions of the
//! genome (memoised in the fitness cache), so the outcome depends only on the genome and
//! the archive, which the checkpoint holds: resumed runs stay exact.
//!
//! Before that, the surrogate (surrogate.rs) screens offspring the memo lacks without a
//! forward pass: if even its optimistic KL would be dominated (or, with a screening
//! tolerance, covered) by the archive, the offspring is never scored; it keeps the
//! surrogate's pessimistic KL, marked `predicted`, and rarely survives. Every score that
//! is not a full one is reported to the engine as an estimate, which the archive refuses.
//! The surrogate is fitted on the memo's full scores in genome order, so it too is
//! restored by resume.
//!
//! This file holds those rules: `Screening` (the margin, the tolerance and the
//! surrogate) and the screened-then-full rounds of `QuantProblem::evaluate_batch`.

use super::executor::Executor;
use super::problem::{QuantProblem, Scored};
use super::surrogate::{Fit, Surrogate, OPTIMISM_SIGMAS};
use crate::error::Result;
use crate::eval::Metrics;
use evo::dominance::dominates;
use std::sync::OnceLock;

/// Whether archive member `a` makes scoring `o` pointless: `a` dominates it, or, with
/// a tolerance, is within a factor `1 + epsilon[i]` of it in every objective i
/// (epsilon-dominance: `o` could improve the front by less than that, so it is not
/// scored).
fn covers(a: &[f64], o: &[f64], epsilon: &[f64; 4]) -> bool {
    match epsilon.iter().any(|&e| e > 0.0) {
        true => a
            .iter()
            .zip(o)
            .zip(epsilon)
            .all(|((x, y), e)| *x <= y * (1.0 + e)),
        false => dominates(a, o),
    }
}

/// How offspring are screened before a full score.
pub(super) struct Screening {
    /// Screening margin (fraction the screened KL may overstate the full KL).
    pub(super) margin: f64,
    /// Screens skip plans the archive epsilon-dominates (`covers`); 0: plain dominance.
    pub(super) epsilon: [f64; 4],
    /// Screens offspring before any forward pass, once the sensitivity table is known.
    surrogate: OnceLock<Surrogate>,
    use_surrogate: bool,
}

impl Screening {
    pub(super) fn new(epsilon: [f64; 4], use_surrogate: bool) -> Self {
        Screening {
            margin: 0.25,
            epsilon,
            surrogate: OnceLock::new(),
            use_surrogate,
        }
    }

    pub(super) fn set_surrogate(&self, s: Surrogate) {
        let _ = self.surrogate.set(s);
    }

    /// The surrogate, when it is on and has been handed its table.
    fn surrogate(&self) -> Option<&Surrogate> {
        self.surrogate.get().filter(|_| self.use_surrogate)
    }

    /// Whether a score with its KL lowered by `margin` is infeasible or covered by the
    /// archive (`covers`).
    fn hopeless_at(&self, s: &Scored, archive: &[Vec<f64>], margin: f64) -> bool {
        let mut optimistic = s.objectives();
        optimistic[0] *= 1.0 - margin;
        s.violation > 0.0
            || archive
                .iter()
                .any(|a| covers(a, &optimistic, &self.epsilon))
    }
}

impl QuantProblem<'_> {
    fn screens(&self, archive: &[Vec<f64>]) -> bool {
        self.caching && self.screen_windows < self.full_windows && !archive.is_empty()
    }

    /// Whether a screened score could not enter the front even if its full KL were
    /// `margin` lower.
    fn hopeless(&self, s: &Scored, archive: &[Vec<f64>]) -> bool {
        self.screening
            .hopeless_at(s, archive, self.screening.margin)
    }

    /// The surrogate's line, fitted on every full score so far in genome order (None
    /// when it is off, not yet given its table, or has too few plans).
    fn surrogate_fit(&self) -> Option<(&Surrogate, Fit)> {
        let sur = self.screening.surrogate()?;
        let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        // Genome order, so the fit does not depend on hash order; only (genome, KL) is
        // read, so nothing is copied.
        let mut full: Vec<(&[u16], f64)> = m
            .full
            .iter()
            .map(|(g, s)| (g.as_slice(), s.metrics.kl))
            .collect();
        full.sort_by(|a, b| a.0.cmp(b.0));
        let fit = sur.fit(full.into_iter())?;
        Some((sur, fit))
    }

    /// The surrogate's verdict on a genome the memo lacks: Some(pessimistic score) when
    /// even its optimistic KL could not enter the front, None when it must be scored.
    fn rejected(
        &self,
        genome: &[u16],
        (sur, fit): (&Surrogate, Fit),
        archive: &[Vec<f64>],
    ) -> Result<Option<Scored>> {
        let Some(x) = sur.feature(genome) else {
            return Ok(None);
        };
        let choices = self.space.tensor_choices(self.evaluator.model, genome);
        let guess = |kl: f64| Metrics {
            kl,
            ppl: 0.0,
            top1: 0.0,
            tokens: 0,
        };
        let optimistic = self.priced(&choices, guess(fit.optimistic(x)), false)?;
        if !self.screening.hopeless_at(&optimistic, archive, 0.0) {
            return Ok(None);
        }
        let mut s = self.priced(&choices, guess(fit.kl(x, OPTIMISM_SIGMAS)), false)?;
        s.predicted = true;
        Ok(Some(s))
    }

    /// Screened-then-full evaluation of a batch against an archive front (objective
    /// vectors), in two rounds on `executor` (None: this machine), after the surrogate
    /// has screened out the offspring that could not enter the front.
    pub(super) fn evaluate_batch(
        &self,
        genomes: &[&[u16]],
        archive: &[Vec<f64>],
        executor: Option<&dyn Executor>,
    ) -> Result<Vec<Scored>> {
        if !self.screens(archive) {
            return self.memoised(genomes, true, executor);
        }
        let fit = self.surrogate_fit();
        let mut out: Vec<Option<Scored>> = vec![None; genomes.len()];
        if let Some(f) = fit {
            for (i, g) in genomes.iter().enumerate() {
                if !self.in_memo(g) {
                    out[i] = self.rejected(g, f, archive)?;
                }
            }
        }
        let rest: Vec<usize> = (0..genomes.len()).filter(|&i| out[i].is_none()).collect();
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .surrogate_rejected += (genomes.len() - rest.len()) as u64;
        let rest_genomes: Vec<&[u16]> = rest.iter().map(|&i| genomes[i]).collect();
        let scored = self.screen_then_full(&rest_genomes, archive, executor, fit)?;
        for (i, s) in rest.into_iter().zip(scored) {
            out[i] = Some(s);
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn in_memo(&self, g: &[u16]) -> bool {
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(g)
    }

    /// Screening scores for `genomes`, then full scores for the promising; plans newly
    /// fully scored check the surrogate's `fit` (made before they were scored).
    fn screen_then_full(
        &self,
        genomes: &[&[u16]],
        archive: &[Vec<f64>],
        executor: Option<&dyn Executor>,
        fit: Option<(&Surrogate, Fit)>,
    ) -> Result<Vec<Scored>> {
        let mut out = self.memoised(genomes, false, executor)?;
        let mut promote = Vec::new();
        for (i, s) in out.iter().enumerate() {
            if s.full {
                continue;
            }
            if self.hopeless(s, archive) {
                let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
                m.stats.screened_out += 1;
            } else {
                promote.push(i);
            }
        }
        let wanted: Vec<&[u16]> = promote.iter().map(|&i| genomes[i]).collect();
        let new: Vec<bool> = {
            let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            wanted.iter().map(|g| !m.full.contains_key(*g)).collect()
        };
        let full = self.memoised(&wanted, true, executor)?;
        if let Some((sur, f)) = fit {
            let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            for ((g, s), _) in wanted.iter().zip(&full).zip(&new).filter(|(_, &n)| n) {
                if let Some(x) = sur.feature(g) {
                    m.checks.push((f.kl(x, 0.0), s.metrics.kl));
                }
            }
        }
        for (i, s) in promote.into_iter().zip(full) {
            out[i] = s;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn covers_is_dominance_without_epsilon_and_a_tolerance_with_it() {
        let a = [1.0, 100.0, 10.0, 10.0];
        // Dominated: covered either way.
        assert!(covers(&a, &[1.5, 100.0, 10.0, 10.0], &[0.0; 4]));
        // Equal vectors do not dominate each other.
        assert!(!covers(&a, &a, &[0.0; 4]));
        // 5% better in KL, same elsewhere: only a 10% KL tolerance skips it.
        let o = [0.95, 100.0, 10.0, 10.0];
        assert!(!covers(&a, &o, &[0.0; 4]));
        assert!(covers(&a, &o, &[0.1, 0.0, 0.0, 0.0]));
        // A tolerance in KL alone does not skip a plan that is smaller.
        assert!(!covers(
            &a,
            &[0.95, 90.0, 10.0, 10.0],
            &[0.1, 0.0, 0.0, 0.0]
        ));
        assert!(covers(
            &a,
            &[0.95, 99.0, 10.0, 10.0],
            &[0.1, 0.02, 0.0, 0.0]
        ));
    }
}
