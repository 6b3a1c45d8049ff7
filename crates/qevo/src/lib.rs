//! qevo: hardware-aware evolutionary mixed-precision quantization of transformer models.
//!
//! The pipeline (DESIGN.md), one home per stage:
//!
//! ```text
//! model::load ─► Model ──► calib (windows, ranges, imatrix) ─► eval::Evaluator (scores plans)
//!                  │                                                     │
//!  hw::Profile ─► plan::price (bytes, latency, energy, memory, limits) ◄┘
//!                  │
//! search::run = prepare ─► seed ─► evolve (evo::Nsga2) ─► finalize ─► compare
//!                  │
//!                  ▼
//! SearchOutcome ─► report (tables, SVG, HTML) · export (GGUF, tensor types, packed safetensors)
//! ```
//!
//! Modules, lowest first; each imports only those before it (`scripts/check_imports.py`):
//!
//! - `quant`: weight formats as codecs (generic int, GGML, output rounding); no model.
//! - `model`: loaders (HF directories, GGUF reader and writer), architectures, tokenizers,
//!   the forward pass.
//! - `hw`: profiles, workloads, the roofline cost model, host measurement.
//! - `plan`: a plan's choices, its bytes (one function), its FP size, its price on a target,
//!   its GGML types (`resolve_ggml`).
//! - `calib`: everything that runs the model over calibration windows: token windows,
//!   activation ranges, the importance matrix, output rounding's input moments, host
//!   calibration.
//! - `eval`: reference distributions, metrics, the one embed → blocks → head loop
//!   (`eval::Pass`), the weight cache, the evaluator and its prefix cache, `score_plan`.
//! - `tune`: quantization-aware training of a chosen plan (KL distillation of its block
//!   scales and norms, projected onto what the format stores).
//! - `export`: what runtimes load (GGUF, tensor types, compressed-tensors, packed
//!   safetensors).
//! - `search`: the staged search (`search/{prepare,seed,evolve,finalize,compare}.rs`),
//!   `QuantProblem`, the search space, baselines, output files.
//! - `report`, `recipe`: what the user reads; the one-command GGUF.
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
