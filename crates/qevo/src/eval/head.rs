//! The sampled head: a decoder scored on a few hundred vocabulary rows per position
//! instead of its whole output layer, and the rule for when a search uses it.
//!
//! Why: on Gemma-3-270M the output layer (262144 × 640) holds 63% of a forward pass's
//! multiply-adds, and every score runs it whole, however few blocks a prefix cache
//! leaves to run; a sensitivity cell costs little more than the head. The KL a reference
//! keeps (`Reference`: the FP model's top-k log-probs plus one tail outcome) needs only
//! the quantized model's logits at those k tokens and its total mass outside them.
//!
//! The sampled head computes the logits at the FP top-k, at the next `m` FP-ranked tokens
//! (the sample), and at the next token (perplexity). The mass outside those rows is
//! estimated by ratio: the quantized model's mass on the sample divided by the FP model's,
//! times the FP model's mass beyond the sample (known exactly from the reference pass).
//! Weight noise moves logits by amounts that do not depend on a token's rank, so this
//! ratio holds for the deep tail; the sample is the most probable part of the tail, so
//! it carries the estimate. When the sample and top-k cover the vocabulary the score
//! equals the full head's.
//!
//! Only scores whose reference is built sampled (`Reference::build_sampled`) use it: the
//! search's calibration windows under `HeadScore::Sampled`. The validation and held-out
//! scores, the recipe's choice and the exported file's check run the full head.

use super::{with_f32, Reference, Sums};
use crate::error::Result;
use crate::model::{LinearHook, Model, Weights};
use candle_core::Tensor;
use rayon::prelude::*;

/// How the search's calibration scores run the output layer (`Settings::head`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum HeadScore {
    /// Sampled when the output layer has more weights than all blocks together.
    #[default]
    Auto,
    /// Every vocabulary row, every score.
    Full,
    /// The top-k, `SAMPLE_ROWS` sampled rows and the next token per position.
    Sampled,
}

/// FP-ranked tokens after the top-k whose logits estimate the mass beyond them.
pub const SAMPLE_ROWS: usize = 192;

/// Positions whose rows are gathered for one product: their union of rows stays small
/// (at most `SUB_ROWS × (k + SAMPLE_ROWS + 1)`) while the product still uses the gemm.
const SUB_ROWS: usize = 64;

impl HeadScore {
    /// Whether a reference with top-`k` is built sampled on `model`. Never for an
    /// encoder, nor when top-k and the sample would be a quarter of the vocabulary.
    pub fn sampled(self, model: &Model, k: usize) -> bool {
        let vocab = model.arch.vocab();
        let usable = model.arch.is_decoder() && 4 * (k + SAMPLE_ROWS) < vocab;
        usable
            && match self {
                HeadScore::Full => false,
                HeadScore::Sampled => true,
                HeadScore::Auto => head_outweighs_blocks(model),
            }
    }
}

/// Whether the output layer's product (vocabulary × hidden) outweighs all blocks' weights.
fn head_outweighs_blocks(model: &Model) -> bool {
    let head = model.arch.vocab() as u64 * model.arch.hidden() as u64;
    let blocks: u64 = model
        .tensors
        .iter()
        .filter(|t| t.block.is_some())
        .map(|t| t.rows as u64 * t.cols as u64)
        .sum();
    head > blocks
}

/// Per position, the sample's FP-ranked token ids and their FP log-probs (the mass
/// beyond the sample is the reference's tail less theirs).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) m: usize,
    pub(crate) ids: Vec<u32>,
    pub(crate) lp: Vec<f32>,
}

impl Sample {
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.ids.len() + self.lp.len()) * 4
    }
}

