//! Packed-safetensors export (`quant_method: "qevo-int"`) for llama-family and BERT
//! Hugging Face sources: generic integer weights as their exact packed bytes split into U8 sections
//! (scales, zero points, codes), float-format weights in their dtype, norms and biases f32,
//! plus `quantization_config.json` describing every packed tensor and the layout, so qevo
//! (and any reader that follows the description) decodes the weights the plan was scored
//! with. GGML block formats belong in GGUF and are refused. A BERT encoder's other tensors
//! (embeddings of positions and token types, LayerNorms, biases) are copied from the
//! source as stored.

use super::st_writer::{self, StHead};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{llama_hf_name, raw_tensors, Arch, Model};
use crate::plan::TensorChoice;
use crate::plan::TensorPlan;
use crate::quant::packed_layout::{
    layout_description, PackedTensorEntry, QuantConfigFile, UnpackedTensorEntry, CONFIG_FILE,
    FORMAT_VERSION, QUANT_METHOD, SECTIONS,
};
use crate::quant::{GgmlType, Packed, WeightFormat};
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What was written, with the byte counts a plan's size is checked against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SafetensorsExport {
    pub dir: PathBuf,
    /// Bytes of the planned tensors as stored (packed sections plus float tensors):
    /// equals `TensorPlan::size_bytes`.
    pub planned_tensor_bytes: u64,
    /// The generic-integer part of it (all sections of all packed tensors).
    pub packed_bytes: u64,
    pub packed_tensors: usize,
    /// Bytes of the f32 norms and biases.
    pub other_tensor_bytes: u64,
    /// Size of `model.safetensors`.
    pub file_bytes: u64,
}

/// Source files copied unchanged when present (config.json is rewritten, not copied).
pub(super) const COPIED: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Float formats stored as plain tensors, with their safetensors dtype.
pub(super) const FLOAT_DTYPES: [(GgmlType, Dtype); 3] = [
    (GgmlType::F32, Dtype::F32),
    (GgmlType::F16, Dtype::F16),
    (GgmlType::BF16, Dtype::BF16),
];

/// Refuses an output directory that is the source model's directory (or a file).
pub fn check_output_dir(source: &Path, out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Invalid(format!(
            "output {} exists and is not a directory",
            out.display()
        )));
    }
    // A GGUF source beside the files the directory receives, or a directory that is (or
    // is inside) the source model's, resolved through `..` and directories still to be
    // made (`MODEL/sub/..` replaced the model's own files).
    let beside = source.is_file()
        && source.parent().and_then(crate::fsutil::landing_path)
            == crate::fsutil::landing_path(out);
    if crate::fsutil::writes_over(out, source) || beside {
        return Err(Error::Overwrite {
            out: out.to_path_buf(),
            what: "source model",
            input: source.to_path_buf(),
        });
    }
    Ok(())
}

