//! What a search will cost before it runs, from a model's `config.json` alone (no
//! weights): how many evaluations its stages make, and how long one takes on the machine
//! that evaluates, described by a hardware profile (`qevo profile-host` measures this one).
//!
//! Evaluations, by stage of `search::run` (see seed.rs, problem.rs, finalize.rs,
//! compare.rs), without caches:
//! - sensitivity table: one screening evaluation per measured (unit, choice) cell (all
//!   of them, or the probes of a scaled table: `search::sensitivity`);
//! - uniform baselines: one full evaluation per choice of the first unit;
//! - evolution: `population` initial plans, then `population` offspring per generation,
//!   each screened first and scored fully when promising (at most all of them);
//! - finalize and compare: the archive re-scored (at most `population` plans), their
//!   held-out scores, and one Lagrangian plan per uniform size; the recommendation's
//!   shortlist scored on the validation slice;
//! - refine (at a size limit): at most `refine::max_evaluations` moves in full, and the
//!   validation scores of those it checks.
//!
//! The fitness memo and the prefix cache only lower these counts; screening turns full
//! evaluations into screened ones.
//!
//! Time of one evaluation: the forward pass over its windows, priced by the roofline
//! cost model (`hw::cost`) for f32 weights (what the evaluator multiplies by), one window
//! of `seq_len` tokens at a time, times the windows. The KL and quantizing work on top
//! is small by design (`benches/forward.rs` measures the evaluator against a plain forward).
//!
//! Only the shape keys are read, so models the forward pass cannot load yet (Llama 3's
//! rope scaling) are priced too.

use super::memory::MemoryShape;
use super::sensitivity::{measured_cells, table_scales};
use super::space::SearchSpace;
use super::SearchConfig;
use crate::error::{Error, Result};
use crate::hw::{cost, LinearCounts, ModelCounts, Profile, Workload};
use crate::model::config::{ArchKind, HfConfig};
use crate::model::{Role, TensorInfo};
use crate::plan::{linear_counts, FP_CHOICE};
use std::path::Path;

/// The most layers a config may declare (published models have at most a few hundred).
const MAX_LAYERS: usize = 10_000;

/// The shape of a Llama-family decoder, as its config.json gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigShape {
    pub kind: ArchKind,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub tie_embeddings: bool,
    /// Bytes per weight as the checkpoint stores them (`torch_dtype`: 4 for float32,
    /// else 2).
    pub dtype_bytes: u64,
}

impl ConfigShape {
    /// Reads `path` (a config.json, or the directory holding one).
    pub fn read(path: &Path) -> Result<ConfigShape> {
        let file = match path.is_dir() {
            true => path.join("config.json"),
            false => path.to_path_buf(),
        };
        let c = HfConfig::read(&file)?;
        let kind = c.arch_kind()?;
        if !matches!(
            kind,
            ArchKind::Llama | ArchKind::Mistral | ArchKind::Qwen2 | ArchKind::Qwen3
        ) {
            return Err(c.err(
                "architectures",
                format!(
                    "plan-cost reads Llama, Mistral and Qwen2/3 shapes, not {}",
                    kind.as_str()
                ),
            ));
        }
        let hidden = c.usize("hidden_size")?;
        let n_heads = c.usize("num_attention_heads")?;
        let head_dim = match c.opt_usize("head_dim")? {
            Some(h) => h,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => {
                return Err(c.err(
                    "num_attention_heads",
                    format!("{n_heads} does not divide hidden_size {hidden}"),
                ))
            }
        };
        let tie_default = crate::model::llama_ties_by_default(kind);
        // Checked before any per-layer work: 10^9 layers aborted on allocation.
        let n_layers = c.usize("num_hidden_layers")?;
        if n_layers > MAX_LAYERS {
            return Err(c.err(
                "num_hidden_layers",
                format!("{n_layers} layers: at most {MAX_LAYERS}"),
            ));
        }
        let n_kv_heads = c.usize_or("num_key_value_heads", n_heads)?;
        if n_heads % n_kv_heads != 0 {
            return Err(c.err(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads {n_heads}"),
            ));
        }
        Ok(ConfigShape {
            kind,
            hidden,
            intermediate: c.usize("intermediate_size")?,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab: c.usize("vocab_size")?,
            tie_embeddings: c.bool_or("tie_word_embeddings", tie_default)?,
            dtype_bytes: match c.str_or("torch_dtype", "bfloat16")? {
                "float32" => 4,
                _ => 2,
            },
        })
    }

