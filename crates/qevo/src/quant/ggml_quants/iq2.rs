//! The 2-bit grid types iq2_xxs (256 grid points of 8 levels, 32-value sub-blocks),
//! iq2_xs (512 points, 16-value sub-blocks) and iq2_s (1024 points, 16-value sub-blocks,
//! free signs), as `quantize_iq2_xxs` / `quantize_iq2_xs` / `quantize_iq2_s` write them
//! (`quantize_row_iq2_*_impl`). iq2_xxs and iq2_xs need an importance matrix (ggml asserts
//! one: `ggml_quantize_requires_imatrix`); weights are `qw · sqrt(σ² + x²)`, σ² from the
//! super-block's mean square. iq2_xxs / iq2_xs signs are 7-bit patterns of even parity;
//! magnitudes snap to the grid over trial scales, as in `iq3`.

use super::super::iq_tables::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use super::common::{fp16_bytes, make_qp_quants, nearest_int, GROUP_MAX_EPS};
use super::grid::{even_parity_signs, fit_sums, max_of, sum_sq, weights, GridSearch, SubBlock};
use std::sync::OnceLock;

/// Levels per coordinate (`kMaxQ`): values 1, 3, 5.
const KMAX_Q: i32 = 3;
/// Packed indices: 8 levels of 2 bits, up to llama.cpp's `kmap_size`.
const MAP_SIZE: usize = 43692;

fn grid_xxs() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| GridSearch::build(&IQ2XXS_GRID, 8, 2, MAP_SIZE, 2, KMAX_Q))
}

fn grid_s() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| GridSearch::build(&IQ2S_GRID, 8, 2, MAP_SIZE, 1, KMAX_Q))
}

fn grid_xs() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| GridSearch::build(&IQ2XS_GRID, 8, 2, MAP_SIZE, 2, KMAX_Q))
}

/// Sign-folds `xb` group by group (8 values each) and computes the weights.
fn prepare<'a>(
    xb: &[f32],
    qw: &[f32],
    sigma2: f32,
    buf: &'a mut ([f32; 32], [f32; 32], [f32; 32]),
    signs: &mut [u8],
) -> SubBlock<'a> {
    let n = xb.len();
    let (w, waux, xval) = buf;
    weights(xb, Some(qw), sigma2, &mut w[..n], &mut waux[..n]);
    for (k, s) in signs.iter_mut().enumerate() {
        let r = 8 * k..8 * k + 8;
        *s = even_parity_signs(&xb[r.clone()], &w[r.clone()], &mut xval[r]);
    }
    SubBlock {
        xval: &xval[..n],
        weight: &w[..n],
        waux: &waux[..n],
    }
}

/// Trial inverse scales `(5 + 0.1·is) / base` for `is` in `trials`; the best weighted fit
/// wins (strictly better than the last best). Returns the scale, `levels` the winner's.
fn search_scale(
    g: &GridSearch,
    s: &SubBlock,
    base: f32,
    mut scale: f32,
    trials: std::ops::RangeInclusive<i32>,
    on_grid: &mut [bool],
    levels: &mut [i8],
) -> f32 {
    let n = levels.len();
    let mut best = 0.0f32;
    let mut aux = [0i8; 32];
    let mut on_aux = [true; 4];
    let groups = on_grid.len();
    for is in trials {
        let id = ((2 * KMAX_Q - 1) as f32 + is as f32 * 0.1f32) / base;
        g.quantize_groups(s, id, &mut aux[..n], &mut on_aux[..groups]);
        let (sumqx, sumq2) = fit_sums(s, &aux[..n]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            levels.copy_from_slice(&aux[..n]);
            on_grid.copy_from_slice(&on_aux[..groups]);
        }
    }
    scale
}

/// The stored 4-bit sub-scale of `scale` against the super-scale `d`.
fn sub_scale(id: f32, scale: f32) -> u32 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u32
}

/// iq2_xxs block: f16 d, then per 32-value sub-block two u32: four grid indices (a byte
/// each), and four 7-bit sign patterns with the 4-bit scale on top.
pub(crate) fn iq2_xxs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let Some(qw) = qw else {
        out.fill(0); // unreachable: `quantize_rows` refuses a type that requires an imatrix
        return;
    };
    let g = grid_xxs();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(66))
        .enumerate()
    {
        iq2_xxs_block(g, xs, &qw[256 * ibl..256 * ibl + 256], y);
    }
}

