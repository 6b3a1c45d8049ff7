//! Benchmark problems with known answers (discretised ZDT1–3, a bi-objective 0/1
//! knapsack small enough to enumerate, a trivial hash-scored problem) used by the tests
//! and benchmarks to check the engine against exact fronts.

use crate::{BoxError, EvalContext, Evaluation, GeneSpace, Genome, Problem};
use rand::{Rng as _, SeedableRng};

/// Which ZDT function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZdtKind {
    Zdt1,
    Zdt2,
    Zdt3,
}

/// ZDT1/2/3 with every variable discretised to `levels` equally spaced values in [0, 1]
/// (level l ↦ l / (levels − 1)). The optimum keeps g = 1 (variables 2..n at level 0),
/// which the grid contains, so the true discrete front is h(x₁) over the grid of x₁,
/// filtered to its non-dominated points (ZDT3's front is disconnected).
#[derive(Clone, Debug)]
pub struct Zdt {
    pub kind: ZdtKind,
    space: GeneSpace,
    levels: u16,
}

impl Zdt {
    pub fn new(kind: ZdtKind, n_vars: usize, levels: u16) -> Self {
        let space = GeneSpace::uniform(n_vars.max(2), levels.max(2)).expect("n ≥ 2, levels ≥ 2");
        Zdt {
            kind,
            space,
            levels: levels.max(2),
        }
    }

    fn x(&self, l: u16) -> f64 {
        l as f64 / (self.levels - 1) as f64
    }

    fn h(&self, f1: f64, g: f64) -> f64 {
        let r = f1 / g;
        match self.kind {
            ZdtKind::Zdt1 => 1.0 - r.sqrt(),
            ZdtKind::Zdt2 => 1.0 - r * r,
            ZdtKind::Zdt3 => 1.0 - r.sqrt() - r * (10.0 * std::f64::consts::PI * f1).sin(),
        }
    }

    /// Objectives of one genome.
    pub fn objectives(&self, g: &Genome) -> Vec<f64> {
        let f1 = self.x(g[0]);
        let n = g.len();
        let tail: f64 = g[1..].iter().map(|&l| self.x(l)).sum();
        let gv = 1.0 + 9.0 * tail / (n - 1) as f64;
        vec![f1, gv * self.h(f1, gv)]
    }

    /// The exact front of the discretised problem.
    pub fn true_front(&self) -> Vec<Vec<f64>> {
        let pts: Vec<Vec<f64>> = (0..self.levels)
            .map(|l| {
                let f1 = self.x(l);
                vec![f1, self.h(f1, 1.0)]
            })
            .collect();
        non_dominated(&pts)
    }

    /// Reference point used for hypervolume figures: (1.1, 1.1).
    pub fn reference(&self) -> Vec<f64> {
        vec![1.1, 1.1]
    }
}

impl Problem for Zdt {
    fn space(&self) -> &GeneSpace {
        &self.space
    }
    fn n_objectives(&self) -> usize {
        2
    }
    fn evaluate(&self, batch: &[Genome], _ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        Ok(batch
            .iter()
            .map(|g| Evaluation::feasible(self.objectives(g)))
            .collect())
    }
}

/// Bi-objective 0/1 knapsack (Zitzler–Thiele style): two knapsacks, each item has a
/// profit and weight per knapsack drawn uniformly from 10..=100 by a seeded ChaCha,
/// capacities are half the total weights. Objectives: −profit₁, −profit₂ (minimised).
/// Violation: Σ relative capacity excess. Small `n_items` (≤ 24) can be enumerated.
#[derive(Clone, Debug)]
pub struct Knapsack {
    space: GeneSpace,
    pub profits: [Vec<u64>; 2],
    pub weights: [Vec<u64>; 2],
    pub capacities: [u64; 2],
}

impl Knapsack {
    pub fn new(n_items: usize, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut draw =
            || -> Vec<u64> { (0..n_items).map(|_| rng.random_range(10..=100)).collect() };
        let profits = [draw(), draw()];
        let weights = [draw(), draw()];
        let capacities = [
            weights[0].iter().sum::<u64>() / 2,
            weights[1].iter().sum::<u64>() / 2,
        ];
        Knapsack {
            space: GeneSpace::uniform(n_items.max(1), 2).expect("n ≥ 1"),
            profits,
            weights,
            capacities,
        }
    }

    fn score(&self, take: impl Iterator<Item = usize> + Clone) -> ([u64; 2], [u64; 2]) {
        let sum = |v: &Vec<u64>| take.clone().map(|i| v[i]).sum::<u64>();
        (
            [sum(&self.profits[0]), sum(&self.profits[1])],
            [sum(&self.weights[0]), sum(&self.weights[1])],
        )
    }

    fn violation(&self, w: [u64; 2]) -> f64 {
        (0..2)
            .map(|k| {
                w[k].saturating_sub(self.capacities[k]) as f64 / self.capacities[k].max(1) as f64
            })
            .sum()
    }

