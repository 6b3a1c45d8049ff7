//! The 32-value block types q4_0, q4_1, q5_0, q5_1 and q8_0, as `ggml_quantize_chunk`
//! writes them: without an importance matrix the reference round-to-scale quantizers
//! (`quantize_row_q*_ref`); with one, the weighted searches (`quantize_row_q*_impl`),
//! whose weights mix the importance with the row's mean square. q8_0 ignores an
//! importance matrix, as llama.cpp does.

use super::common::{
    fp16_bytes, make_qkx_quants, make_qx_quants, signed_absmax, trunc_i32, Search,
};

use crate::quant::ggml::GgmlType;

const QK: usize = 32;

/// The search `quantize_row_q4_1_impl` / `q5_1_impl` run (`make_qkx3_quants` arguments).
const QKX_LEGACY: Search = Search {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// Runs `block` over the row's 32-value blocks and their bytes.
fn per_block(
    x: &[f32],
    out: &mut [u8],
    bytes: usize,
    mut block: impl FnMut(usize, &[f32], &mut [u8]),
) {
    for (i, (xb, yb)) in x
        .chunks_exact(QK)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        block(i, xb, yb);
    }
}

/// The weights of the weighted legacy quantizers: `qw · sqrt(σ² + x²)`, σ² the row's mean
/// square (summed left to right, as llama.cpp does, once per row).
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for &v in x {
        sum += v * v;
    }
    sum / x.len() as f32
}

fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
    w
}

/// Two 4-bit levels per byte: value j in the low nibble, value j+16 in the high one.
/// `mask` is 0x0f for the 5-bit types, which mask there; the 4-bit types do not (their
/// levels are capped at 15 already), so an out-of-range level spills as it does in C.
fn pack_nibbles(levels: &[u8], mask: u8, qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (levels[j] & mask) | ((levels[j + QK / 2] & mask) << 4);
    }
}

/// The fifth bits of 32 levels, bit j for value j, little-endian.
fn high_bits(levels: &[u8]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &l) in levels.iter().enumerate() {
        qh |= (((l & 0x10) >> 4) as u32) << j;
    }
    qh.to_le_bytes()
}

/// Levels of the symmetric reference quantizers (q4_0, q5_0): `d = max / -half`, value
/// `x/d + half + ½` truncated and capped at `2·half − 1`.
fn symmetric_ref(xb: &[f32], half: f32, levels: &mut [u8; QK]) -> f32 {
    let (_, max) = signed_absmax(xb);
    let d = max / -half;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = 2 * half as i32 - 1;
    for (l, &v) in levels.iter_mut().zip(xb) {
        *l = (trunc_i32(v * id + (half + 0.5)) as i8 as i32).min(top) as u8;
    }
    d
}

/// Levels of the asymmetric reference quantizers (q4_1, q5_1): `d = (max − min) / nmax`,
/// value `(x − min)/d + ½` truncated (q4_1 also caps at 15). Returns (d, min).
fn asymmetric_ref(xb: &[f32], nmax: i32, cap: bool, levels: &mut [u8; QK]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in xb {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (l, &v) in levels.iter_mut().zip(xb) {
        let t = trunc_i32((v - min) * id + 0.5);
        *l = if cap {
            (t as i8 as i32).min(nmax) as u8
        } else {
            t as u8
        };
    }
    (d, min)
}

/// q4_0: f16 d, 16 bytes of 4-bit levels; value = d · (level − 8).
pub(crate) fn q4_0(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    per_block(x, out, 18, |i, xb, y| {
        let mut levels = [0u8; QK];
        let d = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = block_weights(xb, &qw[i * QK..(i + 1) * QK], s2);
                make_qx_quants(xb, 8, &mut levels, Some(&w))
            }
            _ => symmetric_ref(xb, 8.0, &mut levels),
        };
        y[0..2].copy_from_slice(&fp16_bytes(d));
        pack_nibbles(&levels, 0xff, &mut y[2..18]);
    });
}

