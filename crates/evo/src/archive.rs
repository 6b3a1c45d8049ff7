//! The archive: every non-dominated feasible solution evaluated during a run.

use crate::dominance::dominates;
use crate::Individual;
use serde::{Deserialize, Serialize};

/// Non-dominated feasible solutions seen so far (never an estimated one), in insertion order. A newcomer is
/// rejected when a member weakly dominates it (no worse in every objective, so an
/// objective-space duplicate keeps the first genome found); members it dominates leave.
/// The archive is unbounded: at 2–4 objectives the fronts stay at hundreds of points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Archive {
    members: Vec<Individual>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers one evaluated solution; returns whether it entered.
    pub fn insert(&mut self, ind: &Individual) -> bool {
        if !ind.is_feasible() || ind.estimated {
            return false;
        }
        let weakly_covered = self.members.iter().any(|m| {
            m.objectives
                .iter()
                .zip(&ind.objectives)
                .all(|(a, b)| a <= b)
        });
        if weakly_covered {
            return false;
        }
        self.members
            .retain(|m| !dominates(&ind.objectives, &m.objectives));
        self.members.push(ind.clone());
        true
    }

    /// The members.
    pub fn members(&self) -> &[Individual] {
        &self.members
    }

    /// Objective vectors of the members.
    pub fn objectives(&self) -> Vec<Vec<f64>> {
        self.members.iter().map(|m| m.objectives.clone()).collect()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nothing feasible has been found.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Per-objective minimum over the members (None when empty).
    pub fn best_per_objective(&self) -> Option<Vec<f64>> {
        let first = self.members.first()?;
        let mut best = first.objectives.clone();
        for m in &self.members[1..] {
            for (b, &v) in best.iter_mut().zip(&m.objectives) {
                if v < *b {
                    *b = v;
                }
            }
        }
        Some(best)
    }
}

impl From<Archive> for Vec<Individual> {
    fn from(a: Archive) -> Self {
        a.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Genome;

    fn ind(g: u16, obj: &[f64], v: f64) -> Individual {
        Individual {
            genome: Genome(vec![g]),
            objectives: obj.to_vec(),
            violation: v,
            estimated: false,
        }
    }

    #[test]
    fn keeps_only_non_dominated_feasible() {
        let mut a = Archive::new();
        assert!(a.insert(&ind(0, &[2.0, 2.0], 0.0)));
        assert!(!a.insert(&ind(1, &[0.0, 0.0], 1.0)), "infeasible rejected");
        assert!(!a.insert(&ind(2, &[3.0, 3.0], 0.0)), "dominated rejected");
        assert!(
            !a.insert(&ind(3, &[2.0, 2.0], 0.0)),
            "duplicate objectives rejected"
        );
        assert!(a.insert(&ind(4, &[1.0, 3.0], 0.0)));
        assert!(a.insert(&ind(5, &[1.0, 1.0], 0.0)), "dominates both");
        assert_eq!(a.len(), 1);
        assert_eq!(a.members()[0].genome, Genome(vec![5]));
        assert_eq!(a.best_per_objective(), Some(vec![1.0, 1.0]));
    }

    #[test]
    fn an_estimated_solution_never_enters() {
        let mut a = Archive::new();
        let mut guess = ind(1, &[0.0, 0.0], 0.0);
        guess.estimated = true;
        assert!(!a.insert(&guess), "an estimate entered the archive");
        assert!(a.is_empty());
        assert!(a.insert(&ind(2, &[1.0, 1.0], 0.0)));
        // Even an estimate that would dominate every member stays out.
        assert!(!a.insert(&guess));
        assert_eq!(a.len(), 1);
    }
}
