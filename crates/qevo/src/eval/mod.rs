//! Measuring quality: token windows from text, the FP model's next-token distributions
//! kept compactly (top-k log-probs + tail mass), and the metrics a quantized model is
//! scored by: mean KL divergence to FP (nats/token), perplexity, top-1 agreement; the
//! one embed → blocks → head loop every score runs through (`Pass`); and the `Evaluator`
//! that scores plans with its weight and prefix caches (`evaluator`). Encoders are
//! scored against the FP model's pooled embeddings instead (`embedding`).
//!
//! Why top-k + tail: a 50k vocabulary over 100k tokens would need 20 GB as full f32
//! distributions. Keeping the k most likely tokens and lumping the rest into one "tail"
//! outcome gives a coarser distribution; by the log-sum inequality its KL is a lower bound
//! of the exact KL; `tests/kl_approx.rs` measures the gap on the embedded model.

pub mod cache;
pub mod embedding;
pub mod evaluator;
pub mod head;
pub mod llama_ppl;
pub mod score;

pub use cache::{block_working_set, CacheStats, PlanWeights, WeightCache};
pub use embedding::{knn_accuracy, mean_cosine};
pub use evaluator::{prefix_stride, Evaluator, PrefixStats};
pub use head::HeadScore;
pub use score::{score_plan, PlanScore, ScoreOptions};

use crate::calib::{default_batch, TokenWindows};
use crate::error::{Error, Result};
use crate::model::{LinearHook, Model, WeightSet, Weights};
use candle_core::Tensor;
use rayon::prelude::*;

/// What a model's quality loss (`Metrics::kl`) measures: KL for a decoder, 1 − cosine
/// of pooled embeddings for an encoder. Reports and the CLI name it through `relabel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    #[default]
    Kl,
    Cosine,
}

/// Every "KL" label the reports and CLI print, with its encoder twin.
const COSINE_LABELS: [(&str, &str); 16] = [
    ("KL", "1-cos"),
    ("Top-1", "Retr. top-1"),
    ("Top-1 agreement", "Retrieval top-1"),
    ("KL to FP (nats/token)", "1 - cosine to FP embeddings"),
    ("KL to FP", "1 - cos to FP"),
    ("Held-out KL", "Held-out 1-cos"),
    ("Validation KL", "Validation 1-cos"),
    ("Best KL", "Best 1-cos"),
    ("Best KL so far", "Best 1-cos so far"),
    ("Uniform KL", "Uniform 1-cos"),
    ("Evolved KL", "Evolved 1-cos"),
    ("Lagrangian KL", "Lagrangian 1-cos"),
    ("Random KL", "Random 1-cos"),
    ("Evolved KL at <= size", "Evolved 1-cos at <= size"),
    (
        "At matched sizes (KL to FP, nats/token)",
        "At matched sizes (1 - cosine to FP embeddings)",
    ),
    (
        "At the size limit (KL to FP, nats/token)",
        "At the size limit (1 - cosine to FP embeddings)",
    ),
];

impl Quality {
    pub fn of(model: &Model) -> Quality {
        match model.arch.is_decoder() {
            true => Quality::Kl,
            false => Quality::Cosine,
        }
    }

    /// `label` (one of the KL labels) as this quality names it.
    pub fn relabel(self, label: &'static str) -> &'static str {
        match self {
            Quality::Kl => label,
            Quality::Cosine => COSINE_LABELS
                .iter()
                .find(|(k, _)| *k == label)
                .map_or(label, |(_, c)| c),
        }
    }
}

/// Quality of a model relative to the FP reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// The quality loss: mean KL(FP ‖ model) in nats per token (top-k + tail
    /// approximation) for a decoder; 1 − mean cosine similarity of pooled embeddings to
    /// the FP model's for an encoder.
    pub kl: f64,
    /// Perplexity on the windows' next tokens (0 for an encoder: it predicts none).
    pub ppl: f64,
    /// Fraction of positions whose most likely token equals the FP model's; for an
    /// encoder, of windows whose nearest FP embedding is their own.
    pub top1: f64,
    /// Positions scored (windows for an encoder).
    pub tokens: usize,
}

