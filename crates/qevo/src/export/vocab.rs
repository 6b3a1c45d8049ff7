//! Tokenizer metadata for GGUF built from a Hugging Face `tokenizer.json`: the
//! `tokenizer.ggml.*` keys llama.cpp needs to tokenize as the source model does.
//! Byte-level BPE becomes llama.cpp's "gpt2" tokenizer model; other tokenizer kinds are
//! refused by name rather than exported wrong.

use crate::error::{Error, Result};
use crate::model::gguf::Value;
use serde_json::Value as Json;
use std::path::Path;

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// The `tokenizer.ggml.*` entries for a byte-level BPE `tokenizer.json`, padded with
/// unused tokens up to `vocab` rows (llama.cpp requires one token per embedding row).
// One piece: a linear writer of the `tokenizer.ggml.*` keys, in llama.cpp's order.
pub fn gguf_tokenizer_metadata(
    path: &Path,
    vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let model = json
        .get("model")
        .ok_or_else(|| Error::config(path, "model", "missing"))?;
    let ty = model.get("type").and_then(Json::as_str).unwrap_or("");
    if ty != "BPE" {
        return Err(Error::config(
            path,
            "model.type",
            format!("`{ty}` tokenizers cannot be exported to GGUF yet (byte-level BPE only)"),
        ));
    }
    if !is_byte_level(&json) {
        return Err(Error::config(
            path,
            "pre_tokenizer",
            "only byte-level BPE (GPT-2 style) tokenizers can be exported to GGUF",
        ));
    }
    let map = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| Error::config(path, "model.vocab", "missing or not an object"))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab];
    let mut types = vec![TOKEN_UNUSED; vocab];
    let mut place = |id: u64, tok: &str, ty: i32, key: &str| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            Error::config(
                path,
                key,
                format!("token `{tok}` has id {id}, beyond the model's {vocab} rows"),
            )
        })?;
        *slot = Some(tok.to_string());
        types[id as usize] = ty;
        Ok(())
    };
    for (tok, id) in map {
        let id = id.as_u64().ok_or_else(|| {
            Error::config(
                path,
                "model.vocab",
                format!("id of `{tok}` is not an integer"),
            )
        })?;
        place(id, tok, TOKEN_NORMAL, "model.vocab")?;
    }
    if let Some(added) = json.get("added_tokens").and_then(Json::as_array) {
        for a in added {
            let (Some(id), Some(content)) = (
                a.get("id").and_then(Json::as_u64),
                a.get("content").and_then(Json::as_str),
            ) else {
                return Err(Error::config(
                    path,
                    "added_tokens",
                    "entry without id or content",
                ));
            };
            // As llama.cpp's converter: special tokens are control tokens (never produced
            // from text); other added tokens are user-defined (matched verbatim in text).
            let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
            place(
                id,
                content,
                if special {
                    TOKEN_CONTROL
                } else {
                    TOKEN_USER_DEFINED
                },
                "added_tokens",
            )?;
        }
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let merges = merges(path, model)?;
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        // The GPT-2 pre-tokenizer regex is what a ByteLevel(use_regex) tokenizer applies;
        // llama.cpp's `default` is a different, four-regex split.
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String("gpt-2".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
    ];
    if let Some(b) = bos {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(e) = eos {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
    }
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
    Ok(md)
}

/// Byte-level when the pre-tokenizer is ByteLevel or a sequence containing one.
fn is_byte_level(json: &Json) -> bool {
    fn has(v: &Json) -> bool {
        match v.get("type").and_then(Json::as_str) {
            Some("ByteLevel") => true,
            Some("Sequence") => v
                .get("pretokenizers")
                .and_then(Json::as_array)
                .is_some_and(|a| a.iter().any(has)),
            _ => false,
        }
    }
    json.get("pre_tokenizer").is_some_and(has)
}

/// Merges as "a b" strings; tokenizer.json holds either that or `["a", "b"]` pairs.
fn merges(path: &Path, model: &Json) -> Result<Vec<Value>> {
    let list = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| Error::config(path, "model.merges", "missing or not an array"))?;
    list.iter()
        .map(|m| match m {
            Json::String(s) if s.contains(' ') => Ok(Value::String(s.clone())),
            Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) if !a.contains(' ') && !b.contains(' ') => {
                    Ok(Value::String(format!("{a} {b}")))
                }
                _ => Err(Error::config(
                    path,
                    "model.merges",
                    format!("merge {m} cannot be written as `a b`"),
                )),
            },
            _ => Err(Error::config(
                path,
                "model.merges",
                format!("merge {m} is not `a b` or a pair"),
            )),
        })
        .collect()
}

/// `add_bos_token` from `tokenizer_config.json` next to the tokenizer; false when absent
/// (qevo itself evaluates without a BOS token).
pub fn add_bos_token(dir: &Path) -> bool {
    let p = dir.join("tokenizer_config.json");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .and_then(|j| j.get("add_bos_token").and_then(Json::as_bool))
        .unwrap_or(false)
}
