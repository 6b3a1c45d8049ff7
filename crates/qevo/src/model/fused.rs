//! Fused CPU kernels of the Llama-family forward, as candle custom ops (no backward: the
//! autograd path uses candle's own differentiable ops instead).
//!
//! - `attention`: causal grouped-query attention over every window and head in one op.
//!   It reads q, k, v in the `[batch, seq, heads, head_dim]` layout the linear layers
//!   produce (no head transposes), runs one (window, head) per task, computes scores
//!   only for the keys a block of query rows can see (the causal triangle and the
//!   sliding window, in 64-row blocks), applies scale, soft-cap, mask and softmax in one
//!   pass over a scratch buffer, and writes `[batch, seq, heads · head_dim]`, the input
//!   of the output projection. The element order of every sum is fixed by the shapes,
//!   never by the thread count (each task's products run single-threaded).
//! - `silu_mul`: `silu(gate) · up` written into the gate's buffer.
//! - `add_residual`: `o + x` written into `o`'s buffer.
//!
//! The in-place ops write only tensors the forward has just produced (a linear layer's
//! output), never the caller's states, which the prefix cache may hold.

use crate::error::{Error, Result};
use candle_core::{CpuStorage, CustomOp3, InplaceOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Query rows per block of the score matrix: each block multiplies only the keys its
/// last row can see.
const ROW_BLOCK: usize = 64;

/// Elements per parallel task of the element-wise ops.
const ELEM_CHUNK: usize = 1 << 14;

/// How raw q·k products become attention probabilities.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnScores {
    pub scale: f64,
    pub softcap: Option<f64>,
    pub window: Option<usize>,
}

/// Causal attention; q `[b, t, nh, hd]`, k and v `[b, t, nkv, hd]` (contiguous), with
/// `nh / nkv` query heads per key/value head. Returns `[b, t, nh · hd]`.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, how: &AttnScores) -> Result<Tensor> {
    let (b, t, nh, hd) = q.dims4()?;
    let (_, _, nkv, _) = k.dims4()?;
    if nkv == 0 || nh % nkv != 0 || k.dims() != v.dims() || k.dims() != [b, t, nkv, hd] {
        return Err(Error::Invalid(format!(
            "attention: q {:?}, k {:?}, v {:?} do not form grouped heads",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    Ok(q.apply_op3_no_bwd(k, v, &Attention { how: *how })?)
}

struct Attention {
    how: AttnScores,
}

/// The f32 elements of a contiguous tensor's storage.
fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let (CpuStorage::F32(data), Some((a, b))) = (s, l.contiguous_offsets()) else {
        candle_core::bail!("{what}: expected a contiguous f32 tensor")
    };
    Ok(&data[a..b])
}

/// Dimensions of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "qevo-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, nh, hd) = l1.shape().dims4()?;
        let nkv = l2.shape().dims4()?.2;
        let (q, k, v) = (
            contiguous(s1, l1, "q")?,
            contiguous(s2, l2, "k")?,
            contiguous(s3, l3, "v")?,
        );
        let d = Dims { t, nh, nkv, hd };
        let heads: Vec<Vec<f32>> = (0..b * nh)
            .into_par_iter()
            .map(|bh| self.one_head(q, k, v, d, bh / nh, bh % nh))
            .collect();
        let mut out = vec![0f32; b * t * nh * hd];
        for (bh, o) in heads.iter().enumerate() {
            let (bi, h) = (bh / nh, bh % nh);
            for (i, row) in o.chunks_exact(hd).enumerate() {
                let at = ((bi * t + i) * nh + h) * hd;
                out[at..at + hd].copy_from_slice(row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, nh * hd))))
    }
}

