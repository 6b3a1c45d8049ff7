//! Quality of an encoder (BERT-class sentence embedder): the FP model's pooled embedding
//! of every window, kept as the reference, and how far a quantized model's embeddings are
//! from it. The loss is 1 − cosine similarity to the FP embedding of the same window (the
//! search's quality objective for encoders, in `Metrics::kl`'s slot); "top-1" is retrieval
//! agreement: the quantized embedding's nearest FP embedding is its own window's. With
//! labelled texts, `knn_accuracy` says whether the geometry still separates the classes.

use super::Sums;
use crate::error::{Error, Result};
use crate::model::{LinearHook, Model, WeightSet};
use candle_core::Tensor;
use std::path::Path;

/// The FP model's pooled embeddings, one row of `width` per window.
#[derive(Debug, Clone)]
pub struct Pooled {
    pub width: usize,
    /// Unit-normalised rows, so a cosine is one dot product.
    rows: Vec<Vec<f32>>,
}

/// `x` scaled to unit length (a zero row stays zero: its cosine with anything is 0).
fn unit(x: &[f32]) -> Vec<f32> {
    let n = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
    x.iter().map(|&v| (v as f64 * inv) as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
}

impl Pooled {
    /// Collects FP rows batch by batch (`[rows, width]` flat), in window order.
    pub fn new(width: usize) -> Pooled {
        Pooled {
            width,
            rows: Vec::new(),
        }
    }

    pub fn push_batch(&mut self, flat: &[f32]) {
        self.rows
            .extend(flat.chunks_exact(self.width.max(1)).map(unit));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        self.rows.len() * self.width * 4
    }

    /// Scores one batch of a quantized model's pooled rows starting at window `first`.
    /// Summed in window order so the result does not depend on the thread count.
    pub fn score(&self, first: usize, flat: &[f32]) -> Sums {
        let mut s = Sums::default();
        for (r, q) in flat.chunks_exact(self.width.max(1)).enumerate() {
            let q = unit(q);
            let own = first + r;
            let sims: Vec<f64> = self.rows.iter().map(|p| dot(p, &q)).collect();
            let nearest = (0..sims.len()).fold(own, |b, j| if sims[j] > sims[b] { j } else { b });
            s.kl += (1.0 - sims.get(own).copied().unwrap_or(0.0)).max(0.0);
            s.top1 += usize::from(nearest == own);
            s.positions += 1;
        }
        s
    }
}

/// Mean cosine similarity between matching rows of two `[n, width]` embedding sets.
pub fn mean_cosine(a: &[f32], b: &[f32], width: usize) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() || width == 0 || !a.len().is_multiple_of(width) {
        return Err(Error::Invalid(
            "embedding sets differ in size or are empty".into(),
        ));
    }
    let rows = a.len() / width;
    let total: f64 = a
        .chunks_exact(width)
        .zip(b.chunks_exact(width))
        .map(|(x, y)| dot(&unit(x), &unit(y)))
        .sum();
    Ok(total / rows as f64)
}

/// k-nearest-neighbour classification accuracy (cosine, leave-one-out) of labelled
/// `[n, width]` embeddings: how well an encoder's geometry still separates the classes.
/// Ties in votes go to the smaller label, ties in similarity to the earlier row.
pub fn knn_accuracy(emb: &[f32], width: usize, labels: &[u32], k: usize) -> Result<f64> {
    if width == 0 || emb.len() != labels.len() * width || labels.len() < 2 {
        return Err(Error::Invalid(
            "need at least two labelled embeddings, one label each".into(),
        ));
    }
    let norm: Vec<Vec<f32>> = emb.chunks_exact(width).map(unit).collect();
    let mut correct = 0usize;
    for i in 0..norm.len() {
        let mut sims: Vec<(f64, usize)> = (0..norm.len())
            .filter(|&j| j != i)
            .map(|j| (dot(&norm[i], &norm[j]), j))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut votes: std::collections::BTreeMap<u32, usize> = Default::default();
        for &(_, j) in sims.iter().take(k.max(1)) {
            *votes.entry(labels[j]).or_default() += 1;
        }
        let best = votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(l, _)| *l);
        correct += usize::from(best == Some(labels[i]));
    }
    Ok(correct as f64 / norm.len() as f64)
}

/// A quantized encoder's k-NN accuracy beside the FP model's, on the same texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnComparison {
    pub fp: f64,
    pub quantized: f64,
    pub texts: usize,
    pub labels: usize,
    pub k: usize,
}

impl std::fmt::Display for KnnComparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}% (FP {:.2}%; {} labelled texts, {} labels, k={}, weights only)",
            self.quantized * 100.0,
            self.fp * 100.0,
            self.texts,
            self.labels,
            self.k
        )
    }
}