fn iq2_xxs_block(g: &GridSearch, x: &[f32], qw: &[f32], y: &mut [u8]) {
    let sigma2 = sum_sq(x) / 256.0;
    let mut q2 = [0u32; 16];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    for ib in 0..8 {
        let r = 32 * ib..32 * ib + 32;
        let mut buf = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        let mut signs = [0u8; 4];
        let s = prepare(&x[r.clone()], &qw[r], sigma2, &mut buf, &mut signs);
        let max = max_of(s.xval);
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        // The first guess comes from `make_qp_quants` on the magnitudes (its levels are
        // replaced by the grid search below; only the scale is used).
        let mut qp_levels = [0u8; 32];
        let scale0 = make_qp_quants(s.xval, KMAX_Q + 1, &mut qp_levels, s.weight);
        let eff_max = scale0 * KMAX_Q as f32;
        if eff_max <= 0.0 {
            scales[ib] = 0.0;
            continue;
        }
        let mut levels = [0i8; 32];
        let mut on_grid = [true; 4];
        let mut scale = search_scale(g, &s, eff_max, scale0, -6..=6, &mut on_grid, &mut levels);
        if scale > 0.0 {
            scale = g.refine(&s, scale, |_| true, &mut levels);
        }
        if scale < 0.0 {
            scale = -scale;
            for b in &mut signs {
                *b = !*b & 127;
            }
        }
        for (k, &sg) in signs.iter().enumerate() {
            q2[2 * ib] |= (g.grid_index(&levels, k) as u32) << (8 * k);
            q2[2 * ib + 1] |= (sg as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    y.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[0..2].copy_from_slice(&fp16_bytes(d));
    let id = 1.0 / d;
    for ib in 0..8 {
        q2[2 * ib + 1] |= sub_scale(id, scales[ib]) << 28;
    }
    for (o, v) in y[2..66].chunks_exact_mut(4).zip(q2) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// iq2_xs block: f16 d, 32 u16 of a 9-bit grid index and a 7-bit sign pattern, 8 bytes
/// of two 4-bit scales (one per 16-value sub-block).
pub(crate) fn iq2_xs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let Some(qw) = qw else {
        out.fill(0); // unreachable: `quantize_rows` refuses a type that requires an imatrix
        return;
    };
    let g = grid_xs();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(74))
        .enumerate()
    {
        iq2_xs_block(g, xs, &qw[256 * ibl..256 * ibl + 256], y);
    }
}

fn iq2_xs_block(g: &GridSearch, x: &[f32], qw: &[f32], y: &mut [u8]) {
    let sigma2 = sum_sq(x) / 256.0;
    let mut q2 = [0u16; 32];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    for ib in 0..16 {
        let r = 16 * ib..16 * ib + 16;
        let mut buf = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        let mut signs = [0u8; 2];
        let s = prepare(&x[r.clone()], &qw[r], sigma2, &mut buf, &mut signs);
        let max = max_of(s.xval);
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut levels = [0i8; 16];
        let mut on_grid = [true; 2];
        let scale0 = max / (2 * KMAX_Q - 1) as f32;
        let mut scale = search_scale(g, &s, max, scale0, -9..=9, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = g.refine(&s, scale, |k| !on_grid[k], &mut levels);
        }
        if scale < 0.0 {
            scale = -scale;
            for b in &mut signs {
                *b = !*b & 127;
            }
        }
        for k in 0..2 {
            q2[2 * ib + k] = g.grid_index(&levels, k) as u16 | ((signs[k] as u16) << 9);
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    y.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[0..2].copy_from_slice(&fp16_bytes(d));
    let id = 1.0 / d;
    for ib in 0..16 {
        y[66 + ib / 2] |= (sub_scale(id, scales[ib]) << (4 * (ib % 2))) as u8;
    }
    for (o, v) in y[2..66].chunks_exact_mut(2).zip(q2) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// iq2_s block: f16 d, 32 low bytes of grid indices, 32 bytes of signs, 8 bytes of the
/// indices' top two bits, 8 bytes of two 4-bit scales (one per 16-value sub-block).
/// Without an importance matrix the weights are `σ²/4 + x²` (σ² = 2·mean square).
pub(crate) fn iq2_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let g = grid_s();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(82))
        .enumerate()
    {
        iq2_s_block(g, xs, qw.map(|q| &q[256 * ibl..256 * ibl + 256]), y);
    }
}

/// llama.cpp's `GROUP_MAX_EPS_IQ2_S`.
const EPS_IQ2_S: f32 = 1e-8;

fn iq2_s_block(g: &GridSearch, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    y.fill(0);
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        let (mut w, mut waux, mut xval) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        for i in 0..16 {
            w[i] = match qw {
                Some(q) => q[16 * ib + i] * (sigma2 + xb[i] * xb[i]).sqrt(),
                None => 0.25 * sigma2 + xb[i] * xb[i],
            };
            waux[i] = w[i].sqrt();
        }
        let mut signs = [0u8; 2];
        for (i, &v) in xb.iter().enumerate() {
            xval[i] = if v >= 0.0 { v } else { -v };
            signs[i / 8] |= ((v < 0.0) as u8) << (i % 8);
        }
        let s = SubBlock {
            xval: &xval,
            weight: &w,
            waux: &waux,
        };
        let max = max_of(&xval);
        if max < EPS_IQ2_S {
            scales[ib] = 0.0;
            continue;
        }
        let mut levels = [0i8; 16];
        let mut on_grid = [true; 2];
        let scale0 = max / (2 * KMAX_Q - 1) as f32;
        let mut scale = search_scale(g, &s, max, scale0, -9..=9, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = g.refine(&s, scale, |k| !on_grid[k], &mut levels);
        }
        if scale < 0.0 {
            scale = -scale;
            for b in &mut signs {
                *b = !*b;
            }
        }
        for (k, &sg) in signs.iter().enumerate() {
            let gi = g.grid_index(&levels, k);
            let i8 = 2 * ib + k;
            y[2 + i8] = (gi & 255) as u8;
            y[66 + i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
            y[2 + 32 + i8] = sg;
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    // llama.cpp's fudge factor on the stored super-scale.
    y[0..2].copy_from_slice(&fp16_bytes(d * 0.9875f32));
    let id = 1.0 / d;
    for ib in 0..16 {
        y[74 + ib / 2] |= (sub_scale(id, scales[ib]) << (4 * (ib % 2))) as u8;
    }
}
