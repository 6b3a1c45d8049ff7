//! Activation fake-quant: ranges of every linear layer's input calibrated once on
//! calibration windows (min/max, or averaged per-batch percentiles), and a `LinearHook`
//! that rounds each input to 4 or 8 bits with its tensor's range (16 = untouched).
//! Also `collect_imatrix`: llama.cpp's importance matrix (Σx² per input column and the
//! tokens summed, for the weights llama-imatrix collects; see `calib::imatrix`).

use super::imatrix::{Imatrix, ImatrixEntry};
use super::windows::{default_batch, TokenWindows};
use crate::error::{Error, Result};
use crate::model::{LinearHook, Model};
use candle_core::Tensor;
use rayon::prelude::*;
use std::sync::Mutex;

/// How activations are mapped to integers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ActScheme {
    /// `scale = max(|lo|, |hi|) / (2^(b-1) − 1)`, codes symmetric around 0.
    #[default]
    Sym,
    /// `scale = (hi − lo) / (2^b − 1)` with an integer zero point.
    Asym,
}

/// Calibrated input range `(lo, hi)` per tensor index; `None` for tensors never used as a
/// linear layer (an untied embedding is a gather, not a product).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActRanges {
    pub ranges: Vec<Option<(f32, f32)>>,
    /// The percentile used (`None` = min/max).
    pub percentile: Option<f64>,
}

#[derive(Clone, Copy, Default)]
struct Acc {
    lo: f64,
    hi: f64,
    n: usize,
}

struct RangeHook {
    percentile: Option<f64>,
    acc: Mutex<Vec<Acc>>,
}

/// Lower and upper `p`-percentiles (p in (50, 100]) of `v`, by selection.
fn percentiles(v: &mut [f32], p: f64) -> (f32, f32) {
    let n = v.len();
    let k_hi = (((p / 100.0) * (n - 1) as f64).round() as usize).min(n - 1);
    let k_lo = n - 1 - k_hi;
    let hi = *v.select_nth_unstable_by(k_hi, f32::total_cmp).1;
    let lo = *v.select_nth_unstable_by(k_lo, f32::total_cmp).1;
    (lo, hi)
}

impl LinearHook for RangeHook {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> Result<Tensor> {
        let (lo, hi) = match self.percentile {
            None => {
                let f = x.flatten_all()?;
                (f.min(0)?.to_scalar::<f32>()?, f.max(0)?.to_scalar::<f32>()?)
            }
            Some(p) => {
                let mut v = x.flatten_all()?.to_vec1::<f32>()?;
                if v.is_empty() {
                    return Ok(x.clone());
                }
                percentiles(&mut v, p)
            }
        };
        if !lo.is_finite() || !hi.is_finite() {
            return Err(Error::Invalid(format!(
                "non-finite activation entering tensor #{tensor} during calibration"
            )));
        }
        let mut acc = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = acc.get_mut(tensor) {
            match self.percentile {
                None if a.n > 0 => {
                    a.lo = a.lo.min(lo as f64);
                    a.hi = a.hi.max(hi as f64);
                }
                None => {
                    a.lo = lo as f64;
                    a.hi = hi as f64;
                }
                // Per-batch percentiles, averaged over batches.
                Some(_) => {
                    a.lo += lo as f64;
                    a.hi += hi as f64;
                }
            }
            a.n += 1;
        }
        Ok(x.clone())
    }
}

/// Runs the FP model over `windows` once and records every linear input's range:
/// min/max, or with `percentile = Some(p)` (e.g. 99.99) the `100−p` and `p` percentiles
/// of each batch, averaged over batches.
pub fn calibrate_act_ranges(
    model: &Model,
    windows: &TokenWindows,
    percentile: Option<f64>,
) -> Result<ActRanges> {
    if let Some(p) = percentile {
        if !(50.0..=100.0).contains(&p) || p.is_nan() {
            return Err(Error::Invalid(format!(
                "activation percentile {p} is outside [50, 100]"
            )));
        }
    }
    let hook = RangeHook {
        percentile,
        acc: Mutex::new(vec![Acc::default(); model.tensors.len()]),
    };
    run_windows(model, windows, &hook)?;
    let acc = hook.acc.into_inner().unwrap_or_else(|e| e.into_inner());
    let ranges = acc
        .iter()
        .map(|a| {
            (a.n > 0).then(|| match percentile {
                None => (a.lo as f32, a.hi as f32),
                Some(_) => ((a.lo / a.n as f64) as f32, (a.hi / a.n as f64) as f32),
            })
        })
        .collect();
    Ok(ActRanges { ranges, percentile })
}

