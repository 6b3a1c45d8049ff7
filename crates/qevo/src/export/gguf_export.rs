//! GGUF export for the Llama family (llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3):
//! quantizes every planned tensor into its GGML type (q/k rows re-permuted into the
//! rotary layout of the architecture, parts llama.cpp fuses stacked into one tensor),
//! keeps norms and biases f32, and writes the hyper-parameters (`gguf_arch`) and
//! tokenizer llama.cpp needs. A GGUF source keeps all its metadata (unknown keys
//! included) and its norms and biases byte for byte; an HF source gets metadata built
//! from config.json and tokenizer.json.

use super::gguf_arch::{gguf_arch, rope_tensors, GgufArch};
use super::gguf_writer::{GgufLayout, GgufTensorOut, GgufWriter, TensorHead};
use super::vocab;
use crate::error::{Error, Result};
use crate::model::gguf::{ggml_type_info, Gguf, Value};
use crate::model::{gguf_permutes_qk, permute_rows, Arch, LlamaConfig, Model, GGUF_ROPE_TENSORS};
use crate::plan::{check_output_path, Fallback, ResolvedPlan};
use crate::quant::{GgmlType, RoundingInputs, WeightFormat};
use candle_core::Tensor;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
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
const FILE_TYPES: [(GgmlType, u32); 22] = [
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
    (GgmlType::Iq1S, 24),
    (GgmlType::Iq4Nl, 25),
    (GgmlType::Iq3S, 26),
    // IQ2_M: the ftype whose default type is iq2_s (IQ2_S's is iq2_xs).
    (GgmlType::Iq2S, 29),
    (GgmlType::Iq4Xs, 30),
    (GgmlType::Iq1M, 31),
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

/// The model's Llama-family config and the llama.cpp architecture it is written as, or
/// a refusal naming what llama.cpp cannot express.
fn llama_config(model: &Model) -> Result<(&LlamaConfig, &'static GgufArch)> {
    let Arch::Llama(cfg) = &model.arch else {
        return Err(Error::UnsupportedArch {
            path: model.source.clone(),
            key: "architecture".into(),
            arch: format!("{} (GGUF export)", model.arch.kind().as_str()),
            supported: "the Llama family".into(),
        });
    };
    let arch = gguf_arch(cfg.kind, &model.source)?;
    arch.check(cfg, &model.source)?;
    Ok((cfg, arch))
}

/// Whether `gguf_rows` reorders this tensor's rows.
fn permuted_qk(name: &str, cfg: &LlamaConfig) -> bool {
    gguf_permutes_qk(cfg.kind) && (name.contains(".attn_q.") || name.contains(".attn_k."))
}

/// Rows of q/k weights (and biases) in the architecture's rotary layout.
fn gguf_rows(name: &str, w: &Tensor, cfg: &LlamaConfig) -> Result<Tensor> {
    if !gguf_permutes_qk(cfg.kind) {
        return Ok(w.clone());
    }
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

/// One tensor of the file: its directory entry, and its bytes held or made only when the
/// writer reaches it (a planned tensor is quantized then, so an export holds one
/// tensor's values and bytes at a time, not the whole model's).
struct Out<'a> {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    len: u64,
    data: Data<'a>,
}

enum Data<'a> {
    Held(Vec<u8>),
    Made(Box<dyn Fn() -> Result<Vec<u8>> + 'a>),
}

impl std::fmt::Debug for Out<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("type_id", &self.type_id)
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> Out<'a> {
    fn held(t: GgufTensorOut) -> Out<'a> {
        Out {
            name: t.name,
            dims: t.dims,
            type_id: t.type_id,
            len: t.bytes.len() as u64,
            data: Data::Held(t.bytes),
        }
    }

    fn head(&self) -> TensorHead<'_> {
        TensorHead {
            name: &self.name,
            dims: &self.dims,
            type_id: self.type_id,
            len: self.len,
        }
    }

    fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        match &self.data {
            Data::Held(b) => Ok(Cow::Borrowed(b)),
            Data::Made(make) => Ok(Cow::Owned(make()?)),
        }
    }
}

