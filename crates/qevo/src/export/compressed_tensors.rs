//! compressed-tensors export (`quant_method: "compressed-tensors"`, format
//! `pack-quantized`) for llama-family Hugging Face sources: the directory Hugging Face
//! transformers (with the `compressed_tensors` package) and vLLM load. Generic integer
//! weights are written in `ct_layout`'s tensors, float-format weights in their dtype under
//! their own name and listed in `ignore`, norms f32; `config.json` carries the
//! `quantization_config`. The bytes come from the evaluator's own quantizer, so the
//! weights a loader decompresses are the ones the plan was scored with.
//!
//! A plan compressed-tensors cannot express is refused before anything is written, naming
//! the tensor and why (`ct_choice`): power-of-two scales, ragged groups, activation
//! quantization, GGML block formats, a quantized embedding (no loader reads one back).
//! `loader_notes` lists what transformers or vLLM refuse in a plan the layout holds.

use super::ct_layout::{
    ct_heads, ct_tensors, quantization_config, CtDtype, CtModule, CtScheme, CtStrategy,
};
use super::safetensors_export::{
    check_exportable, check_output_dir, copy_tokenizer_files, declared_bytes, float_dtype,
    out_name, push_aux_tensors, quantize_planned, write_config, write_model_file, FLOAT_DTYPES,
};
use super::st_writer::StHead;
use crate::error::{Error, Result};
use crate::model::{Arch, Model, Role, TensorInfo};
use crate::plan::TensorChoice;
use crate::plan::TensorPlan;
use crate::quant::WeightFormat;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CtExport {
    pub dir: PathBuf,
    /// Bytes of the planned tensors as stored (every packed tensor's four parts, float
    /// weights): the int32 row padding and `weight_shape` make it a little more than the
    /// plan's size.
    pub planned_tensor_bytes: u64,
    pub packed_tensors: usize,
    /// Distinct schemes (`config_groups` entries).
    pub config_groups: usize,
    /// Bytes of the f32 norms.
    pub other_tensor_bytes: u64,
    /// Size of `model.safetensors`.
    pub file_bytes: u64,
    /// What transformers or vLLM refuse in this plan (`loader_notes`); empty when both
    /// load it.
    pub loader_notes: Vec<String>,
}

/// The scheme a planned tensor is stored in (`None`: stays float), or why
/// compressed-tensors cannot hold it.
pub fn ct_choice(model: &Model, info: &TensorInfo, c: &TensorChoice) -> Result<Option<CtScheme>> {
    let refuse = |why: String| Error::tensor(&model.source, &info.name, why);
    if c.act_bits != 16 {
        return Err(refuse(format!(
            "activations quantized to {} bits: this export writes weight-only schemes \
             (qevo's calibrated activation ranges have no compressed-tensors field here)",
            c.act_bits
        )));
    }
    let f = match c.format {
        WeightFormat::Int(f) => f,
        WeightFormat::Ggml(t) if FLOAT_DTYPES.iter().any(|(g, _)| *g == t) => return Ok(None),
        WeightFormat::Ggml(t) => {
            return Err(refuse(format!(
                "format {t} is a GGML block format: compressed-tensors holds generic integer \
                 and f32/f16/bf16 formats (export GGML types as GGUF)"
            )))
        }
    };
    if info.role == Role::Embedding {
        return Err(refuse(format!(
            "{}: a packed embedding does not load (transformers 5.24 with compressed-tensors \
             0.20.1 fails initialising an Embedding without `weight`, and vLLM reads the \
             embedding as float); keep token_embd f16/bf16/f32, or export qevo-int",
            c.format.name()
        )));
    }
    CtScheme::for_format(f, info.cols)
        .map(Some)
        .map_err(|why| refuse(format!("{}: {why}", WeightFormat::Int(f).name())))
}

