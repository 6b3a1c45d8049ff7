//! Dequantizers for llama.cpp's IQ ("importance") block types: iq4_nl, iq4_xs, iq3_s,
//! iq3_xxs, iq2_s, iq2_xs, iq2_xxs, iq1_s and iq1_m. One function per type decodes one
//! block; `quant::ggml` holds them in its type table and runs them over a tensor.
//!
//! The block layouts and the arithmetic are llama.cpp's (`dequantize_row_iq*` in
//! ggml-quants.c, structs and grids in ggml-common.h; the grids are generated data in
//! `iq_tables`). Every value is computed with the same f32 operations in the same order as
//! there — block scale from f16, times the sub-block factor, times the grid value, then the
//! sign — so the results are bit-identical (tests/quant_iq.rs checks this against fixtures
//! made by llama.cpp's `gguf` Python package). Multiplying by ±1 in llama.cpp is exact, so
//! it is a negation here. All multi-byte fields are little-endian.
//!
//! Each function takes exactly one block (`block.len()` = the type's block bytes) and
//! writes its `out.len()` = block length values; the caller checks both.

use super::iq_tables::*;
use half::f16;

const QK_K: usize = 256;

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// `scale · value`, negated where `sign_bits` has bit `mask` set. Negation is a flip of
/// the sign bit (exactly what `-v` and llama.cpp's `· -1.f` do), done without a branch.
#[inline(always)]
fn signed(scale: f32, value: u8, sign_bits: u8, mask: u8) -> f32 {
    let v = scale * value as f32;
    let flip = ((sign_bits & mask != 0) as u32) << 31;
    f32::from_bits(v.to_bits() ^ flip)
}

/// Eight grid values times `scale`, signs from `signs` bit j for value j.
#[inline(always)]
fn grid8(out: &mut [f32], scale: f32, grid: u64, signs: u8) {
    for (j, (y, g)) in out.iter_mut().zip(grid.to_le_bytes()).enumerate() {
        *y = signed(scale, g, signs, KMASK_IQ2XS[j]);
    }
}

/// iq4_nl: 32 values; f16 d, 16 bytes of two 4-bit indices into the non-linear levels.
pub(crate) fn iq4_nl(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
        out[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
    }
}

/// iq4_xs: 256 values; f16 d, u16 high scale bits, 4 bytes low scale bits, 128 bytes of
/// 4-bit indices; each 32-value sub-block has a 6-bit scale offset by 32.
pub(crate) fn iq4_xs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16_at(b, 2);
    let scales_l = &b[4..8];
    for ib in 0..QK_K / 32 {
        let lo = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
        let hi = ((scales_h >> (2 * ib)) & 3) as u8;
        let ls = (lo | (hi << 4)) as i32;
        let dl = d * (ls - 32) as f32;
        let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
        let y = &mut out[32 * ib..32 * ib + 32];
        for j in 0..16 {
            y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
            y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

/// iq2_xxs: 256 values; f16 d, then per 32 values 8 bytes: four grid indices and a u32 of
/// four 7-bit sign codes plus a 4-bit scale.
pub(crate) fn iq2_xxs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for ib in 0..QK_K / 32 {
        let q = &b[2 + 8 * ib..2 + 8 * ib + 8];
        let aux = u32_at(q, 4);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for l in 0..4 {
            let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            grid8(y, db, IQ2XXS_GRID[q[l] as usize], signs);
        }
    }
}

/// iq2_xs: 256 values; f16 d, 32 u16 (9-bit grid index, 7-bit sign code), 8 bytes of two
/// 4-bit scales per 32 values.
pub(crate) fn iq2_xs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales = &b[66..74];
    for ib in 0..QK_K / 32 {
        let db = [
            d * (0.5 + (scales[ib] & 0xf) as f32) * 0.25,
            d * (0.5 + (scales[ib] >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let q = u16_at(b, 2 + 2 * (4 * ib + l));
            let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            grid8(y, db[l / 2], IQ2XS_GRID[(q & 511) as usize], signs);
        }
    }
}

/// iq2_s: 256 values; f16 d, 32 grid-index low bytes, 32 sign bytes, 8 bytes of 2-bit
/// index high parts, 8 bytes of two 4-bit scales.
pub(crate) fn iq2_s(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..34];
    let signs = &b[34..66];
    let qh = &b[66..74];
    let scales = &b[74..82];
    for ib in 0..QK_K / 32 {
        let db = [
            d * (0.5 + (scales[ib] & 0xf) as f32) * 0.25,
            d * (0.5 + (scales[ib] >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let hi = ((qh[ib] as usize) << (8 - 2 * l)) & 0x300;
            let idx = qs[4 * ib + l] as usize | hi;
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            grid8(y, db[l / 2], IQ2S_GRID[idx], signs[4 * ib + l]);
        }
    }
}

/// iq3_xxs: 256 values; f16 d, 64 grid indices (4 values each), then per 32 values a u32
/// of four 7-bit sign codes and a 4-bit scale.
pub(crate) fn iq3_xxs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..66];
    for ib in 0..QK_K / 32 {
        let aux = u32_at(b, 66 + 4 * ib);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for l in 0..4 {
            let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
            let g1 = IQ3XXS_GRID[qs[8 * ib + 2 * l] as usize].to_le_bytes();
            let g2 = IQ3XXS_GRID[qs[8 * ib + 2 * l + 1] as usize].to_le_bytes();
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..4 {
                y[j] = signed(db, g1[j], signs, KMASK_IQ2XS[j]);
                y[j + 4] = signed(db, g2[j], signs, KMASK_IQ2XS[j + 4]);
            }
        }
    }
}

/// iq3_s: 256 values; f16 d, 64 grid-index low bytes, 8 bytes of index high bits, 32 sign
/// bytes, 4 bytes of two 4-bit odd scales.
pub(crate) fn iq3_s(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..66];
    let qh = &b[66..74];
    let signs = &b[74..106];
    let scales = &b[106..110];
    for ib in 0..QK_K / 32 {
        let sc = scales[ib / 2];
        let s = if ib % 2 == 0 { sc & 0xf } else { sc >> 4 };
        let db = d * (1 + 2 * s as i32) as f32;
        let h = qh[ib] as usize;
        for l in 0..4 {
            let i1 = qs[8 * ib + 2 * l] as usize | ((h << (8 - 2 * l)) & 256);
            let i2 = qs[8 * ib + 2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256);
            let (g1, g2) = (IQ3S_GRID[i1].to_le_bytes(), IQ3S_GRID[i2].to_le_bytes());
            let sg = signs[4 * ib + l];
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..4 {
                y[j] = signed(db, g1[j], sg, KMASK_IQ2XS[j]);
                y[j + 4] = signed(db, g2[j], sg, KMASK_IQ2XS[j + 4]);
            }
        }
    }
}