pub(crate) fn run_windows(
    model: &Model,
    windows: &TokenWindows,
    hook: &dyn LinearHook,
) -> Result<()> {
    let batch = default_batch(windows.seq_len);
    let mut s = 0;
    while s < windows.len() {
        let e = (s + batch).min(windows.len());
        let ids = windows.batch(s, e)?;
        model.forward(&model.weights, hook, &ids)?;
        s = e;
    }
    Ok(())
}

/// Fake-quantizes each linear layer's input to its tensor's activation width.
pub struct ActQuantHook<'a> {
    ranges: &'a ActRanges,
    act_bits: Vec<u8>,
    scheme: ActScheme,
}

impl<'a> ActQuantHook<'a> {
    /// `act_bits[i]` for tensor index `i`: 4, 8, or 16 (= leave the input alone).
    pub fn new(ranges: &'a ActRanges, act_bits: Vec<u8>, scheme: ActScheme) -> Self {
        ActQuantHook {
            ranges,
            act_bits,
            scheme,
        }
    }
}

/// Round half to even, as `f32::round_ties_even`, but inlined and vectorisable (the std
/// call compiles to a libm `rintf` call per element, which dominated evaluation profiles).
/// Adding and subtracting 1.5·2^23 leaves the nearest integer under the default rounding
/// mode; inputs are clamped first so the trick stays exact.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-4_194_304.0, 4_194_304.0);
    (x + MAGIC) - MAGIC
}

/// Scale, zero point and code range of one activation quantizer.
fn act_params(scheme: ActScheme, bits: u8, lo: f32, hi: f32) -> (f32, f32, f32, f32) {
    match scheme {
        ActScheme::Sym => {
            let qmax = ((1u32 << (bits - 1)) - 1) as f32;
            let s = lo.abs().max(hi.abs()) / qmax;
            (s, 0.0, -qmax, qmax)
        }
        ActScheme::Asym => {
            let levels = ((1u32 << bits) - 1) as f32;
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let s = (hi - lo) / levels;
            let z = if s > 0.0 {
                (-lo / s).round_ties_even().clamp(0.0, levels)
            } else {
                0.0
            };
            (s, z, 0.0, levels)
        }
    }
}

impl LinearHook for ActQuantHook<'_> {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> Result<Tensor> {
        let bits = self.act_bits.get(tensor).copied().unwrap_or(16);
        if bits >= 16 {
            return Ok(x.clone());
        }
        let Some((lo, hi)) = self.ranges.ranges.get(tensor).copied().flatten() else {
            return Err(Error::Invalid(format!(
                "tensor #{tensor} has no calibrated activation range for {bits}-bit activations"
            )));
        };
        let (s, z, qlo, qhi) = act_params(self.scheme, bits, lo, hi);
        if s <= 0.0 {
            return Ok(x.zeros_like()?);
        }
        let inv = 1.0 / s;
        let mut v = x.flatten_all()?.to_vec1::<f32>()?;
        v.par_chunks_mut(1 << 14).for_each(|c| {
            for y in c {
                let q = (round_even(*y * inv) + z).clamp(qlo, qhi) - z;
                *y = q * s;
            }
        });
        Ok(Tensor::from_vec(v, x.shape(), x.device())?)
    }
}

/// Accumulates Σx² per input column of every linear layer.
struct ImatrixHook {
    acc: Mutex<Vec<Option<ColumnSums>>>,
}

/// Σx² per column and the number of rows summed.
type ColumnSums = (Vec<f64>, usize);

impl LinearHook for ImatrixHook {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> Result<Tensor> {
        let cols = *x.dims().last().unwrap_or(&0);
        if cols == 0 {
            return Ok(x.clone());
        }
        let rows = x.elem_count() / cols;
        let sq = x.reshape((rows, cols))?.sqr()?.sum(0)?.to_vec1::<f32>()?;
        let mut acc = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = acc.get_mut(tensor) {
            let (sum, n) = slot.get_or_insert_with(|| (vec![0.0; cols], 0));
            for (a, v) in sum.iter_mut().zip(&sq) {
                *a += *v as f64;
            }
            *n += rows;
        }
        Ok(x.clone())
    }
}

