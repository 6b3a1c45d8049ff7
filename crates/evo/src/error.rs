//! Typed errors of the engine: bad configuration, misbehaving problems, checkpoint I/O.

use std::path::PathBuf;

/// Everything that can go wrong in a search. The engine never panics on bad input; it
/// returns one of these, naming the gene, objective, batch index or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvoError {
    /// The search configuration is unusable (e.g. population size 0).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A genome does not fit the gene space.
    #[error("invalid genome: {0}")]
    Genome(String),
    /// The problem's `evaluate` failed.
    #[error("problem evaluation failed in generation {generation}: {source}")]
    Problem {
        generation: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The problem returned a malformed evaluation.
    #[error("problem returned a bad evaluation in generation {generation}: {what}")]
    BadEvaluation { generation: u64, what: String },
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file could not be parsed.
    #[error("checkpoint {path} is not valid: {source}")]
    CheckpointParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint was written by a different search (seed, space or settings differ).
    #[error("checkpoint {path} does not match this search: {what}")]
    CheckpointMismatch { path: PathBuf, what: String },
}
