//! Scoring plans fast: the evaluator runs a plan's quantized model over the calibration
//! windows block by block, reusing (1) dequantized weights per (tensor, format) from the
//! weight cache, (2) hidden states after block k for a plan's choices on the embedding
//! and blocks 0..=k (the prefix cache), so plans that share early blocks share that
//! work, and (3) the score sums of a window segment a plan was already scored on (the
//! segment memo), so a full score continues its screening score instead of repeating
//! it. All three are pure memos: a plan scores the same with or without them.
//!
//! The windows are scored in segments split at the screening boundary: a screening
//! score is the first segment, a full score folds the second onto it. The split is part
//! of the definition of a score, not of the caches, so caches off give the same bits.

use super::{Metrics, Partial, Pass, Reference, Sums};
use crate::calib::{ActQuantHook, ActRanges, ActScheme};
use crate::error::Result;
use crate::eval::{PlanWeights, WeightCache};
use crate::model::Model;
use crate::model::Weights;
use crate::plan::TensorChoice;
use candle_core::Tensor;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

/// Counters of the prefix cache and the segment memo.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PrefixStats {
    /// Segment passes that started from cached states (`misses`: from the embedding).
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
    /// Blocks a pass skipped thanks to cached states, and blocks passes ran.
    #[serde(default)]
    pub blocks_reused: u64,
    #[serde(default)]
    pub blocks_run: u64,
    /// Segments answered whole by the segment memo (a full score reusing its screening).
    #[serde(default)]
    pub segments_reused: u64,
}

impl PrefixStats {
    /// Share of block work the cache saved: reused / (reused + run).
    pub fn block_reuse(&self) -> f64 {
        let all = self.blocks_reused + self.blocks_run;
        match all {
            0 => 0.0,
            n => self.blocks_reused as f64 / n as f64,
        }
    }
}

/// The block stride at which to keep hidden states so that the states of `plans` plans
/// over `windows` windows of `seq_len` tokens fit in `budget` bytes: 1 (every block) when
/// they fit, else the smallest stride that makes them fit.
pub fn prefix_stride(
    model: &Model,
    windows: usize,
    seq_len: usize,
    plans: usize,
    budget: usize,
) -> usize {
    let per_block = windows * seq_len * model.arch.hidden() * 4;
    let all = per_block
        .saturating_mul(model.n_blocks())
        .saturating_mul(plans.max(1));
    all.div_ceil(budget.max(1)).max(1)
}

/// References besides the calibration windows that `score_with` keeps a memo for at
/// once: the held-out text and the search's validation slice.
const OTHER_REFERENCES: usize = 2;

/// Key: the window segment, the last block done, and the choices of every tensor that
/// block and its predecessors (and the embedding) use.
type PrefixKey = (Range<usize>, usize, Vec<TensorChoice>);

struct PrefixCache {
    /// The token ids of the windows the states belong to (`score_with`'s slots: each
    /// holds one reference's; a slot given to another reference is cleared).
    windows: Option<Vec<u32>>,
    budget: usize,
    bytes: usize,
    tick: u64,
    /// When `score_with` last chose this slot (the least recent is reused).
    last_used: u64,
    map: HashMap<PrefixKey, (u64, Vec<Tensor>)>,
    /// Score sums of windows 0..end, per (end, whole plan).
    segments: HashMap<(usize, Vec<TensorChoice>), Sums>,
    stats: PrefixStats,
}

impl PrefixCache {
    fn new(budget: usize) -> PrefixCache {
        PrefixCache {
            windows: None,
            budget,
            bytes: 0,
            tick: 0,
            last_used: 0,
            map: HashMap::new(),
            segments: HashMap::new(),
            stats: PrefixStats::default(),
        }
    }

    fn counts(&self) -> PrefixStats {
        PrefixStats {
            entries: self.map.len(),
            bytes: self.bytes,
            ..self.stats
        }
    }

    /// Drops every hidden state (the segment memo stays: it is small).
    fn release_states(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    fn get(&mut self, key: &PrefixKey) -> Option<Vec<Tensor>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(key)?;
        e.0 = tick;
        Some(e.1.clone())
    }

