//! Variation and selection operators: small swappable traits, each taking the RNG as
//! an argument so that one seeded ChaCha stream drives the whole search.

mod crossover;
mod mutation;
mod sampling;
mod selection;
mod survival;

pub use crossover::{Crossover, CrossoverKind, LayerwiseCrossover};
pub use mutation::{GeneMutation, LevelSwitchMutation, Mutation, MutationFeedback, RateRule};
pub use sampling::{RandomSampling, Sampling, UniformLevelSampling};
pub use selection::{BinaryTournament, Ranked, Selection};
pub use survival::{RankAndCrowding, Survival};

use crate::{GeneSpace, Genome};

/// The one RNG type of the engine: seedable, serialisable, platform-independent.
pub type Rng = rand_chacha::ChaCha8Rng;

/// Makes a varied genome acceptable (e.g. tie genes that must share a level). Applied
/// after sampling and after mutation.
pub trait Repair {
    fn repair(&self, genome: &mut Genome, space: &GeneSpace, rng: &mut Rng);
}

/// Leaves genomes as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRepair;

impl Repair for NoRepair {
    fn repair(&self, _genome: &mut Genome, _space: &GeneSpace, _rng: &mut Rng) {}
}
