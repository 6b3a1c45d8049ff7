//! The K-quants q2_k, q3_k, q4_k, q5_k and q6_k (256-value super-blocks), as
//! `quantize_q*_K` writes them: without an importance matrix the reference quantizers
//! (`quantize_row_q*_K_ref`: unweighted or self-weighted searches, sub-block scales rounded
//! against the largest), with one the weighted quantizers (`quantize_row_q*_K_impl`: the
//! importance times `sqrt(σ² + x²)`, sub-block scales themselves fitted by
//! `make_qp_quants` / `make_qx_quants`). Both then requantize every value against the
//! scales as stored (f16 super-scale times the integer sub-scale), as llama.cpp does.

use super::common::{
    fp16_bytes, fp16_value, make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants,
    nearest_int, Search, GROUP_MAX_EPS,
};

const QK_K: usize = 256;

/// Runs `block` over the row's super-blocks, their importance slices and their bytes.
fn per_block(
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
    bytes: usize,
    mut block: impl FnMut(&[f32], Option<&[f32]>, &mut [u8]),
) {
    for (i, (xb, yb)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        block(xb, qw.map(|q| &q[i * QK_K..(i + 1) * QK_K]), yb);
    }
}

/// Sum of squares, left to right.
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// `qw · sqrt(σ² + x²)` for one sub-block, and their sum (left to right).
fn weights<const N: usize>(xs: &[f32], qw: &[f32], sigma2: f32) -> ([f32; N], f32) {
    let mut w = [0.0f32; N];
    for l in 0..N {
        w[l] = qw[l] * (sigma2 + xs[l] * xs[l]).sqrt();
    }
    let mut sum = 0.0f32;
    for &v in &w {
        sum += v;
    }
    (w, sum)
}

/// Four 2-bit levels per byte: byte l of each 32-byte group holds values l, l+32, l+64,
/// l+96 of its 128-value half.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for (h, q) in qs.chunks_exact_mut(32).enumerate() {
        let base = 128 * h;
        for l in 0..32 {
            let v = |k: usize| levels[base + l + 32 * k];
            q[l] = v(0) | (v(1) << 2) | (v(2) << 4) | (v(3) << 6);
        }
    }
}

/// Largest value of `v` (strict `>`, from 0), as the reference K-quants track it.
fn max_of(v: &[f32]) -> f32 {
    let mut m = 0.0f32;
    for &s in v {
        if s > m {
            m = s;
        }
    }
    m
}

// ---------------------------------------------------------------- q2_k

/// q2_k block: 16 bytes of 4-bit sub-scale | 4-bit sub-min, 64 bytes of 2-bit levels,
/// f16 d, f16 dmin; value = d·sc·q − dmin·m.
pub(crate) fn q2_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, qw, out, 84, |xb, qw, y| match qw {
        Some(qw) => q2_k_weighted(xb, qw, y),
        None => q2_k_ref(xb, y),
    });
}

fn q2_k_ref(x: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    let search = Search {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut w = [0.0f32; 16];
        for l in 0..16 {
            w[l] = xs[l].abs();
        }
        let lv = &mut levels[16 * j..16 * j + 16];
        (scales[j], mins[j]) = make_qkx_quants(xs, &w, 3, lv, search);
    }
    let (max_scale, max_min) = (max_of(&scales), max_of(&mins));
    let mut sc = [0u8; 16];
    let d = if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        max_scale / 15.0
    } else {
        0.0
    };
    let dmin = if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        max_min / 15.0
    } else {
        0.0
    };
    write_q2_k(x, &sc, fp16_bytes(d), fp16_bytes(dmin), &mut levels, y);
}

