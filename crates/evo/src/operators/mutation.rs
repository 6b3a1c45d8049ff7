//! Mutation: per-gene neighbour-biased mutation with an adaptive rate, and the
//! budget-preserving level switch (EvoPress-style) for fixed-size searches.

use super::Rng;
use crate::{GeneSpace, Genome};
use rand::Rng as _;

/// What the engine reports to the mutation after each generation, for rate adaptation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MutationFeedback {
    /// The generation just completed (1 = first generation of offspring).
    pub generation: u64,
    /// Offspring evaluated this generation.
    pub offspring: usize,
    /// Offspring that survived into the next population.
    pub survived: usize,
    /// Offspring that entered the archive.
    pub archived: usize,
}

/// Changes one genome in place. The engine keeps the mutation rate in its own
/// (checkpointed) state and passes it in, so operators stay immutable and a resumed run
/// continues with exactly the rate it stopped with.
pub trait Mutation {
    /// The rate of generation 1.
    fn initial_rate(&self, space: &GeneSpace) -> f64;
    /// Mutates `genome`, whose levels are all allowed, leaving them allowed.
    fn mutate(&self, genome: &mut Genome, space: &GeneSpace, rate: f64, rng: &mut Rng);
    /// The rate of the next generation; the default keeps it.
    fn next_rate(&self, rate: f64, _feedback: &MutationFeedback, _space: &GeneSpace) -> f64 {
        rate
    }
}

/// How [`GeneMutation`] adapts its per-gene rate between generations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateRule {
    /// The rate never changes.
    Fixed,
    /// Success-based (a generational 1/5th rule): with `s` the fraction of offspring that
    /// survived into the next population, `rate ← rate · exp(eta · (s − target))`,
    /// clamped to the mutation's `[min_rate, max_rate]`. Offspring that keep surviving
    /// mean the search is still moving, so it explores more; once few survive, the rate
    /// falls toward fine local steps.
    SuccessBased { target: f64, eta: f64 },
    /// Geometric decay from the initial rate to `initial · final_factor` over
    /// `generations` generations, then constant.
    Decay { final_factor: f64, generations: u64 },
}

/// Per-gene mutation: each gene mutates with probability `rate`; a mutating gene moves
/// to a neighbouring level (±1, either direction when both exist) with probability
/// `neighbour_probability`, otherwise to a uniformly random different level.
#[derive(Clone, Copy, Debug)]
pub struct GeneMutation {
    pub neighbour_probability: f64,
    /// Expected mutated genes per genome at the start: initial rate = this / n_genes.
    pub initial_genes: f64,
    pub rule: RateRule,
    /// Rate bounds, as expected mutated genes per genome (divided by n_genes), and at
    /// most 1/2 per gene.
    pub min_genes: f64,
    pub max_genes: f64,
}

impl Default for GeneMutation {
    fn default() -> Self {
        GeneMutation {
            neighbour_probability: 0.9,
            initial_genes: 1.0,
            rule: RateRule::SuccessBased {
                target: 0.2,
                eta: 1.0,
            },
            min_genes: 0.5,
            max_genes: 8.0,
        }
    }
}

impl GeneMutation {
    fn bounds(&self, space: &GeneSpace) -> (f64, f64) {
        let n = space.n_genes() as f64;
        let hi = (self.max_genes / n).min(0.5);
        let lo = (self.min_genes / n).min(hi);
        (lo, hi)
    }
}

impl Mutation for GeneMutation {
    fn initial_rate(&self, space: &GeneSpace) -> f64 {
        let (lo, hi) = self.bounds(space);
        (self.initial_genes / space.n_genes() as f64).clamp(lo, hi)
    }