pub(super) struct OutTensor {
    pub(super) name: String,
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `model` quantized by `plan` as a packed-safetensors directory `out_dir`
/// (created if needed; never the source directory).
pub fn export_safetensors(
    model: &Model,
    plan: &TensorPlan,
    out_dir: &Path,
) -> Result<SafetensorsExport> {
    check_output_dir(&model.source, out_dir)?;
    let choices = plan.per_tensor(model)?;
    check_exportable(model, &choices, "packed safetensors")?;
    let packed = packed_layout(model, &choices)?;
    let mut aux = Vec::new();
    let other_tensor_bytes = push_aux_tensors(model, &mut aux)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let file_bytes = write_model_file(
        &out_dir.join("model.safetensors"),
        packed.units,
        &aux,
        QUANT_METHOD,
        |i, unit| pack_tensor(model, i, &choices[i], unit),
    )?;
    let qcfg = QuantConfigFile {
        format_version: FORMAT_VERSION,
        quant_method: QUANT_METHOD.to_string(),
        layout: layout_description(),
        tensors: packed.entries,
        unpacked: packed.unpacked,
    };
    write_side_files(model, out_dir, &qcfg)?;
    Ok(SafetensorsExport {
        dir: out_dir.to_path_buf(),
        planned_tensor_bytes: packed.packed_bytes + packed.float_bytes,
        packed_bytes: packed.packed_bytes,
        packed_tensors: qcfg.tensors.len(),
        other_tensor_bytes,
        file_bytes,
    })
}

/// Refuses, before any work is done, a source packed safetensors cannot hold: not a
/// Hugging Face directory, an architecture without a name mapping back, or a GGML block
/// format.
/// `what` names the export in messages (`packed safetensors`, `compressed-tensors`).
pub(super) fn check_exportable(
    model: &Model,
    choices: &[crate::plan::TensorChoice],
    what: &str,
) -> Result<()> {
    if !model.source.is_dir() {
        return Err(Error::unsupported(
            format!("{}: {what} export", model.source.display()),
            "needs a Hugging Face source (a model directory), not a GGUF file",
        ));
    }
    // Gemma (norms held as 1 + w, other module names), OLMo-2 (post-norm names), Phi-3
    // (fused matrices split at load) and the MoE families (experts stacked at load) need
    // their own name and value mapping before they can be written back.
    let cfg = match &model.arch {
        Arch::Llama(cfg) => cfg,
        Arch::Bert(_) => return check_block_formats(model, choices, what),
        _ => {
            return Err(Error::unsupported(
                format!("{}: {what} export", model.source.display()),
                format!(
                    "supports the llama family (llama, qwen2, qwen3, mistral) and BERT; this model is {}",
                    model.arch.kind().as_str()
                ),
            ))
        }
    };
    if matches!(
        cfg.kind,
        crate::model::ArchKind::Gemma2
            | crate::model::ArchKind::Gemma3
            | crate::model::ArchKind::Phi3
            | crate::model::ArchKind::Olmo2
            | crate::model::ArchKind::Qwen3Moe
            | crate::model::ArchKind::Mixtral
    ) {
        return Err(Error::unsupported(
            format!("{}: {what} export", model.source.display()),
            format!(
                "does not write {} yet (llama, qwen2, qwen3, mistral)",
                cfg.kind.as_str()
            ),
        ));
    }
    check_block_formats(model, choices, what)
}

/// Refuses GGML block formats before any work is done.
fn check_block_formats(
    model: &Model,
    choices: &[crate::plan::TensorChoice],
    what: &str,
) -> Result<()> {
    for (info, c) in model.tensors.iter().zip(choices) {
        if let WeightFormat::Ggml(t) = c.format {
            if !FLOAT_DTYPES.iter().any(|(f, _)| *f == t) {
                return Err(Error::tensor(
                    &model.source,
                    &info.name,
                    format!(
                        "format {t} is a GGML block format: {what} holds generic integer \
                         and f32/f16/bf16 formats (export GGML types as GGUF)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The planned tensors as the header declares them (one unit per planned tensor, in the
/// model's order: a packed tensor's U8 sections, or a float tensor), with their schema
/// entries, all from the shapes alone.
struct PackedLayout {
    units: Vec<Vec<StHead>>,
    entries: Vec<PackedTensorEntry>,
    unpacked: Vec<UnpackedTensorEntry>,
    packed_bytes: u64,
    float_bytes: u64,
}

fn packed_layout(model: &Model, choices: &[crate::plan::TensorChoice]) -> Result<PackedLayout> {
    let mut lay = PackedLayout {
        units: Vec::new(),
        entries: Vec::new(),
        unpacked: Vec::new(),
        packed_bytes: 0,
        float_bytes: 0,
    };
    for (info, c) in model.tensors.iter().zip(choices) {
        let hf = out_name(model, &info.name);
        match c.format {
            WeightFormat::Int(f) => {
                let entry = PackedTensorEntry::new(&hf, &info.name, f, info.rows, info.cols);
                let unit: Vec<StHead> = SECTIONS
                    .iter()
                    .filter_map(|suffix| {
                        entry.sections.get(*suffix).map(|&len| StHead {
                            name: format!("{hf}.{suffix}"),
                            dtype: Dtype::U8,
                            shape: vec![len],
                        })
                    })
                    .collect();
                lay.packed_bytes += entry.sections.values().sum::<usize>() as u64;
                lay.units.push(unit);
                lay.entries.push(entry);
            }
            WeightFormat::Ggml(t) => {
                let head = StHead {
                    name: hf.clone(),
                    dtype: float_dtype(model, &info.name, t)?,
                    shape: vec![info.rows, info.cols],
                };
                lay.float_bytes += declared_bytes(model, &head)?;
                lay.unpacked.push(UnpackedTensorEntry {
                    name: hf,
                    canonical_name: info.name.clone(),
                    format: t.name().to_string(),
                });
                lay.units.push(vec![head]);
            }
        }
    }
    Ok(lay)
}

/// The safetensors dtype a float format is stored in.
pub(super) fn float_dtype(model: &Model, name: &str, t: GgmlType) -> Result<Dtype> {
    FLOAT_DTYPES
        .iter()
        .find(|(f, _)| *f == t)
        .map(|(_, d)| *d)
        .ok_or_else(|| Error::tensor(&model.source, name, "not a float format"))
}

/// Bytes a declared tensor takes.
pub(super) fn declared_bytes(model: &Model, h: &StHead) -> Result<u64> {
    h.byte_len()
        .map(|n| n as u64)
        .ok_or_else(|| Error::tensor(&model.source, &h.name, "shape too large to address"))
}

/// Planned tensor `i` quantized with the evaluator's own quantizer (so the bytes decode to
/// the weights it scored), split into the parts `unit` declares.
fn pack_tensor(
    model: &Model,
    i: usize,
    c: &crate::plan::TensorChoice,
    unit: &[StHead],
) -> Result<Vec<Vec<u8>>> {
    let info = &model.tensors[i];
    let p = quantize_planned(model, i, c)?;
    let lens = unit
        .iter()
        .map(|h| declared_bytes(model, h).map(|n| n as usize))
        .collect::<Result<Vec<_>>>()?;
    split_parts(p.bytes, &lens).ok_or_else(|| {
        Error::tensor(
            &model.source,
            &info.name,
            "packed bytes differ in length from the layout's sections",
        )
    })
}

/// Elements of a float-format weight widened at a time (16 MiB of f32).
const FLOAT_PIECE_ELEMS: usize = 1 << 22;

/// Planned tensor `i` in its format, by the evaluator's own quantizer, so the bytes decode
/// to the weights it scored. A float format converts each value on its own, so a mapped
/// weight is widened a slice of rows at a time: the same bytes, without the whole
/// tensor's f32 copy beside them (a bf16 embedding's is 1 GB at 1B, 2 GB at 8B). A
/// generic integer format may take one scale over the whole tensor: widened whole.
pub(super) fn quantize_planned(model: &Model, i: usize, c: &TensorChoice) -> Result<Packed> {
    let info = &model.tensors[i];
    let w = model.weights.get(i)?;
    let piece_rows = (FLOAT_PIECE_ELEMS / info.cols.max(1)).max(1);
    let float = matches!(c.format, WeightFormat::Ggml(t) if !t.is_quantized());
    if !float || !w.decodes_rows() || info.rows <= piece_rows {
        let data = w.values()?;
        return c
            .format
            .quantize_named(&info.name, &data, info.rows, info.cols, None);
    }
    let mut out = Packed {
        format: c.format,
        rows: info.rows,
        cols: info.cols,
        bytes: Vec::new(),
    };
    for start in (0..info.rows).step_by(piece_rows) {
        let len = piece_rows.min(info.rows - start);
        let piece = w.rows_f32(start, len)?.flatten_all()?.to_vec1::<f32>()?;
        let p = c
            .format
            .quantize_named(&info.name, &piece, len, info.cols, None)?;
        out.format = p.format;
        out.bytes.extend_from_slice(&p.bytes);
    }
    Ok(out)
}

/// `bytes` cut into consecutive parts of `lens`; `None` unless the lengths add up.
pub(super) fn split_parts(bytes: Vec<u8>, lens: &[usize]) -> Option<Vec<Vec<u8>>> {
    if lens.iter().sum::<usize>() != bytes.len() {
        return None;
    }
    if lens.len() == 1 {
        return Some(vec![bytes]);
    }
    let mut rest = bytes.as_slice();
    Some(
        lens.iter()
            .map(|&n| {
                let (head, tail) = rest.split_at(n);
                rest = tail;
                head.to_vec()
            })
            .collect(),
    )
}

/// The Hugging Face name a planned tensor is written under.
pub(super) fn out_name(model: &Model, canonical: &str) -> String {
    match model.arch {
        Arch::Bert(_) => crate::model::bert_hf_name(canonical).unwrap_or_else(|| canonical.into()),
        _ => llama_hf_name(canonical),
    }
}

/// BERT: every source tensor the plan does not cover, as stored.
fn copy_source_tensors(model: &Model, out: &mut Vec<OutTensor>) -> Result<u64> {
    let planned: std::collections::HashSet<String> = model
        .tensors
        .iter()
        .map(|t| out_name(model, &t.name))
        .collect();
    let kept = raw_tensors(&model.source, |n| {
        !planned.contains(n.strip_prefix("bert.").unwrap_or(n))
    })?;
    let mut bytes = 0u64;
    for t in kept {
        bytes += t.bytes.len() as u64;
        out.push(OutTensor {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            bytes: t.bytes,
        });
    }
    Ok(bytes)
}

/// Appends the f32 norms and biases (BERT: the source's other tensors); returns their bytes.
pub(super) fn push_aux_tensors(model: &Model, out: &mut Vec<OutTensor>) -> Result<u64> {
    if let Arch::Bert(_) = model.arch {
        return copy_source_tensors(model, out);
    }
    let mut other_tensor_bytes = 0u64;
    for (name, t) in model
        .llama_aux_tensors()
        .ok_or_else(|| Error::Invalid("not a llama-family model".into()))?
    {
        let bytes = f32_bytes(&t.flatten_all()?.to_vec1::<f32>()?);
        other_tensor_bytes += bytes.len() as u64;
        out.push(OutTensor {
            name: llama_hf_name(&name),
            dtype: Dtype::F32,
            shape: t.dims().to_vec(),
            bytes,
        });
    }

    Ok(other_tensor_bytes)
}

/// Writes `model.safetensors` atomically, `quant_method` in its metadata, and returns
/// its size: the planned tensors' `units` made one at a time by `make(i, unit)` (so one
/// planned tensor's bytes are held at a time, never the model's), then the `held`
/// tensors (norms, a BERT source's small tensors) as they are.
pub(super) fn write_model_file(
    st_path: &Path,
    planned: Vec<Vec<StHead>>,
    held: &[OutTensor],
    quant_method: &str,
    mut make: impl FnMut(usize, &[StHead]) -> Result<Vec<Vec<u8>>>,
) -> Result<u64> {
    let n = planned.len();
    let mut units = planned;
    units.extend(held.iter().map(|t| {
        vec![StHead {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        }]
    }));
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("quant_method".to_string(), quant_method.to_string()),
    ]);
    st_writer::write_streamed(st_path, &units, &meta, |u| match u.checked_sub(n) {
        None => Ok(make(u, &units[u])?.into_iter().map(Cow::Owned).collect()),
        Some(h) => Ok(vec![Cow::Borrowed(held[h].bytes.as_slice())]),
    })
}

/// `quantization_config.json`, the tokenizer files, then `config.json` marked quantized.
fn write_side_files(model: &Model, out_dir: &Path, qcfg: &QuantConfigFile) -> Result<()> {
    let path = out_dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(qcfg).map_err(|e| Error::serialize(&path, e))?;
    write_atomic(&path, text.as_bytes())?;
    copy_tokenizer_files(model, out_dir)?;
    write_config(
        model,
        out_dir,
        serde_json::json!({"quant_method": QUANT_METHOD, "config_file": CONFIG_FILE}),
    )
}

/// Copies the tokenizer and generation files present beside the source.
pub(super) fn copy_tokenizer_files(model: &Model, out_dir: &Path) -> Result<()> {
    for name in COPIED {
        let src = model.source.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            write_atomic(&out_dir.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// The source's `config.json` with `quantization_config` set; written last, since it is
/// what marks the directory as a quantized model.
pub(super) fn write_config(
    model: &Model,
    out_dir: &Path,
    quantization_config: serde_json::Value,
) -> Result<()> {
    let cfg_src = model.source.join("config.json");
    let text = std::fs::read_to_string(&cfg_src).map_err(|e| Error::io(&cfg_src, e))?;
    let mut cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&cfg_src, format!("invalid JSON: {e}")))?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::format(&cfg_src, "expected a JSON object"))?;
    obj.insert("quantization_config".to_string(), quantization_config);
    let path = out_dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::serialize(&path, e))?;
    write_atomic(&path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float weight of more than one piece is widened and converted a slice of rows at
    /// a time: the bytes equal converting the whole weight at once.
    #[test]
    fn a_float_weight_converted_in_row_pieces_equals_converting_it_whole() {
        let d = tempfile::tempdir().unwrap();
        let shape = crate::model::synthetic::LlamaShape {
            layers: 1,
            vocab: 2 * FLOAT_PIECE_ELEMS / 64 + 77,
            ..Default::default()
        };
        crate::model::synthetic::write_llama_dir(d.path(), &shape, 3).unwrap();
        let m = Model::load(d.path()).unwrap();
        let i = m.tensor_index("token_embd.weight").unwrap();
        let (info, w) = (&m.tensors[i], m.weights.get(i).unwrap());
        assert!(w.decodes_rows() && info.rows * info.cols > 2 * FLOAT_PIECE_ELEMS);
        let values = w.values().unwrap();
        for f in ["bf16", "f16", "f32"] {
            let format = WeightFormat::parse(f).unwrap();
            let c = TensorChoice {
                format,
                act_bits: 16,
            };
            let got = quantize_planned(&m, i, &c).unwrap();
            let whole = format
                .quantize_named(&info.name, &values, info.rows, info.cols, None)
                .unwrap();
            assert!(got.bytes == whole.bytes, "{f}");
            assert_eq!(got.format, whole.format);
        }
    }

    #[test]
    fn output_dir_equal_to_source_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let err = check_output_dir(d.path(), d.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("overwrite the source"), "{err}");
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(check_output_dir(d.path(), &f).is_err());
        assert!(check_output_dir(d.path(), &d.path().join("new")).is_err());
    }

    /// `MODEL/sub/..` (a directory not made yet) replaced the source's files: it is the
    /// source directory, and refused; a sibling directory is not.
    #[test]
    fn an_output_through_a_missing_subdirectory_and_dotdot_is_the_source() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("model");
        std::fs::create_dir(&src).unwrap();
        let sneaky = src.join("sub").join("..");
        assert!(check_output_dir(&src, &sneaky).is_err());
        let file = src.join("sub").join("..").join("model.gguf");
        assert!(crate::plan::check_output_path(&src, &file).is_err());
        assert!(check_output_dir(&src, &root.path().join("out")).is_ok());
        assert!(check_output_dir(&src, &root.path().join("out").join("..").join("x")).is_ok());
    }
}
