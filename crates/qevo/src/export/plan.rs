//! From a plan to one GGML type per model tensor: checks that the plan belongs to this
//! model (names and shapes), maps each format to its GGML type or, with `fallback`, to
//! the nearest one by bits per weight (reported), and guards the output path.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::ggml::{dequantize_stored, quantize_rows, GgmlType};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A plan whose formats are named by string: GGML names (`q4_k`, `f16`) are exported
/// as they are; other names need a bits-per-weight figure to fall back from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GgmlPlan {
    pub entries: Vec<(String, String)>,
}

impl GgmlPlan {
    /// Every tensor of `model` in one type.
    pub fn uniform(model: &Model, t: GgmlType) -> GgmlPlan {
        GgmlPlan {
            entries: model
                .tensors
                .iter()
                .map(|i| (i.name.clone(), t.name().to_string()))
                .collect(),
        }
    }

    /// Resolves against `model`; formats that are not GGML names are errors (they carry
    /// no bits-per-weight to fall back from).
    pub fn resolve(&self, model: &Model) -> Result<ResolvedPlan> {
        let wanted = self
            .entries
            .iter()
            .map(|(n, f)| {
                let w = match GgmlType::parse(f) {
                    Some(t) => Wanted::Ggml(t),
                    None => Wanted::Other {
                        name: f.clone(),
                        bits_per_weight: None,
                    },
                };
                (n.clone(), w)
            })
            .collect();
        resolve_ggml(model, wanted, false)
    }
}

/// What a plan asks for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    Ggml(GgmlType),
    /// A non-GGML format; `bits_per_weight` (for this tensor's shape) drives `--fallback`.
    Other {
        name: String,
        bits_per_weight: Option<f64>,
    },
}

/// One tensor exported in another type than its plan names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fallback {
    pub tensor: String,
    pub planned: String,
    pub exported: GgmlType,
}

/// One GGML type per model tensor (indexed like `Model::tensors`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPlan {
    pub types: Vec<GgmlType>,
    pub fallbacks: Vec<Fallback>,
}

impl ResolvedPlan {
    /// Exact bytes of the quantizable tensors in their types.
    pub fn tensor_bytes(&self, model: &Model) -> u64 {
        model
            .tensors
            .iter()
            .zip(&self.types)
            .map(|(i, t)| t.tensor_bytes(i.rows, i.cols).unwrap_or(0) as u64)
            .sum()
    }
}

/// The GGML type whose bits per weight are closest to `bpw` among those that fit a row
/// of `cols`; on a tie the earlier in `GgmlType::ALL` (K-quants before legacy) wins.
pub fn nearest_ggml(bpw: f64, cols: usize) -> Option<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| cols % t.block_len() == 0)
        .min_by(|a, b| {
            (a.bits_per_weight() - bpw)
                .abs()
                .total_cmp(&(b.bits_per_weight() - bpw).abs())
        })
}

const SHOW: usize = 5;

fn listed(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(SHOW)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(" and {} more", names.len() - SHOW));
    }
    s
}

/// Checks `wanted` (tensor name → format) against the model and picks each tensor's
/// GGML type. A plan for another model fails here: unknown or missing tensor names, or
/// a format whose blocks do not divide this model's row length.
pub fn resolve_ggml(
    model: &Model,
    wanted: Vec<(String, Wanted)>,
    fallback: bool,
) -> Result<ResolvedPlan> {
    let mut by_name: HashMap<&str, &Wanted> = HashMap::new();
    let mut dup = Vec::new();
    for (n, w) in &wanted {
        if by_name.insert(n.as_str(), w).is_some() {
            dup.push(n.as_str());
        }
    }
    if !dup.is_empty() {
        return Err(Error::Invalid(format!(
            "plan lists tensor {} more than once",
            listed(&dup)
        )));
    }
    let unknown: Vec<&str> = wanted
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| model.tensor_index(n).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "plan names tensor {} that {} does not have: is the plan for another model?",
            listed(&unknown),
            model.source.display()
        )));
    }
    let missing: Vec<&str> = model
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !by_name.contains_key(n))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "plan has no format for tensor {} of {}: is the plan for another model?",
            listed(&missing),
            model.source.display()
        )));
    }
    let mut types = Vec::with_capacity(model.tensors.len());
    let mut fallbacks = Vec::new();
    for info in &model.tensors {
        let t = match by_name[info.name.as_str()] {
            Wanted::Ggml(t) => *t,
            Wanted::Other {
                name,
                bits_per_weight,
            } => {
                let nearest = bits_per_weight.and_then(|b| nearest_ggml(b, info.cols));
                match (fallback, nearest) {
                    (true, Some(t)) => {
                        fallbacks.push(Fallback {
                            tensor: info.name.clone(),
                            planned: name.clone(),
                            exported: t,
                        });
                        t
                    }
                    _ => return Err(Error::Invalid(format!(
                        "tensor `{}`: format `{name}` is not a GGML type, so GGUF cannot hold it{}",
                        info.name,
                        if fallback {
                            " (and it has no nearest GGML type)"
                        } else {
                            " (use --fallback to export the nearest GGML type)"
                        }
                    ))),
                }
            }
        };
        if info.cols % t.block_len() != 0 {
            return Err(Error::Invalid(format!(
                "tensor `{}` [{} x {}]: {t} needs rows of a multiple of {} values: is the plan for another model?",
                info.name,
                info.rows,
                info.cols,
                t.block_len()
            )));
        }
        types.push(t);
    }
    Ok(ResolvedPlan { types, fallbacks })
}

/// dequantize(quantize(w)) for every tensor, in the model's own (HF) row order: the
/// weights a plan is scored with in memory.
pub fn fake_quant_weights(model: &Model, plan: &ResolvedPlan) -> Result<Vec<Tensor>> {
    model
        .tensors
        .iter()
        .zip(&model.weights)
        .zip(&plan.types)
        .map(|((info, w), &t)| {
            let data = w.flatten_all()?.to_vec1::<f32>()?;
            let bytes = quantize_rows(t, &data, info.rows, info.cols, None)?;
            let back = dequantize_stored(
                t.candle(),
                t.block_bytes(),
                t.block_len(),
                &bytes,
                info.rows,
                info.cols,
            )?;
            Ok(Tensor::from_vec(
                back,
                (info.rows, info.cols),
                &Device::Cpu,
            )?)
        })
        .collect()
}

/// `path` as an absolute path with its directory resolved, whether or not it exists.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// Refuses an output path that is the source model or one of the files it was read from.
pub fn check_output_path(source: &Path, out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "output {} is a directory; give a file path",
            out.display()
        )));
    }
    let (Some(o), Some(s)) = (resolved(out), resolved(source)) else {
        return Ok(());
    };
    let clash = if s.is_dir() {
        o.parent() == Some(s.as_path())
            && o.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".safetensors")
                    || n.ends_with(".json")
                    || n.ends_with(".bin")
                    || n.ends_with(".model")
            })
    } else {
        o == s
    };
    if clash {
        return Err(Error::Invalid(format!(
            "output {} would overwrite the source model {}",
            out.display(),
            source.display()
        )));
    }
    Ok(())
}
