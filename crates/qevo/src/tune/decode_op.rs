//! A GGML tensor as a differentiable function of its block scales: `W = d · A + m · B`,
//! with the parts decoded by the type's own dequantizer (`quant::scale_fields`), and the
//! backward pass giving each block's `∂L/∂d = Σ g·A` and `∂L/∂m = Σ g·B`. With f16 scales
//! `W` is what the file decodes to, up to the order of two f32 products.
//!
//! A candle custom op rather than `A ⊙ d` in the graph: the parts `A` and `B` are
//! decoded when the backward pass needs them and dropped after, so training a 135M model
//! never holds them (540 MB each) next to its weights.

use crate::quant::scale_fields::basis;
use crate::quant::GgmlType;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// One tensor's blocks; the op's input is its scales `[rows · blocks, 2]` (`d`, `m`).
#[derive(Debug, Clone)]
pub(crate) struct Dequant {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Arc<Vec<u8>>,
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
        let bl = self.ty.block_len();
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
        let bl = self.ty.block_len();
        // Blocks are independent, so the parallel sums are the same for any thread count.
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
