//! `evo`: a generic, deterministic multi-objective evolutionary engine (NSGA-II) for
//! genomes of categorical genes, with an archive of every non-dominated solution found,
//! exact hypervolume, and checkpoints from which a resumed run continues bit-exactly.
//! It knows nothing about quantization.
//!
//! # Shape (pymoo's Problem / Algorithm / Result split)
//!
//! * **Problem** — implement [`Problem`]: [`Problem::space`] returns the [`GeneSpace`]
//!   (per gene the number of ordered levels, plus an optional weight per gene),
//!   [`Problem::n_objectives`], and [`Problem::evaluate`] scores a whole batch of
//!   [`Genome`]s (one `u16` level index per gene) as [`Evaluation`]s (objectives, all
//!   minimised, plus a constraint `violation`, 0 = feasible). The problem chooses its
//!   own parallelism. [`EvalContext`] carries the generation and the current archive so
//!   a problem can screen candidates cheaply first (multi-fidelity). [`Problem::stats`]
//!   reports cache counters ([`ProblemStats`]) recorded in the history.
//! * **Algorithm** — [`Nsga2`]: population size, operators as boxed traits
//!   ([`operators`]), seed genomes, [`Termination`], optional hypervolume reference point.
//!   [`Nsga2::run`]`(&problem, seed, `[`RunOptions`]`)` runs it; options give a checkpoint
//!   path (written atomically after every generation), a checkpoint to resume from, and
//!   an observer `FnMut(&GenerationRecord) -> ControlFlow<()>` (`Break` stops cleanly
//!   after the checkpoint is written).
//! * **Result** — [`SearchResult`]: final population, archive (every non-dominated
//!   feasible solution evaluated in the run, with genomes), per-generation history of
//!   [`GenerationRecord`]s, evaluation count, seed, stop reason.
//!
//! # Operators ([`operators`])
//!
//! [`Sampling`](operators::Sampling) (random; uniform plans; caller seeds come first),
//! [`Selection`](operators::Selection) (binary tournament: constraint-domination, rank,
//! crowding), [`Crossover`](operators::Crossover) (gene-wise uniform / one-point /
//! two-point with a probability), [`Mutation`](operators::Mutation) (neighbour-biased
//! per-gene mutation with an adaptive rate — see [`RateRule`](operators::RateRule) —
//! and the budget-preserving [`LevelSwitchMutation`](operators::LevelSwitchMutation)),
//! [`Repair`](operators::Repair), [`Survival`](operators::Survival) (non-dominated
//! sorting + crowding distance under constraint-domination). Offspring identical to a
//! population member or to an earlier offspring of the same generation are redrawn.
//!
//! # Guarantees
//!
//! * One seed drives everything through a ChaCha8 RNG passed to each operator; the
//!   engine itself is single-threaded and never iterates hash containers, so the same
//!   seed yields the bitwise-same history, population and archive whatever the
//!   problem's thread count (provided the problem's scores depend only on genomes).
//! * A checkpoint holds population, archive, RNG state, mutation rate, counters and
//!   history; resuming gives exactly the run that was never interrupted. Problem cache
//!   counters in the history are whatever the problem reports, so they match only if
//!   the problem's caches persist too.
//! * Indicators: [`hypervolume`] (exact, minimisation) and [`igd`].
//!
//! # Example
//!
//! ```
//! use evo::{Nsga2, RunOptions, Termination};
//! use evo::problems::{Zdt, ZdtKind};
//! let problem = Zdt::new(ZdtKind::Zdt1, 8, 16);
//! let algo = Nsga2::new(24)
//!     .with_termination(Termination::generations(10))
//!     .with_reference_point(problem.reference());
//! let result = algo.run(&problem, 42, RunOptions::default()).unwrap();
//! assert_eq!(result.history.len(), 11);
//! assert!(result.history[10].hypervolume.unwrap() >= result.history[0].hypervolume.unwrap());
//! ```

mod archive;
pub mod checkpoint;
pub mod dominance;
mod error;
mod genome;
mod indicators;
mod nsga2;
pub mod operators;
mod problem;
pub mod problems;
mod termination;

pub use archive::Archive;
pub use checkpoint::Checkpoint;
pub use error::EvoError;
pub use genome::{GeneSpace, Genome};
pub use indicators::{hypervolume, igd};
pub use nsga2::{GenerationRecord, Nsga2, Observer, RunOptions, SearchResult};
pub use problem::{BoxError, EvalContext, Evaluation, Individual, Problem, ProblemStats};
pub use termination::{Stall, StopReason, Termination};