impl Reference {
    /// The FP distributions on `windows` with top-`k` for the KL and the next `m` ranked
    /// tokens kept as the sampled head's sample (`eval::head`). The KL it defines is the
    /// same as `build(model, windows, k)`'s.
    pub fn build_sampled(
        model: &Model,
        windows: super::TokenWindows,
        k: usize,
        m: usize,
    ) -> Result<Reference> {
        let vocab = model.arch.vocab();
        let k = k.clamp(1, vocab);
        if m == 0 || k + m >= vocab || !model.arch.is_decoder() {
            return Reference::build(model, windows, k);
        }
        let mut r = Reference::build(model, windows, k + m)?;
        let n_pos = r.tail_lp.len();
        let km = k + m;
        let mut top_ids = Vec::with_capacity(n_pos * k);
        let mut top_lp = Vec::with_capacity(n_pos * k);
        let mut ids = Vec::with_capacity(n_pos * m);
        let mut lp = Vec::with_capacity(n_pos * m);
        for pos in 0..n_pos {
            let (i, l) = (&r.top_ids[pos * km..][..km], &r.top_lp[pos * km..][..km]);
            top_ids.extend_from_slice(&i[..k]);
            top_lp.extend_from_slice(&l[..k]);
            ids.extend_from_slice(&i[k..]);
            lp.extend_from_slice(&l[k..]);
            // The tail of the KL is everything beyond the top-k: the sample and beyond.
            let sample: f64 = l[k..].iter().map(|&x| (x as f64).exp()).sum();
            let rest = (r.tail_lp[pos] as f64).exp() + sample;
            r.tail_lp[pos] = rest.max(1e-30).ln() as f32;
        }
        r.k = k;
        r.top_ids = top_ids;
        r.top_lp = top_lp;
        r.sample = Some(Sample { m, ids, lp });
        Ok(r)
    }

    /// Sums of one batch of final hidden states `h` (`[windows, seq, hidden]`, the first
    /// being window `first`) scored through the sampled head.
    pub(crate) fn score_sampled(
        &self,
        s: &Sample,
        model: &Model,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        first: usize,
        h: &Tensor,
    ) -> Result<Sums> {
        let t = self.windows.seq_len;
        let hidden = h.dim(h.rank().saturating_sub(1))?;
        let rows = h.elem_count() / hidden.max(1);
        let flat = h.reshape((rows, hidden))?;
        let p0 = first * t;
        let mut total = Sums::default();
        for c0 in (0..rows).step_by(SUB_ROWS) {
            let c = SUB_ROWS.min(rows - c0);
            let positions = p0 + c0..p0 + c0 + c;
            let mut ids: Vec<u32> = positions.clone().flat_map(|p| self.rows_of(s, p)).collect();
            ids.sort_unstable();
            ids.dedup();
            let logits = model.head_rows(w, hook, &flat.narrow(0, c0, c)?, &ids)?;
            with_f32(&logits, |z| {
                super::check_finite_logits(model, z)?;
                let sums: Vec<Sums> = z
                    .par_chunks(ids.len())
                    .zip(positions.clone().into_par_iter())
                    .map(|(row, pos)| {
                        let at = |id: u32| match ids.binary_search(&id) {
                            Ok(i) => row[i],
                            Err(_) => f32::NEG_INFINITY,
                        };
                        self.sampled_sums(s, pos, at)
                    })
                    .collect();
                // Position order, as `score_logits` sums.
                sums.iter().for_each(|x| total.add(x));
                Ok(())
            })?;
        }
        Ok(total)
    }

    /// The vocabulary rows position `pos` needs: its top-k, its sample, its next token.
    fn rows_of<'a>(&'a self, s: &'a Sample, pos: usize) -> impl Iterator<Item = u32> + 'a {
        let k = self.k;
        let next = self.next_token(pos);
        self.top_ids[pos * k..(pos + 1) * k]
            .iter()
            .chain(&s.ids[pos * s.m..(pos + 1) * s.m])
            .copied()
            .chain(next)
    }

    fn next_token(&self, pos: usize) -> Option<u32> {
        let t = self.windows.seq_len;
        (!(pos + 1).is_multiple_of(t)).then(|| self.windows.ids[pos + 1])
    }