/// Running sums behind `Metrics`, so batches (and prefix-cached partial runs) add up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sums {
    kl: f64,
    nll: f64,
    top1: usize,
    positions: usize,
    predictions: usize,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.kl += o.kl;
        self.nll += o.nll;
        self.top1 += o.top1;
        self.positions += o.positions;
        self.predictions += o.predictions;
    }
    pub fn metrics(&self) -> Metrics {
        let p = self.positions.max(1) as f64;
        Metrics {
            kl: self.kl / p,
            ppl: match self.predictions {
                0 => 0.0,
                n => (self.nll / n as f64).exp(),
            },
            top1: self.top1 as f64 / p,
            tokens: self.positions,
        }
    }
}

/// The FP model's distributions on a set of windows.
#[derive(Debug, Clone)]
pub struct Reference {
    pub windows: TokenWindows,
    pub k: usize,
    /// Per position: the k most likely token ids, most likely first.
    top_ids: Vec<u32>,
    /// Their FP log-probabilities.
    top_lp: Vec<f32>,
    /// ln of the FP probability of all other tokens together.
    tail_lp: Vec<f32>,
    /// The FP model's own metrics (KL 0, top-1 1).
    pub fp: Metrics,
    pub batch: usize,
    /// Values per row of what the model's head returns: the vocabulary for a decoder,
    /// the embedding width for an encoder.
    width: usize,
    /// Encoders: the FP pooled embedding of every window (then the token fields are empty).
    pooled: Option<embedding::Pooled>,
    /// Scored through the sampled head (`head`): the tokens ranked after the top-k.
    sample: Option<head::Sample>,
}

/// Log-softmax pieces of one row of logits, in f64. `ln_sum` is `sum.ln()`, taken once
/// per row rather than once per `logp` (an exact-KL row calls `logp` for every token).
struct RowStats {
    max: f32,
    sum: f64,
    ln_sum: f64,
}

fn row_stats(row: &[f32]) -> RowStats {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    RowStats::new(row, max)
}

/// `row_stats` and the index of the first largest logit, with one pass for both maxima
/// (the logits are finite: `Pass` checked them).
fn row_stats_argmax(row: &[f32]) -> (RowStats, usize) {
    let (argmax, max) = row
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &z)| match z > b.1 {
            true => (i, z),
            false => b,
        });
    (RowStats::new(row, max), argmax)
}

impl RowStats {
    fn new(row: &[f32], max: f32) -> RowStats {
        let sum: f64 = row.iter().map(|&z| ((z - max) as f64).exp()).sum();
        RowStats {
            max,
            sum,
            ln_sum: sum.ln(),
        }
    }
    fn logp(&self, z: f32) -> f64 {
        (z - self.max) as f64 - self.ln_sum
    }
}

/// Memory the reference may spend on distributions before it falls back to top-k.
pub const REFERENCE_BUDGET_BYTES: usize = 256 << 20;

/// The k to keep: the whole vocabulary (exact KL) when `positions × vocab` entries fit in
/// `REFERENCE_BUDGET_BYTES`, else `fallback`. On the embedded model top-64 + tail
/// underestimates the exact KL of q4_k by about 14% (tests/kl_approx.rs), so exact is
/// used whenever it is affordable.
pub fn auto_topk(vocab: usize, positions: usize, fallback: usize) -> usize {
    if positions.saturating_mul(vocab).saturating_mul(8) <= REFERENCE_BUDGET_BYTES {
        vocab
    } else {
        fallback.min(vocab)
    }
}

/// Runs the model over windows `range`, in batches, handing each batch's logits (as a flat
/// `[batch * seq, vocab]` vec) to `f` with the index of its first window.
pub fn for_each_logits<W: WeightSet + ?Sized>(
    model: &Model,
    w: &W,
    hook: &dyn LinearHook,
    windows: &TokenWindows,
    range: std::ops::Range<usize>,
    batch: usize,
    f: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    w.run(model, |weights| {
        let pass = Pass {
            model,
            weights,
            hook,
            windows,
            range,
            batch,
        };
        pass.logits_from(None, &mut |_, _| {}, f)
    })
}

