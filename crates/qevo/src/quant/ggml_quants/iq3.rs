//! The 3-bit grid types iq3_xxs (256 grid points of 4 levels, 7-bit sign patterns with
//! even parity) and iq3_s (512 points, free signs), as `quantize_iq3_xxs` /
//! `quantize_iq3_s` write them (`quantize_row_iq3_xxs_impl`, `quantize_row_iq3_s_impl`):
//! per 32-value sub-block, magnitudes are fitted to grid points over a range of trial
//! scales (off-grid groups snap to the best of their nearest points), then sub-block
//! scales are rounded to 4 bits against the largest. Weights are `x²`, or with an
//! importance matrix `qw · sqrt(σ² + x²)`.

use super::super::iq_tables::{IQ3S_GRID, IQ3XXS_GRID};
use super::common::{fp16_bytes, nearest_int};
use super::grid::{GridSearch, Lookup};
use std::sync::OnceLock;

/// llama.cpp's `GROUP_MAX_EPS_IQ3_XXS`.
const EPS_IQ3_XXS: f32 = 1e-8;
/// Levels `l` per grid coordinate (`kMaxQ`): values `2l + 1` up to 15.
const KMAX_Q: i32 = 8;

fn grid_xxs() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| {
        let e: Vec<u64> = IQ3XXS_GRID.iter().map(|&v| v as u64).collect();
        GridSearch::build(&e, 4, 3, 4096, 2)
    })
}

fn grid_s() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| {
        let e: Vec<u64> = IQ3S_GRID.iter().map(|&v| v as u64).collect();
        GridSearch::build(&e, 4, 3, 4096, 3)
    })
}

/// One 32-value sub-block's inputs: magnitudes, weights and their square roots.
struct SubBlock {
    xval: [f32; 32],
    weight: [f32; 32],
    waux: [f32; 32],
}

fn sub_block(xb: &[f32], qw: Option<&[f32]>, sigma2: f32) -> SubBlock {
    let mut s = SubBlock {
        xval: [0.0; 32],
        weight: [0.0; 32],
        waux: [0.0; 32],
    };
    for i in 0..32 {
        s.weight[i] = match qw {
            Some(q) => q[i] * (sigma2 + xb[i] * xb[i]).sqrt(),
            None => xb[i] * xb[i],
        };
        s.waux[i] = s.weight[i].sqrt();
    }
    s
}

/// Levels `l` of group k at inverse scale `id` (clamped to the grid's range).
fn group_levels(xval: &[f32], id: f32, out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(xval) {
        *o = nearest_int(0.5 * (id * v - 1.0)).clamp(0, KMAX_Q - 1) as i8;
    }
}