fn q2_k_weighted(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    let sigma2 = sum_sq(x) / QK_K as f32;
    let search = Search {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let (w, s) = weights::<16>(xs, &qw[16 * j..16 * j + 16], sigma2);
        sw[j] = s;
        let lv = &mut levels[16 * j..16 * j + 16];
        (scales[j], mins[j]) = make_qkx_quants(xs, &w, 3, lv, search);
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
    let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
    let mut sc = [0u8; 16];
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    write_q2_k(x, &sc, fp16_bytes(dm), fp16_bytes(mm), &mut levels, y);
}

/// Requantizes against the stored scales (sub-blocks whose scale is 0 keep their search
/// levels) and writes the block.
fn write_q2_k(
    x: &[f32],
    sc: &[u8; 16],
    d: [u8; 2],
    dmin: [u8; 2],
    levels: &mut [u8; QK_K],
    y: &mut [u8],
) {
    let (df, mf) = (fp16_value(d), fp16_value(dmin));
    for j in 0..16 {
        let dl = df * (sc[j] & 0xf) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = mf * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let l = nearest_int((x[16 * j + ii] + ml) / dl).clamp(0, 3);
            levels[16 * j + ii] = l as u8;
        }
    }
    y[0..16].copy_from_slice(sc);
    pack_2bit(levels, &mut y[16..80]);
    y[80..82].copy_from_slice(&d);
    y[82..84].copy_from_slice(&dmin);
}

// ---------------------------------------------------------------- q3_k

/// q3_k block: 32 bytes of high bits, 64 bytes of low 2-bit levels, 12 bytes of 6-bit
/// signed sub-scales, f16 d; value = d·(sc − 32)·(q − 4).
pub(crate) fn q3_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, qw, out, 110, |xb, qw, y| match qw {
        Some(qw) => q3_k_weighted(xb, qw, y),
        None => q3_k_ref(xb, y),
    });
}

fn q3_k_ref(x: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut levels[16 * j..16 * j + 16]);
        let a = scales[j].abs();
        if a > amax {
            amax = a;
            max_scale = scales[j];
        }
    }
    let mut sc = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // C keeps this level in an int8_t: the cast wraps before the clamp.
            let l = (nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
            put_q3_scale(&mut sc, j, l as u8);
        }
        1.0 / iscale
    } else {
        0.0
    };
    write_q3_k(x, &sc, fp16_bytes(d), &mut levels, y);
}

fn q3_k_weighted(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut sw) = ([0.0f32; 16], [0.0f32; 16]);
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let (w, s) = weights::<16>(xs, &qw[16 * j..16 * j + 16], sigma2);
        sw[j] = s;
        scales[j] = make_qx_quants(xs, 4, &mut levels[16 * j..16 * j + 16], Some(&w));
    }
    let mut ls = [0u8; 16];
    let d_block = make_qx_quants(&scales, 32, &mut ls, Some(&sw));
    let mut sc = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        put_q3_scale(&mut sc, j, l);
    }
    write_q3_k(x, &sc, fp16_bytes(d_block), &mut levels, y);
}

/// Stores 6-bit sub-scale `l` (0..63) of sub-block j: low nibbles in bytes 0..8 (j < 8
/// low half, else high half of byte j−8), the top two bits in bytes 8..12.
pub(crate) fn put_q3_scale(sc: &mut [u8; 12], j: usize, l: u8) {
    if j < 8 {
        sc[j] = l & 0xf;
    } else {
        sc[j - 8] |= (l & 0xf) << 4;
    }
    sc[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
}

/// Sub-scale j as stored, minus 32.
pub(crate) fn get_q3_scale(sc: &[u8; 12], j: usize) -> i32 {
    let lo = if j < 8 { sc[j] & 0xf } else { sc[j - 8] >> 4 };
    let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (lo | (hi << 4)) as i32 - 32
}

fn write_q3_k(x: &[f32], sc: &[u8; 12], d: [u8; 2], levels: &mut [u8; QK_K], y: &mut [u8]) {
    let df = fp16_value(d);
    for j in 0..16 {
        let dl = df * get_q3_scale(sc, j) as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / dl).clamp(-4, 3);
            levels[16 * j + ii] = (l + 4) as u8;
        }
    }
    // High bit of value j goes to bit j/32 of hmask byte j%32.
    let hmask = &mut y[0..32];
    hmask.fill(0);
    for (j, l) in levels.iter_mut().enumerate() {
        if *l > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *l -= 4;
        }
    }
    pack_2bit(levels, &mut y[32..96]);
    y[96..108].copy_from_slice(sc);
    y[108..110].copy_from_slice(&d);
}

// ---------------------------------------------------------------- q4_k, q5_k

