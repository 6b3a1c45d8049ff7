//! A plan and what it costs: the per-tensor choice (`TensorChoice`, `TensorPlan`), the
//! one rule for a tensor's bytes in a format, the FP size every compression ratio is
//! measured against, the hardware counts a plan declares, and its price on a target
//! (`price`: latency, energy, memory and every limit check). Pure functions over the
//! model's tensor list; nothing here runs the model. Used by search, `qevo cost`,
//! `profile-host`, export and the report.

pub mod llama_mix;
mod price;
mod resolve;
mod tensor_plan;

pub use llama_mix::{mix_plan, LlamaFtype};
pub use price::{price, LimitCheck, Priced, UserLimits};
pub use resolve::{check_output_path, nearest_ggml, resolve_ggml, Fallback, ResolvedPlan};
pub use tensor_plan::{TensorChoice, TensorPlan, ACT_BITS};

use crate::hw::{LinearCounts, ModelCounts};
use crate::model::{Model, Role, TensorInfo};
use crate::quant::{GgmlType, WeightFormat};

/// The unquantized choice: f32 weights, float activations.
pub const FP_CHOICE: TensorChoice = TensorChoice {
    format: WeightFormat::Ggml(GgmlType::F32),
    act_bits: 16,
};

/// Bytes of a `[rows, cols]` tensor stored in `format`. The one rule for a format that
/// does not fit the shape: it is counted as what is actually written, llama.cpp's
/// fallback type (`WeightFormat::resolve`: q4_k → q5_0 on 576-wide rows); only a shape
/// no format can store (empty, or past `u64`) counts as f32, so no caller sums a zero.
pub fn tensor_bytes(format: WeightFormat, rows: usize, cols: usize) -> u64 {
    format
        .tensor_bytes(rows, cols)
        .unwrap_or(rows as u64 * cols as u64 * 4)
}

/// The format a `[rows, cols]` tensor is actually written in (`WeightFormat::resolve`);
/// `format` itself for a shape nothing can store.
pub fn written_format(format: WeightFormat, rows: usize, cols: usize) -> WeightFormat {
    format.resolve(rows, cols).map_or(format, |r| r.written)
}

/// Exact bytes of every quantizable tensor under per-tensor `choices` (what an exported
/// file holds apart from metadata and norms).
pub fn choice_bytes(model: &Model, choices: &[TensorChoice]) -> u64 {
    model
        .tensors
        .iter()
        .zip(choices)
        .map(|(t, c)| tensor_bytes(c.format, t.rows, t.cols))
        .sum()
}

/// The FP size: every quantizable tensor at f32. Compression ratios divide by this.
pub fn fp_bytes(model: &Model) -> u64 {
    tensors_fp_bytes(&model.tensors)
}

/// `fp_bytes` of a tensor list (a `ModelSummary`'s, read without the weights).
pub fn tensors_fp_bytes(tensors: &[TensorInfo]) -> u64 {
    let fp = FP_CHOICE.format;
    tensors
        .iter()
        .map(|t| tensor_bytes(fp, t.rows, t.cols))
        .sum()
}

/// One `FP_CHOICE` per quantizable tensor.
pub fn fp_choices(model: &Model) -> Vec<TensorChoice> {
    vec![FP_CHOICE; model.tensors.len()]
}

/// The hardware counts of a per-tensor choice list: one linear per tensor (plus the
/// output head again when it shares the embedding's weights), and the attention shape.
pub fn model_counts(model: &Model, choices: &[TensorChoice]) -> ModelCounts {
    let linears = linear_counts(&model.tensors, choices, model.tied_output());
    let att = model.arch.attention();
    ModelCounts {
        linears,
        n_blocks: model.n_blocks() as u64,
        n_heads: att.n_heads as u64,
        n_kv_heads: att.n_kv_heads as u64,
        head_dim: att.head_dim as u64,
        hidden: model.arch.hidden() as u64,
        vocab: model.arch.vocab() as u64,
        other_bytes: model.aux_params() as u64 * 4,
        causal: model.arch.is_decoder(),
    }
}

/// One `LinearCounts` per tensor in `choices`' formats, and the output head again when
/// `tied_output` (it reads the embedding's weights). `model_counts` and `search::budget`
/// (which has shapes but no weights) both count through it.
pub fn linear_counts(
    tensors: &[TensorInfo],
    choices: &[TensorChoice],
    tied_output: bool,
) -> Vec<LinearCounts> {
    let linear = |name: String, rows: usize, cols: usize, c: &TensorChoice| {
        // Priced as written: q4_k on 576-wide rows runs as its q5_0 fallback.
        let written = written_format(c.format, rows, cols);
        LinearCounts {
            name,
            in_features: cols as u64,
            out_features: rows as u64,
            weight_bytes: tensor_bytes(c.format, rows, cols),
            weight_bits: written.compute_bits(),
            act_bits: c.act_bits,
            is_embedding_lookup: false,
            tied: false,
            format: Some(written.name()),
            experts: None,
        }
    };
    let mut linears: Vec<LinearCounts> = tensors
        .iter()
        .zip(choices)
        .map(|(t, c)| LinearCounts {
            is_embedding_lookup: t.role == Role::Embedding,
            experts: t.experts,
            ..linear(t.name.clone(), t.rows, t.cols, c)
        })
        .collect();
    if tied_output {
        let embedding = tensors.iter().zip(choices);
        if let Some((t, c)) = embedding.clone().find(|(t, _)| t.role == Role::Embedding) {
            linears.push(LinearCounts {
                act_bits: 16,
                tied: true,
                ..linear("output (tied)".into(), t.rows, t.cols, c)
            });
        }
    }
    linears
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_bytes_counts_an_unfitting_format_as_its_fallback() {
        let q4k = WeightFormat::Ggml(GgmlType::Q4K);
        // 256 | 512: real q4_k bytes (144 per 256 weights).
        assert_eq!(tensor_bytes(q4k, 2, 512), 2 * 2 * 144);
        // 576 is no multiple of 256: written (and counted) as q5_0, 22 bytes per 32.
        assert_eq!(tensor_bytes(q4k, 2, 576), 2 * 18 * 22);
        let int8 = WeightFormat::parse("int8-sym-channel").unwrap();
        assert!(tensor_bytes(int8, 3, 64) < 3 * 64 * 4);
    }

    #[test]
    fn fp_bytes_is_every_quantizable_tensor_at_f32() {
        let dir = tempfile::tempdir().unwrap();
        crate::model::synthetic::write_llama_dir(dir.path(), &Default::default(), 1).unwrap();
        let m = Model::load(dir.path()).unwrap();
        let params: u64 = m.tensors.iter().map(|t| t.params() as u64).sum();
        assert_eq!(fp_bytes(&m), params * 4);
        let counts = model_counts(&m, &fp_choices(&m));
        let linear_bytes: u64 = counts
            .linears
            .iter()
            .filter(|l| !l.tied)
            .map(|l| l.weight_bytes)
            .sum();
        assert_eq!(linear_bytes, fp_bytes(&m));
    }
}