/// A clear error for activations that overflowed f32, naming where they first did.
fn non_finite(model: &Model, tensor: &str, what: &str) -> Error {
    Error::Tensor {
        path: model.source.clone(),
        tensor: tensor.to_string(),
        msg: format!(
            "{what} are not finite (NaN or ±inf): a weight or norm of the model overflows f32 arithmetic"
        ),
    }
}

/// The head's logits must be finite (checked in parallel: a 262144-wide vocabulary makes
/// them the largest tensor a pass produces).
fn check_finite_logits(model: &Model, flat: &[f32]) -> Result<()> {
    match flat
        .par_chunks(1 << 16)
        .any(|c| c.iter().any(|x| !x.is_finite()))
    {
        true => Err(non_finite(model, "output", "the head's outputs")),
        false => Ok(()),
    }
}

/// Block `b`'s output states must be finite: one sum over them (a NaN or infinity
/// anywhere makes it non-finite) costs little next to the block's matrix products, and
/// stops a model whose activations overflow from scoring as "perplexity NaN" or "KL 0".
fn check_finite_states(model: &Model, b: usize, h: &Tensor) -> Result<()> {
    let sum = h
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    match sum.is_finite() {
        true => Ok(()),
        false => Err(non_finite(
            model,
            &format!("blk.{b}"),
            &format!("block {b}'s output activations"),
        )),
    }
}

/// Rows of logits a decoder's head produces at once: whole windows up to about this many
/// rows, so a batch's logits never sit in memory whole (128 rows of a 49k vocabulary are
/// 25 MB, which the allocator reuses instead of mapping and zeroing fresh pages), and
/// each chunk is scored straight from the head's output buffer, never copied.
const HEAD_ROWS: usize = 128;

/// Runs `f` on the f32 elements of `t` (made contiguous if it is not), without a copy.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets())
    else {
        return Err(Error::Invalid("expected a contiguous CPU tensor".into()));
    };
    f(&cpu.as_slice::<f32>()?[a..b])
}

/// One pass of a weight set over windows `range`, `batch` windows per forward.
pub struct Pass<'a> {
    pub model: &'a Model,
    pub weights: &'a dyn Weights,
    pub hook: &'a dyn LinearHook,
    pub windows: &'a TokenWindows,
    pub range: std::ops::Range<usize>,
    pub batch: usize,
}

/// Hidden states of every batch of a pass after its first `blocks_done` blocks.
pub struct Partial {
    pub blocks_done: usize,
    pub states: Vec<Tensor>,
}

