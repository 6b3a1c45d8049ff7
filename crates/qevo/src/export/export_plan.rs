//! `export_plan`: a plan written in one of the export formats, with the decisions every
//! front end must make the same way (`qevo export`, Python's `Plan.export`): GGUF and
//! tensor-type overrides resolve one GGML type per tensor (with `fallback`, non-GGML
//! formats become the nearest GGML type), and a GGUF rounds with what the plan was scored
//! with (its importance matrix and output-rounding record), so it holds the scored bytes.

use super::{
    export_compressed_tensors, export_gguf, export_safetensors, write_tensor_types, CtExport,
    ExportFormat, ExportSummary, SafetensorsExport,
};
use crate::calib::{Imatrix, ScoredWith};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::plan::{resolve_ggml, Fallback, ResolvedPlan, TensorPlan};
use crate::quant::RoundingInputs;
use std::path::{Path, PathBuf};

/// How a plan is exported.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// GGUF and tensor types: write a non-GGML format as the nearest GGML type instead of
    /// failing (each such tensor is reported).
    pub fallback: bool,
    /// GGUF: round with this importance matrix (the one the plan was scored with).
    pub imatrix: Option<Imatrix>,
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub format: &'static str,
    pub path: PathBuf,
    /// Size of the file written (`model.safetensors` for a directory).
    pub file_bytes: u64,
    /// The plan's own size (`TensorPlan::size_bytes`), to compare the written bytes with.
    pub plan_bytes: u64,
    /// Tensors written in another type than planned.
    pub fallbacks: Vec<Fallback>,
    /// The plan was scored with output rounding, which only a GGUF export reproduces:
    /// this export rounds per block.
    pub rounding_not_reproduced: bool,
    /// The plan was scored with another importance matrix than this GGUF rounds with (or
    /// with one when none is given): its bytes differ from the scored ones.
    pub imatrix_mismatch: bool,
    pub written: Written,
}

/// The format's own account of what it wrote.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Written {
    Gguf(ExportSummary),
    TensorTypes {
        overrides: usize,
        /// The llama-quantize command that applies the overrides.
        command: String,
    },
    Safetensors(SafetensorsExport),
    CompressedTensors(CtExport),
}

/// Exports `plan` of `model` to `out`: see the module doc. `scored`: what the plan was
/// scored with (`ScoredWith::default()` for a new plan).
pub fn export_plan(
    model: &Model,
    plan: &TensorPlan,
    scored: &ScoredWith,
    opts: &ExportOptions,
    out: &Path,
) -> Result<ExportReport> {
    plan.validate(model)?;
    let gguf = opts.format == ExportFormat::Gguf;
    if opts.imatrix.is_some() && !gguf {
        return Err(Error::setting(
            "imatrix_file",
            "applies to GGUF exports (llama-quantize --imatrix takes it for tensor types)",
        ));
    }
    let ggml_types = matches!(opts.format, ExportFormat::Gguf | ExportFormat::TensorTypes);
    if opts.fallback && !ggml_types {
        return Err(Error::setting("fallback", "applies to GGUF exports only"));
    }
    let resolved = match ggml_types {
        true => Some(resolve_ggml(model, plan, opts.fallback)?),
        false => None,
    };
    let written = write(model, plan, scored, opts, resolved.as_ref(), out)?;
    Ok(ExportReport {
        format: format_name(opts.format),
        path: out.to_path_buf(),
        file_bytes: file_bytes(&written, out)?,
        plan_bytes: plan.size_bytes(model),
        fallbacks: resolved.map_or_else(Vec::new, |r| r.fallbacks),
        rounding_not_reproduced: scored.rounding.is_some() && !gguf,
        imatrix_mismatch: gguf && scored.imatrix_mismatch(opts.imatrix.as_ref()),
        written,
    })
}

fn write(
    model: &Model,
    plan: &TensorPlan,
    scored: &ScoredWith,
    opts: &ExportOptions,
    resolved: Option<&ResolvedPlan>,
    out: &Path,
) -> Result<Written> {
    Ok(match (opts.format, resolved) {
        (ExportFormat::Gguf, Some(r)) => {
            let rounding =
                RoundingInputs::for_model(model, opts.imatrix.as_ref(), scored.rounding.as_ref())?;
            Written::Gguf(export_gguf(model, r, &rounding, out)?)
        }
        (ExportFormat::TensorTypes, Some(r)) => {
            let recipe = write_tensor_types(model, r, out)?;
            Written::TensorTypes {
                overrides: recipe.lines.len(),
                command: recipe.command(&out.display().to_string()),
            }
        }
        (ExportFormat::Safetensors, _) => {
            Written::Safetensors(export_safetensors(model, plan, out)?)
        }
        (ExportFormat::CompressedTensors, _) => {
            Written::CompressedTensors(export_compressed_tensors(model, plan, out)?)
        }
        (format, None) => {
            return Err(Error::unsupported(
                format_name(format),
                "needs one GGML type per tensor",
            ))
        }
    })
}

fn format_name(f: ExportFormat) -> &'static str {
    ExportFormat::ALL
        .iter()
        .find(|(g, _)| *g == f)
        .map_or("gguf", |(_, n)| n)
}

/// The written file's size: the GGUF, the override file, or `model.safetensors`.
fn file_bytes(w: &Written, out: &Path) -> Result<u64> {
    Ok(match w {
        Written::Gguf(s) => s.layout.file_bytes,
        Written::TensorTypes { .. } => std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len(),
        Written::Safetensors(s) => s.file_bytes,
        Written::CompressedTensors(s) => s.file_bytes,
    })
}