fn f32_tensor<'a>(name: &str, w: &Tensor) -> Result<Out<'a>> {
    let dims: Vec<u64> = w.dims().iter().rev().map(|&d| d as u64).collect();
    let data = crate::model::widened(w)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Out::held(GgufTensorOut {
        name: name.to_string(),
        dims,
        type_id: GgmlType::F32.gguf_id(),
        bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }))
}

/// Block parts in llama.cpp's converter order (the HF module order within a layer).
const BLOCK_ORDER: [&str; 14] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_qkv",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "post_attention_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "post_ffw_norm",
];

/// Position of a tensor in an HF source's GGUF: embedding, blocks (parts in
/// `BLOCK_ORDER`), output norm, output.
fn file_order(name: &str) -> (usize, usize, usize, String) {
    const TOP: [&str; 3] = ["token_embd.", "output_norm.", "output."];
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some((b, part)) = rest.split_once('.') {
            let p = BLOCK_ORDER
                .iter()
                .position(|x| part.starts_with(&format!("{x}.")))
                .unwrap_or(BLOCK_ORDER.len());
            return (1, b.parse().unwrap_or(usize::MAX), p, name.to_string());
        }
    }
    match TOP.iter().position(|t| name.starts_with(t)) {
        Some(0) => (0, 0, 0, name.to_string()),
        Some(i) => (2, 0, i, name.to_string()),
        None => (3, 0, 0, name.to_string()),
    }
}

/// Tensors qevo splits at load and writes as parts: a part missing from a GGUF source
/// takes its fused parent's place there (Phi-3's `attn_qkv` becomes q, k, v).
const FUSED_PARENTS: [(&str, &str); 3] = [
    (".attn_q.weight", ".attn_qkv.weight"),
    (".attn_k.weight", ".attn_qkv.weight"),
    (".attn_v.weight", ".attn_qkv.weight"),
];

/// Position of a tensor in a GGUF source's order (parts at their fused parent's place).
fn source_order(name: &str, pos: &HashMap<&str, usize>) -> usize {
    if let Some(&p) = pos.get(name) {
        return p;
    }
    FUSED_PARENTS
        .iter()
        .find_map(|(part, parent)| {
            let stem = name.strip_suffix(part)?;
            pos.get(format!("{stem}{parent}").as_str()).copied()
        })
        .unwrap_or(usize::MAX)
}