impl Pass<'_> {
    /// The one embed → blocks → head loop. It starts from `start` when given (states a
    /// cache kept for the same weights of the embedding and those blocks), reports the
    /// states after each block it runs to `after_block`, and hands each batch's logits to
    /// `f` with the index of its first window.
    pub fn logits_from(
        &self,
        start: Option<Partial>,
        after_block: &mut dyn FnMut(usize, &[Tensor]),
        mut f: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let model = self.model;
        let states = self.blocks_from(start, after_block)?;
        for (first, h) in self.batches(&states) {
            let n = h.dim(0)?;
            // A decoder's head runs a few windows at a time (`HEAD_ROWS`); an encoder's
            // pooled outputs are small.
            let per = match model.arch.is_decoder() {
                true => (HEAD_ROWS / h.dim(1)?.max(1)).max(1),
                false => n,
            };
            for w0 in (0..n).step_by(per) {
                let part = match per >= n {
                    true => h.clone(),
                    false => h.narrow(0, w0, per.min(n - w0))?,
                };
                let logits = model.head_with(self.weights, self.hook, &part)?;
                with_f32(&logits, |flat| {
                    check_finite_logits(model, flat)?;
                    f(first + w0, flat)
                })?;
            }
        }
        Ok(())
    }

    /// `reference`'s sums over this pass: through the sampled head when the reference
    /// was built for it (`head`), else through the full head's logits.
    pub fn score_from(
        &self,
        start: Option<Partial>,
        after_block: &mut dyn FnMut(usize, &[Tensor]),
        reference: &Reference,
    ) -> Result<Sums> {
        let mut total = Sums::default();
        let Some(sample) = &reference.sample else {
            self.logits_from(start, after_block, |first, flat| {
                total.add(&reference.score_logits(first, flat));
                Ok(())
            })?;
            return Ok(total);
        };
        let states = self.blocks_from(start, after_block)?;
        for (first, h) in self.batches(&states) {
            let s =
                reference.score_sampled(sample, self.model, self.weights, self.hook, first, h)?;
            total.add(&s);
        }
        Ok(total)
    }

    /// The states after every block, from `start` (or the embedding), each block's
    /// reported to `after_block`.
    fn blocks_from(
        &self,
        start: Option<Partial>,
        after_block: &mut dyn FnMut(usize, &[Tensor]),
    ) -> Result<Vec<Tensor>> {
        let model = self.model;
        let Partial {
            blocks_done,
            mut states,
        } = match start {
            Some(p) => p,
            None => Partial {
                blocks_done: 0,
                states: self.embed(self.batch.max(1))?,
            },
        };
        for b in blocks_done..model.n_blocks() {
            self.weights.prefetch(&model.block_tensors(b))?;
            states = states
                .iter()
                .map(|h| model.block_with(b, self.weights, self.hook, h))
                .collect::<Result<_>>()?;
            for h in &states {
                check_finite_states(model, b, h)?;
            }
            after_block(b, &states);
        }
        Ok(states)
    }

    /// Each batch's states with the index of its first window.
    fn batches<'s>(&self, states: &'s [Tensor]) -> impl Iterator<Item = (usize, &'s Tensor)> {
        let (start, batch) = (self.range.start, self.batch.max(1));
        states
            .iter()
            .enumerate()
            .map(move |(j, h)| (start + j * batch, h))
    }

    fn embed(&self, batch: usize) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        let mut s = self.range.start;
        while s < self.range.end {
            let e = (s + batch).min(self.range.end);
            let ids = self.windows.batch(s, e)?;
            out.push(self.model.embed_with(self.weights, &ids)?);
            s = e;
        }
        Ok(out)
    }
}

impl Reference {
    /// Runs the FP model once over `windows` and keeps the top-`k` distributions.
    // One piece: one pass over the windows keeping, per position, the top-k log-probs, the
    // tail mass and the next token's log-prob; the per-row work runs in parallel.
    pub fn build(model: &Model, windows: TokenWindows, k: usize) -> Result<Reference> {
        if !model.arch.is_decoder() {
            return Self::build_pooled(model, windows);
        }
        let vocab = model.arch.vocab();
        let k = k.clamp(1, vocab);
        let n_pos = windows.tokens();
        let mut top_ids = vec![0u32; n_pos * k];
        let mut top_lp = vec![0f32; n_pos * k];
        let mut tail_lp = vec![0f32; n_pos];
        let batch = default_batch(windows.seq_len);
        let t = windows.seq_len;
        let mut nll = 0.0;
        for_each_logits(
            model,
            &model.weights,
            &crate::model::NoHook,
            &windows,
            0..windows.len(),
            batch,
            |first, flat| {
                let rows = flat.len() / vocab;
                let p0 = first * t;
                let results: Vec<(Vec<u32>, Vec<f32>, f32, f64)> = flat
                    .par_chunks(vocab)
                    .enumerate()
                    .map(|(r, row)| {
                        let st = row_stats(row);
                        let mut order: Vec<u32> = (0..vocab as u32).collect();
                        let kth = k.min(vocab) - 1;
                        order.select_nth_unstable_by(kth, |&a, &b| {
                            row[b as usize].total_cmp(&row[a as usize])
                        });
                        let mut top: Vec<u32> = order[..k].to_vec();
                        top.sort_by(|&a, &b| {
                            row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
                        });
                        let lps: Vec<f32> = top
                            .iter()
                            .map(|&i| st.logp(row[i as usize]) as f32)
                            .collect();
                        let in_top: f64 = top
                            .iter()
                            .map(|&i| ((row[i as usize] - st.max) as f64).exp())
                            .sum();
                        let tail = ((st.sum - in_top) / st.sum).max(1e-30);
                        let pos = p0 + r;
                        let nll = if !(pos + 1).is_multiple_of(t) {
                            -st.logp(row[windows.ids[pos + 1] as usize])
                        } else {
                            0.0
                        };
                        (top, lps, tail.ln() as f32, nll)
                    })
                    .collect();
                for (r, (ids, lps, tl, nl)) in results.into_iter().enumerate().take(rows) {
                    let pos = p0 + r;
                    top_ids[pos * k..(pos + 1) * k].copy_from_slice(&ids);
                    top_lp[pos * k..(pos + 1) * k].copy_from_slice(&lps);
                    tail_lp[pos] = tl;
                    nll += nl;
                }
                Ok(())
            },
        )?;
        let predictions = windows.len() * (t - 1);
        let fp = Metrics {
            kl: 0.0,
            ppl: (nll / predictions as f64).exp(),
            top1: 1.0,
            tokens: n_pos,
        };
        Ok(Reference {
            windows,
            k,
            top_ids,
            top_lp,
            tail_lp,
            fp,
            batch,
            width: vocab,
            pooled: None,
            sample: None,
        })
    }

