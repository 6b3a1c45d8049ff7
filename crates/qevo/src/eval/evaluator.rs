//! Scoring plans fast: the evaluator runs a plan's quantized model over the calibration
//! windows block by block, reusing (1) dequantized weights per (tensor, format) from the
//! weight cache and (2) hidden states after block k for a plan's choices on the
//! embedding and blocks 0..=k (the prefix cache), so plans that share early blocks share
//! that work. Both caches are pure memos: a plan scores the same with or without them.

use super::{Metrics, Partial, Pass, Reference, Sums};
use crate::error::Result;
use crate::model::Model;
use crate::plan::TensorChoice;
use crate::quant::{ActQuantHook, ActRanges, ActScheme, WeightCache};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::Mutex;

/// Hit/miss counters of the prefix cache.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PrefixStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// Key: number of windows scored, last block done, and the choices of every tensor
/// that block and its predecessors (and the embedding) use.
type PrefixKey = (usize, usize, Vec<TensorChoice>);

struct PrefixCache {
    budget: usize,
    bytes: usize,
    tick: u64,
    map: HashMap<PrefixKey, (u64, Vec<Tensor>)>,
    stats: PrefixStats,
}

impl PrefixCache {
    fn get(&mut self, key: &PrefixKey) -> Option<Vec<Tensor>> {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(key) {
            Some(e) => {
                e.0 = tick;
                self.stats.hits += 1;
                Some(e.1.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    fn put(&mut self, key: PrefixKey, states: Vec<Tensor>) {
        let size: usize = states.iter().map(|t| t.elem_count() * 4).sum();
        if size > self.budget {
            return;
        }
        while self.bytes + size > self.budget {
            // Evict the least recently used entry.
            let Some(old) = self
                .map
                .iter()
                .min_by_key(|(_, v)| v.0)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, v)) = self.map.remove(&old) {
                self.bytes -= v.iter().map(|t| t.elem_count() * 4).sum::<usize>();
            }
        }
        self.tick += 1;
        self.bytes += size;
        self.map.insert(key, (self.tick, states));
    }
}

/// Everything needed to score a per-tensor choice list on the calibration windows.
pub struct Evaluator<'m> {
    pub model: &'m Model,
    pub reference: Reference,
    pub weights: WeightCache,
    pub ranges: ActRanges,
    pub act_scheme: ActScheme,
    prefix: Mutex<PrefixCache>,
    use_prefix: bool,
    /// For each block, the exclusive end of the tensor-index prefix it depends on.
    block_end: Vec<usize>,
}

impl<'m> Evaluator<'m> {
    pub fn new(
        model: &'m Model,
        reference: Reference,
        weights: WeightCache,
        ranges: ActRanges,
        act_scheme: ActScheme,
        prefix_budget_bytes: usize,
    ) -> Self {
        // Tensors are ordered embedding, block 0, block 1, ..., output: the tensors a
        // block's output depends on form a prefix of that order.
        let n_blocks = model.n_blocks();
        let mut block_end = vec![0usize; n_blocks];
        for (i, t) in model.tensors.iter().enumerate() {
            if let Some(b) = t.block {
                block_end[b] = block_end[b].max(i + 1);
            }
        }
        for b in 1..n_blocks {
            block_end[b] = block_end[b].max(block_end[b - 1]);
        }
        Evaluator {
            model,
            reference,
            weights,
            ranges,
            act_scheme,
            prefix: Mutex::new(PrefixCache {
                budget: prefix_budget_bytes,
                bytes: 0,
                tick: 0,
                map: HashMap::new(),
                stats: PrefixStats::default(),
            }),
            use_prefix: prefix_budget_bytes > 0,
            block_end,
        }
    }

    pub fn prefix_stats(&self) -> PrefixStats {
        let p = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        PrefixStats {
            entries: p.map.len(),
            bytes: p.bytes,
            ..p.stats
        }
    }

    /// Scores per-tensor `choices` on the first `n_windows` calibration windows, starting
    /// from the longest cached prefix of hidden states.
    pub fn score(&self, choices: &[TensorChoice], n_windows: usize) -> Result<Metrics> {
        let model = self.model;
        let n = n_windows.min(self.reference.windows.len());
        let (w, hook) = self.weights_and_hook(choices)?;
        let key = |b: usize| -> PrefixKey { (n, b, choices[..self.block_end[b]].to_vec()) };
        let start = if self.use_prefix {
            let mut p = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
            (0..model.n_blocks()).rev().find_map(|b| {
                p.get(&key(b)).map(|states| Partial {
                    blocks_done: b + 1,
                    states,
                })
            })
        } else {
            None
        };
        let mut remember = |b: usize, states: &[Tensor]| {
            if self.use_prefix {
                self.prefix
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .put(key(b), states.to_vec());
            }
        };
        let pass = Pass {
            model,
            weights: &w,
            hook: &hook,
            windows: &self.reference.windows,
            range: 0..n,
            batch: self.reference.batch,
        };
        let mut total = Sums::default();
        pass.logits_from(start, &mut remember, |first, flat| {
            total.add(&self.reference.score_logits(first, flat));
            Ok(())
        })?;
        Ok(total.metrics())
    }
}

impl Evaluator<'_> {
    /// Scores choices against another reference (held-out text), without the prefix cache.
    pub fn score_with(&self, reference: &Reference, choices: &[TensorChoice]) -> Result<Metrics> {
        let (w, hook) = self.weights_and_hook(choices)?;
        reference.score(self.model, &w, &hook)
    }

    /// The weights (through the cache, missing ones filled in parallel) and the
    /// activation hook that per-tensor `choices` run with.
    fn weights_and_hook(
        &self,
        choices: &[TensorChoice],
    ) -> Result<(Vec<Tensor>, ActQuantHook<'_>)> {
        let pairs: Vec<(usize, crate::quant::WeightFormat)> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.format))
            .collect();
        self.weights.prefill(self.model, &pairs)?;
        let w = pairs
            .iter()
            .map(|&(i, f)| self.weights.get(self.model, i, f))
            .collect::<Result<_>>()?;
        let act: Vec<u8> = choices.iter().map(|c| c.act_bits).collect();
        Ok((w, ActQuantHook::new(&self.ranges, act, self.act_scheme)))
    }
}
