//! What a search or an evaluation will hold in memory, estimated from the model's shape
//! before anything is loaded, and the one budget it runs under.
//!
//! The parts: the weights held in memory (a Llama-family matrix is memory-mapped and
//! decoded per use, so it holds none; `Model::held_weight_bytes`),
//! the norms and biases (f32), the reference distributions (top-k per position,
//! `eval::auto_topk`), one forward pass's activations per worker thread, the prefix
//! cache's budget, and the weight cache. A plan's weights are drawn from that cache
//! block by block (`eval::PlanWeights`), each worker holding its current block (or the
//! embedding or output matrix, which a forward pass uses on its own) as f32: that is the
//! smallest weight cache that works. What the budget leaves beyond it holds quantized
//! variants as their block bytes (GGML types) or f32 (generic formats). The default
//! budget is the fixed parts plus a 2 GiB cache, capped by this machine's available
//! memory.
//!
//! Estimates, not measurements: allocator overhead, the tokenizer and the importance
//! matrix are small beside these; qevo's output rounding (input moments, `cols²` floats
//! per distinct input) is not counted.

use super::config::defaults::WEIGHT_CACHE_BYTES;
use super::SearchConfig;
use crate::calib::default_batch;
use crate::error::{Error, Result};
use crate::eval::REFERENCE_BUDGET_BYTES;
use crate::mem::gb;
use crate::model::{Model, ModelSummary, TensorInfo};
use std::path::Path;

/// Rows of logits the head computes at a time (`eval::Pass`).
const HEAD_ROWS: u64 = 128;
/// Top-k kept per position when the full distribution does not fit (`auto_topk`).
const TOPK_FALLBACK: u64 = 64;

/// What the estimate needs of a model: its tensors and what its weights take as loaded.
#[derive(Debug, Clone)]
pub struct MemoryShape {
    pub tensors: Vec<TensorInfo>,
    /// Bytes of the quantizable weights held in memory (mapped ones hold none).
    pub weight_bytes: u64,
    /// Norms, biases and position tables (held as f32).
    pub aux_params: u64,
    pub hidden: u64,
    pub vocab: u64,
    pub n_heads: u64,
    /// Longest window the model takes: a longer `seq_len` is refused when the windows
    /// are cut (naming the setting), so the estimate never prices one.
    pub max_positions: u64,
}

impl MemoryShape {
    /// From a loaded model.
    pub fn of_model(m: &Model) -> MemoryShape {
        MemoryShape {
            tensors: m.tensors.clone(),
            weight_bytes: m.held_weight_bytes() as u64,
            aux_params: m.aux_params() as u64,
            hidden: m.arch.hidden() as u64,
            vocab: m.arch.vocab() as u64,
            n_heads: m.arch.attention().n_heads as u64,
            max_positions: m.arch.max_positions() as u64,
        }
    }

    /// From the headers of the model at `path` (`Model::inspect`): nothing is loaded.
    pub fn read(path: &Path) -> Result<MemoryShape> {
        Ok(Self::of_summary(&Model::inspect(path)?))
    }

    /// From headers alone (`Model::inspect`): the Llama family's matrices stay mapped
    /// (none held) except qevo's packed ones, decoded to f32; GPT-2 and BERT weights are
    /// held as f32 (what `Model::load` does).
    pub fn of_summary(s: &ModelSummary) -> MemoryShape {
        let llama = !matches!(
            s.arch,
            crate::model::Arch::Gpt2(_) | crate::model::Arch::Bert(_)
        );
        let weight_bytes = s
            .tensors
            .iter()
            .zip(&s.stored)
            .map(|(t, st)| match (llama, st.dtype) {
                (true, "qevo-int") | (false, _) => t.params() as u64 * 4,
                (true, _) => 0,
            })
            .sum();
        MemoryShape {
            tensors: s.tensors.clone(),
            weight_bytes,
            aux_params: s.aux_params as u64,
            hidden: s.arch.hidden() as u64,
            vocab: s.arch.vocab() as u64,
            n_heads: s.arch.attention().n_heads as u64,
            max_positions: s.arch.max_positions() as u64,
        }
    }