    /// What `search::memory` needs of this shape: the Llama family's matrices are
    /// memory-mapped (none held), GPT-2's and BERT's held as f32; norms as f32.
    pub fn memory_shape(&self) -> MemoryShape {
        let tensors = self.tensors();
        let weights: u64 = tensors.iter().map(|t| t.params() as u64).sum();
        MemoryShape {
            weight_bytes: match self.kind {
                ArchKind::Gpt2 | ArchKind::Bert => weights * 4,
                _ => 0,
            },
            aux_params: ((2 * self.n_layers + 1) * self.hidden) as u64,
            hidden: self.hidden as u64,
            vocab: self.vocab as u64,
            n_heads: self.n_heads as u64,
            // Not read from the config (plan-cost prices the given window).
            max_positions: u64::MAX,
            tensors,
        }
    }

    /// The quantizable tensors, named and ordered as `Model::tensors` would be.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let (h, q, kv, ff) = (
            self.hidden,
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
            self.intermediate,
        );
        let info = |name: String, role, block, rows, cols| TensorInfo {
            name,
            role,
            block,
            rows,
            cols,
            experts: None,
        };
        let mut out = vec![info(
            "token_embd.weight".into(),
            Role::Embedding,
            None,
            self.vocab,
            h,
        )];
        let shapes = [(q, h), (kv, h), (kv, h), (h, q), (ff, h), (ff, h), (h, ff)];
        for b in 0..self.n_layers {
            for ((role, short), (rows, cols)) in crate::model::LLAMA_BLOCK_ROLES.iter().zip(shapes)
            {
                out.push(info(
                    format!("blk.{b}.{short}.weight"),
                    *role,
                    Some(b),
                    rows,
                    cols,
                ));
            }
        }
        if !self.tie_embeddings {
            out.push(info(
                "output.weight".into(),
                Role::Output,
                None,
                self.vocab,
                h,
            ));
        }
        out
    }

    /// The cost model's counts of the f32 model (norms: two per block and the final one).
    fn counts(&self) -> ModelCounts {
        let tensors = self.tensors();
        let choices = vec![FP_CHOICE; tensors.len()];
        let linears: Vec<LinearCounts> = linear_counts(&tensors, &choices, self.tie_embeddings);
        ModelCounts {
            linears,
            n_blocks: self.n_layers as u64,
            n_heads: self.n_heads as u64,
            n_kv_heads: self.n_kv_heads as u64,
            head_dim: self.head_dim as u64,
            hidden: self.hidden as u64,
            vocab: self.vocab as u64,
            other_bytes: ((2 * self.n_layers + 1) * self.hidden * 4) as u64,
            causal: true,
        }
    }

    /// Parameters of the weight matrices (the tied output counted once).
    pub fn params(&self) -> u64 {
        self.tensors().iter().map(|t| t.params() as u64).sum()
    }
}

/// Evaluations a search makes, by fidelity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvaluationCount {
    /// On `screen_windows` calibration windows.
    pub screened: u64,
    /// On every calibration window, at most (when screening rejects none).
    pub full: u64,
    /// On the held-out windows.
    pub heldout: u64,
    /// On the validation slice.
    pub validation: u64,
}

