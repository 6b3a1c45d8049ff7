//! Output rounding's calibration: the input moments Σxxᵀ of every weight on calibration
//! windows (`collect_hessians`), factorised for `quant::gptq`, and the record a plan file
//! keeps so they can be rebuilt byte for byte (`OutputRounding`).

use super::windows::TokenWindows;
use crate::error::{Error, Result};
use crate::model::{LinearHook, Model};
use crate::quant::gptq::Hessian;
use candle_core::{Tensor, TensorId};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// What reproduces a plan's output rounding byte for byte, recorded in its plan file: the
/// calibration tokens the input moments came from, and GPTQ's damping.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputRounding {
    pub damp: f64,
    pub seq_len: usize,
    pub tokens: Vec<u32>,
}

impl OutputRounding {
    pub fn new(windows: &TokenWindows, damp: f64) -> Self {
        OutputRounding {
            damp,
            seq_len: windows.seq_len,
            tokens: windows.ids.clone(),
        }
    }

    /// The record on its own: a damping that is a finite fraction, windows of at least
    /// 2 tokens that the tokens fill exactly. The key at fault (`damp`, `seq_len`,
    /// `tokens`) and why; a plan reader names its file.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(self.damp.is_finite() && (0.0..=1.0).contains(&self.damp)) {
            return Err((
                "damp",
                format!("{}: the damping is a fraction from 0 to 1", self.damp),
            ));
        }
        if self.seq_len < 2 {
            return Err((
                "seq_len",
                format!("{}: a window is at least 2 tokens", self.seq_len),
            ));
        }
        if self.tokens.is_empty() || !self.tokens.len().is_multiple_of(self.seq_len) {
            return Err((
                "tokens",
                format!(
                    "{} tokens are not whole windows of {}",
                    self.tokens.len(),
                    self.seq_len
                ),
            ));
        }
        Ok(())
    }

    /// The first recorded token outside a vocabulary of `vocab`.
    pub fn token_outside(&self, vocab: usize) -> Option<u32> {
        self.tokens.iter().copied().find(|&t| t as usize >= vocab)
    }

    /// The input moments of `model` on the recorded tokens (as `collect_hessians`).
    /// Tokens outside the model's vocabulary or a ragged window are refused.
    pub fn moments(&self, model: &Model) -> Result<Vec<Option<Arc<Hessian>>>> {
        let vocab = model.arch.vocab();
        if let Some(t) = self.token_outside(vocab) {
            return Err(Error::setting(
                "rounding.tokens",
                format!("token {t} is outside the model's vocabulary of {vocab}"),
            ));
        }
        if let Err((key, msg)) = self.check() {
            return Err(Error::setting(&format!("rounding.{key}"), msg));
        }
        let windows = TokenWindows::from_tokens(&self.tokens, self.seq_len, usize::MAX)?;
        if windows.tokens() != self.tokens.len() {
            return Err(Error::setting(
                "rounding.tokens",
                format!(
                    "{} tokens are not whole windows of {}",
                    self.tokens.len(),
                    self.seq_len
                ),
            ));
        }
        collect_hessians(model, &windows, self.damp)
    }
}

/// Σxxᵀ per distinct linear input, and which input each weight multiplies.
#[derive(Default)]
struct Moments {
    /// Per tensor: index into `acc`, set the first time the tensor is seen.
    slot_of: Vec<Option<usize>>,
    /// Per distinct input: (Σxxᵀ row-major, rows summed, cols).
    acc: Vec<(Vec<f32>, usize, usize)>,
    /// The input of the previous call and its slot: q/k/v (and gate/up) get the same
    /// tensor one after another, so its product is computed once.
    last: Option<(TensorId, usize)>,
}

struct MomentHook {
    collect: Vec<bool>,
    state: Mutex<Moments>,
}

impl LinearHook for MomentHook {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> Result<Tensor> {
        if !self.collect.get(tensor).copied().unwrap_or(false) {
            return Ok(x.clone());
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, slot)) = st.last {
            if id == x.id() {
                let own = *st.slot_of[tensor].get_or_insert(slot);
                if own == slot {
                    return Ok(x.clone());
                }
            }
        }
        let cols = *x.dims().last().unwrap_or(&0);
        let rows = x.elem_count() / cols.max(1);
        let slot = match st.slot_of[tensor] {
            Some(s) => s,
            None => {
                st.acc.push((vec![0f32; cols * cols], 0, cols));
                let s = st.acc.len() - 1;
                st.slot_of[tensor] = Some(s);
                s
            }
        };
        let x2 = x.reshape((rows, cols))?;
        let xtx = x2.t()?.matmul(&x2)?.flatten_all()?.to_vec1::<f32>()?;
        let (acc, n, _) = &mut st.acc[slot];
        for (a, v) in acc.iter_mut().zip(&xtx) {
            *a += v;
        }
        *n += rows;
        st.last = Some((x.id(), slot));
        Ok(x.clone())
    }
}

/// The factorised input moments of every weight llama.cpp's imatrix covers (the blocks'
/// matrices and `output.weight`), on `windows` with the model's own weights; `None` for
/// the others (embeddings are a row lookup). Weights sharing an input share one `Arc`.
pub fn collect_hessians(
    model: &Model,
    windows: &TokenWindows,
    damp: f64,
) -> Result<Vec<Option<Arc<Hessian>>>> {
    let hook = MomentHook {
        collect: model
            .tensors
            .iter()
            .map(|t| crate::calib::act::llama_cpp_collects(&t.name))
            .collect(),
        state: Mutex::new(Moments {
            slot_of: vec![None; model.tensors.len()],
            ..Moments::default()
        }),
    };
    crate::calib::act::run_windows(model, windows, &hook)?;
    let st = hook.state.into_inner().unwrap_or_else(|e| e.into_inner());
    let factored: Vec<Arc<Hessian>> = st
        .acc
        .into_par_iter()
        .map(|(xtx, n, cols)| Hessian::from_moments(&xtx, n, cols, damp).map(Arc::new))
        .collect::<Result<_>>()?;
    Ok(st
        .slot_of
        .iter()
        .map(|s| s.map(|i| factored[i].clone()))
        .collect())
}
