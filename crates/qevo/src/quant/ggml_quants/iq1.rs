//! The 1-bit grid types iq1_s (32-value sub-blocks, one shift each) and iq1_m (16-value
//! sub-blocks, one shift per 8 values, the f16 super-scale spread over the sub-scale
//! words), as `quantize_iq1_s` / `quantize_iq1_m` write them (`quantize_row_iq1_s_impl`,
//! `quantize_row_iq1_m_impl`). Both use the 2048-point grid of 8 ternary values (−1, 0,
//! 1), each value shifted by ±`IQ1S_DELTA` (the shift's sign is stored).
//!
//! A sub-block's levels come from an exact search: with only three levels, sorting the
//! values splits them into three runs at two boundaries, and every pair of boundaries
//! (and every shift sign) is scored by weighted least squares. Groups of 8 levels that
//! are not grid points then snap to their best neighbour (`GridSearch` with nwant 3), and
//! the scale is refitted. iq1_s needs an importance matrix (ggml asserts one:
//! `ggml_quantize_requires_imatrix`); iq1_m weights by `x²` without one (llama-quantize
//! refuses the IQ1_M ftype without one, but still writes token_embd so). Weights are
//! `qw · sqrt(σ² + x²)`, σ² = 2·mean square of the super-block.
//!
//! Sorting: llama.cpp sorts (value, index) pairs with `qsort`, comparing values only;
//! glibc's `qsort` is a stable merge sort, so equal values (−0.0 and 0.0 included) keep
//! their index order. `sort_by` here is stable with the same comparison.

use super::super::iq_tables::{IQ1S_DELTA, IQ1S_GRID};
use super::common::{fp16_bytes, nearest_int};
use super::grid::{max_of, sum_sq, GridSearch, Lookup};
use std::sync::OnceLock;

/// Packed indices: 8 levels of 2 bits (each 0..=2), up to llama.cpp's `kmap_size`.
const MAP_SIZE: usize = 43692;
/// llama.cpp's `GROUP_MAX_EPS_IQ1_S` / `GROUP_MAX_EPS_IQ1_M`.
const EPS_IQ1_S: f32 = 1e-12;
const EPS_IQ1_M: f32 = 1e-7;

/// The three level values with a positive shift (`x_p`) and a negative one (`x_m`).
const PLUS: [f32; 3] = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
const MINUS: [f32; 3] = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];

fn grid() -> &'static GridSearch {
    static G: OnceLock<GridSearch> = OnceLock::new();
    G.get_or_init(|| GridSearch::build(&IQ1S_GRID, 8, 2, MAP_SIZE, 3, 3))
}

/// `0..N` ordered by `x` ascending, ties in index order (glibc's stable `qsort`).
fn sorted_order<const N: usize>(x: &[f32]) -> [usize; N] {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap_or(std::cmp::Ordering::Equal));
    order
}

/// Levels of a split: values at sorted positions `..i1` take level 0, `i1..i2` level 1,
/// the rest level 2; all flipped (2 − l) when the split's scale came out negative.
fn levels_of(order: &[usize], i1: usize, i2: usize, flip: bool, levels: &mut [i8]) {
    for (j, &i) in order.iter().enumerate() {
        let l = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
        levels[i] = if flip { 2 - l } else { l };
    }
}

/// The value of grid coordinate `p` (= 2l + 1) among the shifted levels `xx`.
fn level_value(xx: &[f32; 3], p: i8) -> f32 {
    xx[((p - 1) / 2) as usize]
}

/// One sub-block's signed values and weights.
struct Group<'a> {
    x: &'a [f32],
    w: &'a [f32],
}