impl Attention {
    /// Output `[t, hd]` of head `h` of window `bi`.
    fn one_head(&self, q: &[f32], k: &[f32], v: &[f32], d: Dims, bi: usize, h: usize) -> Vec<f32> {
        let Dims { t, nh, nkv, hd } = d;
        let g = h / (nh / nkv);
        let q0 = bi * t * nh * hd + h * hd;
        let kv0 = bi * t * nkv * hd + g * hd;
        let (q_rs, kv_rs) = (nh * hd, nkv * hd);
        let w = self.how.window.unwrap_or(usize::MAX).max(1);
        let mut out = vec![0f32; t * hd];
        let mut s = vec![0f32; ROW_BLOCK.min(t) * t];
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            // Keys any row of the block sees: from the first row's window start to the
            // last row itself.
            let lo = (r0 + 1).saturating_sub(w);
            let n = r1 - lo;
            let s = &mut s[..(r1 - r0) * n];
            // SAFETY: every pointer and stride stays inside its slice: rows r0..r1 of q
            // (row stride nh·hd, hd columns), keys lo..r1 of k and v, and the
            // (r1 - r0) × n scratch / (r1 - r0) × hd output rows.
            unsafe {
                gemm::gemm(
                    r1 - r0,
                    n,
                    hd,
                    s.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr().add(q0 + r0 * q_rs),
                    1,
                    q_rs as isize,
                    k.as_ptr().add(kv0 + lo * kv_rs),
                    kv_rs as isize,
                    1,
                    0.0,
                    self.how.scale as f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (ri, row) in s.chunks_exact_mut(n).enumerate() {
                let i = r0 + ri;
                // Row i sees keys max(i + 1 - w, lo)..=i, as offsets from lo.
                let first = (i + 1).saturating_sub(w).max(lo) - lo;
                softmax_span(row, first, i + 1 - lo, self.how.softcap);
            }
            unsafe {
                gemm::gemm(
                    r1 - r0,
                    hd,
                    n,
                    out.as_mut_ptr().add(r0 * hd),
                    1,
                    hd as isize,
                    false,
                    s.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr().add(kv0 + lo * kv_rs),
                    1,
                    kv_rs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        out
    }
}

/// Softmax of `row[first..end]` (soft-capped first when asked), zeros elsewhere: the
/// masked keys' probabilities.
fn softmax_span(row: &mut [f32], first: usize, end: usize, softcap: Option<f64>) {
    let span = &mut row[first..end];
    if let Some(c) = softcap {
        // As `softcap` in llama.rs: c · tanh(x · (1/c)).
        let (inv, c) = ((1.0 / c) as f32, c as f32);
        for x in span.iter_mut() {
            *x = (*x * inv).tanh() * c;
        }
    }
    let max = span.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in span.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in span.iter_mut() {
        *x /= sum;
    }
    row[..first].fill(0.0);
    row[end..].fill(0.0);
}

/// `silu(gate) · up`, written into `gate` (a fresh linear output of the same shape).
pub(crate) fn silu_mul(gate: Tensor, up: &Tensor) -> Result<Tensor> {
    gate.inplace_op2(up, &SiluMul)?;
    Ok(gate)
}

/// `o + x`, written into `o` (a fresh output of the same shape); `x` stays untouched.
pub(crate) fn add_residual(o: Tensor, x: &Tensor) -> Result<Tensor> {
    match x.is_contiguous() && o.is_contiguous() && x.dims() == o.dims() {
        true => {
            o.inplace_op2(x, &AddInto)?;
            Ok(o)
        }
        false => Ok((x + o)?),
    }
}

/// Both buffers as equal-length f32 slices, the first writable.
fn pair<'a>(
    s1: &'a mut CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(&'a mut [f32], &'a [f32])> {
    let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
        candle_core::bail!("expected f32 tensors")
    };
    let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
    else {
        candle_core::bail!("expected contiguous tensors")
    };
    if a1 - a0 != b1 - b0 {
        candle_core::bail!("element counts differ: {} and {}", a1 - a0, b1 - b0)
    }
    Ok((&mut a[a0..a1], &b[b0..b1]))
}

/// Applies `f(a, b)` to every element pair of the two operands of an in-place op, in
/// parallel chunks, writing into the first (`pair` checks both).
fn each_pair(
    s1: &mut CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f: impl Fn(&mut f32, f32) + Sync,
) -> candle_core::Result<()> {
    let (a, b) = pair(s1, l1, s2, l2)?;
    a.par_chunks_mut(ELEM_CHUNK)
        .zip(b.par_chunks(ELEM_CHUNK))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                f(a, b);
            }
        });
    Ok(())
}

