//! Survival: NSGA-II's elitist truncation by front, then crowding distance.

use super::Rng;
use crate::dominance::{crowding_distance, non_dominated_sort};
use crate::Individual;

/// Chooses which members of the merged parent+offspring pool survive.
pub trait Survival {
    /// Indices (into `merged`) of at most `n` survivors.
    fn survive(&self, merged: &[Individual], n: usize, rng: &mut Rng) -> Vec<usize>;
}

/// Whole fronts (constraint-domination ranking) while they fit; the front that does not
/// fit is cut by descending crowding distance (ties by index, so it is deterministic).
#[derive(Clone, Copy, Debug, Default)]
pub struct RankAndCrowding;

impl Survival for RankAndCrowding {
    fn survive(&self, merged: &[Individual], n: usize, _rng: &mut Rng) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        for front in non_dominated_sort(merged) {
            if out.len() + front.len() <= n {
                out.extend_from_slice(&front);
                if out.len() == n {
                    break;
                }
                continue;
            }
            let d = crowding_distance(merged, &front);
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(a.cmp(&b)));
            let need = n - out.len();
            out.extend(order[..need].iter().map(|&k| front[k]));
            break;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Genome;
    use rand::SeedableRng;

    #[test]
    fn keeps_first_front_and_cuts_by_crowding() {
        let ind = |a: f64, b: f64| Individual {
            genome: Genome(vec![]),
            objectives: vec![a, b],
            violation: 0.0,
            estimated: false,
        };
        // Front 1: (0,4) (1,3) (1.5,2.5) (4,0); front 2: (5,5).
        let merged = vec![
            ind(5.0, 5.0),
            ind(1.0, 3.0),
            ind(0.0, 4.0),
            ind(1.5, 2.5),
            ind(4.0, 0.0),
        ];
        let mut rng = Rng::seed_from_u64(0);
        let s = RankAndCrowding.survive(&merged, 3, &mut rng);
        // Extremes (2, 4) are infinite; (1.5,2.5) is less crowded than (1,3).
        assert_eq!(s, vec![2, 4, 3]);
        let all = RankAndCrowding.survive(&merged, 5, &mut rng);
        assert_eq!(all.len(), 5);
        assert_eq!(all[4], 0);
    }
}
