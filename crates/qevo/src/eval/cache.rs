//! `WeightCache`: quantized weights per (tensor, format), so every genome that picks the
//! same format for a tensor reuses one quantization. A GGML block type is held as its
//! block bytes (4.5 bits a weight for q4_k, not 32) and dequantized where it is used —
//! dequantizing is exact and far cheaper than quantizing, so the same budget holds about
//! seven times the variants; generic integer formats are held dequantized (f32). Bounded
//! by a byte budget with least-recently-used eviction; misses are filled in parallel
//! across tensors because candle's quantizers are single-threaded per block run.

use crate::error::{Error, Result};
use crate::model::{widened, Model, Weights};
use crate::plan::TensorPlan;
use crate::quant::{GgmlType, Packed, RoundingInputs, WeightFormat};
use candle_core::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of a `WeightCache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes held now (block bytes of GGML types, f32 of generic formats).
    pub bytes: usize,
    pub entries: usize,
}

/// What an entry holds: a GGML type's block bytes, or a generic format's f32 values.
enum Held {
    Blocks(Arc<Packed>),
    Values(Tensor),
}

struct Entry {
    held: Held,
    bytes: usize,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<(usize, WeightFormat), Entry>,
    bytes: usize,
    tick: u64,
}

/// Thread-safe cache of dequantized weights (`&self` everywhere).
pub struct WeightCache {
    budget: usize,
    rounding: RoundingInputs,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl WeightCache {
    /// A cache holding at most `budget_bytes` of dequantized weights.
    pub fn new(budget_bytes: usize) -> Self {
        WeightCache {
            budget: budget_bytes,
            rounding: RoundingInputs::default(),
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Quantizes GGML block types with this rounding (importances, input moments).
    pub fn with_rounding(mut self, rounding: RoundingInputs) -> Self {
        self.rounding = rounding;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update
        // is a single insert/remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dequantized weight of tensor `tensor` in `format` (`[rows, cols]` f32; for
    /// `f32` a copy of the model's own weight as stored, which may be f16/bf16: `Dense`
    /// and `model::widened` read it as f32).
    pub fn get(&self, model: &Model, tensor: usize, format: WeightFormat) -> Result<Tensor> {
        let info = model
            .tensors
            .get(tensor)
            .ok_or_else(|| Error::out_of_range("tensor index", tensor, model.tensors.len()))?;
        if format == WeightFormat::Ggml(GgmlType::F32) {
            // f32 is the model's own weight (exactly, once widened): nothing to compute
            // or hold.
            self.hits.fetch_add(1, Ordering::Relaxed);
            return model.weights.get(tensor)?.tensor();
        }
        {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            let held = g.map.get_mut(&(tensor, format)).map(|e| {
                e.last_used = tick;
                match &e.held {
                    Held::Blocks(p) => Held::Blocks(Arc::clone(p)),
                    Held::Values(t) => Held::Values(t.clone()),
                }
            });
            if let Some(held) = held {
                self.hits.fetch_add(1, Ordering::Relaxed);
                drop(g);
                return match held {
                    Held::Values(t) => Ok(t),
                    Held::Blocks(p) => self.decode(model, format, &p),
                };
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let data = model.weight_values(tensor)?;
        let rounding = self.rounding.for_tensor(tensor);
        // A GGML type's fake quantization is exactly quantize-then-dequantize
        // (`WeightFormat::fake_quant_rounded`), so keeping the bytes loses nothing.
        let (held, t, bytes) = match format {
            WeightFormat::Ggml(_) => {
                let p = format
                    .quantize_rounded(&info.name, &data, info.rows, info.cols, rounding)
                    .map_err(|e| name_source(e, model))?;
                drop(data);
                let t = self.decode(model, format, &p)?;
                let bytes = p.bytes.len();
                (Held::Blocks(Arc::new(p)), t, bytes)
            }
            WeightFormat::Int(_) => {
                let deq = format
                    .fake_quant_rounded(&info.name, &data, info.rows, info.cols, rounding)
                    .map_err(|e| name_source(e, model))?;
                let t = Tensor::from_vec(deq, (info.rows, info.cols), model.device())?;
                (Held::Values(t.clone()), t, info.params() * 4)
            }
        };
        if bytes <= self.budget {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            let old = g.map.insert(
                (tensor, format),
                Entry {
                    held,
                    bytes,
                    last_used: tick,
                },
            );
            g.bytes += bytes;
            if let Some(o) = old {
                g.bytes -= o.bytes;
            }
            while g.bytes > self.budget {
                let Some((&k, _)) = g.map.iter().min_by_key(|(_, e)| e.last_used) else {
                    break;
                };
                if let Some(e) = g.map.remove(&k) {
                    g.bytes -= e.bytes;
                }
            }
        }
        Ok(t)
    }

    /// `rows` rows of tensor `tensor` (row-major f32 `data`, `[rows, cols]`), quantized
    /// in `format` with the tensor's own rounding and dequantized; not cached, since a
    /// sample of rows is not the weight (the sensitivity table's weight errors).
    pub fn fake_quant_rows(
        &self,
        model: &Model,
        tensor: usize,
        format: WeightFormat,
        data: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>> {
        let info = model
            .tensors
            .get(tensor)
            .ok_or_else(|| Error::out_of_range("tensor index", tensor, model.tensors.len()))?;
        let rounding = self.rounding.for_tensor(tensor);
        format
            .fake_quant_rounded(&info.name, data, rows, info.cols, rounding)
            .map_err(|e| name_source(e, model))
    }

    /// Block bytes of tensor `tensor` decoded to `[rows, cols]` f32.
    fn decode(&self, model: &Model, f: WeightFormat, p: &Packed) -> Result<Tensor> {
        let v = f.dequantize(p).map_err(|e| name_source(e, model))?;
        Ok(Tensor::from_vec(v, (p.rows, p.cols), model.device())?)
    }

    /// Fills the cache for these (tensor, format) pairs, in parallel across pairs.
    pub fn prefill(&self, model: &Model, pairs: &[(usize, WeightFormat)]) -> Result<()> {
        pairs
            .par_iter()
            .try_for_each(|&(i, f)| self.get(model, i, f).map(|_| ()))
    }

    /// The weight set of a plan, in `model.tensors` order, ready for `Model::forward`.
    pub fn weights_for(&self, model: &Model, plan: &TensorPlan) -> Result<Vec<Tensor>> {
        let choices = plan.per_tensor(model)?;
        choices
            .par_iter()
            .enumerate()
            .map(|(i, c)| self.get(model, i, c.format))
            .collect()
    }

    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: g.bytes,
            entries: g.map.len(),
        }
    }
}

/// The smallest `WeightCache` budget with which a forward pass makes each tensor once per
/// pass: the largest block's matrices as f32, or the embedding or output matrix if larger
/// (a pass runs every window through one block before the next).
pub fn block_working_set(model: &Model) -> usize {
    let f32_bytes = |i: usize| model.tensors[i].params() * 4;
    let blocks =
        (0..model.n_blocks()).map(|b| model.block_tensors(b).into_iter().map(f32_bytes).sum());
    let loose = (0..model.tensors.len())
        .filter(|&i| model.tensors[i].block.is_none())
        .map(f32_bytes);
    blocks.chain(loose).max().unwrap_or(0)
}

/// A plan's weight set drawn from a `WeightCache` as a forward pass uses it: each block's
/// tensors are made together when the block starts (`prefetch`), so at most one block's
/// dequantized weights need be held beside what the cache keeps, whatever its budget.
pub struct PlanWeights<'a> {
    cache: &'a WeightCache,
    model: &'a Model,
    formats: Vec<WeightFormat>,
    /// The current block's tensors (and the embedding or output once used), dequantized:
    /// the cache holds block bytes, and a block's batches or the head's row parts each
    /// reuse these instead of decoding again. Replaced at each `prefetch`.
    recent: Mutex<Vec<(usize, Tensor)>>,
}

impl<'a> PlanWeights<'a> {
    /// `formats` in `model.tensors` order.
    pub fn new(
        cache: &'a WeightCache,
        model: &'a Model,
        formats: Vec<WeightFormat>,
    ) -> Result<Self> {
        if formats.len() != model.tensors.len() {
            return Err(Error::tensor_count(
                "plan",
                formats.len(),
                model.tensors.len(),
            ));
        }
        Ok(PlanWeights {
            cache,
            model,
            formats,
            recent: Mutex::new(Vec::new()),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Tensor)>> {
        // Every update is one assignment or push: a poisoned lock is still consistent.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tensor `idx` from the cache, not kept here.
    fn fetch(&self, idx: usize) -> Result<Tensor> {
        let f = self
            .formats
            .get(idx)
            .ok_or_else(|| Error::out_of_range("tensor index", idx, self.formats.len()))?;
        self.cache.get(self.model, idx, *f)
    }

    /// Tensor `idx` dequantized: from this block's set, else from the cache (then kept
    /// until the next block).
    fn get(&self, idx: usize) -> Result<Tensor> {
        if let Some((_, t)) = self.recent().iter().find(|(i, _)| *i == idx) {
            return Ok(t.clone());
        }
        let t = self.fetch(idx)?;
        self.recent().push((idx, t.clone()));
        Ok(t)
    }

    /// Tensor `idx` stays at full precision: read from the model's own (mapped) weight
    /// at each use rather than copied.
    fn is_fp(&self, idx: usize) -> bool {
        self.formats.get(idx) == Some(&WeightFormat::Ggml(GgmlType::F32))
    }
}

impl Weights for PlanWeights<'_> {
    fn matmul_t(&self, idx: usize, x2: &Tensor) -> Result<Tensor> {
        if self.is_fp(idx) {
            return self.model.weights.matmul_t(idx, x2);
        }
        Ok(x2.matmul(&widened(&self.get(idx)?)?.t()?)?)
    }
    fn table(&self, idx: usize) -> Result<Tensor> {
        self.get(idx)
    }
    fn gather(&self, idx: usize, ids: &[u32]) -> Result<Tensor> {
        if self.is_fp(idx) {
            return self.model.weights.gather(idx, ids);
        }
        let at = Tensor::from_slice(ids, ids.len(), self.model.device())?;
        widened(&self.get(idx)?.index_select(&at, 0)?)
    }
    fn matmul_t_rows(&self, idx: usize, start: usize, len: usize, x2: &Tensor) -> Result<Tensor> {
        if self.is_fp(idx) {
            return self.model.weights.matmul_t_rows(idx, start, len, x2);
        }
        Ok(x2.matmul(&widened(&self.get(idx)?.narrow(0, start, len)?)?.t()?)?)
    }
    fn prefetch(&self, tensors: &[usize]) -> Result<()> {
        // The previous block's tensors go first, so at most one block is held here.
        self.recent().clear();
        let block = tensors
            .par_iter()
            .filter(|&&i| !self.is_fp(i))
            .map(|&i| Ok((i, self.fetch(i)?)))
            .collect::<Result<Vec<_>>>()?;
        *self.recent() = block;
        Ok(())
    }
}

impl crate::model::WeightSet for PlanWeights<'_> {
    // The formats were checked against the model's tensors in `new`.
    fn run<R>(&self, _model: &Model, f: impl FnOnce(&dyn Weights) -> Result<R>) -> Result<R> {
        f(self)
    }
}

/// Errors from the format layer carry the tensor name; add the model file.
fn name_source(e: Error, model: &Model) -> Error {
    match e {
        Error::Tensor { path, tensor, msg } if path.as_os_str().is_empty() => Error::Tensor {
            path: model.source.clone(),
            tensor,
            msg,
        },
        other => other,
    }
}