    fn put(&mut self, key: PrefixKey, states: Vec<Tensor>) {
        let size: usize = states.iter().map(|t| t.elem_count() * 4).sum();
        if size > self.budget || self.map.contains_key(&key) {
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
    /// States and whole-plan sums of scores against other references (`score_with`),
    /// one slot per reference: the held-out text and the validation slice, scored in
    /// turns, keep each other's memo.
    heldout: [Mutex<PrefixCache>; OTHER_REFERENCES],
    /// Serialises choosing a slot for a reference.
    assign: Mutex<u64>,
    use_prefix: bool,
    /// For each block, the exclusive end of the tensor-index prefix it depends on.
    block_end: Vec<usize>,
    /// Windows of the first segment (the screening score).
    screen: usize,
    /// States are kept after every `stride`-th block (and the last).
    stride: usize,
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
        let screen = reference.windows.len();
        Evaluator {
            model,
            reference,
            weights,
            ranges,
            act_scheme,
            prefix: Mutex::new(PrefixCache::new(prefix_budget_bytes)),
            heldout: std::array::from_fn(|_| Mutex::new(PrefixCache::new(prefix_budget_bytes))),
            assign: Mutex::new(0),
            use_prefix: prefix_budget_bytes > 0,
            block_end,
            screen,
            stride: 1,
        }
    }

    /// Scores split at `screen` windows: a screening score on that many windows is the
    /// first segment of every longer score.
    pub fn with_screen(mut self, screen: usize) -> Self {
        self.screen = screen.max(1);
        self
    }

    /// Keep hidden states after every `stride`-th block only, so the prefix cache's
    /// budget holds the states of more plans (`prefix_stride`).
    pub fn with_prefix_stride(mut self, stride: usize) -> Self {
        self.stride = stride.max(1);
        self
    }

    /// Frees the calibration scores' hidden states once the evolution is over; scores
    /// stay the same, later ones only run from the embedding.
    pub fn release_states(&self) {
        lock(&self.prefix).release_states();
    }

    pub fn prefix_stats(&self) -> PrefixStats {
        lock(&self.prefix).counts()
    }

    /// The held-out scores' cache counters (`score_with`), over every slot.
    pub fn heldout_stats(&self) -> PrefixStats {
        self.heldout
            .iter()
            .map(|c| lock(c).counts())
            .fold(PrefixStats::default(), |a, b| PrefixStats {
                hits: a.hits + b.hits,
                misses: a.misses + b.misses,
                entries: a.entries + b.entries,
                bytes: a.bytes + b.bytes,
                blocks_reused: a.blocks_reused + b.blocks_reused,
                blocks_run: a.blocks_run + b.blocks_run,
                segments_reused: a.segments_reused + b.segments_reused,
            })
    }

    /// Scores per-tensor `choices` on the first `n_windows` calibration windows: segment
    /// by segment, each folded onto the sums of the ones before it.
    pub fn score(&self, choices: &[TensorChoice], n_windows: usize) -> Result<Metrics> {
        let n = n_windows.min(self.reference.windows.len());
        let (w, hook) = self.weights_and_hook(choices)?;
        let mut total = Sums::default();
        let mut start = 0;
        let on = Scoring {
            reference: &self.reference,
            cache: &self.prefix,
        };
        for end in [self.screen.min(n), n] {
            if end > start {
                self.score_segment(on, choices, &w, &hook, start..end, &mut total)?;
                start = end;
            }
        }
        Ok(total.metrics())
    }

    /// Whether states after block `b` are kept.
    fn kept_block(&self, b: usize) -> bool {
        (b + 1).is_multiple_of(self.stride) || b + 1 == self.model.n_blocks()
    }

    /// Adds windows `seg` onto `total`: from the segment memo when the plan's sums
    /// through `seg.end` are known, else from the longest cached prefix of hidden states.
    fn score_segment(
        &self,
        on: Scoring,
        choices: &[TensorChoice],
        w: &dyn Weights,
        hook: &ActQuantHook,
        seg: Range<usize>,
        total: &mut Sums,
    ) -> Result<()> {
        // Built once, and only when the caches are on.
        let memo_key = self.use_prefix.then(|| (seg.end, choices.to_vec()));
        let key =
            |b: usize| -> PrefixKey { (seg.clone(), b, choices[..self.block_end[b]].to_vec()) };
        let n_blocks = self.model.n_blocks();
        let start = if let Some(mk) = &memo_key {
            let mut p = lock(on.cache);
            if let Some(sums) = p.segments.get(mk).copied() {
                p.stats.segments_reused += 1;
                *total = sums;
                return Ok(());
            }
            let found = (0..n_blocks)
                .rev()
                .filter(|&b| self.kept_block(b))
                .find_map(|b| {
                    p.get(&key(b)).map(|states| Partial {
                        blocks_done: b + 1,
                        states,
                    })
                });
            let done = found.as_ref().map_or(0, |f| f.blocks_done) as u64;
            match found.is_some() {
                true => p.stats.hits += 1,
                false => p.stats.misses += 1,
            }
            p.stats.blocks_reused += done;
            p.stats.blocks_run += n_blocks as u64 - done;
            found
        } else {
            None
        };
        let mut remember = |b: usize, states: &[Tensor]| {
            if self.use_prefix && self.kept_block(b) {
                lock(on.cache).put(key(b), states.to_vec());
            }
        };
        let pass = Pass {
            model: self.model,
            weights: w,
            hook,
            windows: &on.reference.windows,
            range: seg.clone(),
            batch: on.reference.batch,
        };
        total.add(&pass.score_from(start, &mut remember, on.reference)?);
        if let Some(mk) = memo_key {
            lock(on.cache).segments.insert(mk, *total);
        }
        Ok(())
    }
}

/// The windows a segment is scored on and the cache its states and sums go to.
#[derive(Clone, Copy)]
struct Scoring<'a> {
    reference: &'a Reference,
    cache: &'a Mutex<PrefixCache>,
}