/// Snaps group `k` (8 levels) to the grid at `scale` with level values `xx`; returns its
/// grid index and whether it was on the grid already.
fn snap(
    g: &GridSearch,
    s: &Group,
    k: usize,
    scale: f32,
    xx: &[f32; 3],
    levels: &mut [i8],
) -> (u16, bool) {
    let r = 8 * k..8 * k + 8;
    match g.lookup(g.index(&levels[r.clone()])) {
        Lookup::OnGrid(i) => (i as u16, true),
        Lookup::Neighbours(n) => {
            // llama.cpp falls back to a scan of the whole grid when no neighbour scores
            // below FLT_MAX (only for non-finite distances; that scan reads out of bounds),
            // qevo takes the first neighbour then.
            let value = |p: i8| level_value(xx, p);
            let i = g.best_neighbour_by(
                n,
                &s.x[r.clone()],
                &s.w[r.clone()],
                scale,
                value,
                &mut levels[r],
            );
            (i as u16, false)
        }
    }
}

/// Σ w·q·x and Σ w·q² over the groups' grid points, group k valued by `xx_of(k)`.
fn grid_fit(
    g: &GridSearch,
    s: &Group,
    index: &[u16],
    xx_of: impl Fn(usize) -> &'static [f32; 3],
) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (k, &gi) in index.iter().enumerate() {
        let xx = xx_of(k);
        for (j, &p) in g.point(gi as usize).iter().enumerate() {
            let w = s.w[8 * k + j];
            let q = level_value(xx, p);
            sumqx += w * q * s.x[8 * k + j];
            sumq2 += w * q * q;
        }
    }
    (sumqx, sumq2)
}

/// Weights `qw · sqrt(σ² + x²)`, or `x²` without an importance matrix.
fn weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, w: &mut [f32]) {
    for (i, wi) in w.iter_mut().enumerate() {
        *wi = match qw {
            Some(q) => q[i] * (sigma2 + xb[i] * xb[i]).sqrt(),
            None => xb[i] * xb[i],
        };
    }
}

/// Largest magnitude, from the first value (llama.cpp's `MAX` over `fabsf`).
fn max_abs(x: &[f32]) -> f32 {
    let mut a = [0.0f32; 32];
    for (o, v) in a.iter_mut().zip(x) {
        *o = v.abs();
    }
    max_of(&a[..x.len()])
}

/// Keeps `(sumqx, sumq2)` as the new best when it beats the current one; llama.cpp's
/// `sumq2 > 0 && sumqx² > best·sumq2`.
fn better(sumqx: f32, sumq2: f32, best: &mut f32, scale: &mut f32) -> bool {
    if sumq2 > 0.0 && sumqx * sumqx > *best * sumq2 {
        *scale = sumqx / sumq2;
        *best = *scale * sumqx;
        return true;
    }
    false
}

// ---------------------------------------------------------------------------------------
// iq1_s

/// iq1_s: f16 d, 32 low bytes of grid indices, then per 32-value sub-block a u16 of four
/// 3-bit index high parts, a 3-bit scale and the shift's sign (bit 15).
pub(crate) fn iq1_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let Some(qw) = qw else {
        out.fill(0); // unreachable: `quantize_rows` refuses a type that requires an imatrix
        return;
    };
    let g = grid();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(50))
        .enumerate()
    {
        iq1_s_block(g, xs, &qw[256 * ibl..256 * ibl + 256], y);
    }
}

/// One 32-value sub-block's result: grid indices, scale and shift sign (+1 / −1).
struct SubS {
    index: [u16; 4],
    scale: f32,
    shift: i8,
}

