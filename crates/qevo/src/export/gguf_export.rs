//! GGUF export for llama-family models: quantizes every planned tensor into its GGML
//! type (q/k rows re-permuted into llama.cpp's rotary layout first), keeps norms and
//! biases f32, and writes the hyper-parameters and tokenizer llama.cpp needs. A GGUF
//! source keeps all its metadata (unknown keys included) and its other tensors byte for
//! byte; an HF source gets metadata built from config.json and tokenizer.json.

use super::gguf_writer::{GgufLayout, GgufTensorOut, GgufWriter};
use super::plan::{check_output_path, Fallback, ResolvedPlan};
use super::vocab;
use crate::error::{Error, Result};
use crate::model::gguf::{Gguf, Value};
use crate::model::{permute_rows, Arch, ArchKind, LlamaConfig, Model};
use crate::quant::{GgmlType, WeightFormat};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What was written, with the byte counts a plan's size is checked against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub layout: GgufLayout,
    /// Bytes of the planned (quantizable) tensors as written: equals the plan's size.
    pub planned_tensor_bytes: u64,
    /// Bytes of the other tensors (norms, biases, tensors copied from a GGUF source).
    pub other_tensor_bytes: u64,
    pub fallbacks: Vec<Fallback>,
}

/// llama.cpp's `general.file_type` labels (`llama_ftype`) for a model mostly in one type.
const FILE_TYPES: [(GgmlType, u32); 20] = [
    (GgmlType::F32, 0),
    (GgmlType::F16, 1),
    (GgmlType::Q4_0, 2),
    (GgmlType::Q4_1, 3),
    (GgmlType::Q8_0, 7),
    (GgmlType::Q5_0, 8),
    (GgmlType::Q5_1, 9),
    (GgmlType::Q2K, 10),
    (GgmlType::Q3K, 12),
    (GgmlType::Q4K, 15),
    (GgmlType::Q5K, 17),
    (GgmlType::Q6K, 18),
    (GgmlType::Iq2Xxs, 19),
    (GgmlType::Iq2Xs, 20),
    (GgmlType::Iq3Xxs, 23),
    (GgmlType::Iq4Nl, 25),
    (GgmlType::Iq3S, 26),
    // IQ2_M: the ftype whose default type is iq2_s (IQ2_S's is iq2_xs).
    (GgmlType::Iq2S, 29),
    (GgmlType::Iq4Xs, 30),
    (GgmlType::BF16, 32),
];

/// The type holding the most parameters (ties: the earlier tensor's).
pub(crate) fn dominant_type(model: &Model, plan: &ResolvedPlan) -> GgmlType {
    let mut params: Vec<(GgmlType, usize)> = Vec::new();
    for (info, &t) in model.tensors.iter().zip(&plan.types) {
        match params.iter_mut().find(|(u, _)| *u == t) {
            Some(e) => e.1 += info.params(),
            None => params.push((t, info.params())),
        }
    }
    params
        .iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| *t)
        .unwrap_or(GgmlType::F32)
}

/// The llama config GGUF export supports, or a clear refusal.
fn llama_config(model: &Model) -> Result<&LlamaConfig> {
    let unsupported = |what: &str| {
        Error::Invalid(format!(
            "{}: GGUF export writes the llama architecture only; this model is {what}",
            model.source.display()
        ))
    };
    let Arch::Llama(cfg) = &model.arch else {
        return Err(unsupported(model.arch.kind().as_str()));
    };
    match cfg.kind {
        ArchKind::Llama | ArchKind::Mistral => {}
        k => return Err(unsupported(k.as_str())),
    }
    if cfg.sliding_window.is_some() {
        return Err(unsupported(
            "a sliding-window model (llama.cpp's llama architecture has no window)",
        ));
    }
    if cfg.head_dim * cfg.n_heads != cfg.hidden {
        return Err(unsupported(
            "a model whose head_dim × heads differs from hidden_size",
        ));
    }
    Ok(cfg)
}