/// Counts of `cfg`'s search over `shape`; the genes and their choices follow `cfg.space`
/// and `cfg.target` exactly as the search builds them.
pub fn evaluation_count(shape: &ConfigShape, cfg: &SearchConfig) -> Result<EvaluationCount> {
    let tensors = shape.tensors();
    let no_imatrix = vec![false; tensors.len()];
    let space = SearchSpace::for_tensors(&tensors, &cfg.space, &cfg.target, &no_imatrix)?;
    let scaled = table_scales(cfg.data.sensitivity, &tensors, &space);
    let cells: u64 = space
        .choices
        .iter()
        .map(|c| measured_cells(c, scaled) as u64)
        .sum();
    let uniform = space.choices.first().map_or(0, |c| c.len() as u64);
    let pop = cfg.evolution.population as u64;
    let lagrangian = if cfg.baselines.lagrangian { uniform } else { 0 };
    // Counts past 2^64 wrapped (10^18 generations showed a small number).
    let too_many = || {
        Error::setting(
            "generations",
            format!(
                "{} generations of {pop} plans are more evaluations than can be counted",
                cfg.evolution.generations
            ),
        )
    };
    let evolution = cfg
        .evolution
        .generations
        .checked_add(1)
        .and_then(|g| g.checked_mul(pop))
        .ok_or_else(too_many)?;
    let sum = |parts: &[u64]| parts.iter().try_fold(0u64, |a, &b| a.checked_add(b));
    let (refine_full, refine_validation) = refine_count(cfg);
    let shortlist = match cfg.data.validation_windows {
        0 => 0,
        _ => super::finalize::SHORTLIST as u64,
    };
    Ok(EvaluationCount {
        screened: sum(&[cells, evolution]).ok_or_else(too_many)?,
        full: sum(&[uniform, evolution, pop, lagrangian, refine_full]).ok_or_else(too_many)?,
        heldout: uniform + pop + lagrangian + u64::from(refine_full > 0),
        validation: shortlist + refine_validation,
    })
}

/// The refine stage's most moves scored in full, and most validation scores (the
/// Lagrangian plan, and the checks of each round); none without a size limit.
fn refine_count(cfg: &SearchConfig) -> (u64, u64) {
    use super::refine;
    if !refine::runs(cfg) || cfg.data.validation_windows == 0 {
        let full = match refine::runs(cfg) {
            true => refine::max_evaluations(cfg),
            false => 0,
        };
        return (full, 0);
    }
    let moves = refine::max_evaluations(cfg);
    let rounds = moves.div_ceil(refine::BATCH as u64);
    (moves, 1 + refine::ACCEPT_TRIES as u64 * rounds)
}

/// Seconds of one evaluation over `windows` windows of `seq_len` tokens on `machine`.
pub fn evaluation_seconds(
    shape: &ConfigShape,
    machine: &Profile,
    windows: usize,
    seq_len: usize,
) -> Result<f64> {
    let workload = Workload {
        prefill_tokens: seq_len as u64,
        decode_tokens: 0,
    };
    let c = cost(&shape.counts(), machine, &workload)
        .map_err(|e| Error::Invalid(format!("pricing on `{}`: {e}", machine.name)))?;
    Ok(c.prefill_ms / 1e3 * windows as f64)
}

/// A search's budget on one machine.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Budget {
    pub machine: String,
    pub count: EvaluationCount,
    pub screen_seconds: f64,
    pub full_seconds: f64,
    pub heldout_seconds: f64,
    pub validation_seconds: f64,
    /// Every count at its cost: the upper bound without caches.
    pub total_seconds: f64,
}

/// The budget of `cfg`'s search over `shape` when `machine` evaluates.
pub fn budget(shape: &ConfigShape, cfg: &SearchConfig, machine: &Profile) -> Result<Budget> {
    let count = evaluation_count(shape, cfg)?;
    let d = &cfg.data;
    let secs = |w: usize| evaluation_seconds(shape, machine, w, d.seq_len);
    let (s, f, h, v) = (
        secs(d.screen_windows.min(d.calib_windows))?,
        secs(d.calib_windows)?,
        secs(d.heldout_windows)?,
        secs(d.validation_windows)?,
    );
    Ok(Budget {
        machine: machine.name.clone(),
        count,
        screen_seconds: s,
        full_seconds: f,
        heldout_seconds: h,
        validation_seconds: v,
        total_seconds: count.screened as f64 * s
            + count.full as f64 * f
            + count.heldout as f64 * h
            + count.validation as f64 * v,
    })
}
