//! The 3-bit grid types iq3_xxs (256 grid points of 4 levels, 7-bit sign patterns with
//! even parity) and iq3_s (512 points, free signs), as `quantize_iq3_xxs` /
//! `quantize_iq3_s` write them (`quantize_row_iq3_xxs_impl`, `quantize_row_iq3_s_impl`):
//! per 32-value sub-block, magnitudes are fitted to grid points over a range of trial
//! scales (off-grid groups snap to the best of their nearest points), then sub-block
//! scales are rounded to 4 bits against the largest. Weights are `x²`, or with an
//! importance matrix `qw · sqrt(σ² + x²)`.

use super::super::iq_tables::{IQ3S_GRID, IQ3XXS_GRID};
use super::common::{fp16_bytes, nearest_int};
use super::grid::{even_parity_signs, fit_sums, max_of, sum_sq, weights, GridSearch, SubBlock};
use std::sync::OnceLock;

/// llama.cpp's `GROUP_MAX_EPS_IQ3_XXS`.
const EPS_IQ3_XXS: f32 = 1e-8;
/// Levels `l` per grid coordinate (`kMaxQ`): values `2l + 1` up to 15.
const KMAX_Q: i32 = 8;

fn grid_xxs() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| {
        let e: Vec<u64> = IQ3XXS_GRID.iter().map(|&v| v as u64).collect();
        GridSearch::build(&e, 4, 3, 4096, 2, KMAX_Q)
    })
}

fn grid_s() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| {
        let e: Vec<u64> = IQ3S_GRID.iter().map(|&v| v as u64).collect();
        GridSearch::build(&e, 4, 3, 4096, 3, KMAX_Q)
    })
}

/// The trial-scale search both types share: at each trial inverse scale every group is
/// rounded and snapped; the trial with the best weighted fit wins. `on_grid` starts as
/// each type initialises it. Returns the scale; `levels` holds the winner's.
fn search_scale(
    g: &GridSearch,
    s: &SubBlock,
    max: f32,
    trials: std::ops::RangeInclusive<i32>,
    on_grid: &mut [bool; 8],
    levels: &mut [i8; 32],
) -> f32 {
    let mut best = 0.0f32;
    let mut scale = max / (2 * KMAX_Q - 1) as f32;
    let mut aux = [0i8; 32];
    let mut on_aux = [true; 8];
    for is in trials {
        let id = ((2 * KMAX_Q - 1) as f32 + is as f32 * 0.2f32) / max;
        g.quantize_groups(s, id, &mut aux, &mut on_aux);
        let (sumqx, sumq2) = fit_sums(s, &aux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *levels = aux;
            *on_grid = on_aux;
        }
    }
    scale
}

fn sigma2_of(x: &[f32]) -> f32 {
    2.0 * sum_sq(x) / 256.0
}

/// iq3_xxs block: f16 d, 64 grid indices, then per sub-block a u32 of four 7-bit sign
/// patterns and a 4-bit scale.
pub(crate) fn iq3_xxs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let g = grid_xxs();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(98))
        .enumerate()
    {
        let qw = qw.map(|q| &q[256 * ibl..256 * ibl + 256]);
        iq3_xxs_block(g, xs, qw, y);
    }
}

