//! The integer sub-scales (and sub-mins) inside a K-quant or IQ super-block, read and
//! written in each type's own packing (ggml-common.h).
//!
//! Such a value is `d · μ(s_j) · q + dmin · t_j · b`, where `s_j` / `t_j` are sub-block
//! `j`'s integer scale and min levels (`b` is −1 for the types with a min, `q` the code,
//! with its offset) and `μ(s) = offset + step · s` the multiplier the decoder forms from
//! a level. Levels are read as signed where the decoder subtracts a bias (q3_k's and
//! iq4_xs's stored `sc − 32`, q6_k's `i8`), so `μ` is the identity for every type but
//! iq3_s (`1 + 2s`). `sub_scales` reads the levels; `set_sub_scales` writes them back in
//! the type's bit layout; `with_unit_sub_scales` sets every multiplier to 1, so that the
//! type's own dequantizer decodes the codes part `q` (and `b`) exactly, which `tune`
//! multiplies by trained sub-scales.

use super::ggml::GgmlType;
use super::ggml_quants::{get_q3_scale, get_scale_min, put_q3_scale, put_scale_min};
use super::scale_fields::blocks_of;
use crate::error::{Error, Result};

/// How one type keeps its sub-scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubScaleLayout {
    /// Sub-blocks per super-block.
    pub count: usize,
    /// Values per sub-block.
    pub len: usize,
    /// The range of a sub-scale level, inclusive.
    pub scale: (i32, i32),
    /// The range of a sub-min level (its multiplier is the level), for the types with one.
    pub min: Option<(i32, i32)>,
    /// The multiplier of level `s` is `offset + step · s`.
    pub offset: i32,
    pub step: i32,
}

impl SubScaleLayout {
    /// The level whose multiplier is 1.
    fn unit(&self) -> i32 {
        (1 - self.offset) / self.step
    }
}

/// The sub-scale layout of `t`, or `None` for the types without integer sub-scales.
pub fn sub_scale_layout(t: GgmlType) -> Option<SubScaleLayout> {
    let l = |count, len, scale, min| {
        Some(SubScaleLayout {
            count,
            len,
            scale,
            min,
            offset: 0,
            step: 1,
        })
    };
    match t {
        GgmlType::Q2K => l(16, 16, (0, 15), Some((0, 15))),
        GgmlType::Q3K => l(16, 16, (-32, 31), None),
        GgmlType::Q4K | GgmlType::Q5K => l(8, 32, (0, 63), Some((0, 63))),
        GgmlType::Q6K => l(16, 16, (-128, 127), None),
        GgmlType::Iq4Xs => l(8, 32, (-32, 31), None),
        GgmlType::Iq3S => Some(SubScaleLayout {
            offset: 1,
            step: 2,
            ..l(8, 32, (0, 15), None)?
        }),
        _ => None,
    }
}

/// Byte range of the packed sub-scales inside one block (the block structs of
/// ggml-common.h).
fn packed_range(t: GgmlType) -> std::ops::Range<usize> {
    match t {
        GgmlType::Q2K => 0..16,
        GgmlType::Q3K => 96..108,
        GgmlType::Q4K | GgmlType::Q5K => 4..16,
        // iq4_xs: scales_h (u16), then scales_l[4].
        GgmlType::Iq4Xs => 2..8,
        GgmlType::Iq3S => 106..110,
        _ => 192..208,
    }
}

/// Nibble `j` of `p` (low half first), as iq4_xs's low scale bits and iq3_s's scales
/// are stored.
fn nibble(p: &[u8], j: usize) -> i32 {
    ((p[j / 2] >> (4 * (j % 2))) & 0xf) as i32
}

fn twelve(b: &[u8]) -> [u8; 12] {
    let mut a = [0u8; 12];
    a.copy_from_slice(b);
    a
}

/// Sub-block `j`'s (scale, min) multipliers from the packed bytes `p` of one block.
fn read_one(t: GgmlType, p: &[u8], j: usize) -> (i32, i32) {
    match t {
        GgmlType::Q2K => ((p[j] & 0xf) as i32, (p[j] >> 4) as i32),
        GgmlType::Q3K => (get_q3_scale(&twelve(p), j), 0),
        GgmlType::Q4K | GgmlType::Q5K => {
            let (s, m) = get_scale_min(&twelve(p), j);
            (s as i32, m as i32)
        }
        GgmlType::Iq4Xs => {
            let hi = (u16::from_le_bytes([p[0], p[1]]) >> (2 * j)) & 3;
            ((nibble(&p[2..], j) | ((hi as i32) << 4)) - 32, 0)
        }
        GgmlType::Iq3S => (nibble(p, j), 0),
        _ => (p[j] as i8 as i32, 0),
    }
}

