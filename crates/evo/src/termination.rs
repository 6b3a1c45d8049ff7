//! When a search stops: generations, evaluations, wall time, or hypervolume stall.

use crate::GenerationRecord;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    Generations,
    Evaluations,
    WallTime,
    /// Hypervolume improved by less than the threshold for the stated generations.
    Stall,
    /// The observer returned `ControlFlow::Break`.
    Observer,
}

/// Stopping criteria; the run stops at the first one met (checked after each
/// generation, after its checkpoint is written). With none set the run stops after
/// 100 generations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Termination {
    /// Stop once this many generations of offspring have been produced.
    pub max_generations: Option<u64>,
    /// Stop once this many genomes have been evaluated (initial population included).
    pub max_evaluations: Option<u64>,
    /// Stop once the run's accumulated wall time (across resumes) exceeds this.
    pub max_time: Option<Duration>,
    /// Stop when the archive hypervolume rose by less than `min_improvement` (relative
    /// to its value `generations` generations earlier) over the last `generations`
    /// generations. Needs a reference point.
    pub stall: Option<Stall>,
}

/// Hypervolume stall criterion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    pub generations: u64,
    pub min_improvement: f64,
}

impl Termination {
    /// Stop after `n` generations.
    pub fn generations(n: u64) -> Self {
        Termination {
            max_generations: Some(n),
            ..Self::default()
        }
    }

    /// The first criterion met, given the history so far and the elapsed wall time.
    pub fn check(&self, history: &[GenerationRecord], elapsed: Duration) -> Option<StopReason> {
        let last = history.last()?;
        let none_set = self.max_generations.is_none()
            && self.max_evaluations.is_none()
            && self.max_time.is_none()
            && self.stall.is_none();
        let max_gen = if none_set {
            Some(100)
        } else {
            self.max_generations
        };
        if max_gen.is_some_and(|g| last.generation >= g) {
            return Some(StopReason::Generations);
        }
        if self.max_evaluations.is_some_and(|e| last.evaluations >= e) {
            return Some(StopReason::Evaluations);
        }
        if self.max_time.is_some_and(|t| elapsed >= t) {
            return Some(StopReason::WallTime);
        }
        if let Some(s) = self.stall {
            let w = s.generations as usize;
            if w > 0 && history.len() > w {
                let old = history[history.len() - 1 - w].hypervolume;
                if let (Some(old), Some(new)) = (old, last.hypervolume) {
                    let gain = if old > 0.0 {
                        (new - old) / old
                    } else {
                        new - old
                    };
                    if gain < s.min_improvement {
                        return Some(StopReason::Stall);
                    }
                }
            }
        }
        None
    }
}