/// Σ w·x·q and Σ w·q² with q = 2l + 1, left to right.
fn fit_sums(s: &SubBlock, levels: &[i8; 32]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (i, &l) in levels.iter().enumerate() {
        let w = s.weight[i];
        let q = (2 * l as i32 + 1) as f32;
        sumqx += w * s.xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Snaps group k's levels to the grid at `scale` (nearest neighbour if off-grid); returns
/// whether they were on the grid already.
fn snap_group(g: &GridSearch, s: &SubBlock, k: usize, scale: f32, levels: &mut [i8]) -> bool {
    match g.lookup(g.index(levels)) {
        Lookup::OnGrid(_) => true,
        Lookup::Neighbours(n) => {
            let r = 4 * k..4 * k + 4;
            g.best_neighbour(n, &s.xval[r.clone()], &s.waux[r], scale, levels);
            false
        }
    }
}

/// The trial-scale search both types share: for each trial, every group's levels are
/// rounded and snapped; the trial with the best weighted fit wins. `on_grid` starts as
/// each type initialises it. Returns the scale and its levels.
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
        let this_scale = 1.0 / id;
        for k in 0..8 {
            let lv = &mut aux[4 * k..4 * k + 4];
            group_levels(&s.xval[4 * k..4 * k + 4], id, lv);
            on_aux[k] = snap_group(g, s, k, this_scale, lv);
        }
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

/// Re-snaps the groups not on the grid (iq3_s: all groups) at the chosen scale and refits
/// the scale, as both quantizers do after the search.
fn refine(
    g: &GridSearch,
    s: &SubBlock,
    scale: f32,
    redo: impl Fn(usize) -> bool,
    levels: &mut [i8; 32],
) -> f32 {
    let id = 1.0 / scale;
    for k in (0..8).filter(|&k| redo(k)) {
        let mut lv = [0i8; 4];
        group_levels(&s.xval[4 * k..4 * k + 4], id, &mut lv);
        let gi = match g.lookup(g.index(&lv)) {
            Lookup::OnGrid(gi) => gi,
            Lookup::Neighbours(n) => {
                let r = 4 * k..4 * k + 4;
                g.best_neighbour(
                    n,
                    &s.xval[r.clone()],
                    &s.waux[r],
                    scale,
                    &mut levels[4 * k..4 * k + 4],
                )
            }
        };
        for (l, &q) in levels[4 * k..4 * k + 4].iter_mut().zip(g.point(gi)) {
            *l = (q - 1) / 2;
        }
    }
    let (sumqx, sumq2) = fit_sums(s, levels);
    if sumq2 > 0.0 {
        sumqx / sumq2
    } else {
        scale
    }
}

/// Grid index of group k (always on the grid after the search).
fn grid_index(g: &GridSearch, levels: &[i8]) -> usize {
    match g.lookup(g.index(levels)) {
        Lookup::OnGrid(gi) => gi,
        // llama.cpp aborts here ("found point not on grid"); the search never leaves one.
        Lookup::Neighbours(n) => n[0] as usize,
    }
}

fn sigma2_of(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    2.0 * s / 256.0
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
        let mut s = sub_block(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), sigma2);
        let mut block_signs = [0u8; 4];
        for k in 0..4 {
            block_signs[k] = even_parity_signs(
                &xb[8 * k..8 * k + 8],
                &s.weight[8 * k..8 * k + 8],
                &mut s.xval[8 * k..8 * k + 8],
            );
        }
        let max = max_of(&s.xval);
        let mut levels = [0i8; 32];
        if max < EPS_IQ3_XXS {
            scales[ib] = 0.0;
            continue;
        }
        let mut on_grid = [true; 8];
        let mut scale = search_scale(g, &s, max, -15..=15, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = refine(g, &s, scale, |k| !on_grid[k], &mut levels);
        }
        if scale < 0.0 {
            // Never expected (llama.cpp's comment says so too): flip scale and signs.
            scale = -scale;
            for b in &mut block_signs {
                *b = !*b & 127;
            }
        }
        for k in 0..8 {
            q3[8 * ib + k] = grid_index(g, &levels[4 * k..4 * k + 4]) as u8;
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

/// Magnitudes of 8 values and their sign bits; with an odd number of negatives, the
/// value of least `w·x²` (first on ties) takes the other sign, so the pattern has even
/// parity and fits in 7 bits.
fn even_parity_signs(xb: &[f32], w: &[f32], xval: &mut [f32]) -> u8 {
    let (mut s, mut nflip) = (0u8, 0);
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = w[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = w[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

fn max_of(v: &[f32]) -> f32 {
    let mut m = v[0];
    for &x in &v[1..] {
        m = if m > x { m } else { x };
    }
    m
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
        let mut s = sub_block(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), sigma2);
        let mut block_signs = [0u8; 4];
        for k in 0..4 {
            for i in 0..8 {
                let v = xb[8 * k + i];
                s.xval[8 * k + i] = if v >= 0.0 { v } else { -v };
                block_signs[k] |= ((v < 0.0) as u8) << i;
            }
        }
        let max = max_of(&s.xval);
        let mut levels = [0i8; 32];
        if max == 0.0 {
            scales[ib] = 0.0;
            continue;
        }
        let mut on_grid = [false; 8];
        let mut scale = search_scale(g, &s, max, -9..=9, &mut on_grid, &mut levels);
        if on_grid.iter().any(|&o| !o) && scale > 0.0 {
            scale = refine(g, &s, scale, |_| true, &mut levels);
        }
        if scale < 0.0 {
            scale = -scale;
            for b in &mut block_signs {
                *b = !*b;
            }
        }
        for k in 0..8 {
            let gi = grid_index(g, &levels[4 * k..4 * k + 4]);
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
