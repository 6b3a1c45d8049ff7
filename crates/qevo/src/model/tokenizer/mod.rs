//! Tokenizers: `tokenizer.json` through the `tokenizers` crate, or one rebuilt from a
//! GGUF file's `tokenizer.ggml.*` metadata (gpt2-style byte-level BPE, and llama
//! sentencepiece, whose merges are recovered from the token scores as HF's converter does).

use super::gguf::{Gguf, Value};
use crate::error::{Error, Result};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

/// Pre-tokenizer regexes by `tokenizer.ggml.pre` (llama.cpp's names).
const PRE_REGEXES: &[(&[&str], Option<&str>)] = &[
    // Plain GPT-2 byte-level regex, built into ByteLevel.
    (&["", "default", "gpt-2", "gpt2"], None),
    (
        &["llama-bpe", "llama3", "smaug-bpe"],
        Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    ),
];

pub fn load_tokenizer_json(path: &std::path::Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| Error::format(path, format!("invalid tokenizer: {e}")))
}

fn strings<'a>(g: &'a Gguf, key: &str) -> Result<Vec<&'a str>> {
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

/// Builds the tokenizer a GGUF file describes.
pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
    let model = g
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config(&g.path, "tokenizer.ggml.model", "missing"))?;
    let tokens = strings(g, "tokenizer.ggml.tokens")?;
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let tok_err = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::Tokenizer(format!("{}: {e}", g.path.display()))
    };
    match model {
        "gpt2" => {
            let merges: Vec<(String, String)> = strings(g, "tokenizer.ggml.merges")?
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
                .collect::<Result<_>>()?;
            let bpe = BPE::builder()
                .vocab_and_merges(
                    vocab
                        .clone()
                        .into_iter()
                        .collect::<tokenizers::models::bpe::Vocab>(),
                    merges,
                )
                .build()
                .map_err(tok_err)?;
            let pre = g
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("");
            let regex = PRE_REGEXES
                .iter()
                .find(|(names, _)| names.contains(&pre))
                .ok_or_else(|| {
                    Error::config(
                        &g.path,
                        "tokenizer.ggml.pre",
                        format!("pre-tokenizer `{pre}` is not supported"),
                    )
                })?
                .1;
            let mut tk = Tokenizer::new(bpe);
            let pre_tok: PreTokenizerWrapper = match regex {
                None => ByteLevel::new(false, true, true).into(),
                Some(re) => {
                    let split = Split::new(
                        SplitPattern::Regex(re.to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(tok_err)?;
                    PreSequence::new(vec![
                        split.into(),
                        ByteLevel::new(false, true, false).into(),
                    ])
                    .into()
                }
            };
            tk.with_pre_tokenizer(Some(pre_tok));
            tk.with_decoder(Some(DecoderWrapper::from(ByteLevel::default())));
            Ok(tk)
        }
        "llama" => {
            let scores: Vec<f64> = match g.get("tokenizer.ggml.scores").and_then(Value::as_array) {
                Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
                None => return Err(Error::config(&g.path, "tokenizer.ggml.scores", "missing")),
            };
            if scores.len() != tokens.len() {
                return Err(Error::config(
                    &g.path,
                    "tokenizer.ggml.scores",
                    "length differs from tokenizer.ggml.tokens",
                ));
            }
            let merges = merges_from_scores(&tokens, &scores, &vocab);
            let unk = g
                .get("tokenizer.ggml.unknown_token_id")
                .and_then(Value::as_u64)
                .and_then(|i| tokens.get(i as usize))
                .map(|s| s.to_string())
                .unwrap_or_else(|| "<unk>".into());
            let bpe = BPE::builder()
                .vocab_and_merges(
                    vocab
                        .clone()
                        .into_iter()
                        .collect::<tokenizers::models::bpe::Vocab>(),
                    merges,
                )
                .unk_token(unk)
                .byte_fallback(true)
                .fuse_unk(true)
                .build()
                .map_err(tok_err)?;
            let mut tk = Tokenizer::new(bpe);
            let norm = NormSequence::new(vec![
                NormalizerWrapper::from(Prepend::new("▁".into())),
                NormalizerWrapper::from(Replace::new(" ", "▁").map_err(tok_err)?),
            ]);
            tk.with_normalizer(Some(norm));
            let dec = DecoderSequence::new(vec![
                DecoderWrapper::from(Replace::new("▁", " ").map_err(tok_err)?),
                DecoderWrapper::from(ByteFallback::new()),
                DecoderWrapper::from(Fuse::new()),
                DecoderWrapper::from(Strip::new(' ', 1, 0)),
            ]);
            tk.with_decoder(Some(dec));
            Ok(tk)
        }
        other => Err(Error::config(
            &g.path,
            "tokenizer.ggml.model",
            format!("tokenizer model `{other}` is not supported (gpt2, llama)"),
        )),
    }
}

/// Sentencepiece BPE keeps no merge list: a merge (a, b) exists where a, b and a+b are all
/// pieces, ranked by the score of a+b (higher first), then by the ids of a and b.
fn merges_from_scores(
    tokens: &[&str],
    scores: &[f64],
    vocab: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f64, u32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                ranked.push((scores[id], ia, ib, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    ranked.into_iter().map(|(_, _, _, a, b)| (a, b)).collect()
}

/// A tokenizer whose ids exceed the embedding table would index out of bounds.
pub(crate) fn check_vocab(tk: &Tokenizer, vocab: usize, path: &std::path::Path) -> Result<()> {
    let n = tk.get_vocab_size(true);
    if n > vocab {
        return Err(Error::format(
            path,
            format!("tokenizer has {n} tokens but the model's vocabulary has {vocab} rows"),
        ));
    }
    Ok(())
}