    fn mutate(&self, genome: &mut Genome, space: &GeneSpace, rate: f64, rng: &mut Rng) {
        let rate = rate.clamp(0.0, 1.0);
        for (g, &n) in genome.iter_mut().zip(space.levels()) {
            if n < 2 || !rng.random_bool(rate) {
                continue;
            }
            let cur = *g;
            if rng.random_bool(self.neighbour_probability.clamp(0.0, 1.0)) {
                *g = if cur == 0 {
                    1
                } else if cur + 1 == n || rng.random_bool(0.5) {
                    cur - 1
                } else {
                    cur + 1
                };
            } else {
                let r = rng.random_range(0..n - 1);
                *g = if r >= cur { r + 1 } else { r };
            }
        }
    }

    fn next_rate(&self, rate: f64, fb: &MutationFeedback, space: &GeneSpace) -> f64 {
        let (lo, hi) = self.bounds(space);
        match self.rule {
            RateRule::Fixed => rate,
            RateRule::SuccessBased { target, eta } => {
                if fb.offspring == 0 {
                    return rate;
                }
                let s = fb.survived as f64 / fb.offspring as f64;
                (rate * (eta * (s - target)).exp()).clamp(lo, hi)
            }
            RateRule::Decay {
                final_factor,
                generations,
            } => {
                if generations == 0 || fb.generation > generations {
                    return rate;
                }
                (rate * final_factor.powf(1.0 / generations as f64)).clamp(lo, hi)
            }
        }
    }
}

/// Budget-preserving level switch (as in EvoPress): `switches` times, one gene moves up
/// one level and another gene of the same weight moves down one level, so
/// Σ weight·level ([`GeneSpace::budget`]) is unchanged exactly. Pairs are drawn by
/// choosing the rising gene uniformly and the falling gene uniformly within its weight
/// class; when no pair is possible the genome is left as it is.
#[derive(Clone, Copy, Debug)]
pub struct LevelSwitchMutation {
    pub switches: usize,
}

impl Default for LevelSwitchMutation {
    fn default() -> Self {
        LevelSwitchMutation { switches: 1 }
    }
}

impl Mutation for LevelSwitchMutation {
    fn initial_rate(&self, _space: &GeneSpace) -> f64 {
        0.0
    }

