//! From a plan to one GGML type per model tensor: checks that the plan belongs to this
//! model (names and shapes), maps each format to its GGML type or, with `fallback`, to
//! the nearest one by bits per weight (reported), and guards the output path.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::plan::TensorPlan;
use crate::quant::{GgmlType, WeightFormat};
use std::collections::HashMap;
use std::path::Path;

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
    /// The plan's own formats, same order (they differ from `types` where a fallback applied).
    pub formats: Vec<WeightFormat>,
    pub fallbacks: Vec<Fallback>,
}

impl ResolvedPlan {
    /// Exact bytes of the quantizable tensors in their types.
    pub fn tensor_bytes(&self, model: &Model) -> u64 {
        model
            .tensors
            .iter()
            .zip(&self.types)
            .map(|(i, &t)| crate::plan::tensor_bytes(WeightFormat::Ggml(t), i.rows, i.cols))
            .sum()
    }
}

/// The GGML type whose bits per weight are closest to `bpw` among those that fit a row
/// of `cols`; on a tie the earlier in `GgmlType::ALL` (K-quants before legacy) wins.
pub fn nearest_ggml(bpw: f64, cols: usize) -> Option<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| cols.is_multiple_of(t.block_len()))
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

/// The plan's format per tensor name, after checking that it names every tensor of the
/// model once and nothing else (else the plan is for another model).
fn formats_by_name<'p>(
    model: &Model,
    plan: &'p TensorPlan,
) -> Result<HashMap<&'p str, WeightFormat>> {
    let mut by_name: HashMap<&str, WeightFormat> = HashMap::new();
    let mut dup = Vec::new();
    for (n, c) in &plan.entries {
        if by_name.insert(n.as_str(), c.format).is_some() {
            dup.push(n.as_str());
        }
    }
    if !dup.is_empty() {
        return Err(Error::Plan {
            tensor: dup[0].to_string(),
            msg: format!("listed more than once (all: {})", listed(&dup)),
        });
    }
    let unknown: Vec<&str> = plan
        .entries
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| model.tensor_index(n).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Plan {
            tensor: unknown[0].to_string(),
            msg: format!(
                "{} has no such tensor (unknown: {}): is the plan for another model?",
                model.source.display(),
                listed(&unknown)
            ),
        });
    }
    let missing: Vec<&str> = model
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !by_name.contains_key(n))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Plan {
            tensor: missing[0].to_string(),
            msg: format!(
                "no format for this tensor of {} (missing: {}): is the plan for another model?",
                model.source.display(),
                listed(&missing)
            ),
        });
    }
    Ok(by_name)
}

/// Checks `plan` against the model and picks each tensor's GGML type. A plan for another
/// model fails here: unknown or missing tensor names, or a format whose blocks do not
/// divide this model's row length. Non-GGML formats are errors unless `fallback`, which
/// takes the GGML type nearest in bits per weight and records it.
pub fn resolve_ggml(model: &Model, plan: &TensorPlan, fallback: bool) -> Result<ResolvedPlan> {
    let by_name = formats_by_name(model, plan)?;
    let mut types = Vec::with_capacity(model.tensors.len());
    let mut formats = Vec::with_capacity(model.tensors.len());
    let mut fallbacks = Vec::new();
    for info in &model.tensors {
        let format = by_name[info.name.as_str()];
        // A GGML type whose block does not divide the row is written as llama.cpp's
        // fallback for it (`WeightFormat::resolve`), recorded like any other fallback.
        let written = format
            .resolve(info.rows, info.cols)
            .map_err(|e| Error::Plan {
                tensor: info.name.clone(),
                msg: e.to_string(),
            })?
            .written;
        let t = match (written.ggml(), fallback) {
            (Some(t), _) => {
                if written != format {
                    fallbacks.push(Fallback {
                        tensor: info.name.clone(),
                        planned: format.name(),
                        exported: t,
                    });
                }
                t
            }
            (None, true) => {
                let t = nearest_ggml(format.bits_per_weight(info.cols), info.cols).ok_or_else(
                    || Error::Plan {
                        tensor: info.name.clone(),
                        msg: format!("no GGML type fits rows of {} values", info.cols),
                    },
                )?;
                fallbacks.push(Fallback {
                    tensor: info.name.clone(),
                    planned: format.name(),
                    exported: t,
                });
                t
            }
            (None, false) => {
                return Err(Error::Plan {
                    tensor: info.name.clone(),
                    msg: format!("format `{format}` is not a GGML type, so GGUF cannot hold it"),
                })
            }
        };
        types.push(t);
        formats.push(format);
    }
    Ok(ResolvedPlan {
        types,
        formats,
        fallbacks,
    })
}

/// Refuses an output path that is the source model or lies inside its directory.
pub fn check_output_path(source: &Path, out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::Invalid(format!(
            "output {} is a directory; give a file path",
            out.display()
        )));
    }
    // Resolved through `..`, links and directories still to be made: `MODEL/sub/..`
    // is the model directory.
    let clash = crate::fsutil::writes_over(out, source);
    if clash {
        return Err(Error::Overwrite {
            out: out.to_path_buf(),
            what: "source model",
            input: source.to_path_buf(),
        });
    }
    Ok(())
}