/// q5_0: f16 d, 4 bytes of fifth bits, 16 bytes of low nibbles; value = d · (level − 16).
pub(crate) fn q5_0(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    per_block(x, out, 22, |i, xb, y| {
        let mut levels = [0u8; QK];
        let d = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = block_weights(xb, &qw[i * QK..(i + 1) * QK], s2);
                make_qx_quants(xb, 16, &mut levels, Some(&w))
            }
            _ => symmetric_ref(xb, 16.0, &mut levels),
        };
        y[0..2].copy_from_slice(&fp16_bytes(d));
        y[2..6].copy_from_slice(&high_bits(&levels));
        pack_nibbles(&levels, 0x0f, &mut y[6..22]);
    });
}

/// (d, m) and levels of q4_1 / q5_1 for one block: the reference min-max rounding, or the
/// weighted `make_qkx3_quants` search (which returns −min; llama.cpp stores `-(−min)`).
fn asymmetric_block(
    xb: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    nmax: i32,
    levels: &mut [u8; QK],
) -> (f32, f32) {
    match qw {
        Some(qw) => {
            let w = block_weights(xb, qw, sigma2);
            let (d, neg_min) = make_qkx_quants(xb, &w, nmax, levels, QKX_LEGACY);
            (d, -neg_min)
        }
        None => asymmetric_ref(xb, nmax, nmax == 15, levels),
    }
}

/// q4_1: f16 d, f16 m, 16 bytes of 4-bit levels; value = d · level + m.
pub(crate) fn q4_1(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let sigma2 = qw.map_or(0.0, |_| row_sigma2(x));
    per_block(x, out, 20, |i, xb, y| {
        let mut levels = [0u8; QK];
        let qwb = qw.map(|q| &q[i * QK..(i + 1) * QK]);
        let (d, m) = asymmetric_block(xb, qwb, sigma2, 15, &mut levels);
        y[0..2].copy_from_slice(&fp16_bytes(d));
        y[2..4].copy_from_slice(&fp16_bytes(m));
        pack_nibbles(&levels, 0xff, &mut y[4..20]);
    });
}

/// q5_1: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of low nibbles.
pub(crate) fn q5_1(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let sigma2 = qw.map_or(0.0, |_| row_sigma2(x));
    per_block(x, out, 24, |i, xb, y| {
        let mut levels = [0u8; QK];
        let qwb = qw.map(|q| &q[i * QK..(i + 1) * QK]);
        let (d, m) = asymmetric_block(xb, qwb, sigma2, 31, &mut levels);
        y[0..2].copy_from_slice(&fp16_bytes(d));
        y[2..4].copy_from_slice(&fp16_bytes(m));
        y[4..8].copy_from_slice(&high_bits(&levels));
        pack_nibbles(&levels, 0x0f, &mut y[8..24]);
    });
}

/// q8_0: f16 d = amax/127, 32 signed bytes `round(x/d)` (half away from zero, C's
/// `roundf`). llama.cpp has no weighted q8_0, so the importance matrix is unused.
pub(crate) fn q8_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    per_block(x, out, 34, |_, xb, y| {
        let mut amax = 0.0f32;
        for &v in xb {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[0..2].copy_from_slice(&fp16_bytes(d));
        for (q, &v) in y[2..34].iter_mut().zip(xb) {
            *q = trunc_i32((v * id).round()) as u8;
        }
    });
}

/// How a legacy type's 32 levels decode: `d · (level − offset)` (plus `m` for q4_1 and
/// q5_1), levels `0..=top`; where they sit in the block is `write_levels`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Levels {
    pub offset: f32,
    pub top: u8,
}

/// The level range of a legacy type (q8_0's signed bytes as levels `q + 128`).
pub(crate) fn levels_of(t: GgmlType) -> Option<Levels> {
    let l = |offset, top| Some(Levels { offset, top });
    match t {
        GgmlType::Q4_0 => l(8.0, 15),
        GgmlType::Q5_0 => l(16.0, 31),
        GgmlType::Q4_1 => l(0.0, 15),
        GgmlType::Q5_1 => l(0.0, 31),
        GgmlType::Q8_0 => l(128.0, 255),
        _ => None,
    }
}