    /// An encoder's reference: the FP pooled embedding of every window.
    fn build_pooled(model: &Model, windows: TokenWindows) -> Result<Reference> {
        let batch = default_batch(windows.seq_len);
        let mut pooled = embedding::Pooled::new(model.arch.hidden());
        let all = 0..windows.len();
        for_each_logits(
            model,
            &model.weights,
            &crate::model::NoHook,
            &windows,
            all,
            batch,
            |_, flat| {
                pooled.push_batch(flat);
                Ok(())
            },
        )?;
        Ok(Reference {
            // Against itself: no loss, every window retrieves its own, no perplexity.
            fp: Metrics {
                kl: 0.0,
                ppl: 0.0,
                top1: 1.0,
                tokens: pooled.len(),
            },
            windows,
            k: 0,
            top_ids: Vec::new(),
            top_lp: Vec::new(),
            tail_lp: Vec::new(),
            batch,
            width: pooled.width,
            pooled: Some(pooled),
            sample: None,
        })
    }

    /// The FP distributions of window `w` (a decoder's): per position its top-`k` token
    /// ids and log-probabilities (`[seq_len · k]`), and ln of the rest's mass (`[seq_len]`).
    pub(crate) fn targets(&self, w: usize) -> Result<(&[u32], &[f32], &[f32])> {
        let t = self.windows.seq_len;
        if self.pooled.is_some() || w >= self.windows.len() {
            return Err(Error::Invalid(format!(
                "no token distributions for window {w} ({} windows{})",
                self.windows.len(),
                if self.pooled.is_some() {
                    ", an encoder"
                } else {
                    ""
                }
            )));
        }
        let (p, k) = (w * t, self.k);
        Ok((
            &self.top_ids[p * k..(p + t) * k],
            &self.top_lp[p * k..(p + t) * k],
            &self.tail_lp[p..p + t],
        ))
    }

    /// Whether scores run through the sampled head (`head`).
    pub fn sampled(&self) -> bool {
        self.sample.is_some()
    }

    /// Bytes held by the compact distributions.
    pub fn memory_bytes(&self) -> usize {
        let pooled = self.pooled.as_ref().map_or(0, |p| p.memory_bytes());
        let sample = self.sample.as_ref().map_or(0, |s| s.memory_bytes());
        self.top_ids.len() * 4 + self.top_lp.len() * 4 + self.tail_lp.len() * 4 + pooled + sample
    }