/// Rows of q/k weights (and biases) in llama.cpp's rotary layout.
fn gguf_rows(name: &str, w: &Tensor, cfg: &LlamaConfig) -> Result<Tensor> {
    let heads = if name.contains(".attn_q.") {
        Some(cfg.n_heads)
    } else if name.contains(".attn_k.") {
        Some(cfg.n_kv_heads)
    } else {
        None
    };
    match (heads, w.rank()) {
        (Some(h), 2) => permute_rows(w, h),
        (Some(h), 1) => {
            let n = w.dim(0)?;
            Ok(permute_rows(&w.reshape((n, 1))?, h)?.reshape(n)?)
        }
        _ => Ok(w.clone()),
    }
}

fn f32_tensor(name: &str, w: &Tensor) -> Result<GgufTensorOut> {
    let dims: Vec<u64> = w.dims().iter().rev().map(|&d| d as u64).collect();
    let data = w.flatten_all()?.to_vec1::<f32>()?;
    Ok(GgufTensorOut {
        name: name.to_string(),
        dims,
        type_id: GgmlType::F32.gguf_id(),
        bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    })
}

/// Position of a tensor in llama.cpp's file order: embedding, blocks (each in its
/// converter's order), output norm, output.
fn file_order(name: &str) -> (usize, usize, usize, String) {
    const TOP: [&str; 3] = ["token_embd.", "output_norm.", "output."];
    const PARTS: [&str; 9] = [
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some((b, part)) = rest.split_once('.') {
            let p = PARTS
                .iter()
                .position(|x| part.starts_with(&format!("{x}.")))
                .unwrap_or(PARTS.len());
            return (1, b.parse().unwrap_or(usize::MAX), p, name.to_string());
        }
    }
    match TOP.iter().position(|t| name.starts_with(t)) {
        Some(0) => (0, 0, 0, name.to_string()),
        Some(i) => (2, 0, i, name.to_string()),
        None => (3, 0, 0, name.to_string()),
    }
}

/// Quantizes the planned tensors into GGUF-ready bytes (in GGUF row order).
fn planned_tensors(
    model: &Model,
    plan: &ResolvedPlan,
    imatrix: Option<&[Option<Vec<f32>>]>,
    cfg: &LlamaConfig,
) -> Result<Vec<GgufTensorOut>> {
    model
        .tensors
        .iter()
        .zip(&model.weights)
        .zip(&plan.types)
        .enumerate()
        .map(|(i, ((info, w), &t))| {
            let w = gguf_rows(&info.name, w, cfg)?;
            let data = w.flatten_all()?.to_vec1::<f32>()?;
            // The evaluator's own entry point, so the bytes are the ones it scored (an
            // importance matrix is per column: the row permutation leaves it valid).
            let im = imatrix.and_then(|m| m.get(i)).and_then(|o| o.as_deref());
            let bytes = WeightFormat::Ggml(t)
                .quantize_named(&info.name, &data, info.rows, info.cols, im)?
                .bytes;
            Ok(GgufTensorOut {
                name: info.name.clone(),
                dims: vec![info.cols as u64, info.rows as u64],
                type_id: t.gguf_id(),
                bytes,
            })
        })
        .collect()
}

fn hf_metadata(model: &Model, cfg: &LlamaConfig) -> Result<Vec<(String, Value)>> {
    let dir = &model.source;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let u = |v: usize| Value::U32(v as u32);
    let mut md = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("general.name".to_string(), Value::String(name)),
        ("llama.vocab_size".to_string(), u(cfg.vocab)),
        ("llama.context_length".to_string(), u(cfg.max_positions)),
        ("llama.embedding_length".to_string(), u(cfg.hidden)),
        ("llama.block_count".to_string(), u(cfg.n_layers)),
        ("llama.feed_forward_length".to_string(), u(cfg.intermediate)),
        ("llama.rope.dimension_count".to_string(), u(cfg.head_dim)),
        ("llama.attention.head_count".to_string(), u(cfg.n_heads)),
        (
            "llama.attention.head_count_kv".to_string(),
            u(cfg.n_kv_heads),
        ),
        (
            "llama.rope.freq_base".to_string(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".to_string(),
            Value::F32(cfg.rms_eps as f32),
        ),
    ];
    let tok = dir.join("tokenizer.json");
    if !tok.exists() {
        return Err(Error::format(
            dir,
            "no tokenizer.json: llama.cpp needs the vocabulary to run the GGUF",
        ));
    }
    md.extend(vocab::gguf_tokenizer_metadata(
        &tok,
        cfg.vocab,
        cfg.bos_token_id,
        cfg.eos_token_id,
        vocab::add_bos_token(dir),
    )?);
    Ok(md)
}

