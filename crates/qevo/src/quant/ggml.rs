//! The GGML tensor types that GGUF files hold and llama.cpp loads: one closed enum with
//! an exhaustive table of GGUF id, name, block length and block bytes, plus quantize /
//! dequantize through candle's ports of ggml's reference quantizers (the bytes llama.cpp
//! itself would write), split across rows so that large tensors use every core.

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// A GGML storage type. `F32`, `F16` and `BF16` are "blocks" of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6K,
    Q5K,
    Q5_1,
    Q5_0,
    Q4K,
    Q4_1,
    Q4_0,
    Q3K,
    Q2K,
}

/// (type, name, GGUF type id, elements per block, bytes per block). The numbers are
/// ggml's: `ggml_type_traits` in ggml.c.
const TABLE: [(GgmlType, &str, u32, usize, usize); 13] = [
    (GgmlType::F32, "f32", 0, 1, 4),
    (GgmlType::F16, "f16", 1, 1, 2),
    (GgmlType::BF16, "bf16", 30, 1, 2),
    (GgmlType::Q8_0, "q8_0", 8, 32, 34),
    (GgmlType::Q6K, "q6_k", 14, 256, 210),
    (GgmlType::Q5K, "q5_k", 13, 256, 176),
    (GgmlType::Q5_1, "q5_1", 7, 32, 24),
    (GgmlType::Q5_0, "q5_0", 6, 32, 22),
    (GgmlType::Q4K, "q4_k", 12, 256, 144),
    (GgmlType::Q4_1, "q4_1", 3, 32, 20),
    (GgmlType::Q4_0, "q4_0", 2, 32, 18),
    (GgmlType::Q3K, "q3_k", 11, 256, 110),
    (GgmlType::Q2K, "q2_k", 10, 256, 84),
];

/// GGUF ids of types we can read but never choose (no search value: Q8_1 / Q8_K are
/// dot-product intermediates). Reading them still works through candle.
const READ_ONLY: [(u32, &str, usize, usize, GgmlDType); 2] = [
    (9, "q8_1", 32, 36, GgmlDType::Q8_1),
    (15, "q8_k", 256, 292, GgmlDType::Q8K),
];

impl GgmlType {
    pub const ALL: [GgmlType; 13] = {
        let mut out = [GgmlType::F32; 13];
        let mut i = 0;
        while i < 13 {
            out[i] = TABLE[i].0;
            i += 1;
        }
        out
    };

    fn row(self) -> &'static (GgmlType, &'static str, u32, usize, usize) {
        // TABLE is exhaustive over the enum; the position always exists.
        &TABLE[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.row().1
    }
    pub fn gguf_id(self) -> u32 {
        self.row().2
    }
    pub fn block_len(self) -> usize {
        self.row().3
    }
    pub fn block_bytes(self) -> usize {
        self.row().4
    }
    /// Exact bits per weight including scales, mins and super-block scales.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }
    pub fn parse(s: &str) -> Option<GgmlType> {
        let s = s.to_ascii_lowercase();
        TABLE.iter().find(|r| r.1 == s).map(|r| r.0)
    }
    pub fn from_gguf_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|r| r.2 == id).map(|r| r.0)
    }
    /// Bytes of a `[rows, cols]` tensor; `None` when `cols` is not a whole number of blocks.
    pub fn tensor_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        if cols % self.block_len() != 0 {
            return None;
        }
        rows.checked_mul(cols / self.block_len())?
            .checked_mul(self.block_bytes())
    }
    pub(crate) fn candle(self) -> GgmlDType {
        match self {
            GgmlType::F32 => GgmlDType::F32,
            GgmlType::F16 => GgmlDType::F16,
            GgmlType::BF16 => GgmlDType::BF16,
            GgmlType::Q8_0 => GgmlDType::Q8_0,
            GgmlType::Q6K => GgmlDType::Q6K,
            GgmlType::Q5K => GgmlDType::Q5K,
            GgmlType::Q5_1 => GgmlDType::Q5_1,
            GgmlType::Q5_0 => GgmlDType::Q5_0,
            GgmlType::Q4K => GgmlDType::Q4K,
            GgmlType::Q4_1 => GgmlDType::Q4_1,
            GgmlType::Q4_0 => GgmlDType::Q4_0,
            GgmlType::Q3K => GgmlDType::Q3K,
            GgmlType::Q2K => GgmlDType::Q2K,
        }
    }
    /// Whether candle's quantizer for this type takes an importance matrix (the K-quants;
    /// for the others it would panic, so callers must not pass one).
    pub fn supports_imatrix(self) -> bool {
        matches!(self, GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K)
    }
    /// Whether this is a block-quantized (not float) type.
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A type id found in a GGUF file: one we can choose, or a read-only one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredType {
    pub name: &'static str,
    pub block_len: usize,
    pub block_bytes: usize,
    pub dtype: GgmlDType,
}