/// Writes `model` quantized by `plan` as a compressed-tensors directory `out_dir`
/// (created if needed; never the source directory).
pub fn export_compressed_tensors(
    model: &Model,
    plan: &TensorPlan,
    out_dir: &Path,
) -> Result<CtExport> {
    check_output_dir(&model.source, out_dir)?;
    if let Arch::Bert(_) = model.arch {
        return Err(Error::unsupported(
            format!("{}: compressed-tensors export", model.source.display()),
            "writes the llama family (llama, qwen2, qwen3, mistral); export an encoder as \
             qevo-int packed safetensors",
        ));
    }
    let choices = plan.per_tensor(model)?;
    check_exportable(model, &choices, "compressed-tensors")?;
    let schemes = model
        .tensors
        .iter()
        .zip(&choices)
        .map(|(info, c)| ct_choice(model, info, c))
        .collect::<Result<Vec<_>>>()?;
    let units = ct_units(model, &choices, &schemes)?;
    let planned_bytes = units
        .iter()
        .flatten()
        .map(|h| declared_bytes(model, h))
        .sum::<Result<u64>>()?;
    let mut aux = Vec::new();
    let other_tensor_bytes = push_aux_tensors(model, &mut aux)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let file_bytes = write_model_file(
        &out_dir.join("model.safetensors"),
        units,
        &aux,
        super::ct_layout::QUANT_METHOD,
        |i, _| ct_bytes(model, i, &choices[i], schemes[i]),
    )?;
    copy_tokenizer_files(model, out_dir)?;
    let modules = ct_modules(model, &schemes);
    let qc = quantization_config(&modules);
    let config_groups = qc["config_groups"].as_object().map_or(0, |m| m.len());
    write_config(model, out_dir, qc)?;
    Ok(CtExport {
        dir: out_dir.to_path_buf(),
        planned_tensor_bytes: planned_bytes,
        packed_tensors: schemes.iter().flatten().count(),
        config_groups,
        other_tensor_bytes,
        file_bytes,
        loader_notes: loader_notes(model, &schemes),
    })
}

/// Module names (the weight's name less `.weight`) with their schemes.
fn ct_modules(model: &Model, schemes: &[Option<CtScheme>]) -> Vec<CtModule> {
    model
        .tensors
        .iter()
        .zip(schemes)
        .map(|(info, s)| CtModule {
            name: module_name(model, &info.name),
            scheme: *s,
        })
        .collect()
}

fn module_name(model: &Model, canonical: &str) -> String {
    let hf = out_name(model, canonical);
    hf.strip_suffix(".weight").map(str::to_string).unwrap_or(hf)
}

fn safetensors_dtype(d: CtDtype) -> Dtype {
    match d {
        CtDtype::I32 => Dtype::I32,
        CtDtype::F16 => Dtype::F16,
        CtDtype::I8 => Dtype::I8,
        CtDtype::I64 => Dtype::I64,
    }
}

/// Every planned tensor as the header declares it, from the shapes alone: a packed
/// weight's `ct_layout` tensors, or a float weight under its own name.
fn ct_units(
    model: &Model,
    choices: &[TensorChoice],
    schemes: &[Option<CtScheme>],
) -> Result<Vec<Vec<StHead>>> {
    let items = model.tensors.iter().zip(choices).zip(schemes);
    items
        .map(|((info, c), scheme)| {
            let module = module_name(model, &info.name);
            match (c.format, scheme) {
                (WeightFormat::Int(f), Some(s)) => Ok(ct_heads(f, *s, info.rows, info.cols)
                    .into_iter()
                    .map(|h| StHead {
                        name: format!("{module}.{}", h.suffix),
                        dtype: safetensors_dtype(h.dtype),
                        shape: h.shape,
                    })
                    .collect()),
                (WeightFormat::Ggml(t), None) => Ok(vec![StHead {
                    name: format!("{module}.weight"),
                    dtype: float_dtype(model, &info.name, t)?,
                    shape: vec![info.rows, info.cols],
                }]),
                _ => Err(mismatch(model, info)),
            }
        })
        .collect()
}