fn iq3_xxs_block(g: &GridSearch, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let sigma2 = sigma2_of(x);
    let mut q3 = [0u8; 64];
    let mut signs_scales = [0u32; 8];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let (mut w, mut waux, mut xval) = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        weights(xb, qw.map(|q| &q[32 * ib..]), sigma2, &mut w, &mut waux);
        let mut block_signs = [0u8; 4];
        for (k, b) in block_signs.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *b = even_parity_signs(&xb[r.clone()], &w[r.clone()], &mut xval[r]);
        }
        let s = SubBlock {
            xval: &xval,
            weight: &w,
            waux: &waux,
        };
        let max = max_of(&xval);
        let mut levels = [0i8; 32];
        if max < EPS_IQ3_XXS {
            scales[ib] = 0.0;
            continue;
        }
        let mut on_grid = [true; 8];
        let mut scale = search_scale(g, &s, max, -15..=15, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = g.refine(&s, scale, |k| !on_grid[k], &mut levels);
        }
        if scale < 0.0 {
            // Never expected (llama.cpp's comment says so too): flip scale and signs.
            scale = -scale;
            for b in &mut block_signs {
                *b = !*b & 127;
            }
        }
        for k in 0..8 {
            q3[8 * ib + k] = g.grid_index(&levels, k) as u8;
        }
        signs_scales[ib] = block_signs[0] as u32
            | (block_signs[1] as u32) << 7
            | (block_signs[2] as u32) << 14
            | (block_signs[3] as u32) << 21;
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    y.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    // llama.cpp's "fudge factor" on the stored super-scale.
    y[0..2].copy_from_slice(&fp16_bytes(d * 1.0125f32));
    let id = 1.0 / d;
    for ib in 0..8 {
        let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
        signs_scales[ib] |= (l as u32) << 28;
    }
    y[2..66].copy_from_slice(&q3);
    for (o, v) in y[66..98].chunks_exact_mut(4).zip(signs_scales) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// iq3_s block: f16 d, 64 low bytes of grid indices, 8 bytes of their ninth bits, 32
/// bytes of signs, 4 bytes of two 4-bit scales each.
pub(crate) fn iq3_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let g = grid_s();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(110))
        .enumerate()
    {
        let qw = qw.map(|q| &q[256 * ibl..256 * ibl + 256]);
        iq3_s_block(g, xs, qw, y);
    }
}

fn iq3_s_block(g: &GridSearch, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    y.fill(0);
    let sigma2 = sigma2_of(x);
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    // llama.cpp advances its qs / signs cursors only for sub-blocks it does not skip, so
    // after an all-zero sub-block the later ones are written one slot earlier; kept, as
    // that is what llama.cpp writes (the qh bits and scales stay at their own positions).
    let (mut qs_at, mut signs_at) = (2usize, 74usize);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let (mut w, mut waux, mut xval) = ([0.0f32; 32], [0.0f32; 32], [0.0f32; 32]);
        weights(xb, qw.map(|q| &q[32 * ib..]), sigma2, &mut w, &mut waux);
        let mut block_signs = [0u8; 4];
        for (i, &v) in xb.iter().enumerate() {
            xval[i] = if v >= 0.0 { v } else { -v };
            block_signs[i / 8] |= ((v < 0.0) as u8) << (i % 8);
        }
        let s = SubBlock {
            xval: &xval,
            weight: &w,
            waux: &waux,
        };
        let max = max_of(&xval);
        let mut levels = [0i8; 32];
        if max == 0.0 {
            scales[ib] = 0.0;
            continue;
        }
        let mut on_grid = [false; 8];
        let mut scale = search_scale(g, &s, max, -9..=9, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = g.refine(&s, scale, |_| true, &mut levels);
        }
        if scale < 0.0 {
            scale = -scale;
            for b in &mut block_signs {
                *b = !*b;
            }
        }
        for k in 0..8 {
            let gi = g.grid_index(&levels, k);
            y[qs_at + k] = (gi & 255) as u8;
            y[66 + ib] |= ((gi >> 8) << k) as u8;
        }
        qs_at += 8;
        y[signs_at..signs_at + 4].copy_from_slice(&block_signs);
        signs_at += 4;
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[0..2].copy_from_slice(&fp16_bytes(d * 1.033f32));
    let id = 1.0 / d;
    for ib in (0..8).step_by(2) {
        let l1 = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
        let l2 = nearest_int(0.5 * (id * scales[ib + 1] - 1.0)).clamp(0, 15);
        y[106 + ib / 2] = (l1 | (l2 << 4)) as u8;
    }
}