/// The searches of the reference q4_k / q5_k: (nmax, rmin, rdelta, nstep).
const Q4K_REF: Search = Search {
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};
const Q5K_REF: Search = Search {
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};
const QK_WEIGHTED: Search = Search {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Sub-scales, sub-mins (6-bit each, packed as `get_scale_min_k4` reads them), f16 d and
/// dmin, and the levels of one q4_k / q5_k super-block with `nmax` 15 or 31.
struct ScaleMinBlock {
    sc: [u8; 12],
    d: [u8; 2],
    dmin: [u8; 2],
    levels: [u8; QK_K],
}

pub(crate) fn put_scale_min(sc: &mut [u8; 12], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        sc[j] = ls;
        sc[j + 4] = lm;
    } else {
        sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        sc[j - 4] |= (ls >> 4) << 6;
        sc[j] |= (lm >> 4) << 6;
    }
}

pub(crate) fn get_scale_min(sc: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 63, sc[j + 4] & 63)
    } else {
        (
            (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4),
            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
        )
    }
}

/// The reference q4_k / q5_k scales: per 32-value sub-block a `make_qkx2_quants` search
/// weighted by `rms + |x|`, then scales and mins rounded to 6 bits against the largest.
fn scale_min_ref(x: &[f32], nmax: i32, search: Search) -> ScaleMinBlock {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (sum_sq(xs) / 32.0).sqrt();
        let mut w = [0.0f32; 32];
        for l in 0..32 {
            w[l] = av_x + xs[l].abs();
        }
        let lv = &mut levels[32 * j..32 * j + 32];
        (scales[j], mins[j]) = make_qkx_quants(xs, &w, nmax, lv, search);
    }
    let (max_scale, max_min) = (max_of(&scales), max_of(&mins));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        // C stores the rounded int in a uint8_t (wrapping) before capping at 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        put_scale_min(&mut sc, j, ls, lm);
    }
    ScaleMinBlock {
        sc,
        d: fp16_bytes(max_scale / 63.0),
        dmin: fp16_bytes(max_min / 63.0),
        levels,
    }
}

/// The weighted q4_k / q5_k scales: `make_qkx3_quants` per sub-block, then the eight
/// scales and eight mins each fitted to 6 bits by `make_qp_quants`. q5_k caps the fitted
/// levels at 63; q4_k does not (`cap`).
fn scale_min_weighted(x: &[f32], qw: &[f32], nmax: i32, cap: bool) -> ScaleMinBlock {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let (w, s) = weights::<32>(xs, &qw[32 * j..32 * j + 32], sigma2);
        sw[j] = s;
        let lv = &mut levels[32 * j..32 * j + 32];
        (scales[j], mins[j]) = make_qkx_quants(xs, &w, nmax, lv, QK_WEIGHTED);
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let (s, m) = if cap {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        put_scale_min(&mut sc, j, s, m);
    }
    ScaleMinBlock {
        sc,
        d: fp16_bytes(d_block),
        dmin: fp16_bytes(m_block),
        levels,
    }
}

/// Requantizes every value against the stored sub-scale and sub-min.
fn requantize_scale_min(x: &[f32], b: &mut ScaleMinBlock, nmax: i32) {
    let (df, mf) = (fp16_value(b.d), fp16_value(b.dmin));
    for j in 0..8 {
        let (sc, m) = get_scale_min(&b.sc, j);
        let d = df * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = mf * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            b.levels[32 * j + ii] = l as u8;
        }
    }
}

/// q4_k block: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of 4-bit levels
/// (byte l of each 32-byte group: value l low, value l+32 high, of its 64 values).
pub(crate) fn q4_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, qw, out, 144, |xb, qw, y| {
        let mut b = match qw {
            Some(qw) => scale_min_weighted(xb, qw, 15, false),
            None => scale_min_ref(xb, 15, Q4K_REF),
        };
        requantize_scale_min(xb, &mut b, 15);
        y[0..2].copy_from_slice(&b.d);
        y[2..4].copy_from_slice(&b.dmin);
        y[4..16].copy_from_slice(&b.sc);
        for (q, lv) in y[16..144]
            .chunks_exact_mut(32)
            .zip(b.levels.chunks_exact(64))
        {
            for (l, o) in q.iter_mut().enumerate() {
                *o = lv[l] | (lv[l + 32] << 4);
            }
        }
    });
}