/// Planned tensor `i` quantized with the evaluator's quantizer and laid out as `ct_units`
/// declares it.
fn ct_bytes(
    model: &Model,
    i: usize,
    c: &TensorChoice,
    scheme: Option<CtScheme>,
) -> Result<Vec<Vec<u8>>> {
    let info = &model.tensors[i];
    let p = quantize_planned(model, i, c)?;
    match (p.format, scheme) {
        (WeightFormat::Int(f), Some(s)) => {
            if f.tensor_bytes(info.rows, info.cols) != Some(p.bytes.len() as u64) {
                return Err(Error::tensor(
                    &model.source,
                    &info.name,
                    "packed bytes differ in length from the format's layout",
                ));
            }
            Ok(ct_tensors(f, s, info.rows, info.cols, &p.bytes)
                .into_iter()
                .map(|t| t.bytes)
                .collect())
        }
        (WeightFormat::Ggml(_), None) => Ok(vec![p.bytes]),
        _ => Err(mismatch(model, info)),
    }
}

fn mismatch(model: &Model, info: &TensorInfo) -> Error {
    Error::tensor(
        &model.source,
        &info.name,
        "quantized format does not match its compressed-tensors scheme",
    )
}

/// vLLM's fused modules: every member must share one scheme.
const FUSED: [(&str, &[Role]); 2] = [
    ("q/k/v (qkv_proj)", &[Role::AttnQ, Role::AttnK, Role::AttnV]),
    ("gate/up (gate_up_proj)", &[Role::FfnGate, Role::FfnUp]),
];
/// A predicate over schemes (one loader rule).
type SchemeTest = dyn Fn(&CtScheme) -> bool;
/// Widths vLLM's weight-only integer kernels (WNA16) take.
const VLLM_BITS: [u8; 2] = [4, 8];

/// What the loaders refuse in a plan compressed-tensors holds, each note naming the
/// loader: transformers 5.24 with compressed-tensors 0.20.1 expects asymmetric channel and
/// group zero points unpacked (its loader builds the module before the weights arrive, and
/// that path leaves them `[rows, groups]` int8 while the compressor stores them packed);
/// vLLM's weight-only integer kernels (WNA16) take 4 and 8 bits with the channel or group
/// strategy, and one scheme across a fused q/k/v or gate/up (`--tie-fused` keeps a
/// search's plans free of that).
pub fn loader_notes(model: &Model, schemes: &[Option<CtScheme>]) -> Vec<String> {
    let find = |pred: &SchemeTest| {
        let hits: Vec<&str> = model
            .tensors
            .iter()
            .zip(schemes)
            .filter(|(_, s)| s.as_ref().is_some_and(pred))
            .map(|(i, _)| i.name.as_str())
            .collect();
        (!hits.is_empty()).then(|| format!("{} tensor(s), e.g. {}", hits.len(), hits[0]))
    };
    let rules: [(&str, &SchemeTest); 3] = [
        (
            "transformers refuses asymmetric channel/group zero points on",
            &|s| !s.symmetric && s.strategy != CtStrategy::Tensor,
        ),
        ("vLLM refuses bits other than 4 and 8 on", &|s| {
            !VLLM_BITS.contains(&s.bits)
        }),
        (
            "vLLM refuses the per-tensor strategy (WNA16 takes channel or group) on",
            &|s| s.strategy == CtStrategy::Tensor,
        ),
    ];
    let mut notes: Vec<String> = rules
        .iter()
        .filter_map(|(what, pred)| find(pred).map(|h| format!("{what} {h}")))
        .collect();
    notes.extend(fused_mismatches(model, schemes));
    notes
}

/// Blocks whose fused members differ in scheme, one note per fused kind.
fn fused_mismatches(model: &Model, schemes: &[Option<CtScheme>]) -> Vec<String> {
    let mut notes = Vec::new();
    for (label, roles) in FUSED {
        let mut blocks: Vec<usize> = Vec::new();
        for b in 0..model.n_blocks() {
            let members: Vec<&Option<CtScheme>> = model
                .tensors
                .iter()
                .zip(schemes)
                .filter(|(i, _)| i.block == Some(b) && roles.contains(&i.role))
                .map(|(_, s)| s)
                .collect();
            if members.windows(2).any(|w| w[0] != w[1]) {
                blocks.push(b);
            }
        }
        if let Some(b) = blocks.first() {
            notes.push(format!(
                "vLLM refuses different schemes across fused {label} in {} block(s), e.g. block {b}",
                blocks.len()
            ));
        }
    }
    notes
}