/// Packs one block's multipliers (already in range) into `p`.
fn write_block(t: GgmlType, p: &mut [u8], s: &[i32], m: &[i32]) {
    let min = |j: usize| m.get(j).copied().unwrap_or(0);
    match t {
        GgmlType::Q2K => {
            for (j, o) in p.iter_mut().enumerate() {
                *o = (s[j] as u8 & 0xf) | ((min(j) as u8 & 0xf) << 4);
            }
        }
        GgmlType::Q3K => {
            // `put_q3_scale` ors the high bits in: start from zero.
            let mut a = [0u8; 12];
            for (j, &v) in s.iter().enumerate() {
                put_q3_scale(&mut a, j, (v + 32) as u8);
            }
            p.copy_from_slice(&a);
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            // Sub-blocks 0..4 own whole bytes that 4..8 then or their high bits into.
            let mut a = [0u8; 12];
            for (j, &v) in s.iter().enumerate() {
                put_scale_min(&mut a, j, v as u8, min(j) as u8);
            }
            p.copy_from_slice(&a);
        }
        GgmlType::Iq4Xs => {
            let mut hi = 0u16;
            p.fill(0);
            for (j, &v) in s.iter().enumerate() {
                let ls = (v + 32) as u8;
                p[2 + j / 2] |= (ls & 0xf) << (4 * (j % 2));
                hi |= ((ls >> 4) as u16) << (2 * j);
            }
            p[0..2].copy_from_slice(&hi.to_le_bytes());
        }
        GgmlType::Iq3S => {
            p.fill(0);
            for (j, &v) in s.iter().enumerate() {
                p[j / 2] |= (v as u8 & 0xf) << (4 * (j % 2));
            }
        }
        _ => {
            for (o, &v) in p.iter_mut().zip(s) {
                *o = v as i8 as u8;
            }
        }
    }
}

fn layout_of(t: GgmlType) -> Result<SubScaleLayout> {
    sub_scale_layout(t).ok_or_else(|| Error::unsupported(t.name(), "has no integer sub-scales"))
}

/// Every sub-block's scale and min multipliers, block by block (`blocks · count` each;
/// the mins are empty for the types without one).
pub fn sub_scales(t: GgmlType, bytes: &[u8], n: usize) -> Result<(Vec<i32>, Vec<i32>)> {
    let lay = layout_of(t)?;
    let nb = blocks_of(t, bytes, n)?;
    let r = packed_range(t);
    let mut s = Vec::with_capacity(nb * lay.count);
    let mut m = Vec::with_capacity(if lay.min.is_some() { nb * lay.count } else { 0 });
    for block in bytes.chunks_exact(t.block_bytes()) {
        for j in 0..lay.count {
            let (a, b) = read_one(t, &block[r.clone()], j);
            s.push(a);
            if lay.min.is_some() {
                m.push(b);
            }
        }
    }
    Ok((s, m))
}

/// Rewrites every block's sub-scales (and sub-mins, for the types with them) with `s`
/// and `m`, which must hold `blocks · count` multipliers inside the type's ranges.
pub fn set_sub_scales(t: GgmlType, bytes: &mut [u8], n: usize, s: &[i32], m: &[i32]) -> Result<()> {
    let lay = layout_of(t)?;
    let nb = blocks_of(t, bytes, n)?;
    let want = nb * lay.count;
    let in_range = |v: &[i32], (lo, hi): (i32, i32)| v.iter().all(|x| (lo..=hi).contains(x));
    let mins_ok = match lay.min {
        Some(r) => m.len() == want && in_range(m, r),
        None => m.is_empty(),
    };
    if s.len() != want || !in_range(s, lay.scale) || !mins_ok {
        return Err(Error::Invalid(format!(
            "{} sub-scales and {} sub-mins do not fit {nb} {} blocks of {} (scales {:?}, mins {:?})",
            s.len(),
            m.len(),
            t.name(),
            lay.count,
            lay.scale,
            lay.min
        )));
    }
    let (r, c) = (packed_range(t), lay.count);
    for (k, block) in bytes.chunks_exact_mut(t.block_bytes()).enumerate() {
        let mk = if m.is_empty() {
            &[][..]
        } else {
            &m[k * c..(k + 1) * c]
        };
        write_block(t, &mut block[r.clone()], &s[k * c..(k + 1) * c], mk);
    }
    Ok(())
}