struct SiluMul;

impl InplaceOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "qevo-silu-mul"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        // candle's silu of the gate, then the product with up.
        each_pair(s1, l1, s2, l2, |g, u| *g = *g / (1.0 + (-*g).exp()) * u)
    }
}

struct AddInto;

impl InplaceOp2 for AddInto {
    fn name(&self) -> &'static str {
        "qevo-add-into"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        each_pair(s1, l1, s2, l2, |o, x| *o += x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The unfused reference: per head, full scores, additive mask, softmax, product.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, how: &AttnScores) -> Tensor {
        let (b, t, nh, hd) = q.dims4().unwrap();
        let nkv = k.dim(2).unwrap();
        let heads = |x: &Tensor| x.transpose(1, 2).unwrap().contiguous().unwrap();
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let rep = nh / nkv;
        let k = k
            .unsqueeze(2)
            .unwrap()
            .expand((b, nkv, rep, t, hd))
            .unwrap()
            .reshape((b, nh, t, hd))
            .unwrap();
        let v = v
            .unsqueeze(2)
            .unwrap()
            .expand((b, nkv, rep, t, hd))
            .unwrap()
            .reshape((b, nh, t, hd))
            .unwrap();
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * how.scale).unwrap();
        if let Some(c) = how.softcap {
            s = s
                .affine(1.0 / c, 0.0)
                .unwrap()
                .tanh()
                .unwrap()
                .affine(c, 0.0)
                .unwrap();
        }
        let mask = crate::model::llama::causal_mask(t, how.window).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s.broadcast_add(&mask).unwrap()).unwrap();
        let o = p.matmul(&v).unwrap();
        o.transpose(1, 2).unwrap().reshape((b, t, nh * hd)).unwrap()
    }

    fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let m = b.abs().unwrap().max_all().unwrap();
        (d.to_scalar::<f32>().unwrap()) / m.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn matches_unfused_attention_with_gqa_windows_and_softcap() {
        // t = 150 spans three row blocks, the last one partial.
        for (nh, nkv, window, softcap) in [
            (4, 2, None, None),
            (6, 6, Some(37), None),
            (4, 1, Some(70), Some(50.0)),
        ] {
            let (b, t, hd) = (2, 150, 16);
            let q = randn(&[b, t, nh, hd], 1);
            let k = randn(&[b, t, nkv, hd], 2);
            let v = randn(&[b, t, nkv, hd], 3);
            let how = AttnScores {
                scale: 0.7,
                softcap,
                window,
            };
            let got = attention(&q, &k, &v, &how).unwrap();
            let err = max_rel_err(&got, &reference(&q, &k, &v, &how));
            assert!(err < 1e-5, "{nh}/{nkv} window {window:?}: {err}");
        }
    }

    #[test]
    fn in_place_ops_match_candle_and_leave_inputs_alone() {
        let g = randn(&[3, 70, 40], 4);
        let u = randn(&[3, 70, 40], 5);
        let want = (candle_nn::ops::silu(&g).unwrap() * &u).unwrap();
        let got = silu_mul(g.copy().unwrap(), &u).unwrap();
        assert!(max_rel_err(&got, &want) < 1e-6);
        let before = u.to_vec3::<f32>().unwrap();
        let want = (&g + &u).unwrap();
        let got = add_residual(g.copy().unwrap(), &u).unwrap();
        assert_eq!(max_rel_err(&got, &want), 0.0);
        assert_eq!(u.to_vec3::<f32>().unwrap(), before);
    }
}
