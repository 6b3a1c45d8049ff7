//! The fitness memo: every score the search made, by genome, at full fidelity and at
//! screening fidelity, with the counters behind it, the evolution's batch log (the
//! Optuna journal's trials) and the surrogate's checks. Each score is a pure function
//! of its genome, so the memo, sorted by genome, is what a checkpoint keeps.

use super::problem::Scored;
use std::collections::HashMap;

/// Counters behind the fitness cache and multi-fidelity screening.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitnessStats {
    pub lookups: u64,
    pub hits: u64,
    pub full_evaluations: u64,
    pub screenings: u64,
    pub screened_out: u64,
    /// Offspring the surrogate screened out before any forward pass.
    #[serde(default)]
    pub surrogate_rejected: u64,
}

/// One plan the evolution had scored, in the order it was first scored: a trial of the
/// Optuna journal. `scored` is the full score when the plan got one (in the evolution or
/// when the front was re-scored), else its screening score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluated {
    pub generation: u64,
    pub genome: Vec<u16>,
    pub scored: Scored,
}

/// What the search has scored (`QuantProblem` holds it behind a mutex).
#[derive(Default)]
pub(super) struct Memo {
    pub(super) full: HashMap<Vec<u16>, Scored>,
    pub(super) screened: HashMap<Vec<u16>, Scored>,
    pub(super) stats: FitnessStats,
    /// Every genome of the evolution's batches with its score, in batch order.
    pub(super) log: Vec<Evaluated>,
    /// (surrogate's fitted KL, full KL) for plans fully scored after the fit was made:
    /// the surrogate's accuracy on plans it did not train on.
    pub(super) checks: Vec<(f64, f64)>,
}

pub(super) fn sorted(m: &HashMap<Vec<u16>, Scored>) -> Vec<(Vec<u16>, Scored)> {
    let mut v: Vec<_> = m.iter().map(|(g, s)| (g.clone(), s.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Memo {
    /// Whether `g` has a score at either fidelity.
    pub(super) fn contains(&self, g: &[u16]) -> bool {
        self.full.contains_key(g) || self.screened.contains_key(g)
    }

    /// Logs a batch of the evolution; surrogate-rejected plans were never scored, so
    /// they are no trials.
    pub(super) fn log_batch(&mut self, generation: u64, genomes: &[&[u16]], scored: &[Scored]) {
        for (g, s) in genomes.iter().zip(scored).filter(|(_, s)| !s.predicted) {
            self.log.push(Evaluated {
                generation,
                genome: g.to_vec(),
                scored: s.clone(),
            });
        }
    }

    /// Every plan the evolution scored, in the order first scored, each with its full
    /// score where one was made (the Optuna journal's trials).
    pub(super) fn evaluations(&self) -> Vec<Evaluated> {
        let mut seen: HashMap<&[u16], usize> = HashMap::new();
        let mut out: Vec<Evaluated> = Vec::new();
        for e in &self.log {
            match seen.get(e.genome.as_slice()) {
                Some(&i) if e.scored.full => out[i].scored = e.scored.clone(),
                Some(_) => {}
                None => {
                    seen.insert(&e.genome, out.len());
                    out.push(e.clone());
                }
            }
        }
        for e in out.iter_mut().filter(|e| !e.scored.full) {
            if let Some(s) = self.full.get(&e.genome) {
                e.scored = s.clone();
            }
        }
        out
    }
}