fn iq1_s_block(g: &GridSearch, x: &[f32], qw: &[f32], y: &mut [u8]) {
    y.fill(0);
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut subs: [SubS; 8] = std::array::from_fn(|_| SubS {
        index: [0; 4],
        scale: 0.0,
        shift: 1,
    });
    let mut max_scale = 0.0f32;
    for (ib, sub) in subs.iter_mut().enumerate() {
        let r = 32 * ib..32 * ib + 32;
        let mut w = [0.0f32; 32];
        weights(&x[r.clone()], Some(&qw[r.clone()]), sigma2, &mut w);
        let s = Group { x: &x[r], w: &w };
        if let Some(found) = iq1_s_sub(g, &s) {
            *sub = found;
        }
        for (b, i) in y[2 + 4 * ib..2 + 4 * ib + 4].iter_mut().zip(sub.index) {
            *b = (i & 255) as u8;
        }
        max_scale = if max_scale > sub.scale {
            max_scale
        } else {
            sub.scale
        };
    }
    let mut qh = [0u16; 8];
    for (h, sub) in qh.iter_mut().zip(&subs) {
        for (k, &i) in sub.index.iter().enumerate() {
            *h |= (i >> 8) << (3 * k);
        }
    }
    if max_scale != 0.0 {
        let d = max_scale / 15.0;
        // llama.cpp's fudge factor on the stored super-scale.
        y[0..2].copy_from_slice(&fp16_bytes(d * 1.125f32));
        let id = 1.0 / d;
        for (h, sub) in qh.iter_mut().zip(&subs) {
            let mut l = nearest_int(0.5 * (id * sub.scale - 1.0)).clamp(0, 7) as u16;
            if sub.shift == -1 {
                l |= 8;
            }
            *h |= l << 12;
        }
    }
    for (o, h) in y[34..50].chunks_exact_mut(2).zip(qh) {
        o.copy_from_slice(&h.to_le_bytes());
    }
}

/// The exhaustive split search of one 32-value sub-block over prefix sums in sorted
/// order, then grid snapping; `None` for an all-zero sub-block or when nothing fits.
fn iq1_s_sub(g: &GridSearch, s: &Group) -> Option<SubS> {
    let max = max_abs(s.x);
    if max < EPS_IQ1_S {
        return None;
    }
    let order: [usize; 32] = sorted_order(s.x);
    let (mut sumx, mut sumw) = ([0.0f32; 33], [0.0f32; 33]);
    for (j, &i) in order.iter().enumerate() {
        sumx[j + 1] = sumx[j] + s.w[i] * s.x[i];
        sumw[j + 1] = sumw[j] + s.w[i];
    }
    let fit = |xx: &[f32; 3], i1: usize, i2: usize| {
        let sumqx = (sumx[i1] - sumx[0]) * xx[0]
            + (sumx[i2] - sumx[i1]) * xx[1]
            + (sumx[32] - sumx[i2]) * xx[2];
        let sumq2 = (sumw[i1] - sumw[0]) * xx[0] * xx[0]
            + (sumw[i2] - sumw[i1]) * xx[1] * xx[1]
            + (sumw[32] - sumw[i2]) * xx[2] * xx[2];
        (sumqx, sumq2)
    };
    let (mut best, mut scale) = (-f32::MAX, max);
    let mut found = None;
    for i1 in 0..=32 {
        for i2 in i1..=32 {
            for (xx, shift) in [(&PLUS, 1i8), (&MINUS, -1)] {
                let (sumqx, sumq2) = fit(xx, i1, i2);
                if better(sumqx, sumq2, &mut best, &mut scale) {
                    found = Some((i1, i2, shift));
                }
            }
        }
    }
    let (i1, i2, mut shift) = found?;
    let mut levels = [0i8; 32];
    levels_of(&order, i1, i2, scale < 0.0, &mut levels);
    if scale < 0.0 {
        scale = -scale;
        shift = -shift;
    }
    let xx = if shift == 1 { &PLUS } else { &MINUS };
    let mut index = [0u16; 4];
    let mut all_on_grid = true;
    for (k, i) in index.iter_mut().enumerate() {
        let (gi, on) = snap(g, s, k, scale, xx, &mut levels);
        *i = gi;
        all_on_grid &= on;
    }
    if !all_on_grid {
        let (sumqx, sumq2) = grid_fit(g, s, &index, |_| xx);
        if sumqx > 0.0 && sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    Some(SubS {
        index,
        scale,
        shift,
    })
}

// ---------------------------------------------------------------------------------------
// iq1_m

/// The level values of an iq1_m group: `shifts` codes both 8-value groups' shift signs
/// (0: +,+  1: +,−  2: −,+  3: −,−; llama.cpp's `best_k`).
fn xx_m(shifts: u8, k: usize) -> &'static [f32; 3] {
    let plus = if k == 0 {
        shifts < 2
    } else {
        shifts.is_multiple_of(2)
    };
    if plus {
        &PLUS
    } else {
        &MINUS
    }
}

