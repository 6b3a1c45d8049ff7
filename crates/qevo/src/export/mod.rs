//! Export: a chosen plan becomes files other tools use. GGUF for llama.cpp (every tensor
//! in the GGML type its plan assigns, with the metadata and tokenizer a runtime needs),
//! the plan as llama-quantize `--tensor-type` overrides, compressed-tensors directories
//! for the generic integer formats (what transformers and vLLM load), and qevo's own packed
//! safetensors (`quant_method: "qevo-int"`, which `Model::load` reads back) for what
//! compressed-tensors cannot hold (power-of-two scales, ragged groups).
//!
//! Measure what you ship: GGUF tensors are quantized by the same `quant::ggml` code the
//! evaluator uses, row by row, so the exported file, loaded back, holds bit for bit the
//! weights the plan was scored with (llama.cpp's q/k row permutation only reorders whole
//! rows, Phi-3's fused gate/up only stacks whole rows, and every GGML block lies inside
//! one row and is quantized from it alone).

mod compressed_tensors;
pub mod ct_layout;
mod export_plan;
mod gguf_arch;
mod gguf_export;
/// The GGUF writer lives beside the reader (`model::gguf`), which the importance-matrix
/// files share; exported here for the export code that writes models.
pub use crate::model::gguf_writer;

mod safetensors_export;
mod st_writer;
pub mod tensor_types;
pub mod vocab;

pub use compressed_tensors::{ct_choice, export_compressed_tensors, loader_notes, CtExport};
pub use export_plan::{export_plan, ExportOptions, ExportReport, Written};
pub use gguf_export::{export_gguf, export_tuned_gguf, gguf_fixed_bytes, ExportSummary};
pub use gguf_writer::{GgufLayout, GgufTensorOut, GgufWriter};
pub use safetensors_export::{check_output_dir, export_safetensors, SafetensorsExport};
pub use tensor_types::{tensor_type_lines, write_tensor_types, TensorTypeRecipe};

/// File types `qevo export` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExportFormat {
    Gguf,
    TensorTypes,
    Safetensors,
    CompressedTensors,
}

impl ExportFormat {
    pub const ALL: [(ExportFormat, &'static str); 4] = [
        (ExportFormat::Gguf, "gguf"),
        (ExportFormat::TensorTypes, "tensor-types"),
        (ExportFormat::Safetensors, "safetensors"),
        (ExportFormat::CompressedTensors, "compressed-tensors"),
    ];

    pub fn parse(s: &str) -> crate::Result<ExportFormat> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                crate::Error::setting(
                    "format",
                    format!(
                        "unknown export format `{s}` (expected one of: {})",
                        names.join(", ")
                    ),
                )
            })
    }
}
