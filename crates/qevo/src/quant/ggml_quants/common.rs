//! The pieces llama.cpp's GGML quantizers share (ggml-quants.c): its rounding and
//! conversion rules, and the scale searches (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants` / `make_qkx3_quants`, `make_qp_quants`, `best_index_int8`).
//!
//! Byte identity with `llama-quantize` rests on doing the same f32 operations in the same
//! order. llama.cpp's release build compiles ggml-quants.c for baseline x86-64 (SSE2, no
//! FMA, no fast-math), so every `a*b + c` there is two rounded operations and every sum
//! runs left to right; the code here writes each expression in the order C evaluates it
//! (`w*x*l` is `(w*x)*l`), and converts integers to f32 exactly where C does.

use half::f16;

/// llama.cpp's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// llama.cpp's `nearest_int`: adds 1.5·2²³ so that the FPU's round-to-nearest-even puts
/// the integer in the low mantissa bits. Kept as the bit trick, not `round_ties_even`,
/// because out-of-range inputs (|v| > 2²²) give the same garbage llama.cpp gives.
#[inline(always)]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// C's float → small-integer conversion as x86-64 compiles it (`cvttss2si`): truncation
/// toward zero, and `i32::MIN` for NaN and out-of-range values (Rust's `as` saturates
/// instead). Callers narrow the result with `as u8` / `as i8`, as C's cast does.
#[inline(always)]
pub(super) fn trunc_i32(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// `GGML_FP32_TO_FP16` (round to nearest even) as little-endian bytes.
#[inline(always)]
pub(super) fn fp16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// `GGML_FP16_TO_FP32` of stored bytes (exact): the scale llama.cpp reads back from a
/// block it has just written, to requantize against.
#[inline(always)]
pub(super) fn fp16_value(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// Index and value of the first element of largest magnitude (`amax`, `max` in llama.cpp:
/// a strict `>` keeps the first of equal magnitudes).
#[inline(always)]
pub(super) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    (amax, max)
}

/// `make_qx_quants` with `rmse_type` 1 (the only one llama.cpp's quantizers use): a
/// symmetric scale for levels `-nmax..nmax-1`, refined over 18 trial scales by weighted
/// least squares. Weights are `qw`, or `x²` without. Writes `l + nmax` to `levels`.
pub(super) fn make_qx_quants(x: &[f32], nmax: i32, levels: &mut [u8], qw: Option<&[f32]>) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    // The weights once, up front (the same f32 values llama.cpp recomputes per pass), so
    // the 19 passes below run over plain arrays.
    let mut wbuf = [0.0f32; 32];
    let wv = &mut wbuf[..x.len()];
    for (i, w) in wv.iter_mut().enumerate() {
        *w = qw.map_or(x[i] * x[i], |q| q[i]);
    }
    let wv = &*wv;
    let weight = |i: usize| wv[i];
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &xi) in x.iter().enumerate() {
        let l = clamp(nearest_int(iscale * xi));
        levels[i] = (l + nmax) as u8;
        let (w, lf) = (weight(i), l as f32);
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        let (mut slx, mut sl2) = (0.0f32, 0.0f32);
        for (i, &xi) in x.iter().enumerate() {
            let lf = clamp(nearest_int(iscale * xi)) as f32;
            let w = weight(i);
            slx += w * xi * lf;
            sl2 += w * lf * lf;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for (i, &xi) in x.iter().enumerate() {
                levels[i] = (nmax + clamp(nearest_int(iscale * xi))) as u8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse` (q3_k without an imatrix): symmetric levels
/// `-nmax..nmax-1` weighted by `x²`, then up to five passes moving single levels while
/// that improves the fit. Writes `l + nmax` to `levels`.
pub(super) fn make_q3_quants(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let iscale = -(nmax as f32) / max;
    let mut l_of = [0i32; 16];
    let l_of = &mut l_of[..x.len()];
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &xi) in x.iter().enumerate() {
        let l = clamp(nearest_int(iscale * xi));
        l_of[i] = l;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &xi) in x.iter().enumerate() {
            let w = xi * xi;
            let li = l_of[i] as f32;
            let mut slx = sumlx - w * xi * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = clamp(nearest_int(xi * sl2 / slx));
                if new_l != l_of[i] {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_of[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &l) in levels.iter_mut().zip(l_of.iter()) {
        *o = (l + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The trial grid of `make_qkx2_quants` / `make_qkx3_quants`: scales
/// `(rmin + rdelta·is + nmax) / (max − min)` for `is` in `0..=nstep`, and whether the
/// error is absolute (`use_mad`) or squared.
#[derive(Clone, Copy)]
pub(super) struct Search {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// `make_qkx2_quants` = `make_qkx3_quants` with weights (the two differ only when weights
/// are absent, which no caller needs): an asymmetric scale and min for levels `0..=nmax`,
/// chosen by weighted least squares over the trial scales of `s`. Returns (scale, −min).
pub(super) fn make_qkx_quants(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    levels: &mut [u8],
    s: Search,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..x.len() {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
    let quant = |iscale: f32, xi: f32, min: f32| nearest_int(iscale * (xi - min)).clamp(0, nmax);
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for (i, &xi) in x.iter().enumerate() {
        let l = quant(iscale, xi, min);
        levels[i] = l as u8;
        best_error += w[i] * err(scale * l as f32 + min - xi);
    }
    if s.nstep < 1 {
        return (scale, -min);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..x.len()];
    for is in 0..=s.nstep {
        iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for (i, &xi) in x.iter().enumerate() {
            let l = quant(iscale, xi, min);
            aux[i] = l as u8;
            let lf = l as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * xi;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for (i, &xi) in x.iter().enumerate() {
                cur_error += w[i] * err(this_scale * aux[i] as f32 + this_min - xi);
            }
            if cur_error < best_error {
                levels.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qp_quants`: a positive scale for levels `0..=nmax` of non-negative values (the
/// sub-block scales and mins of the weighted K-quants), chosen over nine trial scales by
/// weighted error, then refined level by level. Levels are stored as C stores an `int` in
/// a `uint8_t` (wrapping), and the refinement reads them back that way, as llama.cpp does.
pub(super) fn make_qp_quants(x: &[f32], nmax: i32, levels: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for (i, &v) in x.iter().enumerate() {
        let diff = v - scale * levels[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for (i, &v) in x.iter().enumerate() {
            let l = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).min(nmax);
        levels[i] = l as u8;
        let lf = l as f32;
        sumlx += qw[i] * v * lf;
        suml2 += qw[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let w = qw[i];
            let li = levels[i] as f32;
            let mut slx = sumlx - w * v * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != levels[i] as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        levels[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `best_index_int8`: the index of the level in the sorted table `values` nearest to `x`
/// (binary search; a tie goes to the upper level).
#[inline(always)]
pub(super) fn best_index_int8(values: &[i8], x: f32) -> usize {
    let n = values.len();
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[n - 1] as f32 {
        return n - 1;
    }
    let (mut ml, mut mu) = (0usize, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.4), -7);
    }

    #[test]
    fn trunc_i32_is_x86_cvttss2si() {
        assert_eq!(trunc_i32(8.9), 8);
        assert_eq!(trunc_i32(-0.7), 0);
        assert_eq!(trunc_i32(f32::NAN), i32::MIN);
        assert_eq!(trunc_i32(f32::INFINITY), i32::MIN);
        assert_eq!(trunc_i32(3e9), i32::MIN);
    }

    #[test]
    fn best_index_picks_the_nearest_level() {
        let v = [
            -127i8, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        ];
        assert_eq!(best_index_int8(&v, 0.0), 8);
        assert_eq!(best_index_int8(&v, -1000.0), 0);
        assert_eq!(best_index_int8(&v, 1000.0), 15);
        assert_eq!(best_index_int8(&v, -4.5), 8); // tie: upper level
        assert_eq!(best_index_int8(&v, 60.0), 12);
    }

    #[test]
    fn scale_searches_zero_an_all_zero_group() {
        let x = [0.0f32; 16];
        let mut l = [9u8; 16];
        assert_eq!(make_qx_quants(&x, 4, &mut l, None), 0.0);
        assert_eq!(l, [0; 16]);
        l = [9; 16];
        assert_eq!(make_q3_quants(&x, 4, &mut l), 0.0);
        assert_eq!(l, [0; 16]);
        l = [9; 16];
        assert_eq!(make_qp_quants(&x, 15, &mut l, &[1.0; 16]), 0.0);
        assert_eq!(l, [0; 16]);
        l = [9; 16];
        let s = Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        assert_eq!(make_qkx_quants(&x, &[1.0; 16], 3, &mut l, s), (0.0, -0.0));
        assert_eq!(l, [0; 16]);
    }
}
