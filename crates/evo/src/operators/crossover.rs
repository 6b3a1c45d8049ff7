//! Layer-wise crossover: genes are exchanged whole (uniform, one-point, two-point).

use super::Rng;
use crate::Genome;
use rand::Rng as _;

/// Produces two children from two parents.
pub trait Crossover {
    fn crossover(&self, a: &Genome, b: &Genome, rng: &mut Rng) -> (Genome, Genome);
}

/// How genes are exchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossoverKind {
    /// Each gene swapped with probability 1/2.
    Uniform,
    /// Genes after one random cut are swapped.
    OnePoint,
    /// Genes between two random cuts are swapped.
    TwoPoint,
}

/// Gene-wise crossover applied with `probability`; otherwise the children are copies
/// of the parents. Use probability 0 for fixed-budget searches driven by
/// [`LevelSwitchMutation`](super::LevelSwitchMutation), since exchanging genes does not
/// preserve the budget.
#[derive(Clone, Copy, Debug)]
pub struct LayerwiseCrossover {
    pub kind: CrossoverKind,
    pub probability: f64,
}

impl LayerwiseCrossover {
    pub fn new(kind: CrossoverKind, probability: f64) -> Self {
        LayerwiseCrossover { kind, probability }
    }
}

impl Default for LayerwiseCrossover {
    fn default() -> Self {
        LayerwiseCrossover::new(CrossoverKind::Uniform, 0.9)
    }
}

impl Crossover for LayerwiseCrossover {
    fn crossover(&self, a: &Genome, b: &Genome, rng: &mut Rng) -> (Genome, Genome) {
        let mut c = a.clone();
        let mut d = b.clone();
        let n = a.len().min(b.len());
        if n < 2 || !rng.random_bool(self.probability.clamp(0.0, 1.0)) {
            return (c, d);
        }
        let swap = |c: &mut Genome, d: &mut Genome, range: std::ops::Range<usize>| {
            for i in range {
                std::mem::swap(&mut c[i], &mut d[i]);
            }
        };
        match self.kind {
            CrossoverKind::Uniform => {
                for i in 0..n {
                    if rng.random_bool(0.5) {
                        std::mem::swap(&mut c[i], &mut d[i]);
                    }
                }
            }
            CrossoverKind::OnePoint => {
                let cut = rng.random_range(1..n);
                swap(&mut c, &mut d, cut..n);
            }
            CrossoverKind::TwoPoint => {
                let x = rng.random_range(1..n);
                let y = rng.random_range(1..n);
                let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
                swap(&mut c, &mut d, lo..hi);
            }
        }
        (c, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn children_take_each_gene_from_one_parent_and_conserve_genes() {
        let a = Genome(vec![0; 12]);
        let b = Genome(vec![1; 12]);
        let mut rng = Rng::seed_from_u64(3);
        for kind in [
            CrossoverKind::Uniform,
            CrossoverKind::OnePoint,
            CrossoverKind::TwoPoint,
        ] {
            let x = LayerwiseCrossover::new(kind, 1.0);
            for _ in 0..50 {
                let (c, d) = x.crossover(&a, &b, &mut rng);
                for i in 0..12 {
                    assert_eq!(c[i] + d[i], 1, "{kind:?}: gene {i} lost");
                }
                if kind == CrossoverKind::OnePoint {
                    // Exactly one switch point from a's genes to b's.
                    let switches = c.windows(2).filter(|w| w[0] != w[1]).count();
                    assert_eq!(switches, 1);
                }
            }
        }
        let never = LayerwiseCrossover::new(CrossoverKind::Uniform, 0.0);
        assert_eq!(never.crossover(&a, &b, &mut rng), (a.clone(), b.clone()));
    }
}
