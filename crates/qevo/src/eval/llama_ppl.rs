//! llama.cpp's perplexity protocol (`llama-perplexity -c N`, tools/perplexity), so qevo's
//! figure can be compared with llama.cpp's on the same tokens: the token stream is cut
//! into whole chunks of `n_ctx`; each chunk's first token is replaced by BOS when the
//! model adds one; only the second half of each chunk is scored (positions
//! `n_ctx/2 .. n_ctx-1` predict the next token), so every scored token sees at least
//! `n_ctx/2` tokens of context. Sums run in position order in f64.

use crate::calib::windows::{chunk_count, llama_cpp_bos, llama_cpp_windows};
use crate::error::Result;
use crate::model::{Model, NoHook, WeightSet};
use candle_core::{Device, Tensor};

/// A perplexity measured the way `llama-perplexity` measures it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LlamaCppPerplexity {
    pub perplexity: f64,
    /// Mean negative log-likelihood (nats/token).
    pub mean_nll: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
}

/// Runs `weights` over each chunk (first token replaced by `bos` when given) and hands
/// every scored position's logits row, with the token it predicts, to `f`, in order.
fn for_each_scored<W: WeightSet + ?Sized>(
    model: &Model,
    weights: &W,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    chunks: usize,
    f: &mut dyn FnMut(&[f32], usize),
) -> Result<()> {
    let vocab = model.arch.vocab();
    let windows = llama_cpp_windows(model, tokens, n_ctx, bos, Some(chunks))?;
    for chunk in windows.ids.chunks_exact(n_ctx) {
        let ids = Tensor::from_slice(chunk, (1, n_ctx), &Device::Cpu)?;
        let logits = model
            .forward(weights, &NoHook, &ids)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for j in n_ctx / 2..n_ctx - 1 {
            f(&logits[j * vocab..(j + 1) * vocab], chunk[j + 1] as usize);
        }
    }
    Ok(())
}

/// Runs the protocol over `tokens` (as llama.cpp tokenizes the text, BOS included when
/// the model adds one) with chunks of `n_ctx`, at most `max_chunks` of them.
pub fn llama_cpp_perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Result<LlamaCppPerplexity> {
    let chunks = chunk_count(model, tokens, n_ctx, max_chunks)?;
    let (mut nll, mut count) = (0f64, 0usize);
    for_each_scored(
        model,
        &model.weights,
        tokens,
        n_ctx,
        bos,
        chunks,
        &mut |row, next| {
            nll -= log_softmax_at(row, next);
            count += 1;
        },
    )?;
    let mean_nll = nll / count as f64;
    Ok(LlamaCppPerplexity {
        perplexity: mean_nll.exp(),
        mean_nll,
        chunks,
        scored_tokens: count,
    })
}

/// `llama-perplexity -c n_ctx [--chunks max_chunks]` on a text: the text tokenized as
/// llama.cpp's tool tokenizes it (special tokens on, so BOS first when the model adds
/// one), then the protocol, so the figure sits beside llama.cpp's for the same file.
pub fn llama_cpp_perplexity_of_text(
    model: &Model,
    text: &str,
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<LlamaCppPerplexity> {
    let tokens = model.encode_special(text)?;
    let bos = llama_cpp_bos(model)?;
    llama_cpp_perplexity(model, &tokens, n_ctx, bos, max_chunks)
}

/// Mean exact KL(FP ‖ `weights`) over the whole vocabulary at the positions
/// `llama-perplexity --kl-divergence` scores, in nats/token: qevo's figure for the same
/// tokens and protocol as llama.cpp's KLD of a quantized file against its FP base.
pub fn llama_cpp_kl(
    model: &Model,
    weights: &[Tensor],
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Result<f64> {
    llama_cpp_kl_between(model, (model, weights), tokens, n_ctx, bos, max_chunks)
}

/// `llama_cpp_kl` of another network against `base`'s FP weights: `other` is a model
/// whose norms differ too (a tuned one) with the weights to run it with.
pub fn llama_cpp_kl_between<W: WeightSet + ?Sized>(
    base: &Model,
    (model, weights): (&Model, &W),
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Result<f64> {
    let chunks = chunk_count(base, tokens, n_ctx, max_chunks)?;
    let mut fp: Vec<Vec<f32>> = Vec::new();
    for_each_scored(
        base,
        &base.weights,
        tokens,
        n_ctx,
        bos,
        chunks,
        &mut |row, _| fp.push(row.to_vec()),
    )?;
    let (mut total, mut k) = (0f64, 0usize);
    for_each_scored(model, weights, tokens, n_ctx, bos, chunks, &mut |row, _| {
        total += super::exact_kl(&fp[k], row, row.len());
        k += 1;
    })?;
    Ok(total / k.max(1) as f64)
}

/// `log softmax(row)[target]` in f64.
fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row.get(target)
        .map_or(f64::NEG_INFINITY, |&x| x as f64 - max - sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_row_is_minus_log_n() {
        let v = log_softmax_at(&[0.5; 8], 3);
        assert!((v + (8f64).ln()).abs() < 1e-12, "{v}");
    }
}