/// iq1_m: 32 low bytes of grid indices, 16 bytes of two 3-bit index high parts with a
/// shift-sign bit each, 8 bytes of 3-bit sub-scales whose top nibbles hold the f16 scale.
pub(crate) fn iq1_m(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let g = grid();
    for (ibl, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(56))
        .enumerate()
    {
        iq1_m_block(g, xs, qw.map(|q| &q[256 * ibl..256 * ibl + 256]), y);
    }
}

/// One 16-value sub-block's result: grid indices, scale and shift code.
#[derive(Clone, Copy)]
struct SubM {
    index: [u16; 2],
    scale: f32,
    shifts: u8,
}

fn iq1_m_block(g: &GridSearch, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    y.fill(0);
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let mut subs = [SubM {
        index: [0; 2],
        scale: 0.0,
        shifts: 0,
    }; 16];
    let mut max_scale = 0.0f32;
    for (ib, sub) in subs.iter_mut().enumerate() {
        let r = 16 * ib..16 * ib + 16;
        let mut w = [0.0f32; 16];
        weights(&x[r.clone()], qw.map(|q| &q[r.clone()]), sigma2, &mut w);
        let s = Group { x: &x[r], w: &w };
        if let Some(found) = iq1_m_sub(g, &s) {
            *sub = found;
        }
        max_scale = if max_scale > sub.scale {
            max_scale
        } else {
            sub.scale
        };
    }
    let mut qh = [0u8; 16];
    for (ib, sub) in subs.iter().enumerate() {
        y[2 * ib] = (sub.index[0] & 255) as u8;
        y[2 * ib + 1] = (sub.index[1] & 255) as u8;
        qh[ib] = ((sub.index[0] >> 8) | ((sub.index[1] >> 8) << 4)) as u8;
    }
    if max_scale != 0.0 {
        let sc = iq1_m_scales(g, x, qw, sigma2, &subs, max_scale, &mut qh);
        for (o, v) in y[48..56].chunks_exact_mut(2).zip(sc) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
    y[32..48].copy_from_slice(&qh);
}

/// The sub-block scales as 3-bit codes against `max_scale / 15`, the shift bits added to
/// `qh`, and the super-scale refitted over the whole block with those codes (times
/// llama.cpp's fudge factor 1.1125) and spread over the four words' top nibbles.
fn iq1_m_scales(
    g: &GridSearch,
    x: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    subs: &[SubM; 16],
    max_scale: f32,
    qh: &mut [u8; 16],
) -> [u16; 4] {
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (ib, sub) in subs.iter().enumerate() {
        let l = nearest_int(0.5 * (id * sub.scale - 1.0)).clamp(0, 7);
        sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
        qh[ib] |= MASKS[sub.shifts as usize];
        let r = 16 * ib..16 * ib + 16;
        let mut w = [0.0f32; 16];
        weights(&x[r.clone()], qw.map(|q| &q[r.clone()]), sigma2, &mut w);
        let m = (2 * l + 1) as f32;
        for (k, &gi) in sub.index.iter().enumerate() {
            let xx = xx_m(sub.shifts, k);
            for (j, &p) in g.point(gi as usize).iter().enumerate() {
                let wj = w[8 * k + j];
                let q = level_value(xx, p) * m;
                sumqx += wj * q * x[16 * ib + 8 * k + j];
                sumq2 += wj * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    let bits = u16::from_le_bytes(fp16_bytes(d * 1.1125f32));
    sc[0] |= (bits & 0x000f) << 12;
    sc[1] |= (bits & 0x00f0) << 8;
    sc[2] |= (bits & 0x0f00) << 4;
    sc[3] |= bits & 0xf000;
    sc
}

/// Prefix sums of `w·x` and `w` in sorted order, kept per half of the sub-block (each
/// half has its own shift sign). Since the three level values step by 1 with either
/// sign, a split's Σ w·v·x collapses to `T·v₂ − P(i1) − P(i2)`, and Σ w·v² to
/// `W·v₂² + P_w(i1)·(v₀² − v₁²) + P_w(i2)·(v₁² − v₂²)`; llama.cpp scores splits this way,
/// so the same f32 operations are done here in the same order.
struct HalfSums {
    px: [[f32; 17]; 2],
    pw: [[f32; 17]; 2],
}

impl HalfSums {
    fn new(s: &Group, order: &[usize; 16]) -> Self {
        let mut h = HalfSums {
            px: [[0.0; 17]; 2],
            pw: [[0.0; 17]; 2],
        };
        for (j, &i) in order.iter().enumerate() {
            let (a, b) = if i < 8 { (0, 1) } else { (1, 0) };
            h.px[a][j + 1] = h.px[a][j] + s.w[i] * s.x[i];
            h.px[b][j + 1] = h.px[b][j];
            h.pw[a][j + 1] = h.pw[a][j] + s.w[i];
            h.pw[b][j + 1] = h.pw[b][j];
        }
        h
    }

    /// Σ w·v·x and Σ w·v² of half `h` at split (i1, i2) with level values `xx`.
    fn half(&self, h: usize, xx: &[f32; 3], i1: usize, i2: usize) -> (f32, f32) {
        let (v2, c1, c2) = (
            xx[2],
            xx[0] * xx[0] - xx[1] * xx[1],
            xx[1] * xx[1] - xx[2] * xx[2],
        );
        let sx = self.px[h][i1] + self.px[h][i2];
        let qx = self.px[h][16] * v2 - sx;
        let q2 = self.pw[h][16] * v2 * v2 + self.pw[h][i1] * c1 + self.pw[h][i2] * c2;
        (qx, q2)
    }

    /// Both sums for the four shift codes (first half's sign, second half's sign).
    fn split(&self, i1: usize, i2: usize) -> ([f32; 4], [f32; 4]) {
        let (mut sumqx, mut sumq2) = ([0.0f32; 4], [0.0f32; 4]);
        for k in 0..4u8 {
            let (x0, w0) = self.half(0, xx_m(k, 0), i1, i2);
            let (x1, w1) = self.half(1, xx_m(k, 1), i1, i2);
            sumqx[k as usize] = x0 + x1;
            sumq2[k as usize] = w0 + w1;
        }
        (sumqx, sumq2)
    }
}

/// The exhaustive split search of one 16-value sub-block over all four shift codes, then
/// grid snapping; `None` for an all-zero sub-block or when nothing fits.
fn iq1_m_sub(g: &GridSearch, s: &Group) -> Option<SubM> {
    let max = max_abs(s.x);
    if max < EPS_IQ1_M {
        return None;
    }
    let order: [usize; 16] = sorted_order(s.x);
    let sums = HalfSums::new(s, &order);
    let (mut best, mut scale) = (-f32::MAX, max);
    let mut found = None;
    for i1 in 0..=16 {
        for i2 in i1..=16 {
            let (sumqx, sumq2) = sums.split(i1, i2);
            for k in 0..4 {
                if better(sumqx[k], sumq2[k], &mut best, &mut scale) {
                    found = Some((i1, i2, k as u8));
                }
            }
        }
    }
    let (i1, i2, mut shifts) = found?;
    let mut levels = [0i8; 16];
    levels_of(&order, i1, i2, scale < 0.0, &mut levels);
    if scale < 0.0 {
        scale = -scale;
        shifts = 3 - shifts;
    }
    let mut index = [0u16; 2];
    let mut all_on_grid = true;
    for (k, i) in index.iter_mut().enumerate() {
        let (gi, on) = snap(g, s, k, scale, xx_m(shifts, k), &mut levels);
        *i = gi;
        all_on_grid &= on;
    }
    if !all_on_grid {
        let (sumqx, sumq2) = grid_fit(g, s, &index, |k| xx_m(shifts, k));
        if sumqx > 0.0 && sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    Some(SubM {
        index,
        scale,
        shifts,
    })
}
