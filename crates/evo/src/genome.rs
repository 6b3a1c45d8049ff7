//! Genomes of categorical genes and the description of the space they live in.

use crate::EvoError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One level index per gene. Levels are ordered (e.g. low → high precision), so
/// "neighbouring level" means index ± 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Genome(pub Vec<u16>);

impl Genome {
    /// Number of genes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True for a genome without genes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The level indices.
    pub fn levels(&self) -> &[u16] {
        &self.0
    }
}

impl From<Vec<u16>> for Genome {
    fn from(v: Vec<u16>) -> Self {
        Genome(v)
    }
}

impl std::ops::Deref for Genome {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        &self.0
    }
}

impl std::ops::DerefMut for Genome {
    fn deref_mut(&mut self) -> &mut [u16] {
        &mut self.0
    }
}

/// The genome description: for every gene its number of allowed levels (ordered), and
/// a weight (e.g. parameter count) that the budget-preserving level-switch mutation uses
/// to pair genes: it only trades levels between genes of equal weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneSpace {
    levels: Vec<u16>,
    weights: Vec<u64>,
    /// Genes grouped by weight, ascending weight, genes ascending inside a class.
    classes: Vec<Vec<usize>>,
    class_of: Vec<usize>,
}

impl GeneSpace {
    /// A space where gene `i` takes levels `0..levels[i]`; all weights are 1.
    pub fn new(levels: Vec<u16>) -> Result<Self, EvoError> {
        let weights = vec![1; levels.len()];
        Self::with_weights(levels, weights)
    }

    /// A space with one weight per gene.
    pub fn with_weights(levels: Vec<u16>, weights: Vec<u64>) -> Result<Self, EvoError> {
        if levels.is_empty() {
            return Err(EvoError::Config("gene space has no genes".into()));
        }
        if weights.len() != levels.len() {
            return Err(EvoError::Config(format!(
                "gene space has {} genes but {} weights",
                levels.len(),
                weights.len()
            )));
        }
        if let Some(i) = levels.iter().position(|&l| l == 0) {
            return Err(EvoError::Config(format!("gene {i} has no allowed levels")));
        }
        let mut by_weight: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, &w) in weights.iter().enumerate() {
            by_weight.entry(w).or_default().push(i);
        }
        let classes: Vec<Vec<usize>> = by_weight.into_values().collect();
        let mut class_of = vec![0; levels.len()];
        for (c, genes) in classes.iter().enumerate() {
            for &g in genes {
                class_of[g] = c;
            }
        }
        Ok(GeneSpace {
            levels,
            weights,
            classes,
            class_of,
        })
    }

    /// A space of `n` genes with `levels` levels each.
    pub fn uniform(n: usize, levels: u16) -> Result<Self, EvoError> {
        Self::new(vec![levels; n])
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.levels.len()
    }
    /// Allowed levels per gene.
    pub fn levels(&self) -> &[u16] {
        &self.levels
    }
    /// Weight per gene.
    pub fn weights(&self) -> &[u64] {
        &self.weights
    }
    /// Genes grouped by equal weight.
    pub fn weight_classes(&self) -> &[Vec<usize>] {
        &self.classes
    }
    /// Index into [`weight_classes`](Self::weight_classes) of gene `g`.
    pub fn class_of(&self, g: usize) -> usize {
        self.class_of[g]
    }

    /// Σ weight·level: the quantity the level-switch mutation keeps constant.
    pub fn budget(&self, genome: &Genome) -> u128 {
        genome
            .iter()
            .zip(&self.weights)
            .map(|(&l, &w)| l as u128 * w as u128)
            .sum()
    }

    /// Checks that `genome` has one allowed level per gene.
    pub fn check(&self, genome: &Genome) -> Result<(), EvoError> {
        if genome.len() != self.levels.len() {
            return Err(EvoError::Genome(format!(
                "genome has {} genes, space has {}",
                genome.len(),
                self.levels.len()
            )));
        }
        for (i, (&l, &n)) in genome.iter().zip(&self.levels).enumerate() {
            if l >= n {
                return Err(EvoError::Genome(format!(
                    "gene {i} has level {l} but only {n} levels are allowed"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_classes_group_equal_weights() {
        let s = GeneSpace::with_weights(vec![3, 3, 3, 3], vec![10, 5, 10, 7]).unwrap();
        assert_eq!(s.weight_classes(), &[vec![1], vec![3], vec![0, 2]]);
        assert_eq!(s.class_of(2), 2);
        assert_eq!(s.budget(&Genome(vec![1, 2, 0, 1])), 10 + 10 + 7);
    }

    #[test]
    fn check_rejects_out_of_range_levels_and_wrong_length() {
        let s = GeneSpace::uniform(3, 4).unwrap();
        assert!(s.check(&Genome(vec![0, 3, 2])).is_ok());
        assert!(s.check(&Genome(vec![0, 4, 2])).is_err());
        assert!(s.check(&Genome(vec![0, 1])).is_err());
        assert!(GeneSpace::new(vec![2, 0]).is_err());
        assert!(GeneSpace::with_weights(vec![2, 2], vec![1]).is_err());
    }
}