/// Eight iq1 grid values (−1, 0, 1) plus `delta`, times `dl`.
#[inline(always)]
fn grid8_iq1(out: &mut [f32], dl: f32, idx: usize, delta: f32) {
    for (y, g) in out.iter_mut().zip(IQ1S_GRID[idx].to_le_bytes()) {
        *y = dl * (g as i8 as f32 + delta);
    }
}

/// iq1_s: 256 values; f16 d, 32 grid-index low bytes, 8 u16 (four 3-bit index high
/// parts, a 3-bit scale and the delta sign).
pub(crate) fn iq1_s(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..34];
    for ib in 0..QK_K / 32 {
        let qh = u16_at(b, 34 + 2 * ib);
        let dl = d * (2 * ((qh >> 12) & 7) as i32 + 1) as f32;
        let delta = if qh & 0x8000 != 0 {
            -IQ1S_DELTA
        } else {
            IQ1S_DELTA
        };
        for l in 0..4 {
            let idx = qs[4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
            grid8_iq1(
                &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8],
                dl,
                idx,
                delta,
            );
        }
    }
}

/// iq1_m: 256 values; 32 grid-index low bytes, 16 bytes of 3-bit high parts and delta
/// signs, 8 bytes of 3-bit scales whose top nibbles together hold the f16 block scale.
pub(crate) fn iq1_m(b: &[u8], out: &mut [f32]) {
    let qs = &b[0..32];
    let qh = &b[32..48];
    let sc = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    let d = f16::from_bits(bits).to_f32();
    let delta = |h: u8, m: u8| if h & m != 0 { -IQ1S_DELTA } else { IQ1S_DELTA };
    for ib in 0..QK_K / 32 {
        let s = sc[ib / 2] >> (6 * (ib % 2));
        let dl = [
            d * (2 * (s & 7) as i32 + 1) as f32,
            d * (2 * ((s >> 3) & 7) as i32 + 1) as f32,
        ];
        let (h0, h1) = (qh[2 * ib], qh[2 * ib + 1]);
        let q = &qs[4 * ib..4 * ib + 4];
        let idx = [
            q[0] as usize | (((h0 as usize) << 8) & 0x700),
            q[1] as usize | (((h0 as usize) << 4) & 0x700),
            q[2] as usize | (((h1 as usize) << 8) & 0x700),
            q[3] as usize | (((h1 as usize) << 4) & 0x700),
        ];
        let deltas = [
            delta(h0, 0x08),
            delta(h0, 0x80),
            delta(h1, 0x08),
            delta(h1, 0x80),
        ];
        for l in 0..4 {
            let y = &mut out[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            grid8_iq1(y, dl[l / 2], idx[l], deltas[l]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_table_has_even_parity() {
        // llama.cpp stores 7 sign bits and infers the 8th so that the count is even.
        for (i, &s) in KSIGNS_IQ2XS.iter().enumerate() {
            assert_eq!(s & 127, i as u8);
            assert_eq!(s.count_ones() % 2, 0);
        }
    }

    #[test]
    fn iq4_nl_decodes_levels_times_scale() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        b[2] = 0xf0; // value 0 → level 0, value 16 → level 15
        let mut y = [0f32; 32];
        iq4_nl(&b, &mut y);
        assert_eq!(y[0], -63.5);
        assert_eq!(y[16], 56.5);
    }

    #[test]
    fn iq1_m_block_scale_comes_from_the_scale_nibbles() {
        let mut b = [0u8; 56];
        // f16 1.0 = 0x3c00: nibbles 0x0, 0x0, 0xc, 0x3 in the top of sc[0..4].
        b[53] = 0xc0;
        b[55] = 0x30;
        let mut y = [0f32; 256];
        iq1_m(&b, &mut y);
        // Grid entry 0 is all −1; scales 0 → dl = 1; delta +0.125.
        assert_eq!(y[0], -0.875);
    }
}