    /// The largest f32 set one forward step needs at once: a block's matrices, or the
    /// embedding / output matrix.
    fn largest_step_f32(&self) -> u64 {
        let mut per_block: std::collections::BTreeMap<usize, u64> = Default::default();
        let mut single = 0u64;
        for t in &self.tensors {
            let bytes = t.params() as u64 * 4;
            match t.block {
                Some(b) => *per_block.entry(b).or_default() += bytes,
                None => single = single.max(bytes),
            }
        }
        per_block.into_values().max().unwrap_or(0).max(single)
    }

    /// The widest matrix's rows (the FFN's intermediate width in a transformer).
    fn widest(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.block.is_some())
            .map(|t| t.rows.max(t.cols) as u64)
            .max()
            .unwrap_or(self.hidden)
    }
}

/// The estimate by part, in bytes, and the budget it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// Quantizable weights as loaded, plus norms and biases.
    pub model: u64,
    /// Reference distributions of the calibration and held-out windows.
    pub references: u64,
    /// One forward pass's activations, per worker thread.
    pub activations: u64,
    /// The prefix cache's budget (0 with the caches off).
    pub prefix_cache: u64,
    /// The smallest dequantized-weight cache that works.
    pub min_weight_cache: u64,
    /// The dequantized-weight cache the budget leaves (at least `min_weight_cache`).
    pub weight_cache: u64,
    /// The budget: given, or the default.
    pub budget: u64,
}

impl MemoryEstimate {
    /// Everything but the weight cache.
    pub fn fixed(&self) -> u64 {
        self.model + self.references + self.activations + self.prefix_cache
    }
    /// The least the run needs: the fixed parts and the smallest cache that works.
    pub fn needed(&self) -> u64 {
        self.fixed() + self.min_weight_cache
    }
    /// What the run will hold at most: the fixed parts and the cache it gets.
    pub fn total(&self) -> u64 {
        self.fixed() + self.weight_cache
    }
    /// The estimate by part, in GB, as messages print it.
    pub fn parts(&self) -> String {
        format!(
            "model {}, references {}, activations {}, prefix cache {}, weight cache at least {}",
            gb(self.model),
            gb(self.references),
            gb(self.activations),
            gb(self.prefix_cache),
            gb(self.min_weight_cache)
        )
    }
}

/// Bytes of one reference over `positions` scored positions (`eval::auto_topk`'s rule).
fn reference_bytes(positions: u64, vocab: u64) -> u64 {
    let full = positions.saturating_mul(vocab).saturating_mul(8);
    match full <= REFERENCE_BUDGET_BYTES as u64 {
        true => full,
        false => positions * (TOPK_FALLBACK * 8 + 16),
    }
}

/// One forward pass of `tokens` tokens in `windows` windows of `seq`: the hidden states
/// and the widest intermediate (a few live at once), the attention scores, and a head
/// step's logits with their softmax.
fn activation_bytes(s: &MemoryShape, windows: u64, seq: u64) -> u64 {
    let tokens = windows * seq;
    let states = tokens * (6 * s.hidden + 3 * s.widest()) * 4;
    let scores = windows * s.n_heads * seq * seq * 4 * 2;
    let head = HEAD_ROWS * s.vocab * 4 * 3;
    states + scores + head
}

/// The memory a search with `cfg` holds on a model of `shape`, under `budget` (None: the
/// default, see the module doc; `available`: this machine's available memory, if known).
/// A budget below what the run needs is refused, naming the smallest one that works.
pub fn search_memory(
    shape: &MemoryShape,
    cfg: &SearchConfig,
    budget: Option<u64>,
    available: Option<u64>,
) -> Result<MemoryEstimate> {
    let d = &cfg.data;
    let seq = (d.seq_len as u64).clamp(1, shape.max_positions.max(1));
    let threads = rayon::current_num_threads().max(1) as u64;
    let batch = default_batch(seq as usize) as u64;
    let prefix_cache = match cfg.caches.enabled {
        true => cfg.caches.prefix_cache_bytes as u64,
        false => 0,
    };
    let est = MemoryEstimate {
        model: shape.weight_bytes + shape.aux_params * 4,
        references: reference_bytes(d.calib_windows as u64 * seq, shape.vocab)
            + reference_bytes(d.heldout_windows as u64 * seq, shape.vocab)
            + reference_bytes(d.validation_windows as u64 * seq, shape.vocab),
        activations: threads * activation_bytes(shape, batch, seq),
        prefix_cache,
        min_weight_cache: threads * shape.largest_step_f32(),
        weight_cache: 0,
        budget: 0,
    };
    settle(est, budget, available, "the search")
}

