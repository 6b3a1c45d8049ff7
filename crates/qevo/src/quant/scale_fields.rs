//! Where each GGML block type keeps its f16 block scale (`d`) and, for the asymmetric
//! types, its f16 min scale (`dmin` / `m`), as byte offsets inside one block.
//!
//! Every quantized type llama.cpp writes decodes as `d · A + m · B`, where `A` and `B`
//! depend only on the block's codes and sub-scales. Knowing where `d` and `m` sit lets
//! `tune` train them for any type through the type's own dequantizer, without a
//! per-type decoder: `A` is the block decoded with `d = 1, m = 0`, `B` with `d = 0, m = 1`
//! (`basis`). The offsets are the block structs of ggml-common.h; a unit test checks
//! the identity for every type qevo quantizes.

use super::ggml::{self, GgmlType};
use crate::error::{Error, Result};
use half::f16;

/// Byte offsets of the f16 scale fields in one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleFields {
    /// The block scale `d`.
    pub d: usize,
    /// The min scale (`dmin` of q2_k/q4_k/q5_k, `m` of q4_1/q5_1), where the type has one.
    pub min: Option<usize>,
}

/// The scale fields of `t`, or `None` for float types and iq1_m (whose scale is split
/// across its sub-scale nibbles, so it is not one f16 field).
pub fn scale_fields(t: GgmlType) -> Option<ScaleFields> {
    use GgmlType as G;
    let f = |d, min| Some(ScaleFields { d, min });
    match t {
        G::F32 | G::F16 | G::BF16 | G::Iq1M => None,
        G::Q4_1 | G::Q5_1 | G::Q4K | G::Q5K => f(0, Some(2)),
        // q2_k: scales[16], qs[64], then d and dmin.
        G::Q2K => f(80, Some(82)),
        // q3_k: hmask[32], qs[64], scales[12], then d.
        G::Q3K => f(108, None),
        // q6_k: ql[128], qh[64], scales[16], then d.
        G::Q6K => f(208, None),
        G::Q8_0
        | G::Q5_0
        | G::Q4_0
        | G::Iq4Nl
        | G::Iq4Xs
        | G::Iq3S
        | G::Iq3Xxs
        | G::Iq2S
        | G::Iq2Xs
        | G::Iq2Xxs
        | G::Iq1S => f(0, None),
    }
}

/// One tensor's bytes split into its scale fields and the parts they multiply.
#[derive(Debug, Clone)]
pub struct Basis {
    /// Per block: `d`, then `m` (0 where the type has none), as stored (f16 → f32).
    pub d: Vec<f32>,
    pub min: Vec<f32>,
    /// Decoded with `d = 1, m = 0`: the part `d` multiplies.
    pub a: Vec<f32>,
    /// Decoded with `d = 0, m = 1`: the part `m` multiplies (empty without a min).
    pub b: Vec<f32>,
}

fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn write_f16(bytes: &mut [u8], at: usize, v: f16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Checks `bytes` hold whole blocks of `t` for `n` values and returns the block count.
pub(crate) fn blocks_of(t: GgmlType, bytes: &[u8], n: usize) -> Result<usize> {
    let (bl, bb) = (t.block_len(), t.block_bytes());
    if !n.is_multiple_of(bl) || bytes.len() != n / bl * bb {
        return Err(Error::Invalid(format!(
            "{} bytes are not whole {} blocks of {n} values",
            bytes.len(),
            t.name()
        )));
    }
    Ok(n / bl)
}

fn fields_of(t: GgmlType) -> Result<ScaleFields> {
    scale_fields(t).ok_or_else(|| Error::unsupported(t.name(), "has no f16 block scale"))
}

/// Every block's stored `d` and `m` (0 where the type has no min), as f32.
pub fn stored_scales(t: GgmlType, bytes: &[u8], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let fields = fields_of(t)?;
    let nb = blocks_of(t, bytes, n)?;
    let bb = t.block_bytes();
    let field = |at: usize| (0..nb).map(|k| read_f16(bytes, k * bb + at)).collect();
    Ok((
        field(fields.d),
        fields.min.map_or_else(|| vec![0.0; nb], field),
    ))
}

/// Splits a tensor of `t` (`n` values) into `d · A + m · B`.
pub fn basis(t: GgmlType, bytes: &[u8], n: usize) -> Result<Basis> {
    let fields = fields_of(t)?;
    let (d, min) = stored_scales(t, bytes, n)?;
    let (nb, bb) = (d.len(), t.block_bytes());
    let decoded_with = |dv: f16, mv: f16| -> Result<Vec<f32>> {
        let mut b = bytes.to_vec();
        for k in 0..nb {
            write_f16(&mut b, k * bb + fields.d, dv);
            if let Some(m) = fields.min {
                write_f16(&mut b, k * bb + m, mv);
            }
        }
        ggml::dequantize(t, &b, n)
    };
    let a = decoded_with(f16::ONE, f16::ZERO)?;
    let b = match fields.min {
        Some(_) => decoded_with(f16::ZERO, f16::ONE)?,
        None => Vec::new(),
    };
    Ok(Basis { d, min, a, b })
}

/// Rewrites every block's scale fields with `d` and `min` (one per block, rounded to f16,
/// as the format stores them); `min` is ignored for types without one.
pub fn set_scales(t: GgmlType, bytes: &mut [u8], n: usize, d: &[f32], min: &[f32]) -> Result<()> {
    let fields = fields_of(t)?;
    let nb = blocks_of(t, bytes, n)?;
    if d.len() != nb || (fields.min.is_some() && min.len() != nb) {
        return Err(Error::Invalid(format!(
            "{} scales for {nb} {} blocks",
            d.len(),
            t.name()
        )));
    }
    let bb = t.block_bytes();
    for k in 0..nb {
        write_f16(bytes, k * bb + fields.d, f16::from_f32(d[k]));
        if let Some(m) = fields.min {
            write_f16(bytes, k * bb + m, f16::from_f32(min[k]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.45) * (1.0 + (i % 5) as f32))
            .collect()
    }

    /// Guards the offsets: for every type qevo quantizes that has a scale field, the
    /// decoded tensor equals `d · A + m · B` (to f32 rounding of the product order).
    #[test]
    fn every_quantized_type_decodes_as_scale_times_basis() {
        let (rows, cols) = (3, 512);
        let x = data(rows * cols);
        let im: Vec<f32> = (0..cols).map(|c| 1.0 + (c % 3) as f32).collect();
        for t in GgmlType::ALL {
            let Some(fields) = scale_fields(t) else {
                assert!(!t.is_quantized() || t == GgmlType::Iq1M, "{}", t.name());
                continue;
            };
            let bytes = ggml::quantize_rows(t, &x, rows, cols, Some(&im)).unwrap();
            let want = ggml::dequantize(t, &bytes, rows * cols).unwrap();
            let b = basis(t, &bytes, rows * cols).unwrap();
            let bl = t.block_len();
            let mut worst = 0f32;
            for (i, &w) in want.iter().enumerate() {
                let k = i / bl;
                let m = b.b.get(i).map_or(0.0, |&v| v * b.min[k]);
                let got = b.d[k] * b.a[i] + m;
                worst = worst.max((got - w).abs() / (w.abs() + 1e-3));
            }
            assert!(worst < 1e-5, "{}: worst relative error {worst}", t.name());
            assert_eq!(fields.min.is_some(), !b.b.is_empty());
        }
    }

    #[test]
    fn set_scales_writes_the_fields_basis_reads() {
        let t = GgmlType::Q4K;
        let x = data(512);
        let mut bytes = ggml::quantize_rows(t, &x, 1, 512, None).unwrap();
        let b = basis(t, &bytes, 512).unwrap();
        let d2: Vec<f32> = b.d.iter().map(|v| v * 1.25).collect();
        let m2: Vec<f32> = b.min.iter().map(|v| v * 0.5).collect();
        set_scales(t, &mut bytes, 512, &d2, &m2).unwrap();
        let b2 = basis(t, &bytes, 512).unwrap();
        for k in 0..2 {
            assert_eq!(b2.d[k], f16::from_f32(d2[k]).to_f32());
            assert_eq!(b2.min[k], f16::from_f32(m2[k]).to_f32());
        }
        assert_eq!(b2.a, b.a, "codes and sub-scales untouched");
    }

    #[test]
    fn float_types_and_iq1_m_have_no_scale_field() {
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Iq1M] {
            assert!(scale_fields(t).is_none());
            assert!(basis(t, &[0u8; 8], 2).is_err());
        }
    }
}
