//! The plan as a llama-quantize recipe: one `name=type` override per tensor for
//! `--tensor-type-file`, and the equivalent command line, so a plan found on a small
//! model can be applied by llama.cpp to a sibling too large to search here.

use super::gguf_export::dominant_type;
use crate::error::Result;
use crate::model::Model;
use crate::plan::ResolvedPlan;
use crate::quant::ggml::GgmlType;
use std::path::Path;

/// The recipe: file lines plus the command that uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorTypeRecipe {
    /// `pattern=type` lines; patterns are anchored regexes of one tensor name each.
    pub lines: Vec<String>,
    /// The positional base type llama-quantize needs (the plan's most used type).
    pub base: GgmlType,
    /// Types for the embedding and output tensors, which llama-quantize sets through
    /// their own flags.
    pub token_embedding: Option<GgmlType>,
    pub output: Option<GgmlType>,
}

/// ggml's own spelling (`q4_K`); llama-quantize compares names case-insensitively, but
/// this is what its help text and logs show.
fn ggml_name(t: GgmlType) -> String {
    let n = t.name();
    match n.strip_suffix("_k") {
        Some(stem) => format!("{stem}_K"),
        None => n.to_string(),
    }
}

/// An exact-match regex for a tensor name (llama-quantize searches with std::regex).
fn pattern(name: &str) -> String {
    let mut s = String::from("^");
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('$');
    s
}

pub fn tensor_type_lines(model: &Model, plan: &ResolvedPlan) -> TensorTypeRecipe {
    let mut lines = Vec::new();
    let mut token_embedding = None;
    let mut output = None;
    for (info, &t) in model.tensors.iter().zip(&plan.types) {
        lines.push(format!("{}={}", pattern(&info.name), ggml_name(t)));
        match info.name.as_str() {
            "token_embd.weight" => token_embedding = Some(t),
            "output.weight" => output = Some(t),
            _ => {}
        }
    }
    TensorTypeRecipe {
        lines,
        base: dominant_type(model, plan),
        token_embedding,
        output,
    }
}

impl TensorTypeRecipe {
    /// The file `--tensor-type-file` reads: one override per line, nothing else.
    pub fn file_text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// The llama-quantize invocation, with `file` as the tensor-type file.
    pub fn command(&self, file: &str) -> String {
        let mut c = format!("llama-quantize --tensor-type-file {file}");
        if let Some(t) = self.token_embedding {
            c.push_str(&format!(" --token-embedding-type {}", ggml_name(t)));
        }
        if let Some(t) = self.output {
            c.push_str(&format!(" --output-tensor-type {}", ggml_name(t)));
        }
        c.push_str(&format!(
            " model-f16.gguf model-qevo.gguf {}",
            ggml_name(self.base).to_uppercase()
        ));
        c
    }

    /// The same overrides as repeated `--tensor-type` arguments (single-quoted for a shell).
    pub fn inline_command(&self) -> String {
        let mut c = String::from("llama-quantize");
        for l in &self.lines {
            c.push_str(&format!(" --tensor-type '{l}'"));
        }
        c.push_str(&format!(
            " model-f16.gguf model-qevo.gguf {}",
            ggml_name(self.base).to_uppercase()
        ));
        c
    }
}

/// Writes the `--tensor-type-file` at `out` (atomically) and returns the recipe, whose
/// `command` the caller shows the user.
pub fn write_tensor_types(
    model: &Model,
    plan: &ResolvedPlan,
    out: &Path,
) -> Result<TensorTypeRecipe> {
    crate::plan::check_output_path(&model.source, out)?;
    let r = tensor_type_lines(model, plan);
    crate::fsutil::write_atomic(out, r.file_text().as_bytes())?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_anchored() {
        assert_eq!(pattern("blk.1.attn_q.weight"), r"^blk\.1\.attn_q\.weight$");
        assert_eq!(ggml_name(GgmlType::Q4K), "q4_K");
        assert_eq!(ggml_name(GgmlType::Q8_0), "q8_0");
        assert_eq!(ggml_name(GgmlType::BF16), "bf16");
    }
}
