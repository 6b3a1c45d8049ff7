//! A GGUF file's vocabulary as llama.cpp reads it: token texts, scores and types, the
//! special ids with llama.cpp's per-model defaults, the add-BOS/EOS/SEP and space-prefix
//! flags, and the split of raw text around user-defined (and, on request, control) tokens.

use super::super::gguf::{Gguf, Value};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer algorithm a vocabulary names in `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `gpt2`: byte-level or raw-UTF-8 BPE with a merge list.
    Bpe,
    /// `llama`: SentencePiece, merges by score.
    Spm,
    /// `bert`: WordPiece, longest match first.
    Wpm,
}

/// Per-kind defaults llama.cpp applies before reading the metadata:
/// (kind, bos, eos, unk, sep, add_bos, add_eos, add_sep, add_space_prefix).
type Defaults = (
    Kind,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    bool,
    bool,
    bool,
    bool,
);
const KINDS: &[(&str, Defaults)] = &[
    (
        "gpt2",
        (
            Kind::Bpe,
            Some(11),
            Some(11),
            None,
            None,
            false,
            false,
            false,
            false,
        ),
    ),
    (
        "llama",
        (
            Kind::Spm,
            Some(1),
            Some(2),
            Some(0),
            None,
            true,
            false,
            false,
            true,
        ),
    ),
    (
        "bert",
        (
            Kind::Wpm,
            Some(101),
            None,
            Some(100),
            Some(102),
            true,
            false,
            true,
            false,
        ),
    ),
];

#[derive(Debug)]
pub struct Vocab {
    pub kind: Kind,
    pub tokens: Vec<String>,
    pub ids: HashMap<String, u32>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// WordPiece normalisation (`tokenizer.ggml.normalizer.*`).
    pub lowercase: bool,
    pub strip_accents: bool,
    /// Longest token text in bytes (WordPiece bounds its search by it).
    pub max_token_len: usize,
    /// Control, user-defined and unknown tokens, longest text first: llama.cpp cuts raw text
    /// around them before the tokenizer proper runs.
    specials: Vec<u32>,
}

/// A piece of input after the special-token split.
#[derive(Debug, PartialEq, Eq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

pub(super) fn strings<'a>(g: &'a Gguf, key: &str) -> Result<Vec<&'a str>> {
    let arr = g
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::config(&g.path, key, "missing or not an array"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| Error::config(&g.path, key, "expected an array of strings"))
        })
        .collect()
}

/// A numeric array as long as the token list, or `fill` when the key is absent.
fn per_token<T>(
    g: &Gguf,
    key: &str,
    n: usize,
    fill: T,
    conv: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>>
where
    T: Clone,
{
    let Some(v) = g.get(key) else {
        return Ok(vec![fill; n]);
    };
    let arr = v
        .as_array()
        .ok_or_else(|| Error::config(&g.path, key, "not an array"))?;
    if arr.len() != n {
        return Err(Error::config(
            &g.path,
            key,
            format!("{} entries, but tokenizer.ggml.tokens has {n}", arr.len()),
        ));
    }
    arr.iter()
        .map(|x| conv(x).ok_or_else(|| Error::config(&g.path, key, "expected numbers")))
        .collect()
}

fn flag(g: &Gguf, key: &str, default: bool) -> Result<bool> {
    match g.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::config(&g.path, key, "expected a bool")),
    }
}

/// A special-token id from metadata; out-of-range ids keep the default, as in llama.cpp.
fn special(g: &Gguf, key: &str, n: usize, default: Option<u32>) -> Option<u32> {
    match g.get(key).and_then(Value::as_u64) {
        Some(id) if (id as usize) < n => Some(id as u32),
        _ => default.filter(|&d| (d as usize) < n),
    }
}

impl Vocab {
    /// Reads the `tokenizer.ggml.*` metadata. `pre_add_bos` is the add-BOS default the
    /// BPE pre-tokenizer type sets (llama.cpp sets it for some families).
    pub fn from_gguf(g: &Gguf, pre_add_bos: bool) -> Result<Vocab> {
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config(&g.path, "tokenizer.ggml.model", "missing"))?;
        let (_, d) = KINDS
            .iter()
            .find(|(name, _)| *name == model)
            .ok_or_else(|| {
                Error::config(
                    &g.path,
                    "tokenizer.ggml.model",
                    format!("tokenizer model `{model}` is not supported (gpt2, llama, bert)"),
                )
            })?;
        // add_sep is not read: llama.cpp's WordPiece path always appends SEP with add_special.
        let (kind, bos, eos, unk, sep, add_bos, add_eos, _add_sep, add_space_prefix) = *d;
        let tokens: Vec<String> = strings(g, "tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let n = tokens.len();
        let scores = per_token(g, "tokenizer.ggml.scores", n, 0.0f32, |v| {
            v.as_f64().map(|x| x as f32)
        })?;
        let types = per_token(g, "tokenizer.ggml.token_type", n, TYPE_NORMAL, |v| {
            v.as_u64().map(|x| x as i32)
        })?;
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp keeps the last id for a repeated text.
            ids.insert(t.clone(), i as u32);
        }
        let lowercase = flag(g, "tokenizer.ggml.normalizer.lowercase", true)?;
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN
                ) && !tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        Ok(Vocab {
            kind,
            bos: special(g, "tokenizer.ggml.bos_token_id", n, bos),
            eos: special(g, "tokenizer.ggml.eos_token_id", n, eos),
            unk: special(g, "tokenizer.ggml.unknown_token_id", n, unk),
            sep: special(g, "tokenizer.ggml.seperator_token_id", n, sep),
            add_bos: flag(
                g,
                "tokenizer.ggml.add_bos_token",
                add_bos || (kind == Kind::Bpe && pre_add_bos),
            )?,
            add_eos: flag(g, "tokenizer.ggml.add_eos_token", add_eos)?,
            add_space_prefix: flag(g, "tokenizer.ggml.add_space_prefix", add_space_prefix)?,
            lowercase,
            strip_accents: flag(g, "tokenizer.ggml.normalizer.strip_accents", lowercase)?,
            max_token_len: tokens.iter().map(String::len).max().unwrap_or(0),
            tokens,
            ids,
            scores,
            types,
            specials,
        })
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Cuts `text` around special tokens, longest first, as llama.cpp does. User-defined
    /// tokens always split; control and unknown tokens only with `parse_special`.
    pub fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && ty != TYPE_USER_DEFINED {
                continue;
            }
            let tok = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(tok) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + tok.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }
}