    /// One position's KL, top-1 and next-token loss from the logits `z` at its rows.
    fn sampled_sums(&self, s: &Sample, pos: usize, z: impl Fn(u32) -> f32) -> Sums {
        let k = self.k;
        let (ids, lps) = (
            &self.top_ids[pos * k..(pos + 1) * k],
            &self.top_lp[pos * k..(pos + 1) * k],
        );
        let (sids, slp) = (
            &s.ids[pos * s.m..(pos + 1) * s.m],
            &s.lp[pos * s.m..(pos + 1) * s.m],
        );
        let zt: Vec<f32> = ids.iter().map(|&i| z(i)).collect();
        let zs: Vec<f32> = sids.iter().map(|&i| z(i)).collect();
        let max = zt
            .iter()
            .chain(&zs)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mass = |v: &[f32]| v.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>();
        let (q_top, q_sample) = (mass(&zt), mass(&zs));
        let p_sample: f64 = slp.iter().map(|&x| (x as f64).exp()).sum();
        let lpt = self.tail_lp[pos] as f64;
        let p_beyond = (lpt.exp() - p_sample).max(0.0);
        // The quantized model's mass beyond the sample, at the FP model's ratio.
        let q_beyond = match p_sample > 0.0 {
            true => q_sample * p_beyond / p_sample,
            false => 0.0,
        };
        let z_sum = q_top + q_sample + q_beyond;
        let ln_z = z_sum.ln();
        let logq = |x: f32| (x - max) as f64 - ln_z;
        let mut kl: f64 = lps
            .iter()
            .zip(&zt)
            .map(|(&lp, &x)| (lp as f64).exp() * (lp as f64 - logq(x)))
            .sum();
        let q_tail = ((q_sample + q_beyond) / z_sum).max(1e-30);
        kl += lpt.exp() * (lpt - q_tail.ln());
        // The FP top-1 is the first largest of the scored rows (a row outside them
        // that outscores it is not seen).
        let top1 = zt.first().is_some_and(|&z0| z0 == max);
        let mut out = Sums {
            kl: kl.max(0.0),
            top1: usize::from(top1),
            positions: 1,
            ..Default::default()
        };
        if let Some(next) = self.next_token(pos) {
            out.nll = -logq(z(next));
            out.predictions = 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::TokenWindows;
    use crate::eval::{Metrics, PlanWeights, WeightCache};
    use crate::model::NoHook;
    use crate::quant::{GgmlType, WeightFormat};

    fn embedded() -> Model {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        Model::load(dir).unwrap()
    }

    fn windows(m: &Model) -> TokenWindows {
        TokenWindows::from_text(m, crate::assets::CALIB_TEXT, 64, 4).unwrap()
    }

    /// Metrics of uniform `t` against a full and a sampled reference (top-`k`, `m` rows).
    fn both(m: &Model, t: GgmlType, k: usize, rows: usize) -> (Metrics, Metrics) {
        let full = Reference::build(m, windows(m), k).unwrap();
        let sampled = Reference::build_sampled(m, windows(m), k, rows).unwrap();
        assert!(sampled.sampled() && !full.sampled());
        let cache = WeightCache::new(1 << 30);
        let formats = vec![WeightFormat::Ggml(t); m.tensors.len()];
        let w = PlanWeights::new(&cache, m, formats).unwrap();
        let score = |r: &Reference| r.score_weights(m, &w, &NoHook).unwrap();
        (score(&full), score(&sampled))
    }

    #[test]
    fn sampled_head_equals_the_full_head_when_its_rows_cover_the_vocabulary() {
        let m = embedded();
        let v = m.arch.vocab();
        let (full, sampled) = both(&m, GgmlType::Q3K, 8, v - 9);
        let rel = (sampled.kl - full.kl).abs() / full.kl;
        assert!(rel < 1e-4, "full {} sampled {}", full.kl, sampled.kl);
        assert!((sampled.ppl - full.ppl).abs() / full.ppl < 1e-4);
        assert_eq!(sampled.tokens, full.tokens);
    }

    /// On the embedded model (2048 tokens), 8 + 64 rows per position (3.5% of the
    /// vocabulary) measured 0.5%, 0.2% and 2.0% off the full head's KL for uniform q4_0,
    /// q3_k and q2_k, with equal top-1, and the order of the three kept.
    #[test]
    fn sampled_head_estimates_the_full_heads_kl_from_a_small_sample() {
        let m = embedded();
        let mut last = (0.0, 0.0);
        for t in [GgmlType::Q4_0, GgmlType::Q3K, GgmlType::Q2K] {
            let (full, sampled) = both(&m, t, 8, 64);
            let rel = (sampled.kl - full.kl).abs() / full.kl;
            assert!(rel < 0.03, "{t:?}: full {} sampled {}", full.kl, sampled.kl);
            assert_eq!(sampled.top1, full.top1, "{t:?}");
            assert!((sampled.ppl - full.ppl).abs() / full.ppl < 0.05, "{t:?}");
            assert!(full.kl > last.0 && sampled.kl > last.1, "{t:?}: order");
            last = (full.kl, sampled.kl);
        }
    }
}
