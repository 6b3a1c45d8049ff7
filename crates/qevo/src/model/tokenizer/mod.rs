//! Tokenizers: `tokenizer.json` through the `tokenizers` crate, or one rebuilt from a GGUF
//! file's `tokenizer.ggml.*` metadata so that its ids equal llama.cpp's: BPE (`gpt2`, with
//! every pre-tokenizer llama.cpp names, see `pre`), SentencePiece (`llama`, see `spm`) and
//! WordPiece (`bert`, see `wpm`), with llama.cpp's special-token split and BOS/EOS handling.

mod pre;
mod pre_table;
mod spm;
mod vocab;
mod wpm;

pub use pre::{supported_names as supported_pre_tokenizers, PreTokenizer};
pub use vocab::Kind;

use super::gguf::{Gguf, Value};
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::Tokenizer;
use vocab::{Fragment, Vocab};

/// A model's tokenizer.
#[derive(Debug)]
pub enum TextTokenizer {
    /// A Hugging Face `tokenizer.json`.
    Json(Box<Tokenizer>),
    /// A GGUF vocabulary, tokenized as llama.cpp does.
    Gguf(Box<GgufTokenizer>),
}

impl TextTokenizer {
    /// Token ids of `text`; `add_special` adds the BOS/EOS/CLS/SEP tokens the model asks for.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Json(t) => t
                .encode(text, add_special)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(e.to_string())),
            TextTokenizer::Gguf(t) => t.encode(text, add_special),
        }
    }

    /// Number of token ids, special ones included.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Json(t) => t.get_vocab_size(true),
            TextTokenizer::Gguf(t) => t.vocab.tokens.len(),
        }
    }
}

/// A GGUF vocabulary and the algorithm its `tokenizer.ggml.model` names.
#[derive(Debug)]
pub struct GgufTokenizer {
    vocab: Vocab,
    /// BPE only: the byte-level BPE model and pre-tokenizer, run per text fragment.
    bpe: Option<Tokenizer>,
}

impl GgufTokenizer {
    pub fn kind(&self) -> Kind {
        self.vocab.kind
    }

    /// Whether `encode(.., true)` starts with BOS.
    pub fn adds_bos(&self) -> bool {
        match self.vocab.kind {
            Kind::Wpm => self.vocab.bos.is_some(),
            _ => self.vocab.add_bos && self.vocab.bos.is_some(),
        }
    }

    /// Token ids as llama.cpp's `llama_tokenize(text, add_special, parse_special = false)`
    /// returns them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let (bos, eos) = match v.kind {
            // WordPiece always brackets with CLS ... SEP.
            Kind::Wpm => (v.bos, v.sep),
            _ => (v.bos.filter(|_| v.add_bos), v.eos.filter(|_| v.add_eos)),
        };
        if add_special {
            out.extend(bos);
        }
        // SentencePiece adds its space prefix at the start and after every special token.
        let mut after_special = true;
        for frag in v.partition(text, false) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_text(t, after_special, &mut out)?;
                    after_special = false;
                }
            }
        }
        if add_special {
            out.extend(eos);
        }
        Ok(out)
    }

    fn encode_text(&self, text: &str, after_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let v = &self.vocab;
        match (v.kind, &self.bpe) {
            (Kind::Spm, _) => {
                let prefix = if v.add_space_prefix && after_special {
                    " "
                } else {
                    ""
                };
                let escaped = format!("{prefix}{text}").replace(' ', "\u{2581}");
                spm::encode(v, &escaped, out);
            }
            (Kind::Wpm, _) => wpm::encode(v, text, out),
            (Kind::Bpe, Some(tk)) => {
                let enc = tk
                    .encode(text, false)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                out.extend_from_slice(enc.get_ids());
            }
            (Kind::Bpe, None) => unreachable!("a BPE vocabulary is built with its model"),
        }
        Ok(())
    }
}

