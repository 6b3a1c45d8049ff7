//! The `Problem` trait: what a search optimises, evaluated in whole batches.

use crate::{GeneSpace, Genome};
use serde::{Deserialize, Serialize};

/// The boxed error a problem may return from `evaluate`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One genome's scores: objectives (all minimised) and a constraint violation
/// (0 = feasible, larger = worse). `estimated`: the objectives come from a cheap
/// estimate (a screen or a surrogate), not the problem's real evaluation, so the
/// solution takes part in selection and survival but never enters the archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub objectives: Vec<f64>,
    pub violation: f64,
    #[serde(default)]
    pub estimated: bool,
}

impl Evaluation {
    /// A feasible evaluation.
    pub fn feasible(objectives: Vec<f64>) -> Self {
        Evaluation {
            objectives,
            violation: 0.0,
            estimated: false,
        }
    }
}

/// An evaluated genome, as kept in populations and the archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Individual {
    pub genome: Genome,
    pub objectives: Vec<f64>,
    pub violation: f64,
    /// Scored by an estimate only (`Evaluation::estimated`): never archived.
    #[serde(default)]
    pub estimated: bool,
}

impl Individual {
    /// Violation 0.
    pub fn is_feasible(&self) -> bool {
        self.violation <= 0.0
    }
}

/// What the engine tells the problem alongside a batch.
#[derive(Debug)]
pub struct EvalContext<'a> {
    /// Generation the batch belongs to (0 = initial population).
    pub generation: u64,
    /// The archive before this batch: every non-dominated feasible solution found so
    /// far. A problem may screen candidates cheaply and fully evaluate only those that
    /// could enter this front (multi-fidelity).
    pub archive: &'a [Individual],
}

/// Counters a problem reports about its own caches; recorded in the history as-is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemStats {
    pub cache_hits: u64,
    pub cache_lookups: u64,
    /// Full-fidelity evaluations the problem actually performed.
    pub full_evaluations: u64,
    /// Cheap screening evaluations (multi-fidelity).
    pub screenings: u64,
}

/// A multi-objective problem over categorical genomes.
///
/// `evaluate` receives whole batches and decides its own parallelism; it must return
/// one evaluation per genome, in batch order, with `n_objectives()` finite objectives.
/// Its results must depend only on the genomes (not on thread count or timing), or the
/// engine's determinism guarantee does not hold.
pub trait Problem {
    fn space(&self) -> &GeneSpace;
    fn n_objectives(&self) -> usize;
    fn evaluate(&self, batch: &[Genome], ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError>;
    /// Cache counters; a problem without caches keeps the default.
    fn stats(&self) -> ProblemStats {
        ProblemStats::default()
    }
    /// State the problem carries from generation to generation (memos, counters, its own
    /// records), saved in every checkpoint so that a resumed run reports exactly what an
    /// uninterrupted one does. A stateless problem keeps the default.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Puts back what `save_state` returned, before a resumed run's first generation.
    fn restore_state(&self, _state: &serde_json::Value) -> Result<(), BoxError> {
        Ok(())
    }
}