    /// The exact Pareto front (objective vectors), by enumerating all 2ⁿ subsets.
    pub fn true_front(&self) -> Vec<Vec<f64>> {
        let n = self.space.n_genes();
        assert!(n <= 24, "enumeration is for small instances");
        let mut feasible: Vec<(u64, u64)> = Vec::new();
        // Gray-code walk: one item flips per step.
        let (mut p, mut w) = ([0u64; 2], [0u64; 2]);
        let mut inside = vec![false; n];
        feasible.push((0, 0));
        for step in 1u64..(1u64 << n) {
            let i = step.trailing_zeros() as usize;
            inside[i] = !inside[i];
            for k in 0..2 {
                if inside[i] {
                    p[k] += self.profits[k][i];
                    w[k] += self.weights[k][i];
                } else {
                    p[k] -= self.profits[k][i];
                    w[k] -= self.weights[k][i];
                }
            }
            if w[0] <= self.capacities[0] && w[1] <= self.capacities[1] {
                feasible.push((p[0], p[1]));
            }
        }
        feasible.sort_unstable_by(|a, b| b.cmp(a));
        let mut front = Vec::new();
        let mut best2 = None;
        for (p1, p2) in feasible {
            if best2.is_none_or(|b| p2 > b) {
                front.push(vec![-(p1 as f64), -(p2 as f64)]);
                best2 = Some(p2);
            }
        }
        front
    }

    /// Reference point for hypervolume: the empty knapsack, (0, 0).
    pub fn reference(&self) -> Vec<f64> {
        vec![0.0, 0.0]
    }
}

impl Problem for Knapsack {
    fn space(&self) -> &GeneSpace {
        &self.space
    }
    fn n_objectives(&self) -> usize {
        2
    }
    fn evaluate(&self, batch: &[Genome], _ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        Ok(batch
            .iter()
            .map(|g| {
                let (p, w) = self.score(
                    g.iter()
                        .enumerate()
                        .filter(|(_, &l)| l == 1)
                        .map(|(i, _)| i),
                );
                Evaluation {
                    objectives: vec![-(p[0] as f64), -(p[1] as f64)],
                    violation: self.violation(w),
                    estimated: false,
                }
            })
            .collect())
    }
}

/// A problem whose objectives are hash-derived numbers in [0, 1): costs almost nothing to
/// evaluate, so a run measures the engine's own overhead.
#[derive(Clone, Debug)]
pub struct HashProblem {
    space: GeneSpace,
    m: usize,
}

impl HashProblem {
    pub fn new(n_genes: usize, levels: u16, n_objectives: usize) -> Self {
        HashProblem {
            space: GeneSpace::uniform(n_genes.max(1), levels.max(1)).expect("valid"),
            m: n_objectives,
        }
    }
}

impl Problem for HashProblem {
    fn space(&self) -> &GeneSpace {
        &self.space
    }
    fn n_objectives(&self) -> usize {
        self.m
    }
    fn evaluate(&self, batch: &[Genome], _ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        Ok(batch
            .iter()
            .map(|g| {
                // FNV-1a then splitmix: stable across platforms and runs.
                let mut h: u64 = 0xcbf29ce484222325;
                for &l in g.iter() {
                    h = (h ^ l as u64).wrapping_mul(0x100000001b3);
                }
                let objectives = (0..self.m)
                    .map(|k| {
                        let mut z = h.wrapping_add((k as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15));
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
                        z ^= z >> 31;
                        (z >> 11) as f64 / (1u64 << 53) as f64
                    })
                    .collect();
                Evaluation::feasible(objectives)
            })
            .collect())
    }
}

/// The non-dominated subset of `pts` (duplicates kept once), in input order.
pub fn non_dominated(pts: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        let beaten = pts
            .iter()
            .enumerate()
            .any(|(j, q)| crate::dominance::dominates(q, p) || (j < i && q == p));
        if !beaten {
            out.push(p.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zdt_true_fronts_have_expected_shape() {
        let z1 = Zdt::new(ZdtKind::Zdt1, 10, 21);
        assert_eq!(z1.true_front().len(), 21);
        let z3 = Zdt::new(ZdtKind::Zdt3, 10, 101);
        let f3 = z3.true_front();
        assert!(
            f3.len() < 101 && f3.len() > 10,
            "ZDT3 front is disconnected: {}",
            f3.len()
        );
        // The optimum genome hits the front point exactly.
        let mut g = Genome(vec![0; 10]);
        g[0] = 20;
        assert_eq!(z1.objectives(&g), vec![1.0, 0.0]);
    }

    #[test]
    fn knapsack_front_matches_brute_force_on_tiny_instance() {
        let k = Knapsack::new(10, 1);
        let front = k.true_front();
        // Brute force via the Problem interface.
        let all: Vec<Genome> = (0..1u32 << 10)
            .map(|m| Genome((0..10).map(|i| ((m >> i) & 1) as u16).collect()))
            .collect();
        let ctx = EvalContext {
            generation: 0,
            archive: &[],
        };
        let evals = k.evaluate(&all, &ctx).unwrap();
        let feas: Vec<Vec<f64>> = evals
            .into_iter()
            .filter(|e| e.violation == 0.0)
            .map(|e| e.objectives)
            .collect();
        let mut expect = non_dominated(&feas);
        let mut got = front.clone();
        let key = |v: &Vec<f64>| (v[0] as i64, v[1] as i64);
        expect.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, expect);
    }
}
