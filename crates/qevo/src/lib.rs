//! qevo: hardware-aware evolutionary mixed-precision quantization of transformer models.
//!
//! The pipeline (DESIGN.md), one home per stage:
//!
//! ```text
//! model::load ─► Model ──► eval::Reference (FP distributions) ─► eval::Evaluator (scores plans)
//!                  │                                                     │
//!  hw::Profile ─► plan::price (bytes, latency, energy, memory, limits) ◄┘
//!                  │
//! search::run = prepare ─► seed ─► evolve (evo::Nsga2) ─► finalize ─► compare
//!                  │
//!                  ▼
//! SearchOutcome ─► report (tables, SVG, HTML) · export (GGUF, tensor types, packed safetensors)
//! ```
//!
//! - `model`: loaders (HF directories, GGUF), architectures, tokenizers, the forward pass.
//! - `quant`: weight formats (generic int, GGML), activation fake-quant, the weight cache.
//! - `eval`: token windows, reference distributions, metrics, the one embed → blocks →
//!   head loop (`eval::Pass`), the evaluator and its prefix cache.
//! - `plan`: a plan's choices, its bytes (one function), its FP size, its price on a target.
//! - `hw`: profiles, workloads, the roofline cost model, host measurement.
//! - `search`: the staged search (`search/{prepare,seed,evolve,finalize,compare}.rs`),
//!   `QuantProblem`, the search space, baselines, output files.
//! - `tune`: quantization-aware training of a chosen plan (KL distillation of its block
//!   scales and norms, projected onto what the format stores).
//! - `report`, `export`: what the user reads and what runtimes load.
//!
//! The library never prints and never exits; errors are typed (`Error`).

pub mod assets;
pub mod calib;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod hw;
pub mod mem;
pub mod model;
pub mod plan;
pub mod quant;
pub mod recipe;
pub mod report;
pub mod search;
pub mod tune;

pub use error::{Error, Result};
pub use model::{Model, ModelSummary, Role, TensorInfo};