/// A cache lock; a panic while holding it cannot leave a map half-updated (each update
/// is one insert or remove), so a poisoned lock is still usable.
fn lock(m: &Mutex<PrefixCache>) -> std::sync::MutexGuard<'_, PrefixCache> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Evaluator<'_> {
    /// Scores choices against another reference (the held-out text), all windows in one
    /// segment, with a prefix cache and whole-plan memo of its own: the front's plans
    /// share early blocks, and the baselines repeat front plans.
    pub fn score_with(&self, reference: &Reference, choices: &[TensorChoice]) -> Result<Metrics> {
        let cache = self.slot_for(reference);
        let (w, hook) = self.weights_and_hook(choices)?;
        let on = Scoring { reference, cache };
        let mut total = Sums::default();
        self.score_segment(
            on,
            choices,
            &w,
            &hook,
            0..reference.windows.len(),
            &mut total,
        )?;
        Ok(total.metrics())
    }

    /// The slot holding `reference`'s windows; when none does, the least recently chosen
    /// slot, cleared and given to it. Slots are chosen one at a time, so parallel scores
    /// of one reference share one slot.
    fn slot_for(&self, reference: &Reference) -> &Mutex<PrefixCache> {
        let mut clock = self.assign.lock().unwrap_or_else(|e| e.into_inner());
        *clock += 1;
        let ids = &reference.windows.ids[..];
        let held = |c: &Mutex<PrefixCache>| lock(c).windows.as_deref() == Some(ids);
        let i = match self.heldout.iter().position(held) {
            Some(i) => i,
            None => {
                let i = (0..OTHER_REFERENCES)
                    .min_by_key(|&i| lock(&self.heldout[i]).last_used)
                    .unwrap_or(0);
                let mut c = lock(&self.heldout[i]);
                *c = PrefixCache {
                    windows: Some(ids.to_vec()),
                    ..PrefixCache::new(c.budget)
                };
                i
            }
        };
        lock(&self.heldout[i]).last_used = *clock;
        &self.heldout[i]
    }

    /// The weights (drawn from the cache block by block as the pass reaches them, so
    /// only one block's set need be held beside the cache) and the activation hook that
    /// per-tensor `choices` run with.
    fn weights_and_hook(
        &self,
        choices: &[TensorChoice],
    ) -> Result<(PlanWeights<'_>, ActQuantHook<'_>)> {
        let formats = choices.iter().map(|c| c.format).collect();
        let w = PlanWeights::new(&self.weights, self.model, formats)?;
        let act: Vec<u8> = choices.iter().map(|c| c.act_bits).collect();
        Ok((w, ActQuantHook::new(&self.ranges, act, self.act_scheme)))
    }
}