/// Labelled texts for k-NN accuracy: one `label<TAB>text` per line (blank lines and
/// lines starting with `#` skipped), as token ids wrapped in the tokenizer's special
/// tokens and cut to the model's positions.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub labels: Vec<u32>,
    /// The distinct label names; `labels` index into it.
    pub names: Vec<String>,
    pub texts: Vec<Vec<u32>>,
}

impl Labelled {
    pub fn read(model: &Model, path: &Path) -> Result<Labelled> {
        if model.arch.is_decoder() {
            return Err(Error::format(
                path,
                "labelled texts measure an encoder's k-NN accuracy; this model is a decoder",
            ));
        }
        let text = crate::fsutil::read_text_file(path)?;
        let mut out = Labelled {
            labels: Vec::new(),
            names: Vec::new(),
            texts: Vec::new(),
        };
        let max = model.arch.max_positions();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((label, body)) = line.split_once('\t') else {
                return Err(Error::format(
                    path,
                    format!("line {}: expected `label<TAB>text`", i + 1),
                ));
            };
            let mut ids = model.encode_special(body)?;
            if ids.len() > max {
                // Keep the closing special token, as a tokenizer's truncation does.
                let last = ids[ids.len() - 1];
                ids.truncate(max);
                ids[max - 1] = last;
            }
            let id = match out.names.iter().position(|n| n == label) {
                Some(j) => j,
                None => {
                    out.names.push(label.to_string());
                    out.names.len() - 1
                }
            };
            out.labels.push(id as u32);
            out.texts.push(ids);
        }
        if out.texts.len() < 2 {
            return Err(Error::format(path, "need at least two labelled texts"));
        }
        Ok(out)
    }

    /// Pooled embeddings `[n, hidden]` of every text under `weights` and `hook`, one
    /// text per forward pass (texts differ in length and the encoder has no padding mask).
    pub fn embed<W: WeightSet + ?Sized>(
        &self,
        model: &Model,
        weights: &W,
        hook: &dyn LinearHook,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.texts.len() * model.arch.hidden());
        for ids in &self.texts {
            let t = Tensor::from_slice(ids, (1, ids.len()), model.device())?;
            let pooled = model.forward(weights, hook, &t)?;
            out.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// k-NN accuracy of the texts under `weights` (weights only) next to the FP model's.
    pub fn compare<W: WeightSet + ?Sized>(
        &self,
        model: &Model,
        weights: &W,
        k: usize,
    ) -> Result<KnnComparison> {
        use crate::model::NoHook;
        Ok(KnnComparison {
            fp: self.knn(model, &model.weights, &NoHook, k)?,
            quantized: self.knn(model, weights, &NoHook, k)?,
            texts: self.texts.len(),
            labels: self.names.len(),
            k,
        })
    }

    /// k-NN accuracy of the texts embedded under `weights` and `hook`.
    pub fn knn<W: WeightSet + ?Sized>(
        &self,
        model: &Model,
        weights: &W,
        hook: &dyn LinearHook,
        k: usize,
    ) -> Result<f64> {
        let e = self.embed(model, weights, hook)?;
        knn_accuracy(&e, model.arch.hidden(), &self.labels, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_embeddings_score_zero_loss_and_full_retrieval() {
        let rows = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut p = Pooled::new(2);
        p.push_batch(&rows);
        let s = p.score(0, &rows).metrics();
        assert!(s.kl.abs() < 1e-6, "{}", s.kl);
        assert_eq!(s.top1, 1.0);
        assert_eq!(s.tokens, 3);
    }

    #[test]
    fn a_rotated_embedding_loses_its_cosine_and_its_retrieval() {
        let mut p = Pooled::new(2);
        p.push_batch(&[1.0, 0.0, 0.0, 1.0]);
        // Window 0 now points where window 1 does: cosine 0 to its own, nearest is 1.
        let s = p.score(0, &[0.0, 3.0]);
        assert!((s.kl - 1.0).abs() < 1e-6);
        assert_eq!(s.top1, 0);
        // Window 1 scaled: cosine is scale-free.
        let s = p.score(1, &[0.0, 5.0]);
        assert!(s.kl.abs() < 1e-6);
        assert_eq!(s.top1, 1);
    }

    #[test]
    fn mean_cosine_and_knn_agree_with_hand_values() {
        let a = [1.0, 0.0, 0.0, 2.0];
        let b = [1.0, 1.0, 0.0, 1.0];
        let c = mean_cosine(&a, &b, 2).unwrap();
        // Rows are unit-normalised in f32.
        assert!((c - (0.5f64.sqrt() + 1.0) / 2.0).abs() < 1e-6);
        assert!(mean_cosine(&a, &b[..2], 2).is_err());
        // Two tight clusters: every point's nearest neighbour shares its label.
        let e = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        assert_eq!(knn_accuracy(&e, 2, &[0, 0, 1, 1], 1).unwrap(), 1.0);
        assert_eq!(knn_accuracy(&e, 2, &[0, 1, 0, 1], 1).unwrap(), 0.0);
        assert!(knn_accuracy(&e, 2, &[0], 1).is_err());
    }
}
