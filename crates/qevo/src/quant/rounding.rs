//! What each tensor rounds with when a GGML type is written: llama.cpp importances and,
//! for qevo's output rounding, factorised input moments. Built for a model by
//! `calib::rounding`.

use super::format::Rounding;
use super::gptq::Hessian;
use std::sync::Arc;

/// What each tensor of a model rounds with, by tensor index: llama.cpp importances
/// (`Imatrix::for_model`) and, for qevo's output rounding, the factorised input moments
/// (`calib::collect_hessians`). Empty vectors mean plain rounding throughout.
#[derive(Debug, Clone, Default)]
pub struct RoundingInputs {
    pub imatrix: Vec<Option<Vec<f32>>>,
    pub moments: Vec<Option<Arc<Hessian>>>,
}

impl RoundingInputs {
    /// Importances only (llama-quantize --imatrix rounding).
    pub fn imatrix(imatrix: Vec<Option<Vec<f32>>>) -> Self {
        RoundingInputs {
            imatrix,
            moments: Vec::new(),
        }
    }

    /// How tensor `i` rounds.
    pub fn for_tensor(&self, i: usize) -> Rounding<'_> {
        let im = self.imatrix.get(i).and_then(|o| o.as_deref());
        match self.moments.get(i).and_then(|o| o.as_deref()) {
            Some(hessian) => Rounding::Output {
                hessian,
                imatrix: im,
            },
            None => Rounding::from_imatrix(im),
        }
    }
}