pub(crate) fn stored_type(id: u32) -> Option<StoredType> {
    if let Some(t) = GgmlType::from_gguf_id(id) {
        return Some(StoredType {
            name: t.name(),
            block_len: t.block_len(),
            block_bytes: t.block_bytes(),
            dtype: t.candle(),
        });
    }
    READ_ONLY
        .iter()
        .find(|r| r.0 == id)
        .map(|r| StoredType {
            name: r.1,
            block_len: r.2,
            block_bytes: r.3,
            dtype: r.4,
        })
}

/// Rows per parallel chunk: big enough to amortise candle's per-call setup.
fn rows_per_chunk(rows: usize, cols: usize) -> usize {
    let target_elems = 1 << 16;
    (target_elems / cols.max(1)).clamp(1, rows.max(1))
}

/// Dequantizes `bytes` holding a `[rows, cols]` tensor of stored type `dtype` to f32.
/// The caller has checked `bytes.len()` against the type's size table.
pub(crate) fn dequantize_stored(
    dtype: GgmlDType,
    block_bytes: usize,
    block_len: usize,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> candle_core::Result<Vec<f32>> {
    let row_bytes = cols / block_len * block_bytes;
    let chunk = rows_per_chunk(rows, cols);
    let parts: Vec<candle_core::Result<Vec<f32>>> = bytes
        .par_chunks(row_bytes * chunk)
        .map(|b| {
            let n_rows = b.len() / row_bytes;
            let storage = QStorage::from_data(Cow::Borrowed(b), &Device::Cpu, dtype)?;
            let q = QTensor::new(storage, (n_rows, cols))?;
            q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()
        })
        .collect();
    let mut out = Vec::with_capacity(rows * cols);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

/// Quantizes a row-major `[rows, cols]` f32 slice; `cols` must be a multiple of the block
/// length. With `imatrix` (one importance per column) K-quants weight their rounding error;
/// the other types ignore it (candle has no weighted quantizer for them).
pub(crate) fn quantize_rows(
    t: GgmlType,
    data: &[f32],
    rows: usize,
    cols: usize,
    imatrix: Option<&[f32]>,
) -> candle_core::Result<Vec<u8>> {
    let chunk = rows_per_chunk(rows, cols);
    let parts: Vec<candle_core::Result<Vec<u8>>> = data
        .par_chunks(cols * chunk)
        .map(|d| {
            let n_rows = d.len() / cols;
            let src = Tensor::from_slice(d, (n_rows, cols), &Device::Cpu)?;
            let q = match imatrix {
                Some(im) if t.supports_imatrix() => QTensor::quantize_imatrix(&src, im, t.candle())?,
                _ => QTensor::quantize(&src, t.candle())?,
            };
            Ok(q.data()?.into_owned())
        })
        .collect();
    let mut out = Vec::with_capacity(t.tensor_bytes(rows, cols).unwrap_or(0));
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_enum_discriminants() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{}", row.1);
            assert_eq!(GgmlType::parse(row.1), Some(row.0));
            assert_eq!(GgmlType::from_gguf_id(row.2), Some(row.0));
        }
    }

    #[test]
    fn sizes_agree_with_candle() {
        for t in GgmlType::ALL {
            assert_eq!(t.block_len(), t.candle().block_size(), "{t}");
            assert_eq!(t.block_bytes(), t.candle().type_size(), "{t}");
        }
        for r in READ_ONLY {
            assert_eq!(r.2, r.4.block_size());
            assert_eq!(r.3, r.4.type_size());
        }
    }

    #[test]
    fn bits_per_weight_match_llama_cpp() {
        let expect = [
            (GgmlType::Q8_0, 8.5),
            (GgmlType::Q6K, 6.5625),
            (GgmlType::Q5K, 5.5),
            (GgmlType::Q4K, 4.5),
            (GgmlType::Q3K, 3.4375),
            (GgmlType::Q2K, 2.625),
            (GgmlType::Q4_0, 4.5),
            (GgmlType::Q4_1, 5.0),
            (GgmlType::Q5_0, 5.5),
            (GgmlType::Q5_1, 6.0),
        ];
        for (t, bpw) in expect {
            assert_eq!(t.bits_per_weight(), bpw, "{t}");
        }
    }

    #[test]
    fn chunked_quantize_equals_whole_tensor_quantize() {
        let rows = 300;
        let cols = 256;
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        for t in [GgmlType::Q4K, GgmlType::Q8_0, GgmlType::Q3K] {
            let ours = quantize_rows(t, &data, rows, cols, None).unwrap();
            let src = Tensor::from_slice(&data, (rows, cols), &Device::Cpu).unwrap();
            let whole = QTensor::quantize(&src, t.candle()).unwrap();
            assert_eq!(ours, whole.data().unwrap().into_owned(), "{t}");
            assert_eq!(ours.len(), t.tensor_bytes(rows, cols).unwrap());
        }
    }
}