    fn mutate(&self, genome: &mut Genome, space: &GeneSpace, _rate: f64, rng: &mut Rng) {
        let n = space.n_genes();
        let levels = space.levels();
        for _ in 0..self.switches {
            // Bounded retries keep this total even when no pair exists.
            for _ in 0..4 * n {
                let up = rng.random_range(0..n);
                if genome[up] + 1 >= levels[up] {
                    continue;
                }
                let class = &space.weight_classes()[space.class_of(up)];
                if class.len() < 2 {
                    continue;
                }
                let down = class[rng.random_range(0..class.len())];
                if down == up || genome[down] == 0 {
                    continue;
                }
                genome[up] += 1;
                genome[down] -= 1;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::Rng;
    use crate::operators::{RandomSampling, Sampling};
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn gene_mutation_keeps_levels_allowed(
            levels in prop::collection::vec(1u16..6, 1..30), seed in any::<u64>(), rate in 0.0f64..1.0
        ) {
            let space = GeneSpace::new(levels).unwrap();
            let mut rng = Rng::seed_from_u64(seed);
            let m = GeneMutation::default();
            for _ in 0..20 {
                let mut g = RandomSampling.sample(&space, &mut rng);
                m.mutate(&mut g, &space, rate, &mut rng);
                prop_assert!(space.check(&g).is_ok());
            }
        }

        #[test]
        fn level_switch_preserves_budget_exactly(
            genes in prop::collection::vec((1u16..6, 1u64..4), 2..40), seed in any::<u64>(), switches in 1usize..5
        ) {
            let (levels, weights): (Vec<u16>, Vec<u64>) = genes.into_iter().unzip();
            let space = GeneSpace::with_weights(levels, weights).unwrap();
            let mut rng = Rng::seed_from_u64(seed);
            let m = LevelSwitchMutation { switches };
            for _ in 0..20 {
                let g0 = RandomSampling.sample(&space, &mut rng);
                let mut g = g0.clone();
                m.mutate(&mut g, &space, 0.0, &mut rng);
                prop_assert!(space.check(&g).is_ok());
                prop_assert_eq!(space.budget(&g), space.budget(&g0));
                // Per weight class the level sum is kept too, and genes move by at most `switches`.
                for class in space.weight_classes() {
                    let s0: u32 = class.iter().map(|&i| g0[i] as u32).sum();
                    let s1: u32 = class.iter().map(|&i| g[i] as u32).sum();
                    prop_assert_eq!(s0, s1);
                }
            }
        }
    }

    #[test]
    fn level_switch_changes_genome_when_a_pair_exists() {
        let space = GeneSpace::uniform(10, 4).unwrap();
        let mut rng = Rng::seed_from_u64(9);
        let g0 = Genome(vec![1; 10]);
        let mut changed = 0;
        for _ in 0..100 {
            let mut g = g0.clone();
            LevelSwitchMutation::default().mutate(&mut g, &space, 0.0, &mut rng);
            if g != g0 {
                changed += 1;
                let diff: Vec<i32> = g
                    .iter()
                    .zip(g0.iter())
                    .map(|(&a, &b)| a as i32 - b as i32)
                    .filter(|&d| d != 0)
                    .collect();
                let mut sorted = diff.clone();
                sorted.sort();
                assert_eq!(sorted, vec![-1, 1]);
            }
        }
        assert_eq!(changed, 100);
    }

    #[test]
    fn gene_mutation_prefers_neighbouring_levels() {
        let space = GeneSpace::uniform(1, 16).unwrap();
        let m = GeneMutation {
            neighbour_probability: 0.9,
            ..GeneMutation::default()
        };
        let mut rng = Rng::seed_from_u64(5);
        let (mut near, mut total) = (0, 0);
        for _ in 0..2000 {
            let mut g = Genome(vec![8]);
            m.mutate(&mut g, &space, 1.0, &mut rng);
            assert_ne!(g[0], 8, "a mutating gene always changes level");
            total += 1;
            if g[0].abs_diff(8) == 1 {
                near += 1;
            }
        }
        // 0.9 neighbour moves plus the 2/15 of random moves that land next door.
        let frac = near as f64 / total as f64;
        assert!((0.88..0.95).contains(&frac), "neighbour fraction {frac}");
    }

    #[test]
    fn adaptive_rate_rules_move_as_documented() {
        let space = GeneSpace::uniform(100, 4).unwrap();
        let m = GeneMutation::default();
        let r0 = m.initial_rate(&space);
        assert_eq!(r0, 0.01);
        let fb = |survived| MutationFeedback {
            generation: 1,
            offspring: 100,
            survived,
            archived: 0,
        };
        assert!(m.next_rate(r0, &fb(50), &space) > r0);
        assert!(m.next_rate(r0, &fb(5), &space) < r0);
        assert_eq!(m.next_rate(r0, &fb(20), &space), r0);
        // Bounds hold after many failures / successes.
        let mut r = r0;
        for _ in 0..100 {
            r = m.next_rate(r, &fb(0), &space);
        }
        assert_eq!(r, 0.005);
        for _ in 0..100 {
            r = m.next_rate(r, &fb(100), &space);
        }
        assert_eq!(r, 0.08);
        let d = GeneMutation {
            rule: RateRule::Decay {
                final_factor: 0.25,
                generations: 2,
            },
            min_genes: 0.0,
            ..GeneMutation::default()
        };
        let mut r = d.initial_rate(&space);
        for g in 1..=5 {
            r = d.next_rate(
                r,
                &MutationFeedback {
                    generation: g,
                    ..fb(0)
                },
                &space,
            );
        }
        assert!((r - 0.0025).abs() < 1e-15);
    }
}
