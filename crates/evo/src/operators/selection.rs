//! Parent selection: binary tournament by constraint-domination, rank, crowding.

use super::Rng;
use crate::dominance::constraint_dominates;
use crate::Individual;
use rand::Rng as _;

/// A population with its NSGA-II rank and crowding distance per member.
#[derive(Clone, Copy, Debug)]
pub struct Ranked<'a> {
    pub pop: &'a [Individual],
    pub rank: &'a [usize],
    pub crowding: &'a [f64],
}

/// Picks the index of one parent.
pub trait Selection {
    fn select(&self, ranked: &Ranked, rng: &mut Rng) -> usize;
}

/// Binary tournament: two distinct random members; the constraint-dominating one wins,
/// else the lower rank, else the larger crowding distance, else a coin flip.
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryTournament;

impl Selection for BinaryTournament {
    fn select(&self, r: &Ranked, rng: &mut Rng) -> usize {
        let n = r.pop.len();
        if n < 2 {
            return 0;
        }
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        if constraint_dominates(&r.pop[a], &r.pop[b]) {
            return a;
        }
        if constraint_dominates(&r.pop[b], &r.pop[a]) {
            return b;
        }
        match r.rank[a].cmp(&r.rank[b]) {
            std::cmp::Ordering::Less => return a,
            std::cmp::Ordering::Greater => return b,
            std::cmp::Ordering::Equal => {}
        }
        if r.crowding[a] > r.crowding[b] {
            a
        } else if r.crowding[b] > r.crowding[a] {
            b
        } else if rng.random_bool(0.5) {
            a
        } else {
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Genome;
    use rand::SeedableRng;

    #[test]
    fn tournament_prefers_feasible_then_rank_then_crowding() {
        let ind = |o: f64, v: f64| Individual {
            genome: Genome(vec![]),
            objectives: vec![o],
            violation: v,
            estimated: false,
        };
        let pop = vec![ind(0.0, 1.0), ind(5.0, 0.0)];
        let r = Ranked {
            pop: &pop,
            rank: &[1, 0],
            crowding: &[0.0, 0.0],
        };
        let mut rng = Rng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(BinaryTournament.select(&r, &mut rng), 1);
        }
        let pop = vec![ind(1.0, 0.0), ind(1.0, 0.0)];
        let r = Ranked {
            pop: &pop,
            rank: &[0, 0],
            crowding: &[0.5, 2.0],
        };
        for _ in 0..20 {
            assert_eq!(BinaryTournament.select(&r, &mut rng), 1);
        }
    }
}
