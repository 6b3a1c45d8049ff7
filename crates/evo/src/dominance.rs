//! Dominance relations, non-dominated sorting and crowding distance (NSGA-II's ranking).

use crate::Individual;
use std::cmp::Ordering;

/// Pareto dominance for minimisation: `a` is no worse everywhere and better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// Constraint-domination (Deb): a feasible solution beats an infeasible one; of two
/// infeasible ones the lower violation wins; of two feasible ones Pareto dominance decides.
pub fn constraint_dominates(a: &Individual, b: &Individual) -> bool {
    match (a.is_feasible(), b.is_feasible()) {
        (true, false) => true,
        (false, true) => false,
        (false, false) => a.violation < b.violation,
        (true, true) => dominates(&a.objectives, &b.objectives),
    }
}

/// Fast non-dominated sort under constraint-domination. Returns the fronts in order,
/// each front's members in ascending index order.
pub fn non_dominated_sort(pop: &[Individual]) -> Vec<Vec<usize>> {
    let n = pop.len();
    let mut dominated_by_count = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in (i + 1)..n {
            if constraint_dominates(&pop[i], &pop[j]) {
                dominates_list[i].push(j);
                dominated_by_count[j] += 1;
            } else if constraint_dominates(&pop[j], &pop[i]) {
                dominates_list[j].push(i);
                dominated_by_count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by_count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by_count[j] -= 1;
                if dominated_by_count[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(current);
        current = next;
    }
    fronts
}

/// Crowding distance of each member of `front` (same order as `front`). Boundary
/// solutions of every objective get +∞; an objective with zero range contributes 0.
pub fn crowding_distance(pop: &[Individual], front: &[usize]) -> Vec<f64> {
    let k = front.len();
    let mut dist = vec![0.0; k];
    if k == 0 {
        return dist;
    }
    if k <= 2 {
        return vec![f64::INFINITY; k];
    }
    let m = pop[front[0]].objectives.len();
    let mut order: Vec<usize> = (0..k).collect();
    for obj in 0..m {
        let val = |p: usize| pop[front[p]].objectives[obj];
        // Stable sort on (value, position) keeps ties deterministic.
        order.sort_by(|&a, &b| val(a).total_cmp(&val(b)).then(a.cmp(&b)));
        let lo = val(order[0]);
        let hi = val(order[k - 1]);
        dist[order[0]] = f64::INFINITY;
        dist[order[k - 1]] = f64::INFINITY;
        let range = hi - lo;
        if range <= 0.0 || !range.is_finite() {
            continue;
        }
        for w in 1..k - 1 {
            let d = (val(order[w + 1]) - val(order[w - 1])) / range;
            dist[order[w]] += d;
        }
    }
    dist
}

/// Rank (front index) and crowding distance of every member of `pop`.
pub fn rank_and_crowding(pop: &[Individual]) -> (Vec<usize>, Vec<f64>) {
    let mut rank = vec![0; pop.len()];
    let mut crowd = vec![0.0; pop.len()];
    for (r, front) in non_dominated_sort(pop).iter().enumerate() {
        let d = crowding_distance(pop, front);
        for (&i, &c) in front.iter().zip(&d) {
            rank[i] = r;
            crowd[i] = c;
        }
    }
    (rank, crowd)
}

/// Orders two individuals by (rank asc, crowding desc); `Equal` when both tie.
pub fn crowded_compare(rank: &[usize], crowd: &[f64], a: usize, b: usize) -> Ordering {
    rank[a]
        .cmp(&rank[b])
        .then_with(|| crowd[b].total_cmp(&crowd[a]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Genome;
    use proptest::prelude::*;

    fn ind(obj: &[f64], v: f64) -> Individual {
        Individual {
            genome: Genome(vec![]),
            objectives: obj.to_vec(),
            violation: v,
            estimated: false,
        }
    }

    #[test]
    fn hand_computed_fronts() {
        // Points: A(1,5) B(2,3) C(4,1) are mutually non-dominated; D(3,4) is dominated by B;
        // E(5,5) by D; F infeasible with small violation; G infeasible with larger violation.
        let pop = vec![
            ind(&[1.0, 5.0], 0.0),
            ind(&[2.0, 3.0], 0.0),
            ind(&[4.0, 1.0], 0.0),
            ind(&[3.0, 4.0], 0.0),
            ind(&[5.0, 5.0], 0.0),
            ind(&[0.0, 0.0], 0.5),
            ind(&[0.0, 0.0], 2.0),
        ];
        let fronts = non_dominated_sort(&pop);
        assert_eq!(
            fronts,
            vec![vec![0, 1, 2], vec![3], vec![4], vec![5], vec![6]]
        );
    }

    #[test]
    fn hand_computed_crowding() {
        // Front sorted by f1: (0,4) (1,2) (2,1) (4,0). Ranges 4 and 4.
        // (1,2): (2-0)/4 + (4-1)/4 = 1.25 ; (2,1): (4-1)/4 + (2-0)/4 = 1.25.
        let pop = vec![
            ind(&[2.0, 1.0], 0.0),
            ind(&[0.0, 4.0], 0.0),
            ind(&[4.0, 0.0], 0.0),
            ind(&[1.0, 2.0], 0.0),
        ];
        let d = crowding_distance(&pop, &[0, 1, 2, 3]);
        assert_eq!(d[0], 1.25);
        assert!(d[1].is_infinite() && d[2].is_infinite());
        assert_eq!(d[3], 1.25);
        // A front with a constant objective contributes nothing for it.
        let pop2 = vec![
            ind(&[0.0, 1.0], 0.0),
            ind(&[1.0, 1.0], 0.0),
            ind(&[3.0, 1.0], 0.0),
        ];
        let d2 = crowding_distance(&pop2, &[0, 1, 2]);
        assert_eq!(d2[1], 1.0);
    }

    #[test]
    fn constraint_domination_rules() {
        let feas = ind(&[9.0, 9.0], 0.0);
        let inf_small = ind(&[0.0, 0.0], 0.1);
        let inf_big = ind(&[0.0, 0.0], 1.0);
        assert!(constraint_dominates(&feas, &inf_small));
        assert!(!constraint_dominates(&inf_small, &feas));
        assert!(constraint_dominates(&inf_small, &inf_big));
        assert!(!constraint_dominates(&inf_big, &inf_small));
        assert!(!constraint_dominates(&feas, &feas));
    }

    proptest! {
        #[test]
        fn no_member_of_a_front_is_dominated_by_a_later_or_same_front(
            pts in prop::collection::vec(
                (prop::collection::vec(0u8..6, 3), prop::sample::select(vec![0.0, 0.0, 0.0, 0.5, 1.0])),
                1..40)
        ) {
            let pop: Vec<Individual> = pts
                .iter()
                .map(|(o, v)| ind(&o.iter().map(|&x| x as f64).collect::<Vec<_>>(), *v))
                .collect();
            let fronts = non_dominated_sort(&pop);
            let total: usize = fronts.iter().map(|f| f.len()).sum();
            prop_assert_eq!(total, pop.len());
            for (k, f) in fronts.iter().enumerate() {
                for &a in f {
                    for later in &fronts[k..] {
                        for &b in later {
                            prop_assert!(!constraint_dominates(&pop[b], &pop[a]));
                        }
                    }
                    // Every member beyond the first front is dominated by someone in the previous one.
                    if k > 0 {
                        prop_assert!(fronts[k - 1].iter().any(|&b| constraint_dominates(&pop[b], &pop[a])));
                    }
                }
            }
        }
    }
}