/// Writes `model` quantized by `plan` as a GGUF file at `out` (atomically).
/// `imatrix` (per tensor index, as `WeightCache::with_imatrix` takes it) must be the one
/// the plan was evaluated with, so K-quants round the same way.
pub fn export_gguf(
    model: &Model,
    plan: &ResolvedPlan,
    imatrix: Option<&[Option<Vec<f32>>]>,
    out: &Path,
) -> Result<ExportSummary> {
    check_output_path(&model.source, out)?;
    let cfg = llama_config(model)?;
    if plan.types.len() != model.tensors.len() {
        return Err(Error::Invalid(format!(
            "plan has {} tensors, model has {}",
            plan.types.len(),
            model.tensors.len()
        )));
    }
    let planned = planned_tensors(model, plan, imatrix, cfg)?;
    let planned_tensor_bytes: u64 = planned.iter().map(|t| t.bytes.len() as u64).sum();
    let mut w = GgufWriter::default();
    let mut others: Vec<GgufTensorOut> = Vec::new();
    if model.source.is_dir() {
        w.metadata = hf_metadata(model, cfg)?;
        for (name, t) in model
            .llama_aux_tensors()
            .ok_or_else(|| Error::Invalid("not a llama-family model".into()))?
        {
            others.push(f32_tensor(&name, &gguf_rows(&name, &t, cfg)?)?);
        }
    } else {
        let src = Gguf::open(&model.source)?;
        w.metadata = src.metadata.clone();
        for t in src
            .tensors
            .iter()
            .filter(|t| model.tensor_index(&t.name).is_none())
        {
            others.push(GgufTensorOut {
                name: t.name.clone(),
                dims: t.dims.clone(),
                type_id: t.type_id,
                bytes: src.tensor_bytes(t).to_vec(),
            });
        }
    }
    let ftype = FILE_TYPES
        .iter()
        .find(|(t, _)| *t == dominant_type(model, plan))
        .map(|(_, f)| *f)
        .unwrap_or(0);
    w.set("general.file_type", Value::U32(ftype));
    w.set("general.quantization_version", Value::U32(2));
    let other_tensor_bytes: u64 = others.iter().map(|t| t.bytes.len() as u64).sum();
    let mut all: Vec<GgufTensorOut> = planned.into_iter().chain(others).collect();
    // A GGUF source keeps its own tensor order; an HF source gets llama.cpp's.
    if model.source.is_dir() {
        all.sort_by_cached_key(|t| file_order(&t.name));
    } else {
        let src = Gguf::open(&model.source)?;
        let pos: HashMap<&str, usize> = src
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        all.sort_by_key(|t| pos.get(t.name.as_str()).copied().unwrap_or(usize::MAX));
    }
    w.tensors = all;
    let layout = w.write(out)?;
    Ok(ExportSummary {
        path: out.to_path_buf(),
        layout,
        planned_tensor_bytes,
        other_tensor_bytes,
        fallbacks: plan.fallbacks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_follows_llama_cpp() {
        let mut names = vec![
            "output.weight",
            "blk.1.attn_q.weight",
            "blk.0.ffn_down.weight",
            "output_norm.weight",
            "blk.0.attn_norm.weight",
            "token_embd.weight",
            "blk.0.attn_q.bias",
            "blk.0.attn_q.weight",
            "blk.10.attn_norm.weight",
            "blk.2.attn_norm.weight",
        ];
        names.sort_by_key(|n| file_order(n));
        assert_eq!(
            names,
            [
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.bias",
                "blk.0.attn_q.weight",
                "blk.0.ffn_down.weight",
                "blk.1.attn_q.weight",
                "blk.2.attn_norm.weight",
                "blk.10.attn_norm.weight",
                "output_norm.weight",
                "output.weight",
            ]
        );
    }
}