/// q5_k block: f16 d, f16 dmin, 12 bytes of scales/mins, 32 bytes of fifth bits, 128
/// bytes of low nibbles.
pub(crate) fn q5_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, qw, out, 176, |xb, qw, y| {
        let mut b = match qw {
            Some(qw) => scale_min_weighted(xb, qw, 31, true),
            None => scale_min_ref(xb, 31, Q5K_REF),
        };
        requantize_scale_min(xb, &mut b, 31);
        y[0..2].copy_from_slice(&b.d);
        y[2..4].copy_from_slice(&b.dmin);
        y[4..16].copy_from_slice(&b.sc);
        let (qh, ql) = y[16..176].split_at_mut(32);
        qh.fill(0);
        for (g, q) in ql.chunks_exact_mut(32).enumerate() {
            let (m1, m2) = (1u8 << (2 * g), 2u8 << (2 * g));
            for j in 0..32 {
                let (mut l1, mut l2) = (b.levels[64 * g + j], b.levels[64 * g + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                q[j] = l1 | (l2 << 4);
            }
        }
    });
}

// ---------------------------------------------------------------- q6_k

/// q6_k block: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit
/// sub-scales, f16 d; value = d·sc·(q − 32). With an importance matrix the sub-block
/// search weights by it directly (llama.cpp leaves σ² out here).
pub(crate) fn q6_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, qw, out, 210, q6_k_block);
}

fn q6_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_abs, mut max_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let lv = &mut levels[16 * ib..16 * ib + 16];
        scales[ib] = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, lv, w);
        let a = scales[ib].abs();
        if a > max_abs {
            max_abs = a;
            max_scale = scales[ib];
        }
    }
    if max_abs < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = fp16_bytes(1.0 / iscale);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    let df = fp16_value(d);
    for j in 0..16 {
        let dl = df * sc[j] as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / dl).clamp(-32, 31);
            levels[16 * j + ii] = (l + 32) as u8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        let (ql, qh) = (&mut ql[64 * h..64 * h + 64], &mut qh[32 * h..32 * h + 32]);
        let lv = &levels[128 * h..128 * h + 128];
        for l in 0..32 {
            let v = |k: usize| lv[l + 32 * k];
            ql[l] = (v(0) & 0xf) | ((v(2) & 0xf) << 4);
            ql[l + 32] = (v(1) & 0xf) | ((v(3) & 0xf) << 4);
            qh[l] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
        }
    }
    for (o, s) in rest[0..16].iter_mut().zip(sc) {
        *o = s as u8;
    }
    rest[16..18].copy_from_slice(&d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all_types(x: &[f32], qw: Option<&[f32]>) -> Vec<Vec<u8>> {
        let fs: [(super::super::RowQuantizer, usize); 5] = [
            (q2_k, 84),
            (q3_k, 110),
            (q4_k, 144),
            (q5_k, 176),
            (q6_k, 210),
        ];
        fs.iter()
            .map(|(f, bytes)| {
                let mut out = vec![0xa5u8; bytes * x.len() / QK_K];
                f(x, qw, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn all_zero_super_blocks_decode_to_zero() {
        let x = vec![0.0f32; 512];
        for qw in [None, Some(&[1.0f32; 512][..])] {
            for (bytes, t) in check_all_types(&x, qw)
                .iter()
                .zip(["q2", "q3", "q4", "q5", "q6"])
            {
                // Every scale is zero, so whatever the levels, the block decodes to 0.
                match t {
                    "q2" => assert_eq!(&bytes[80..84], &[0; 4]),
                    "q3" => assert_eq!(&bytes[108..110], &[0; 2]),
                    "q4" | "q5" => assert_eq!(&bytes[0..4], &[0; 4]),
                    _ => assert!(bytes.iter().all(|&b| b == 0)),
                }
            }
        }
    }

    #[test]
    fn constant_and_huge_blocks_do_not_panic() {
        let mut x = vec![0.25f32; 256];
        let _ = check_all_types(&x, None);
        let _ = check_all_types(&x, Some(&[0.5; 256]));
        x[7] = 3.0e38;
        x[9] = -3.0e38;
        let _ = check_all_types(&x, None);
        let _ = check_all_types(&x, Some(&[0.5; 256]));
    }
}
