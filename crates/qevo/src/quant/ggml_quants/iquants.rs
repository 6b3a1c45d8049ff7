//! The non-linear 4-bit IQ types iq4_nl (32-value blocks, one f16 scale) and iq4_xs
//! (256-value super-blocks, 6-bit sub-scales), as `quantize_iq4_nl` / `quantize_iq4_xs`
//! write them (`quantize_row_iq4_nl_impl` with 7 trial scales each side): levels are
//! indices into llama.cpp's 16 non-linear values, chosen nearest after a weighted search
//! for each 32-value block's scale. Weights are `x²`, or with an importance matrix
//! `qw · sqrt(σ² + x²)`.

use super::super::iq_tables::KVALUES_IQ4NL;
use super::common::{best_index_int8, fp16_bytes, nearest_int, signed_absmax, GROUP_MAX_EPS};

/// Trial scales each side of the first guess (`ntry` in llama.cpp's quantizers).
const NTRY: i32 = 7;

/// Mean-square term of the weights: `Σx² · 2/n` over the super-block.
fn sigma2(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s * (2.0 / x.len() as f32)
}

/// Best scale of one 32-value block and its levels (0 and untouched levels for an
/// all-zero block: callers recompute the levels from the final scale).
fn block_scale(xb: &[f32], w: &[f32; 32], levels: &mut [u8]) -> f32 {
    let (amax, max) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let fit = |id: f32, levels: Option<&mut [u8]>| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        let mut store = levels;
        for (j, &xj) in xb.iter().enumerate() {
            let l = best_index_int8(&KVALUES_IQ4NL, id * xj);
            if let Some(s) = store.as_deref_mut() {
                s[j] = l as u8;
            }
            let q = KVALUES_IQ4NL[l] as f32;
            sumqx += w[j] * q * xj;
            sumq2 += w[j] * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / v0;
    let (sumqx, sumq2) = fit(1.0 / d0, Some(levels));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = fit(id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32) -> [f32; 32] {
    let mut w = [0.0f32; 32];
    for j in 0..32 {
        w[j] = match qw {
            Some(q) => q[j] * (sigma2 + xb[j] * xb[j]).sqrt(),
            None => xb[j] * xb[j],
        };
    }
    w
}

/// Levels of `xb` at inverse scale `id`.
fn levels_at(xb: &[f32], id: f32, levels: &mut [u8]) {
    for (l, &v) in levels.iter_mut().zip(xb) {
        *l = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
    }
}

/// Index j low nibble, index j+16 high nibble, per 32 values.
fn pack(levels: &[u8], qs: &mut [u8]) {
    for (q, l) in qs.chunks_exact_mut(16).zip(levels.chunks_exact(32)) {
        for j in 0..16 {
            q[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

/// iq4_nl block: f16 d, 16 bytes of 4-bit indices; value = d · kvalues[index].
pub(crate) fn iq4_nl(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    for (i, (xb, y)) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)).enumerate() {
        let w = block_weights(xb, qw.map(|q| &q[32 * i..32 * i + 32]), sigma2(xb));
        let mut levels = [0u8; 32];
        let d = block_scale(xb, &w, &mut levels);
        y[0..2].copy_from_slice(&fp16_bytes(d));
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        levels_at(xb, id, &mut levels);
        pack(&levels, &mut y[2..18]);
    }
}

/// iq4_xs block: f16 d, u16 high scale bits, 4 bytes of low scale nibbles, 128 bytes of
/// indices; sub-block value = d · (sc − 32) · kvalues[index].
pub(crate) fn iq4_xs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    for (i, (xs, y)) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(136))
        .enumerate()
    {
        let s2 = sigma2(xs);
        let mut levels = [0u8; 256];
        let mut scales = [0.0f32; 8];
        let (mut amax_scale, mut max_scale) = (0.0f32, 0.0f32);
        for ib in 0..8 {
            let xb = &xs[32 * ib..32 * ib + 32];
            let w = block_weights(xb, qw.map(|q| &q[256 * i + 32 * ib..]), s2);
            scales[ib] = block_scale(xb, &w, &mut levels[32 * ib..32 * ib + 32]);
            let a = scales[ib].abs();
            if a > amax_scale {
                amax_scale = a;
                max_scale = scales[ib];
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
        for ib in 0..8 {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            levels_at(
                &xs[32 * ib..32 * ib + 32],
                idl,
                &mut levels[32 * ib..32 * ib + 32],
            );
            let l = (l + 32) as u8;
            scales_l[ib / 2] |= (l & 0xf) << (4 * (ib % 2));
            scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
        y[0..2].copy_from_slice(&fp16_bytes(d));
        y[2..4].copy_from_slice(&scales_h.to_le_bytes());
        y[4..8].copy_from_slice(&scales_l);
        pack(&levels, &mut y[8..136]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_blocks_write_zero_scale_and_the_level_nearest_zero() {
        let x = [0.0f32; 256];
        let mut out = [0xffu8; 18 * 8];
        iq4_nl(&x, None, &mut out);
        for b in out.chunks_exact(18) {
            assert_eq!(&b[0..2], &[0, 0]);
            assert!(b[2..].iter().all(|&q| q == 0x88), "index 8 is the level 1");
        }
        let mut out = [0xffu8; 136];
        iq4_xs(&x, Some(&[1.0; 256]), &mut out);
        // d = -max_scale / 32 = -0.0 (f16 -0.0), as llama.cpp writes it.
        assert_eq!(&out[0..2], &[0, 0x80]);
        assert!(out[8..].iter().all(|&q| q == 0x88));
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut x = [0.5f32; 256];
        x[0] = 3.0e38;
        let mut out = [0u8; 136];
        iq4_xs(&x, None, &mut out);
        let mut out = [0u8; 18 * 8];
        iq4_nl(&x, Some(&[2.0; 256]), &mut out);
    }
}
