//! Token windows: a text cut into non-overlapping windows of `seq_len` token ids, as
//! qevo scores and calibrates on them, and as llama.cpp's tools cut their chunks
//! (`llama-perplexity`, `llama-imatrix`).

use crate::error::{Error, Result};
use crate::model::Model;
use candle_core::{Device, Tensor};

/// Non-overlapping windows of `seq_len` token ids.
#[derive(Debug, Clone)]
pub struct TokenWindows {
    pub seq_len: usize,
    pub ids: Vec<u32>,
}

impl TokenWindows {
    /// Tokenizes `text` and cuts it into at most `max_windows` windows of `seq_len` tokens.
    /// A window longer than the model's positions is an error (`seq_len`), never clamped.
    pub fn from_text(
        model: &Model,
        text: &str,
        seq_len: usize,
        max_windows: usize,
    ) -> Result<Self> {
        let max = model.arch.max_positions();
        if seq_len > max {
            return Err(Error::setting(
                "seq_len",
                format!(
                    "{seq_len} tokens, but {} handles at most {max} positions",
                    model.source.display()
                ),
            ));
        }
        let toks = model.encode(text)?;
        if model.arch.is_decoder() {
            return Self::from_tokens(&toks, seq_len, max_windows);
        }
        // An encoder embeds each window as a sentence-transformers user feeds it a text:
        // wrapped in the tokenizer's special tokens ([CLS] … [SEP] for BERT).
        let ends = model.encode_special("")?;
        let (head, tail) = ends.split_at(ends.len().min(1));
        let body = seq_len
            .checked_sub(ends.len())
            .filter(|&b| b >= 2)
            .ok_or_else(|| {
                Error::setting(
                    "seq_len",
                    format!(
                        "an encoder window holds {} special tokens and at least 2 of text",
                        ends.len()
                    ),
                )
            })?;
        let inner = Self::from_tokens(&toks, body, max_windows)?;
        let ids = inner
            .ids
            .chunks_exact(body)
            .flat_map(|w| head.iter().chain(w).chain(tail))
            .copied()
            .collect();
        Ok(TokenWindows { seq_len, ids })
    }

    pub fn from_tokens(toks: &[u32], seq_len: usize, max_windows: usize) -> Result<Self> {
        if seq_len < 2 {
            return Err(Error::setting(
                "seq_len",
                "a window must be at least 2 tokens",
            ));
        }
        if max_windows == 0 {
            return Err(Error::setting(
                "max_windows",
                "at least one window is needed",
            ));
        }
        let n = (toks.len() / seq_len).min(max_windows);
        if n == 0 {
            return Err(Error::TextTooShort {
                what: "text".into(),
                tokens: toks.len(),
                needed: format!("at least one window of {seq_len} tokens is needed"),
            });
        }
        Ok(TokenWindows {
            seq_len,
            ids: toks[..n * seq_len].to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len() / self.seq_len
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
    /// The first `n` windows.
    pub fn take(&self, n: usize) -> TokenWindows {
        let n = n.min(self.len());
        TokenWindows {
            seq_len: self.seq_len,
            ids: self.ids[..n * self.seq_len].to_vec(),
        }
    }
    /// The windows after the first `n`.
    pub fn skip(&self, n: usize) -> TokenWindows {
        let n = n.min(self.len());
        TokenWindows {
            seq_len: self.seq_len,
            ids: self.ids[n * self.seq_len..].to_vec(),
        }
    }
    /// Windows `start..end` as a `[batch, seq]` tensor.
    pub fn batch(&self, start: usize, end: usize) -> Result<Tensor> {
        let t = self.seq_len;
        Ok(Tensor::from_slice(
            &self.ids[start * t..end * t],
            (end - start, t),
            &Device::Cpu,
        )?)
    }
}

/// Default batch: about 2k tokens per forward, enough for one large GEMM per layer.
pub fn default_batch(seq_len: usize) -> usize {
    (2048 / seq_len).max(1)
}

/// How many whole chunks of `n_ctx` the protocol scores, or a clear refusal.
pub(crate) fn chunk_count(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<usize> {
    if n_ctx < 4 || n_ctx > model.arch.max_positions() {
        return Err(Error::Invalid(format!(
            "context {n_ctx} must be between 4 and the model's {} positions",
            model.arch.max_positions()
        )));
    }
    let all = tokens.len() / n_ctx;
    let chunks = max_chunks.map_or(all, |m| m.min(all));
    if chunks == 0 {
        return Err(Error::Invalid(format!(
            "{} tokens do not fill one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    Ok(chunks)
}

/// The token stream cut as llama.cpp's tools cut it (`llama-perplexity`, `llama-imatrix`):
/// whole chunks of `n_ctx` from the first token, at most `max_chunks`, each chunk's first
/// token replaced by `bos` when given (`llama_cpp_bos`).
pub fn llama_cpp_windows(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Result<TokenWindows> {
    let chunks = chunk_count(model, tokens, n_ctx, max_chunks)?;
    let mut ids = tokens[..chunks * n_ctx].to_vec();
    if let Some(b) = bos {
        ids.chunks_exact_mut(n_ctx).for_each(|c| c[0] = b);
    }
    Ok(TokenWindows {
        seq_len: n_ctx,
        ids,
    })
}

/// The BOS llama.cpp's tools put first in each chunk: the token the model's tokenizer
/// adds in front of a text (`encode_special`), if it adds one.
pub fn llama_cpp_bos(model: &Model) -> Result<Option<u32>> {
    let (plain, special) = (model.encode("a")?, model.encode_special("a")?);
    Ok(special
        .first()
        .copied()
        .filter(|f| plain.first() != Some(f)))
}