/// The memory `qevo eval` / `quantize` hold: the model, one reference over `windows`
/// windows of `seq`, and one forward pass; a plan's weights add the same
/// smallest-working cache a search needs.
pub fn eval_memory(
    shape: &MemoryShape,
    windows: usize,
    seq: usize,
    budget: Option<u64>,
    available: Option<u64>,
) -> Result<MemoryEstimate> {
    let (w, seq) = (
        windows as u64,
        (seq as u64).clamp(1, shape.max_positions.max(1)),
    );
    let batch = default_batch(seq as usize) as u64;
    let est = MemoryEstimate {
        model: shape.weight_bytes + shape.aux_params * 4,
        references: reference_bytes(w * seq, shape.vocab),
        activations: activation_bytes(shape, batch.min(w.max(1)), seq),
        prefix_cache: 0,
        min_weight_cache: shape.largest_step_f32(),
        weight_cache: 0,
        budget: 0,
    };
    settle(est, budget, available, "the evaluation")
}

/// Fills in the budget and the cache it leaves, or refuses.
fn settle(
    mut est: MemoryEstimate,
    budget: Option<u64>,
    available: Option<u64>,
    what: &str,
) -> Result<MemoryEstimate> {
    let default = est.fixed() + (WEIGHT_CACHE_BYTES as u64).max(est.min_weight_cache);
    est.budget = match (budget, available) {
        (Some(b), _) => b,
        (None, Some(a)) => default.min(a),
        (None, None) => default,
    };
    if est.budget < est.needed() {
        return Err(Error::Memory {
            what: what.to_string(),
            needed: est.needed(),
            budget: est.budget,
            parts: est.parts(),
        });
    }
    est.weight_cache = est.budget - est.fixed();
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::budget::ConfigShape;

    fn shape_1b() -> MemoryShape {
        // Llama-3.2-1B's shape (bf16), as `ConfigShape` lists its tensors.
        let c = ConfigShape {
            kind: crate::model::ArchKind::Llama,
            hidden: 2048,
            intermediate: 8192,
            n_layers: 16,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 64,
            vocab: 128256,
            tie_embeddings: true,
            dtype_bytes: 2,
        };
        c.memory_shape()
    }

    #[test]
    fn a_budget_below_one_blocks_working_set_names_the_smallest_that_works() {
        let cfg = SearchConfig::with_defaults().unwrap();
        let s = shape_1b();
        let ok = search_memory(&s, &cfg, None, None).unwrap();
        assert!(ok.weight_cache >= ok.min_weight_cache);
        assert_eq!(ok.total(), ok.budget);
        let needed = ok.needed();
        let e = search_memory(&s, &cfg, Some(needed - 1), None).unwrap_err();
        match e {
            Error::Memory {
                needed: n, budget, ..
            } => assert_eq!((n, budget), (needed, needed - 1)),
            e => panic!("{e}"),
        }
        let just = search_memory(&s, &cfg, Some(needed), None).unwrap();
        assert_eq!(just.weight_cache, just.min_weight_cache);
    }

    #[test]
    fn the_smallest_cache_holds_the_embedding_or_a_block_per_thread() {
        let s = shape_1b();
        // The 128256 x 2048 embedding (1.05 GB as f32) outweighs one block (0.49 GB).
        assert_eq!(s.largest_step_f32(), 128256 * 2048 * 4);
        // The Llama family's matrices are memory-mapped: none are held.
        assert_eq!(s.weight_bytes, 0);
    }

    #[test]
    fn the_default_budget_is_capped_by_available_memory() {
        let cfg = SearchConfig::with_defaults().unwrap();
        let s = shape_1b();
        let free = search_memory(&s, &cfg, None, None).unwrap();
        let tight = search_memory(&s, &cfg, None, Some(free.needed())).unwrap();
        assert_eq!(tight.budget, free.needed());
        let e = search_memory(&s, &cfg, None, Some(free.needed() / 2)).unwrap_err();
        assert!(e.to_string().contains("smallest budget that works"), "{e}");
    }
}