    /// Scores one batch of head outputs starting at window `first`: logits
    /// (`[rows, vocab]` flat) for a decoder, pooled embeddings for an encoder.
    pub fn score_logits(&self, first: usize, flat: &[f32]) -> Sums {
        if let Some(p) = &self.pooled {
            return p.score(first, flat);
        }
        let vocab = self.width;
        let t = self.windows.seq_len;
        let k = self.k;
        let p0 = first * t;
        flat.par_chunks(vocab)
            .enumerate()
            .map(|(r, row)| {
                let pos = p0 + r;
                let (st, argmax) = row_stats_argmax(row);
                let ids = &self.top_ids[pos * k..(pos + 1) * k];
                let lps = &self.top_lp[pos * k..(pos + 1) * k];
                let mut kl = 0.0f64;
                let mut q_in = 0.0f64;
                for (&i, &lp) in ids.iter().zip(lps) {
                    let lq = st.logp(row[i as usize]);
                    q_in += ((row[i as usize] - st.max) as f64).exp();
                    let lp = lp as f64;
                    kl += lp.exp() * (lp - lq);
                }
                let lpt = self.tail_lp[pos] as f64;
                let q_tail = ((st.sum - q_in) / st.sum).max(1e-30);
                kl += lpt.exp() * (lpt - q_tail.ln());
                let mut s = Sums {
                    kl: kl.max(0.0),
                    top1: usize::from(argmax as u32 == ids[0]),
                    positions: 1,
                    ..Default::default()
                };
                if !(pos + 1).is_multiple_of(t) {
                    s.nll = -st.logp(row[self.windows.ids[pos + 1] as usize]);
                    s.predictions = 1;
                }
                s
            })
            .collect::<Vec<Sums>>()
            // Summed in position order: a parallel tree reduction would make the last bits
            // depend on the thread count, and the search promises identical results.
            .iter()
            .fold(Sums::default(), |mut a, b| {
                a.add(b);
                a
            })
    }

    /// Scores a weight set (and activation hook) on windows `range`.
    pub fn score_range<W: WeightSet + ?Sized>(
        &self,
        model: &Model,
        w: &W,
        hook: &dyn LinearHook,
        range: std::ops::Range<usize>,
    ) -> Result<Sums> {
        w.run(model, |weights| self.sums_over(model, weights, hook, range))
    }

    /// Scores any weight set (e.g. `eval::PlanWeights`, drawn from a bounded cache block
    /// by block) on every window; the same sums as `score` on the same values.
    pub fn score_weights(
        &self,
        model: &Model,
        w: &dyn Weights,
        hook: &dyn LinearHook,
    ) -> Result<Metrics> {
        Ok(self
            .sums_over(model, w, hook, 0..self.windows.len())?
            .metrics())
    }

    /// This reference's sums of weight set `w` over windows `range`, from the embedding.
    fn sums_over(
        &self,
        model: &Model,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        range: std::ops::Range<usize>,
    ) -> Result<Sums> {
        let pass = Pass {
            model,
            weights: w,
            hook,
            windows: &self.windows,
            range,
            batch: self.batch,
        };
        pass.score_from(None, &mut |_, _| {}, self)
    }

    /// Scores a weight set on every window.
    pub fn score<W: WeightSet + ?Sized>(
        &self,
        model: &Model,
        w: &W,
        hook: &dyn LinearHook,
    ) -> Result<Metrics> {
        Ok(self
            .score_range(model, w, hook, 0..self.windows.len())?
            .metrics())
    }
}

/// Exact mean KL(P ‖ Q) between two logit sets (`[rows, vocab]` flat), for measuring the
/// top-k approximation's error.
pub fn exact_kl(p_logits: &[f32], q_logits: &[f32], vocab: usize) -> f64 {
    let rows = p_logits.len() / vocab;
    let total: f64 = p_logits
        .par_chunks(vocab)
        .zip(q_logits.par_chunks(vocab))
        .map(|(p, q)| {
            let sp = row_stats(p);
            let sq = row_stats(q);
            p.iter()
                .zip(q)
                .map(|(&a, &b)| {
                    let lp = sp.logp(a);
                    lp.exp() * (lp - sq.logp(b))
                })
                .sum::<f64>()
        })
        .sum();
    total / rows.max(1) as f64
}