/// A tokenizer.json, with its padding and truncation switched off: they are settings for
/// batching short inputs (all-MiniLM-L6-v2 ships both at 128 tokens), and qevo tokenizes
/// a whole text before cutting it into windows itself.
pub fn load_tokenizer_json(path: &Path) -> Result<TextTokenizer> {
    let text = crate::fsutil::read_text_file(path)?;
    // `tokenizers` 0.22 panics ("Helper") on a JSON syntax error inside `decoder`
    // (found by fuzzing); checked as plain JSON first, only well-formed text reaches it.
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let mut t: Tokenizer = text
        .parse()
        .map_err(|e| Error::format(path, format!("invalid tokenizer: {e}")))?;
    t.with_padding(None);
    t.with_truncation(None)
        .map_err(|e| Error::format(path, format!("invalid tokenizer: {e}")))?;
    Ok(TextTokenizer::Json(Box::new(t)))
}

/// Reads a GGUF file's tokenizer without its tensors.
pub fn from_gguf_file(path: &Path) -> Result<TextTokenizer> {
    from_gguf(&Gguf::open(path)?)
}

/// Builds the tokenizer a GGUF file describes.
pub fn from_gguf(g: &Gguf) -> Result<TextTokenizer> {
    let is_bpe = g.get("tokenizer.ggml.model").and_then(Value::as_str) == Some("gpt2");
    let pre = if is_bpe {
        let name = g
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(pre::lookup(name, &g.path)?)
    } else {
        None
    };
    let vocab = Vocab::from_gguf(g, pre.is_some_and(|p| p.add_bos))?;
    let bpe = match pre {
        Some(p) => Some(bpe_tokenizer(g, &vocab, p)?),
        None => None,
    };
    Ok(TextTokenizer::Gguf(Box::new(GgufTokenizer { vocab, bpe })))
}

/// The `tokenizers` BPE model over the vocabulary's merges, behind the pre-tokenizer.
/// Byte-level BPE is what the crate implements exactly, so it is used rather than re-written.
fn bpe_tokenizer(g: &Gguf, vocab: &Vocab, pre: &PreTokenizer) -> Result<Tokenizer> {
    let tok_err = |e: String| Error::Tokenizer(format!("{}: {e}", g.path.display()));
    let merges: Vec<(String, String)> = match g.get("tokenizer.ggml.merges") {
        None => Vec::new(),
        Some(_) => vocab::strings(g, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        Error::config(
                            &g.path,
                            "tokenizer.ggml.merges",
                            format!("merge `{m}` has no space"),
                        )
                    })
            })
            .collect::<Result<_>>()?,
    };
    let map = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect::<tokenizers::models::bpe::Vocab>();
    let model = BPE::builder()
        .vocab_and_merges(map, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| tok_err(e.to_string()))?;
    let mut tk = Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(pre.build().map_err(tok_err)?));
    Ok(tk)
}

/// A tokenizer whose ids exceed the embedding table would index out of bounds.
pub(crate) fn check_vocab(tk: &TextTokenizer, vocab: usize, path: &Path) -> Result<()> {
    let n = tk.vocab_size();
    if n > vocab {
        return Err(Error::format(
            path,
            format!("tokenizer has {n} tokens but the model's vocabulary has {vocab} rows"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_json_padding_and_truncation_do_not_cut_the_text() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        // As all-MiniLM-L6-v2 ships it, at 8 tokens instead of 128.
        json["padding"] = serde_json::json!({"strategy": {"Fixed": 8}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"});
        json["truncation"] = serde_json::json!({"max_length": 8, "strategy": "LongestFirst",
            "stride": 0, "direction": "Right"});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let t = load_tokenizer_json(&path).unwrap();
        let text = "the quick brown fox jumps over the lazy dog ".repeat(4);
        assert!(t.encode(&text, false).unwrap().len() > 8);
        assert!(t.encode("", true).unwrap().len() < 8, "no padding");
    }

    #[test]
    fn tokenizer_json_syntax_error_inside_decoder_is_an_error_not_a_panic() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        json["decoder"] = serde_json::json!({"type": "WordPiece", "prefix": "##"});
        let text = json
            .to_string()
            .replace(r###""prefix":"##""###, r###""prefix";"##""###);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, text).unwrap();
        let e = load_tokenizer_json(&path).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("invalid JSON"),
            "{e}"
        );
    }
}
