//! Reading Hugging Face `config.json`: picks the architecture and pulls each
//! hyper-parameter by key, so a missing or mistyped key is reported by name.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Architectures qevo can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchKind {
    Llama,
    Qwen2,
    Qwen3,
    Mistral,
    Gemma2,
    Gemma3,
    Phi3,
    Smollm3,
    Granite,
    Olmo2,
    Qwen3Moe,
    Mixtral,
    Gpt2,
    Bert,
}

/// `architectures[0]` → kind. A table, so adding a family is one line.
const ARCHITECTURES: &[(&str, ArchKind)] = &[
    ("LlamaForCausalLM", ArchKind::Llama),
    ("Qwen2ForCausalLM", ArchKind::Qwen2),
    ("Qwen3ForCausalLM", ArchKind::Qwen3),
    ("MistralForCausalLM", ArchKind::Mistral),
    ("Gemma2ForCausalLM", ArchKind::Gemma2),
    ("Gemma3ForCausalLM", ArchKind::Gemma3),
    ("Phi3ForCausalLM", ArchKind::Phi3),
    ("SmolLM3ForCausalLM", ArchKind::Smollm3),
    ("GraniteForCausalLM", ArchKind::Granite),
    ("Olmo2ForCausalLM", ArchKind::Olmo2),
    ("Qwen3MoeForCausalLM", ArchKind::Qwen3Moe),
    ("MixtralForCausalLM", ArchKind::Mixtral),
    ("GPT2LMHeadModel", ArchKind::Gpt2),
    ("BertModel", ArchKind::Bert),
    ("BertForMaskedLM", ArchKind::Bert),
];

/// `model_type` fallback when `architectures` is absent.
const MODEL_TYPES: &[(&str, ArchKind)] = &[
    ("llama", ArchKind::Llama),
    ("qwen2", ArchKind::Qwen2),
    ("qwen3", ArchKind::Qwen3),
    ("mistral", ArchKind::Mistral),
    ("gemma2", ArchKind::Gemma2),
    ("gemma3_text", ArchKind::Gemma3),
    ("phi3", ArchKind::Phi3),
    ("smollm3", ArchKind::Smollm3),
    ("granite", ArchKind::Granite),
    ("olmo2", ArchKind::Olmo2),
    ("qwen3_moe", ArchKind::Qwen3Moe),
    ("mixtral", ArchKind::Mixtral),
    ("gpt2", ArchKind::Gpt2),
    ("bert", ArchKind::Bert),
];

impl ArchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchKind::Llama => "llama",
            ArchKind::Qwen2 => "qwen2",
            ArchKind::Qwen3 => "qwen3",
            ArchKind::Mistral => "mistral",
            ArchKind::Gemma2 => "gemma2",
            ArchKind::Gemma3 => "gemma3",
            ArchKind::Phi3 => "phi3",
            ArchKind::Smollm3 => "smollm3",
            ArchKind::Granite => "granite",
            ArchKind::Olmo2 => "olmo2",
            ArchKind::Qwen3Moe => "qwen3moe",
            ArchKind::Mixtral => "mixtral",
            ArchKind::Gpt2 => "gpt2",
            ArchKind::Bert => "bert",
        }
    }
}

/// A parsed config.json with the path kept for error messages.
pub(crate) struct HfConfig<'a> {
    pub path: &'a Path,
    pub json: Value,
}

impl<'a> HfConfig<'a> {
    pub fn read(path: &'a Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.starts_with(crate::model::gguf::GGUF_MAGIC) {
            return Err(Error::format(
                path,
                "a GGUF file, not a Hugging Face config.json (a GGUF's shape: `qevo inspect`)",
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        if !json.is_object() {
            return Err(Error::format(path, "expected a JSON object"));
        }
        Ok(HfConfig { path, json })
    }

    pub fn arch_kind(&self) -> Result<ArchKind> {
        let supported = || {
            ARCHITECTURES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(list) = self.json.get("architectures").and_then(Value::as_array) {
            let name = list.first().and_then(Value::as_str).unwrap_or("");
            return ARCHITECTURES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| Error::UnsupportedArch {
                    path: self.path.into(),
                    key: "architectures".into(),
                    arch: name.to_string(),
                    supported: supported(),
                });
        }
        let mt = self
            .json
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        MODEL_TYPES
            .iter()
            .find(|(n, _)| *n == mt)
            .map(|(_, k)| *k)
            .ok_or_else(|| Error::UnsupportedArch {
                path: self.path.into(),
                key: "model_type".into(),
                arch: if mt.is_empty() {
                    "<none>".into()
                } else {
                    mt.to_string()
                },
                supported: supported(),
            })
    }

    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// A positive integer that must be present.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .raw(key)
            .ok_or_else(|| Error::config(self.path, key, "missing"))?;
        match v.as_u64() {
            Some(n) if n > 0 && n <= (1 << 40) => Ok(n as usize),
            _ => Err(Error::config(
                self.path,
                key,
                format!("expected a positive integer, found {v}"),
            )),
        }
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.raw(key) {
            None => Ok(default),
            Some(_) => self.usize(key),
        }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.raw(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    /// A finite positive float.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(Error::config(
                    self.path,
                    key,
                    format!("expected a positive number, found {v}"),
                )),
            },
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::config(self.path, key, format!("expected true/false, found {v}"))
            }),
        }
    }

    pub fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| {
                Error::config(self.path, key, format!("expected a string, found {v}"))
            }),
        }
    }

    /// Width and head count, checking that the heads divide the width.
    pub fn heads(&self, width_key: &str, heads_key: &str) -> Result<(usize, usize)> {
        let width = self.usize(width_key)?;
        let heads = self.usize(heads_key)?;
        if width % heads != 0 {
            return Err(self.err(
                heads_key,
                format!("{heads} does not divide {width_key} {width}"),
            ));
        }
        Ok((width, heads))
    }

    /// A string setting that must be one of `allowed` (the first is the default).
    pub fn one_of(&self, key: &str, allowed: &[&str]) -> Result<()> {
        let v = self.str_or(key, allowed[0])?;
        if allowed.contains(&v) {
            Ok(())
        } else {
            Err(self.err(
                key,
                format!("`{v}` is not supported ({})", allowed.join(", ")),
            ))
        }
    }

    pub fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::config(self.path, key, msg)
    }
}
