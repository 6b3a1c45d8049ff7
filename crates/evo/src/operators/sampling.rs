//! Initial-population sampling (caller-supplied seed genomes are handled by the algorithm).

use super::Rng;
use crate::{GeneSpace, Genome};
use rand::Rng as _;

/// Draws one genome of the initial population; the algorithm redraws duplicates.
pub trait Sampling {
    fn sample(&self, space: &GeneSpace, rng: &mut Rng) -> Genome;
}

/// Every gene uniformly at random among its levels.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomSampling;

impl Sampling for RandomSampling {
    fn sample(&self, space: &GeneSpace, rng: &mut Rng) -> Genome {
        Genome(
            space
                .levels()
                .iter()
                .map(|&n| rng.random_range(0..n))
                .collect(),
        )
    }
}

/// A "uniform plan": one random fraction of the level range applied to every gene
/// (scaled to each gene's level count), so the population starts spread along the
/// size axis rather than clustered around its middle.
#[derive(Clone, Copy, Debug, Default)]
pub struct UniformLevelSampling;

impl Sampling for UniformLevelSampling {
    fn sample(&self, space: &GeneSpace, rng: &mut Rng) -> Genome {
        let t: f64 = rng.random();
        Genome(
            space
                .levels()
                .iter()
                .map(|&n| ((t * n as f64) as u16).min(n - 1))
                .collect(),
        )
    }
}