/// Where the planned tensors' bytes come from.
enum PlannedBytes<'a> {
    /// Quantize the model's weights with this rounding (what the search scored).
    Quantize(&'a RoundingInputs),
    /// Already quantized block bytes per tensor, in qevo's row order (a tuned model).
    Given(&'a [Vec<u8>]),
    /// No data: names, shapes and types only, for the file's size apart from the planned
    /// tensors (`gguf_fixed_bytes`).
    Layout,
}

/// Reorders whole rows of packed bytes into the GGUF row order `gguf_rows` gives the
/// weights (the permutation is read off a column of row indices, exact below 2^24 rows).
fn gguf_byte_rows(name: &str, bytes: &[u8], rows: usize, cfg: &LlamaConfig) -> Result<Vec<u8>> {
    let index: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let index = Tensor::from_vec(index, (rows, 1), &candle_core::Device::Cpu)?;
    let order = gguf_rows(name, &index, cfg)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let width = bytes.len() / rows.max(1);
    Ok(order
        .iter()
        .flat_map(|&r| &bytes[r as usize * width..(r as usize + 1) * width])
        .copied()
        .collect())
}

/// The planned tensors, their bytes (in GGUF row order) made when written.
fn planned_tensors<'a>(
    model: &'a Model,
    plan: &ResolvedPlan,
    source: &'a PlannedBytes<'a>,
    cfg: &'a LlamaConfig,
    arch: &GgufArch,
) -> Result<Vec<Out<'a>>> {
    let outs = model
        .tensors
        .iter()
        .zip(&model.weights)
        .zip(&plan.types)
        .enumerate()
        .map(|(i, ((info, w), &t))| {
            // Stacked experts are llama.cpp's 3-d `ffn_*_exps` {cols, rows, experts}.
            let dims = match info.experts {
                Some(e) => vec![
                    info.cols as u64,
                    (info.rows / e.total) as u64,
                    e.total as u64,
                ],
                None => vec![info.cols as u64, info.rows as u64],
            };
            let len = t.tensor_bytes(info.rows, info.cols);
            let data = match source {
                PlannedBytes::Given(all) => {
                    let b = all.get(i).ok_or_else(|| {
                        Error::tensor(&model.source, &info.name, "no tuned bytes")
                    })?;
                    if Some(b.len()) != len {
                        return Err(Error::tensor(
                            &model.source,
                            &info.name,
                            format!("{} tuned bytes do not make a {} tensor", b.len(), t.name()),
                        ));
                    }
                    let (name, rows) = (&info.name, info.rows);
                    Data::Made(Box::new(move || gguf_byte_rows(name, b, rows, cfg)))
                }
                PlannedBytes::Layout => Data::Held(Vec::new()),
                // The evaluator's own entry point, so the bytes are the ones it scored
                // (an importance matrix and input moments are per column, and output
                // rounding treats rows independently: the row permutation leaves both
                // valid).
                PlannedBytes::Quantize(rounding) => {
                    let quantize = move || {
                        let values = match permuted_qk(&info.name, cfg) {
                            // One f32 copy of the weight (an 8B model's embedding: 2 GB).
                            false => w.values()?,
                            true => {
                                let w = gguf_rows(&info.name, &w.tensor()?, cfg)?;
                                crate::model::widened(&w)?.flatten_all()?.to_vec1::<f32>()?
                            }
                        };
                        rounding.quantize_ggml(i, info, &values, t)
                    };
                    match len {
                        Some(_) => Data::Made(Box::new(quantize)),
                        // No whole blocks: quantizing says why, naming the tensor.
                        None => Data::Held(quantize()?),
                    }
                }
            };
            let len = match (&data, source) {
                (_, PlannedBytes::Layout) => 0,
                (Data::Held(b), _) => b.len() as u64,
                (Data::Made(_), _) => len.unwrap_or(0) as u64,
            };
            Ok(Out {
                name: info.name.clone(),
                dims,
                type_id: t.gguf_id(),
                len,
                data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    match arch.fused_gate_up {
        true => fuse_gate_up(outs),
        false => Ok(outs),
    }
}

/// Each block's `ffn_gate` and `ffn_up` as one `ffn_up` of gate rows then up rows.
fn fuse_gate_up(outs: Vec<Out<'_>>) -> Result<Vec<Out<'_>>> {
    let mut gates: HashMap<String, Out> = HashMap::new();
    let mut res = Vec::with_capacity(outs.len());
    for t in outs {
        if let Some(stem) = t.name.strip_suffix(".ffn_gate.weight") {
            gates.insert(stem.to_string(), t);
            continue;
        }
        match t
            .name
            .strip_suffix(".ffn_up.weight")
            .and_then(|s| gates.remove(s))
        {
            Some(gate) => res.push(fuse_rows(gate, t)?),
            None => res.push(t),
        }
    }
    match gates.into_values().next() {
        Some(g) => Err(Error::Plan {
            tensor: g.name,
            msg: "no ffn_up to fuse with (llama.cpp's phi3 stores gate and up as one tensor)"
                .into(),
        }),
        None => Ok(res),
    }
}

/// `top` rows then `bottom` rows, named as `bottom`. Every GGML block lies inside one
/// row and is quantized from that row alone, so the concatenated bytes are the bytes of
/// the concatenated matrix: exactly what was scored for each part.
fn fuse_rows<'a>(top: Out<'a>, bottom: Out<'a>) -> Result<Out<'a>> {
    let type_name = |id: u32| ggml_type_info(id).map_or("?", |t| t.name);
    if top.type_id != bottom.type_id {
        return Err(Error::Plan {
            tensor: top.name.clone(),
            msg: format!(
                "llama.cpp stores `{}` and `{}` as one tensor (`{}`, gate rows first), so they need one type; the plan gives {} and {}",
                top.name,
                bottom.name,
                bottom.name,
                type_name(top.type_id),
                type_name(bottom.type_id)
            ),
        });
    }
    if top.dims.len() != 2 || top.dims[0] != bottom.dims[0] {
        return Err(Error::Plan {
            tensor: top.name,
            msg: format!(
                "rows of {:?} and {:?} cannot be stacked",
                top.dims, bottom.dims
            ),
        });
    }
    let dims = vec![top.dims[0], top.dims[1] + bottom.dims[1]];
    let (name, type_id, len) = (bottom.name.clone(), top.type_id, top.len + bottom.len);
    let data = match (top.data, bottom.data) {
        (Data::Held(mut t), Data::Held(b)) => {
            t.extend_from_slice(&b);
            Data::Held(t)
        }
        (t, b) => {
            let part = |d: &Data<'a>| -> Result<Vec<u8>> {
                match d {
                    Data::Held(x) => Ok(x.clone()),
                    Data::Made(make) => make(),
                }
            };
            Data::Made(Box::new(move || {
                let mut bytes = part(&t)?;
                bytes.extend_from_slice(&part(&b)?);
                Ok(bytes)
            }))
        }
    };
    Ok(Out {
        name,
        dims,
        type_id,
        len,
        data,
    })
}

fn hf_metadata(model: &Model, cfg: &LlamaConfig, arch: &GgufArch) -> Result<Vec<(String, Value)>> {
    let dir = &model.source;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut md = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.name.into()),
        ),
        ("general.name".to_string(), Value::String(name)),
    ];
    md.extend(arch.hparams(cfg));
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

/// The non-planned tensors of the model (norms, biases) in f32, for an HF source.
fn hf_aux_tensors<'a>(model: &Model, cfg: &LlamaConfig) -> Result<Vec<Out<'a>>> {
    let mut out = model
        .llama_aux_tensors()
        .unwrap_or_default()
        .iter()
        .map(|(name, t)| f32_tensor(name, &gguf_rows(name, t, cfg)?))
        .collect::<Result<Vec<_>>>()?;
    for (name, v) in rope_tensors(cfg) {
        let n = v.len();
        out.push(f32_tensor(
            name,
            &Tensor::from_vec(v, n, &candle_core::Device::Cpu)?,
        )?);
    }
    Ok(out)
}

/// A GGUF source's non-planned tensors (norms, biases), byte for byte; fused tensors
/// qevo split at load (Phi-3's `attn_qkv`) are superseded by their parts.
fn gguf_aux_tensors<'a>(model: &Model, src: &Gguf) -> Vec<Out<'a>> {
    let aux: HashSet<String> = model
        .llama_aux_tensors()
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    src.tensors
        .iter()
        .filter(|t| aux.contains(&t.name) || GGUF_ROPE_TENSORS.contains(&t.name.as_str()))
        .map(|t| {
            Out::held(GgufTensorOut {
                name: t.name.clone(),
                dims: t.dims.clone(),
                type_id: t.type_id,
                bytes: src.tensor_bytes(t).to_vec(),
            })
        })
        .collect()
}

/// Writes `model` quantized by `plan` as a GGUF file at `out` (atomically).
/// `rounding` (as `WeightCache::with_rounding` takes it) must be what the plan was
/// evaluated with, so every block type rounds the same way.
pub fn export_gguf(
    model: &Model,
    plan: &ResolvedPlan,
    rounding: &RoundingInputs,
    out: &Path,
) -> Result<ExportSummary> {
    write_gguf(model, plan, &PlannedBytes::Quantize(rounding), out)
}

/// Writes a tuned model (`tune::Tuned`: block bytes and norms) as a GGUF file at `out`
/// (atomically): the tuned bytes byte for byte, the tuned norms and biases as f32.
pub fn export_tuned_gguf(
    model: &Model,
    tuned: &crate::tune::Tuned,
    out: &Path,
) -> Result<ExportSummary> {
    let aux: Vec<Tensor> = tuned.aux.iter().map(|(_, t)| t.clone()).collect();
    let m = model.with_llama_aux(&aux, false)?;
    let plan = ResolvedPlan {
        types: tuned.types.clone(),
        formats: tuned.types.iter().map(|&t| WeightFormat::Ggml(t)).collect(),
        fallbacks: Vec::new(),
    };
    write_gguf(&m, &plan, &PlannedBytes::Given(&tuned.bytes), out)
}

fn write_gguf(
    model: &Model,
    plan: &ResolvedPlan,
    source: &PlannedBytes,
    out: &Path,
) -> Result<ExportSummary> {
    check_output_path(&model.source, out)?;
    let (w, tensors, planned_tensor_bytes, other_tensor_bytes) = assemble(model, plan, source)?;
    let heads: Vec<TensorHead> = tensors.iter().map(Out::head).collect();
    let layout = w.write_streamed(out, &heads, |i| tensors[i].bytes())?;
    Ok(ExportSummary {
        path: out.to_path_buf(),
        layout,
        planned_tensor_bytes,
        other_tensor_bytes,
        fallbacks: plan.fallbacks.clone(),
    })
}

/// Bytes a GGUF export of `model` holds besides the planned tensors' data, whatever the
/// plan: header, metadata and tensor directory (their lengths do not depend on the
/// types), norms and other tensors, and the alignment padding at its most. A size
/// budget for a whole file minus this is a budget the planned tensors can fill.
pub fn gguf_fixed_bytes(model: &Model) -> Result<u64> {
    let n = model.tensors.len();
    let plan = ResolvedPlan {
        types: vec![GgmlType::F16; n],
        formats: vec![WeightFormat::Ggml(GgmlType::F16); n],
        fallbacks: Vec::new(),
    };
    let (w, tensors, _, other) = assemble(model, &plan, &PlannedBytes::Layout)?;
    let heads: Vec<TensorHead> = tensors.iter().map(Out::head).collect();
    let (header, alignment) = w.header_bytes_for(&heads)?;
    Ok(header.div_ceil(alignment) * alignment + other + tensors.len() as u64 * (alignment - 1))
}

/// The writer for `model` under `plan` (its metadata) and every tensor in the file's
/// order, with the planned and the other tensors' byte counts.
fn assemble<'a>(
    model: &'a Model,
    plan: &ResolvedPlan,
    source: &'a PlannedBytes<'a>,
) -> Result<(GgufWriter, Vec<Out<'a>>, u64, u64)> {
    let (cfg, arch) = llama_config(model)?;
    if plan.types.len() != model.tensors.len() {
        return Err(Error::tensor_count(
            "plan",
            plan.types.len(),
            model.tensors.len(),
        ));
    }
    let planned = planned_tensors(model, plan, source, cfg, arch)?;
    let planned_tensor_bytes: u64 = planned.iter().map(|t| t.len).sum();
    let mut w = GgufWriter::default();
    let src = match model.source.is_dir() {
        true => None,
        false => Some(Gguf::open(&model.source)?),
    };
    let others = match &src {
        None => {
            w.metadata = hf_metadata(model, cfg, arch)?;
            hf_aux_tensors(model, cfg)?
        }
        Some(src) => {
            w.metadata = src.metadata.clone();
            match source {
                PlannedBytes::Quantize(_) | PlannedBytes::Layout => gguf_aux_tensors(model, src),
                // Tuned norms replace the source's.
                PlannedBytes::Given(_) => hf_aux_tensors(model, cfg)?,
            }
        }
    };
    let ftype = FILE_TYPES
        .iter()
        .find(|(t, _)| *t == dominant_type(model, plan))
        .map(|(_, f)| *f)
        .unwrap_or(0);
    w.set("general.file_type", Value::U32(ftype));
    w.set("general.quantization_version", Value::U32(2));
    let other_tensor_bytes: u64 = others.iter().map(|t| t.len).sum();
    let mut all: Vec<Out> = planned.into_iter().chain(others).collect();
    // A GGUF source keeps its own tensor order; an HF source gets llama.cpp's.
    match &src {
        None => all.sort_by_cached_key(|t| file_order(&t.name)),
        Some(src) => {
            let pos: HashMap<&str, usize> = src
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect();
            all.sort_by_cached_key(|t| source_order(&t.name, &pos));
        }
    }
    Ok((w, all, planned_tensor_bytes, other_tensor_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types_label_every_quantizable_type_as_llama_h_numbers_it() {
        for t in GgmlType::ALL {
            assert!(FILE_TYPES.iter().any(|(u, _)| *u == t), "{t}");
        }
        // llama.h: LLAMA_FTYPE_MOSTLY_IQ1_S = 24, LLAMA_FTYPE_MOSTLY_IQ1_M = 31.
        assert!(FILE_TYPES.contains(&(GgmlType::Iq1S, 24)));
        assert!(FILE_TYPES.contains(&(GgmlType::Iq1M, 31)));
    }

    fn out(name: &str, t: GgmlType, rows: usize, cols: usize, data: &[f32]) -> Out<'static> {
        // Types llama.cpp only writes with an importance matrix get a non-uniform one.
        let im: Vec<f32> = (0..cols).map(|c| 1.0 + (c % 7) as f32).collect();
        let im = t.requires_imatrix().then_some(im.as_slice());
        Out::held(GgufTensorOut {
            name: name.into(),
            dims: vec![cols as u64, rows as u64],
            type_id: t.gguf_id(),
            bytes: WeightFormat::Ggml(t)
                .quantize(data, rows, cols, im)
                .unwrap()
                .bytes,
        })
    }

    /// Fusing quantized gate and up rows is byte-exact only if every type quantizes each
    /// row on its own; checked for every type qevo writes.
    #[test]
    fn stacking_quantized_rows_equals_quantizing_stacked_rows() {
        let (cols, g, u) = (256, 3, 5);
        let data: Vec<f32> = (0..(g + u) * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i / cols) as f32))
            .collect();
        for t in GgmlType::ALL {
            let gate = out("blk.0.ffn_gate.weight", t, g, cols, &data[..g * cols]);
            let up = out("blk.0.ffn_up.weight", t, u, cols, &data[g * cols..]);
            let whole = out("blk.0.ffn_up.weight", t, g + u, cols, &data);
            let fused = fuse_rows(gate, up).unwrap();
            assert_eq!(fused.dims, whole.dims, "{t}");
            assert!(
                fused.bytes().unwrap() == whole.bytes().unwrap(),
                "{t}: stacked bytes differ"
            );
        }
    }

    #[test]
    fn fusing_gate_and_up_of_two_types_names_both() {
        let data = vec![0.5f32; 2 * 32];
        let outs = vec![
            out("blk.3.ffn_gate.weight", GgmlType::Q8_0, 2, 32, &data),
            out("blk.3.ffn_up.weight", GgmlType::Q4_0, 2, 32, &data),
        ];
        let e = fuse_gate_up(outs).unwrap_err().to_string();
        assert!(
            e.contains("blk.3.ffn_gate.weight")
                && e.contains("blk.3.ffn_up.weight")
                && e.contains("q8_0")
                && e.contains("q4_0"),
            "{e}"
        );
    }

    #[test]
    fn split_parts_take_their_fused_parents_place() {
        let src = [
            "token_embd.weight",
            "blk.0.attn_output.weight",
            "blk.0.attn_qkv.weight",
        ];
        let pos: HashMap<&str, usize> = src.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        assert_eq!(source_order("blk.0.attn_k.weight", &pos), 2);
        assert_eq!(source_order("blk.0.attn_output.weight", &pos), 1);
        assert_eq!(source_order("blk.1.attn_q.weight", &pos), usize::MAX);
    }

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
