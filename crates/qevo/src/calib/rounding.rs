//! What a plan was scored with, and its rounding inputs rebuilt for a model: the
//! importance matrix's per-tensor columns and the input moments an output-rounding
//! record gives, so an export, a re-score or a tune writes the bytes that were scored.

use super::hessian::OutputRounding;
use super::imatrix::Imatrix;
use crate::error::Result;
use crate::model::{Model, TensorInfo};
use crate::quant::{GgmlType, RoundingInputs, WeightFormat};

/// What a saved plan says it was scored with (`PlanFile::imatrix_fingerprint`,
/// `PlanFile::rounding`), so a re-score or an export can reproduce the scored bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredWith {
    /// `Imatrix::fingerprint` of the importance matrix it was scored with.
    pub imatrix_fingerprint: Option<String>,
    /// Its output-rounding record (None: llama.cpp's block rounding).
    pub rounding: Option<OutputRounding>,
}

impl ScoredWith {
    /// Whether `im` differs from the importance matrix the plan was scored with (a plan
    /// scored without one matches anything): the bytes written or re-scored then differ
    /// from those scored.
    pub fn imatrix_mismatch(&self, im: Option<&Imatrix>) -> bool {
        match (&self.imatrix_fingerprint, im) {
            (Some(_), None) => true,
            (Some(want), Some(im)) => im.fingerprint() != *want,
            (None, _) => false,
        }
    }
}

impl RoundingInputs {
    /// What a plan was scored with, rebuilt for `model`: the importance matrix's
    /// per-tensor columns and, when the plan carries an output-rounding record, the input
    /// moments its calibration tokens give. This is what an export, a re-score or a tune
    /// of a saved or searched plan needs to write the bytes that were scored.
    pub fn for_model(
        model: &Model,
        imatrix: Option<&Imatrix>,
        record: Option<&OutputRounding>,
    ) -> Result<Self> {
        Ok(RoundingInputs {
            imatrix: imatrix
                .map(|im| im.for_model(model))
                .transpose()?
                .unwrap_or_default(),
            moments: record
                .map(|r| r.moments(model))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// Model tensor `i` (`info`, row-major `data` in any row order) as block bytes of `t`,
    /// rounded as `for_tensor(i)` says: the one call export and `tune` quantize through,
    /// so both write the bytes the search scored.
    pub fn quantize_ggml(
        &self,
        i: usize,
        info: &TensorInfo,
        data: &[f32],
        t: GgmlType,
    ) -> Result<Vec<u8>> {
        let f = WeightFormat::Ggml(t);
        Ok(
            f.quantize_rounded(&info.name, data, info.rows, info.cols, self.for_tensor(i))?
                .bytes,
        )
    }
}