/// Writes 32 levels into a block of `t`, leaving its scale fields as they are. Levels
/// above the type's `top` are the caller's error (they are masked, never spilled).
pub(crate) fn write_levels(t: GgmlType, levels: &[u8; QK], block: &mut [u8]) {
    match t {
        GgmlType::Q4_0 => pack_nibbles(levels, 0x0f, &mut block[2..18]),
        GgmlType::Q4_1 => pack_nibbles(levels, 0x0f, &mut block[4..20]),
        GgmlType::Q5_0 => {
            block[2..6].copy_from_slice(&high_bits(levels));
            pack_nibbles(levels, 0x0f, &mut block[6..22]);
        }
        GgmlType::Q5_1 => {
            block[4..8].copy_from_slice(&high_bits(levels));
            pack_nibbles(levels, 0x0f, &mut block[8..24]);
        }
        GgmlType::Q8_0 => {
            for (q, &l) in block[2..34].iter_mut().zip(levels) {
                *q = (l as i32 - 128) as i8 as u8;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-writing a quantized block's own levels gives back its bytes.
    #[test]
    fn write_levels_reproduces_each_legacy_block() {
        let x: Vec<f32> = (0..QK).map(|i| (i as f32 * 0.37).sin()).collect();
        type Quantize = fn(&[f32], Option<&[f32]>, &mut [u8]);
        let types: [(GgmlType, Quantize); 5] = [
            (GgmlType::Q4_0, q4_0),
            (GgmlType::Q4_1, q4_1),
            (GgmlType::Q5_0, q5_0),
            (GgmlType::Q5_1, q5_1),
            (GgmlType::Q8_0, q8_0),
        ];
        for (t, quantize) in types {
            let mut block = vec![0u8; t.block_bytes()];
            quantize(&x, None, &mut block);
            let vals = crate::quant::ggml::dequantize(t, &block, QK).unwrap();
            let lv = levels_of(t).unwrap();
            let (d, m) = scale_and_min(t, &block);
            let mut levels = [0u8; QK];
            for (l, v) in levels.iter_mut().zip(&vals) {
                *l = ((v - m) / d + lv.offset).round() as u8;
            }
            let mut again = block.clone();
            again[2..].iter_mut().for_each(|b| *b = 0);
            again[..4].copy_from_slice(&block[..4]);
            write_levels(t, &levels, &mut again);
            assert_eq!(again, block, "{}", t.name());
        }
    }

    fn scale_and_min(t: GgmlType, block: &[u8]) -> (f32, f32) {
        let h = |i: usize| half::f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
        match t {
            GgmlType::Q4_1 | GgmlType::Q5_1 => (h(0), h(2)),
            _ => (h(0), 0.0),
        }
    }

    #[test]
    fn all_zero_blocks_have_zero_scale_and_mid_levels() {
        let x = [0.0f32; 64];
        let mut out = vec![0xffu8; 36];
        q4_0(&x, None, &mut out);
        // d = max / -8 = -0.0, stored as f16 -0.0, as llama.cpp stores it.
        assert_eq!(&out[0..2], &[0, 0x80]);
        assert!(out[2..18].iter().all(|&b| b == 0x88));
        // Weighted: the scale search sees an all-zero group and writes level 0.
        q4_0(&x, Some(&[1.0; 64]), &mut out);
        assert!(out[..18].iter().all(|&b| b == 0));
        let mut out = vec![0xffu8; 68];
        q8_0(&x, None, &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn constant_block_is_exact_in_q4_1() {
        let x = [0.75f32; 32];
        let mut out = [0u8; 20];
        q4_1(&x, None, &mut out);
        // d = 0, m = 0.75: every value decodes to m exactly.
        assert_eq!(&out[0..2], &[0, 0]);
        assert_eq!(half::f16::from_le_bytes([out[2], out[3]]).to_f32(), 0.75);
    }

    #[test]
    fn huge_values_saturate_the_f16_scale_without_panicking() {
        let mut x = [1.0f32; 32];
        x[3] = 3.0e38;
        let mut out = [0u8; 34];
        q8_0(&x, None, &mut out);
        assert_eq!(
            half::f16::from_le_bytes([out[0], out[1]]),
            half::f16::INFINITY
        );
        assert_eq!(out[2 + 3], 127);
        let mut out = [0u8; 22];
        q5_0(&x, Some(&[1.0; 32]), &mut out);
    }
}