/// A copy of `bytes` with every sub-scale and sub-min multiplier set to 1: decoded with
/// `d = 1, dmin = 0` it is the codes part, with `d = 0, dmin = 1` the min part (−1).
pub fn with_unit_sub_scales(t: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<u8>> {
    let lay = layout_of(t)?;
    let want = blocks_of(t, bytes, n)? * lay.count;
    let units = vec![lay.unit(); want];
    let ones = vec![1; if lay.min.is_some() { want } else { 0 }];
    let mut out = bytes.to_vec();
    set_sub_scales(t, &mut out, n, &units, &ones)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml;
    use crate::quant::scale_fields::basis;

    /// The types the layout table gives sub-scales: the five K-quants, iq4_xs, iq3_s.
    fn k_types() -> Vec<GgmlType> {
        let v: Vec<GgmlType> = GgmlType::ALL
            .into_iter()
            .filter(|&t| sub_scale_layout(t).is_some())
            .collect();
        assert_eq!(v.len(), 7, "{v:?}");
        v
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.45) * (1.0 + (i % 7) as f32))
            .collect()
    }

    /// Guards the packing: reading and writing back the multipliers leaves every block's
    /// bytes unchanged, for each K type.
    #[test]
    fn sub_scales_round_trip_the_bytes_llama_cpp_layout_holds() {
        let x = data(2 * 256);
        for t in k_types() {
            let bytes = ggml::quantize_rows(t, &x, 2, 256, Some(&[1.0; 256])).unwrap();
            let (s, m) = sub_scales(t, &bytes, 512).unwrap();
            let mut again = bytes.clone();
            again.iter_mut().for_each(|b| *b ^= 0x5a);
            let original_tail = bytes.clone();
            // Scrambled packed bytes are fully overwritten; the rest is restored from the
            // original so only the sub-scale bytes are under test.
            let r = packed_range(t);
            for (a, o) in again
                .chunks_exact_mut(t.block_bytes())
                .zip(original_tail.chunks_exact(t.block_bytes()))
            {
                for i in 0..t.block_bytes() {
                    if !r.contains(&i) {
                        a[i] = o[i];
                    }
                }
            }
            set_sub_scales(t, &mut again, 512, &s, &m).unwrap();
            assert_eq!(again, bytes, "{}", t.name());
        }
    }

    /// Guards the decoding identity `tune` relies on: value = d · μ(s_j) · A1 + dmin · t_j
    /// · B1, with A1 / B1 the unit-sub-scale parts, exactly as the type's dequantizer gives.
    #[test]
    fn k_values_are_scale_times_sub_scale_times_unit_codes() {
        let x = data(3 * 256);
        for t in k_types() {
            let bytes = ggml::quantize_rows(t, &x, 3, 256, Some(&[1.0; 256])).unwrap();
            let want = ggml::dequantize(t, &bytes, 768).unwrap();
            let lay = sub_scale_layout(t).unwrap();
            let (s, m) = sub_scales(t, &bytes, 768).unwrap();
            let unit = with_unit_sub_scales(t, &bytes, 768).unwrap();
            let b = basis(t, &unit, 768).unwrap();
            for (i, &w) in want.iter().enumerate() {
                let (k, j) = (i / 256, i / lay.len);
                let e = b.d[k] * (lay.offset + lay.step * s[j]) as f32;
                let mut got = e * b.a[i];
                if !m.is_empty() {
                    got += b.min[k] * m[j] as f32 * b.b[i];
                }
                assert_eq!(got, w, "{} value {i}", t.name());
            }
        }
    }

    #[test]
    fn out_of_range_or_miscounted_sub_scales_are_refused() {
        let t = GgmlType::Q3K;
        let mut bytes = ggml::quantize_rows(t, &data(256), 1, 256, None).unwrap();
        let err = set_sub_scales(t, &mut bytes, 256, &[40; 16], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("q3_k"), "{err}");
        assert!(set_sub_scales(t, &mut bytes, 256, &[1; 15], &[]).is_err());
        assert!(set_sub_scales(GgmlType::Q4K, &mut [0u8; 144], 256, &[1; 8], &[]).is_err());
        assert!(sub_scales(GgmlType::Q4_0, &[0u8; 18], 32).is_err());
    }
}