/// Whether llama-imatrix collects a weight (`collect_imatrix` in tools/imatrix, with
/// `--process-output`): the blocks' matrices and `output.weight`. `token_embd.weight` is
/// a row lookup, and a tied output multiplies by it under its own name, which llama.cpp
/// skips too.
pub(crate) fn llama_cpp_collects(name: &str) -> bool {
    name.starts_with("blk.") || name == "output.weight"
}

/// llama.cpp's importance matrix over `windows`: per weight llama-imatrix collects, the
/// sum of each input column's squared activation and the number of tokens. On windows cut
/// as llama-imatrix cuts its chunks (`windows::llama_cpp_windows`) it equals
/// `llama-imatrix --process-output` to float rounding (llama.cpp sums in f32, qevo in f64).
pub fn collect_imatrix(model: &Model, windows: &TokenWindows) -> Result<Imatrix> {
    let hook = ImatrixHook {
        acc: Mutex::new(vec![None; model.tensors.len()]),
    };
    run_windows(model, windows, &hook)?;
    let acc = hook.acc.into_inner().unwrap_or_else(|e| e.into_inner());
    let entries = acc
        .into_iter()
        .zip(&model.tensors)
        .filter(|(_, t)| llama_cpp_collects(&t.name))
        .filter_map(|(o, t)| {
            let (sum, n) = o?;
            let sums = sum.iter().map(|&s| s as f32).collect();
            Some((
                t.name.clone(),
                ImatrixEntry {
                    sums,
                    count: n as u64,
                },
            ))
        })
        .collect();
    Ok(Imatrix {
        entries,
        chunk_count: windows.len() as u32,
        chunk_size: windows.seq_len as u32,
        ..Imatrix::default()
    })
}

/// `llama-imatrix --process-output -c n_ctx [--chunks max_chunks]` on `text`: the text
/// tokenized as llama.cpp does (BOS included when the model adds one), cut into whole
/// chunks of `n_ctx` each starting with BOS, then `collect_imatrix`.
pub fn collect_imatrix_llama_cpp(
    model: &Model,
    text: &str,
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<Imatrix> {
    use super::windows::{llama_cpp_bos, llama_cpp_windows};
    let tokens = model.encode_special(text)?;
    let windows = llama_cpp_windows(model, &tokens, n_ctx, llama_cpp_bos(model)?, max_chunks)?;
    collect_imatrix(model, &windows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_even_matches_std_round_ties_even() {
        for x in [
            -2.5f32,
            -1.5,
            -0.5,
            0.5,
            1.5,
            2.5,
            3.49,
            -3.51,
            0.0,
            1e6 + 0.5,
            127.5,
            -128.5,
            1e9,
            -1e9,
        ] {
            let want = x.clamp(-4_194_304.0, 4_194_304.0).round_ties_even();
            assert_eq!(super::round_even(x), want, "{x}");
        }
    }
    use super::*;

    #[test]
    fn percentiles_of_a_ramp() {
        let mut v: Vec<f32> = (0..=1000).map(|i| i as f32).collect();
        assert_eq!(percentiles(&mut v, 99.0), (10.0, 990.0));
        assert_eq!(percentiles(&mut v, 100.0), (0.0, 1000.0));
    }

    #[test]
    fn act_quant_8bit_sym_error_is_within_half_a_step() {
        let ranges = ActRanges {
            ranges: vec![Some((-2.0, 3.0))],
            percentile: None,
        };
        let x: Vec<f32> = (0..1000).map(|i| -2.0 + 5.0 * i as f32 / 999.0).collect();
        let t = Tensor::from_vec(x.clone(), (10, 100), &candle_core::Device::Cpu).unwrap();
        let run = |h: ActQuantHook<'_>| -> Vec<f32> {
            let y = h.linear_input(0, &t).unwrap();
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        for scheme in [ActScheme::Sym, ActScheme::Asym] {
            let y = run(ActQuantHook::new(&ranges, vec![8], scheme));
            let step = match scheme {
                ActScheme::Sym => 3.0 / 127.0,
                ActScheme::Asym => 5.0 / 255.0,
            };
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err <= step * 0.5 + 1e-6, "{scheme:?}: {err}");
            assert_eq!(run(ActQuantHook::new(&ranges, vec![16], scheme)), x);
        }
    }
}
