//! A GGML tensor as a differentiable function of its scales: `W = e · A + f · B` per run
//! of `sub_len` values, with the parts decoded by the type's own dequantizer
//! (`quant::scale_fields`), and the backward pass giving each run's `∂L/∂e = Σ g·A` and
//! `∂L/∂f = Σ g·B`. A run is a whole block (`e`, `f` are the block's `d`, `m`; with f16
//! scales `W` is what the file decodes to, up to the order of two f32 products), or a
//! K-quant sub-block of bytes whose sub-scales were set to 1 (`e = d · s_j`, `f = dmin ·
//! t_j`, the products the type's decoder forms, so `W` is exactly what it decodes).
//!
//! A candle custom op rather than `A ⊙ d` in the graph: the parts `A` and `B` are
//! decoded when the backward pass needs them and dropped after, so training a 135M model
//! never holds them (540 MB each) next to its weights.

use crate::quant::scale_fields::basis;
use crate::quant::GgmlType;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// One tensor's blocks; the op's input is its scales `[rows · cols / sub_len, 2]` (`e`,
/// `f`), one pair per run of `sub_len` values.
#[derive(Debug, Clone)]
pub(crate) struct Dequant {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Arc<Vec<u8>>,
    /// Values per scale pair: the block length, or a K-quant sub-block's.
    pub sub_len: usize,
}

fn msg(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl Dequant {
    fn n(&self) -> usize {
        self.rows * self.cols
    }
}

impl CustomOp1 for Dequant {
    fn name(&self) -> &'static str {
        "qevo-dequant"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(all) = storage else {
            return Err(msg("scales must be f32"));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| msg("scales must be contiguous"))?;
        let dm = &all[start..end];
        let parts = basis(self.ty, &self.bytes, self.n()).map_err(msg)?;
        let bl = self.sub_len;
        if dm.len() * bl != 2 * self.n() {
            return Err(msg(format!(
                "{} scale pairs for {} values in runs of {bl}",
                dm.len() / 2,
                self.n()
            )));
        }
        let mut w = parts.a;
        w.par_chunks_mut(bl).enumerate().for_each(|(k, wb)| {
            let (d, m) = (dm[2 * k], dm[2 * k + 1]);
            match parts.b.get(k * bl..(k + 1) * bl) {
                Some(b) => wb.iter_mut().zip(b).for_each(|(x, y)| *x = d * *x + m * y),
                None => wb.iter_mut().for_each(|x| *x *= d),
            }
        });
        Ok((CpuStorage::F32(w), Shape::from((self.rows, self.cols))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let parts = basis(self.ty, &self.bytes, self.n()).map_err(msg)?;
        let bl = self.sub_len;
        // Runs are independent, so the parallel sums are the same for any thread count.
        let out: Vec<f32> = g
            .par_chunks(bl)
            .enumerate()
            .flat_map_iter(|(k, gb)| {
                let a = &parts.a[k * bl..(k + 1) * bl];
                let gd: f32 = gb.iter().zip(a).map(|(x, y)| x * y).sum();
                let gm: f32 = match parts.b.is_empty() {
                    true => 0.0,
                    false => gb
                        .iter()
                        .zip(&parts.b[k * bl..(k + 1) * bl])
                        .map(|(x, y)| x * y)
                        .sum(),
                };
                [gd, gm]
            })
            .collect();
        let blocks = out.len() / 2;
        Ok(Some(Tensor::from_vec(out, (blocks, 2), grad.device())?))
    }
}
