//! The GGML tensor types that GGUF files hold and llama.cpp loads: one closed enum with
//! an exhaustive table (`TABLE`) of GGUF id, name, block length and bytes, compute bits,
//! decoder, quantizer, importance-matrix use and needs, and llama.cpp's fallback type, plus
//! quantize / dequantize over a tensor, split across rows so that large tensors use every
//! core.
//!
//! Quantizing is qevo's own code (`quant::ggml_quants`), written from llama.cpp's current
//! quantizers and byte-identical with `llama-quantize --pure`, with and without an
//! importance matrix, for f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
//! q5_k, q6_k, iq4_nl, iq4_xs, iq3_s, iq3_xxs, iq2_s, iq2_xs, iq2_xxs, iq1_m and iq1_s
//! (the last six with an imatrix only: llama-quantize refuses them without one, token_embd
//! and output excepted; qevo writes iq3_xxs, iq2_s and iq1_m then too, with ggml's
//! unweighted path, as llama.cpp does for those two tensors, and refuses iq2_xs, iq2_xxs
//! and iq1_s, which ggml cannot quantize without one). Measured
//! (tests/ggml_quantize_llama_cpp.rs, and tests/quant_iq.rs for iq1 edge rows): every
//! tensor of the embedded model, per type, plain and with an imatrix made by
//! `llama-imatrix`, hashes to the bytes llama.cpp's tools (llama-cpp-python 0.3.36) wrote.
//! With an importance matrix every block type but q8_0 weights its rounding by it, as
//! llama.cpp does; the values must be llama.cpp's (imatrix sums divided by their counts).
//!
//! Dequantizing goes through candle's decoders for floats, legacy and K-quants (values
//! bit-identical with llama.cpp's, tests/quant_fixtures.rs against its `gguf` package) and
//! qevo's own for the IQ types (`quant::iq`, bit-identical, tests/quant_iq.rs).
//!
//! Every type in the table has a quantizer today; the `quantizer` column stays optional so
//! that a type qevo can only read is a row without one (`Capability::DequantizeOnly`).

use super::ggml_quants::{self, RowQuantizer};
use super::iq;
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;
use rayon::prelude::*;
use std::borrow::Cow;

/// A GGML storage type. `F32`, `F16` and `BF16` are "blocks" of one element. The rows of
/// `TABLE` with a quantizer are the types qevo quantizes (`GgmlType::ALL`: all of them
/// today); `GgmlType::EVERY` lists every row.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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
    Iq4Nl,
    Iq4Xs,
    Iq3S,
    Iq3Xxs,
    Iq2S,
    Iq2Xs,
    Iq2Xxs,
    Iq1M,
    Iq1S,
}

/// What qevo can do with a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Capability {
    /// Quantize and dequantize: the search may choose it and export may write it.
    Quantize,
    /// Only read (from GGUF files): never enters a search space or a plan.
    DequantizeOnly,
}

/// How the bytes of one type are decoded.
#[derive(Debug, Clone, Copy)]
enum Codec {
    /// candle's dequantizer (floats, legacy and K-quants: bit-identical with llama.cpp's).
    Candle(GgmlDType),
    /// qevo's own block dequantizer (`quant::iq`), bit-exact with llama.cpp's.
    Block(fn(&[u8], &mut [f32])),
}
use Codec::{Block, Candle};

/// One type's properties; every property of a type is a column here, never a `match`.
struct Row {
    ty: GgmlType,
    name: &'static str,
    /// GGUF / ggml type id (`enum ggml_type` in ggml.h).
    id: u32,
    /// Elements per block and bytes per block (`ggml_type_traits` in ggml.c).
    block_len: usize,
    block_bytes: usize,
    /// The integer width the hardware computes at (cost model): 2..=8, 16 or 32. Types
    /// narrower than 2 bits (iq1_*) count as 2, the narrowest width profiles describe.
    compute_bits: u8,
    codec: Codec,
    /// qevo's quantizer (`quant::ggml_quants`, byte-identical with llama.cpp's); `None`:
    /// dequantize-only, so the type never enters a search space or a plan.
    quantizer: Option<RowQuantizer>,
    /// llama.cpp's quantizer for it weights its rounding error by an importance matrix
    /// (and so does qevo's).
    takes_imatrix: bool,
    /// `llama-quantize` refuses to write it without an importance matrix
    /// (`tensor_requires_imatrix` in llama-quant.cpp; token_embd / output excepted there).
    needs_imatrix: bool,
    /// ggml itself cannot quantize it without one (`ggml_quantize_requires_imatrix`), so
    /// neither can qevo: quantizing without one is refused.
    requires_imatrix: bool,
    /// What llama.cpp writes instead when a row is not a whole number of blocks
    /// (`tensor_type_fallback` in llama-quant.cpp). `None`: straight to f16 (32-element
    /// blocks have no smaller block to demote to; floats always fit).
    fallback: Option<GgmlType>,
}

#[allow(clippy::too_many_arguments)]
const fn row(
    ty: GgmlType,
    name: &'static str,
    id: u32,
    block_len: usize,
    block_bytes: usize,
    compute_bits: u8,
    codec: Codec,
    quantizer: Option<RowQuantizer>,
    takes_imatrix: bool,
    needs_imatrix: bool,
    requires_imatrix: bool,
    fallback: Option<GgmlType>,
) -> Row {
    Row {
        ty,
        name,
        id,
        block_len,
        block_bytes,
        compute_bits,
        codec,
        quantizer,
        takes_imatrix,
        needs_imatrix,
        requires_imatrix,
        fallback,
    }
}

use ggml_quants as gq;
use GgmlType as G;
const N_TYPES: usize = 22;
/// Columns: type, name, GGUF id, block length, block bytes, compute bits, decoder,
/// quantizer (`None`: dequantize-only), takes imatrix, needs imatrix (llama-quantize),
/// requires imatrix (ggml), fallback.
#[rustfmt::skip]
const TABLE: [Row; N_TYPES] = [
    row(G::F32,    "f32",     0,   1,   4, 32, Candle(GgmlDType::F32),  Some(gq::f32_row), false, false, false, None),
    row(G::F16,    "f16",     1,   1,   2, 16, Candle(GgmlDType::F16),  Some(gq::f16_row), false, false, false, None),
    row(G::BF16,   "bf16",   30,   1,   2, 16, Candle(GgmlDType::BF16), Some(gq::bf16_row), false, false, false, None),
    row(G::Q8_0,   "q8_0",    8,  32,  34,  8, Candle(GgmlDType::Q8_0), Some(gq::q8_0),   false, false, false, None),
    row(G::Q6K,    "q6_k",   14, 256, 210,  6, Candle(GgmlDType::Q6K),  Some(gq::q6_k),   true,  false, false, Some(G::Q8_0)),
    row(G::Q5K,    "q5_k",   13, 256, 176,  5, Candle(GgmlDType::Q5K),  Some(gq::q5_k),   true,  false, false, Some(G::Q5_1)),
    row(G::Q5_1,   "q5_1",    7,  32,  24,  5, Candle(GgmlDType::Q5_1), Some(gq::q5_1),   true,  false, false, None),
    row(G::Q5_0,   "q5_0",    6,  32,  22,  5, Candle(GgmlDType::Q5_0), Some(gq::q5_0),   true,  false, false, None),
    row(G::Q4K,    "q4_k",   12, 256, 144,  4, Candle(GgmlDType::Q4K),  Some(gq::q4_k),   true,  false, false, Some(G::Q5_0)),
    row(G::Q4_1,   "q4_1",    3,  32,  20,  4, Candle(GgmlDType::Q4_1), Some(gq::q4_1),   true,  false, false, None),
    row(G::Q4_0,   "q4_0",    2,  32,  18,  4, Candle(GgmlDType::Q4_0), Some(gq::q4_0),   true,  false, false, None),
    row(G::Q3K,    "q3_k",   11, 256, 110,  3, Candle(GgmlDType::Q3K),  Some(gq::q3_k),   true,  false, false, Some(G::Q4_0)),
    row(G::Q2K,    "q2_k",   10, 256,  84,  2, Candle(GgmlDType::Q2K),  Some(gq::q2_k),   true,  false, false, Some(G::Q4_0)),
    row(G::Iq4Nl,  "iq4_nl", 20,  32,  18,  4, Block(iq::iq4_nl),       Some(gq::iq4_nl), true,  false, false, None),
    row(G::Iq4Xs,  "iq4_xs", 23, 256, 136,  4, Block(iq::iq4_xs),       Some(gq::iq4_xs), true,  false, false, Some(G::Iq4Nl)),
    row(G::Iq3S,   "iq3_s",  21, 256, 110,  3, Block(iq::iq3_s),        Some(gq::iq3_s),  true,  false, false, Some(G::Iq4Nl)),
    row(G::Iq3Xxs, "iq3_xxs",18, 256,  98,  3, Block(iq::iq3_xxs),      Some(gq::iq3_xxs),true,  true,  false, Some(G::Iq4Nl)),
    row(G::Iq2S,   "iq2_s",  22, 256,  82,  2, Block(iq::iq2_s),        Some(gq::iq2_s),  true,  true,  false, Some(G::Iq4Nl)),
    row(G::Iq2Xs,  "iq2_xs", 17, 256,  74,  2, Block(iq::iq2_xs),       Some(gq::iq2_xs), true,  true,  true,  Some(G::Iq4Nl)),
    row(G::Iq2Xxs, "iq2_xxs",16, 256,  66,  2, Block(iq::iq2_xxs),      Some(gq::iq2_xxs),true,  true,  true,  Some(G::Iq4Nl)),
    row(G::Iq1M,   "iq1_m",  29, 256,  56,  2, Block(iq::iq1_m),        Some(gq::iq1_m),  true,  true,  false, Some(G::Iq4Nl)),
    row(G::Iq1S,   "iq1_s",  19, 256,  50,  2, Block(iq::iq1_s),        Some(gq::iq1_s),  true,  true,  true,  Some(G::Iq4Nl)),
];

/// GGUF ids of types we can read but never choose (no search value: Q8_1 / Q8_K are
/// dot-product intermediates). Reading them still works through candle.
const READ_ONLY: [(u32, &str, usize, usize, GgmlDType); 2] = [
    (9, "q8_1", 32, 36, GgmlDType::Q8_1),
    (15, "q8_k", 256, 292, GgmlDType::Q8K),
];

const fn n_quantizable() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < N_TYPES {
        if TABLE[i].quantizer.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
}
const N_QUANTIZABLE: usize = n_quantizable();

impl GgmlType {
    /// Every type qevo can quantize (and so search over and export), in table order.
    pub const ALL: [GgmlType; N_QUANTIZABLE] = {
        let mut out = [GgmlType::F32; N_QUANTIZABLE];
        let (mut i, mut n) = (0, 0);
        while i < N_TYPES {
            if TABLE[i].quantizer.is_some() {
                out[n] = TABLE[i].ty;
                n += 1;
            }
            i += 1;
        }
        out
    };
    /// Every type in the table, dequantize-only ones included (what GGUF files may hold).
    pub const EVERY: [GgmlType; N_TYPES] = {
        let mut out = [GgmlType::F32; N_TYPES];
        let mut i = 0;
        while i < N_TYPES {
            out[i] = TABLE[i].ty;
            i += 1;
        }
        out
    };

    fn row(self) -> &'static Row {
        // TABLE is exhaustive over the enum; the position always exists.
        &TABLE[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.row().name
    }
    pub fn gguf_id(self) -> u32 {
        self.row().id
    }
    pub fn block_len(self) -> usize {
        self.row().block_len
    }
    pub fn block_bytes(self) -> usize {
        self.row().block_bytes
    }
    /// Exact bits per weight including scales, mins and super-block scales.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }
    /// The integer width the hardware computes at: 2..=8, 16 or 32.
    pub fn compute_bits(self) -> u8 {
        self.row().compute_bits
    }
    pub fn capability(self) -> Capability {
        match self.row().quantizer {
            Some(_) => Capability::Quantize,
            None => Capability::DequantizeOnly,
        }
    }
    /// Whether qevo can write this type (else it only reads it from GGUF files).
    pub fn can_quantize(self) -> bool {
        self.capability() == Capability::Quantize
    }
    /// Whether `llama-quantize` refuses this type without an importance matrix.
    pub fn needs_imatrix(self) -> bool {
        self.row().needs_imatrix
    }
    /// Whether the quantizer itself cannot run without an importance matrix (ggml's
    /// `ggml_quantize_requires_imatrix`: iq2_xxs, iq2_xs, iq1_s; not iq1_m, whose check is
    /// commented out there); qevo refuses then.
    pub fn requires_imatrix(self) -> bool {
        self.row().requires_imatrix
    }
    /// The type llama.cpp writes instead when a row is not a whole number of this type's
    /// blocks (before the f16 last resort); `None` for types that go straight to f16.
    pub fn fallback(self) -> Option<GgmlType> {
        self.row().fallback
    }
    /// The type actually written for rows of `cols` values, as llama.cpp's
    /// `tensor_type_fallback` picks it: this type if its blocks divide the row, else its
    /// `fallback` if that one's blocks do, else f16.
    pub fn for_cols(self, cols: usize) -> GgmlType {
        if cols.is_multiple_of(self.block_len()) {
            return self;
        }
        match self.fallback() {
            Some(f) if cols.is_multiple_of(f.block_len()) => f,
            _ => GgmlType::F16,
        }
    }
    /// Parses any table name (dequantize-only types included).
    pub fn parse(s: &str) -> Option<GgmlType> {
        let s = s.to_ascii_lowercase();
        TABLE.iter().find(|r| r.name == s).map(|r| r.ty)
    }
    pub fn from_gguf_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|r| r.id == id).map(|r| r.ty)
    }
    /// Bytes of a `[rows, cols]` tensor stored as this very type; `None` when `cols` is
    /// not a whole number of blocks (see `for_cols` for what llama.cpp writes then).
    pub fn tensor_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return None;
        }
        rows.checked_mul(cols / self.block_len())?
            .checked_mul(self.block_bytes())
    }
    /// candle's name for this type (for callers that use candle's quantized tensors);
    /// `None` for the IQ types, which candle does not have.
    pub fn candle_dtype(self) -> Option<GgmlDType> {
        match self.row().codec {
            Candle(d) => Some(d),
            Block(_) => None,
        }
    }
    /// Whether llama.cpp's quantizer for this type (and so qevo's) weights its rounding by
    /// an importance matrix: every block type but q8_0.
    pub fn supports_imatrix(self) -> bool {
        self.row().takes_imatrix
    }
    /// Whether this is a block-quantized (not float) type.
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
    fn decoder(self) -> Decoder {
        match self.row().codec {
            Candle(d) => Decoder::Candle(d),
            Block(f) => Decoder::Block(f),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a stored type is decoded: candle's dequantizer or one of qevo's block decoders.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decoder {
    Candle(GgmlDType),
    Block(fn(&[u8], &mut [f32])),
}

/// A type id found in a GGUF file: one in the table, or a read-only one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredType {
    pub name: &'static str,
    pub block_len: usize,
    pub block_bytes: usize,
    pub dtype: Decoder,
}

pub(crate) fn stored_type(id: u32) -> Option<StoredType> {
    if let Some(t) = GgmlType::from_gguf_id(id) {
        return Some(StoredType {
            name: t.name(),
            block_len: t.block_len(),
            block_bytes: t.block_bytes(),
            dtype: t.decoder(),
        });
    }
    READ_ONLY.iter().find(|r| r.0 == id).map(|r| StoredType {
        name: r.1,
        block_len: r.2,
        block_bytes: r.3,
        dtype: Decoder::Candle(r.4),
    })
}

/// Dequantizes `n_elements` values of type `t` from exactly the bytes that hold them
/// (`n_elements / block_len` blocks), for every type in the table: candle's decoder for
/// floats, legacy and K-quants, qevo's for the IQ types (bit-exact with llama.cpp's).
/// Errors, never panics, when `n_elements` is not a whole number of blocks or `bytes`
/// has another length.
pub fn dequantize(t: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    if !n_elements.is_multiple_of(t.block_len()) {
        return Err(Error::Invalid(format!(
            "{n_elements} {t} values are not a whole number of {}-value blocks",
            t.block_len()
        )));
    }
    let blocks = n_elements / t.block_len();
    let want = blocks.checked_mul(t.block_bytes());
    if want != Some(bytes.len()) {
        return Err(Error::Invalid(format!(
            "{blocks} {t} blocks need {} bytes, got {}",
            blocks.saturating_mul(t.block_bytes()),
            bytes.len()
        )));
    }
    if blocks == 0 {
        return Ok(Vec::new());
    }
    Ok(dequantize_stored(
        t.decoder(),
        t.block_bytes(),
        t.block_len(),
        bytes,
        blocks,
        t.block_len(),
    )?)
}

/// Rows per parallel chunk: big enough to amortise the per-task setup (candle's, when
/// decoding).
pub(crate) fn rows_per_chunk(rows: usize, cols: usize) -> usize {
    let target_elems = 1 << 16;
    (target_elems / cols.max(1)).clamp(1, rows.max(1))
}

/// Dequantizes `bytes` holding a `[rows, cols]` tensor of stored type `dtype` to f32.
/// The caller has checked `bytes.len()` against the type's size table.
pub(crate) fn dequantize_stored(
    dtype: Decoder,
    block_bytes: usize,
    block_len: usize,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> candle_core::Result<Vec<f32>> {
    let row_bytes = cols / block_len * block_bytes;
    let need = rows.checked_mul(row_bytes);
    if !cols.is_multiple_of(block_len) || need != Some(bytes.len()) {
        candle_core::bail!(
            "{} bytes do not hold [{rows}, {cols}] in blocks of {block_len} values / {block_bytes} bytes",
            bytes.len()
        );
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let chunk = rows_per_chunk(rows, cols);
    let dtype = match dtype {
        Decoder::Candle(d) => d,
        Decoder::Block(f) => {
            let mut out = vec![0f32; rows * cols];
            out.par_chunks_mut(chunk * cols)
                .zip(bytes.par_chunks(chunk * row_bytes))
                .for_each(|(o, b)| {
                    for (y, x) in o
                        .chunks_exact_mut(block_len)
                        .zip(b.chunks_exact(block_bytes))
                    {
                        f(x, y);
                    }
                });
            return Ok(out);
        }
    };
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

/// Quantizes a row-major `[rows, cols]` f32 slice with qevo's own quantizers
/// (`quant::ggml_quants`, byte-identical with `llama-quantize`), rows in parallel. `cols`
/// must be a whole number of blocks and `t` quantizable (`GgmlType::can_quantize`). With
/// `imatrix` (one importance per column, llama.cpp's imatrix values) the types llama.cpp
/// weights (`GgmlType::supports_imatrix`) weight their rounding error by it; q8_0 and the
/// float types ignore it, as llama.cpp does. Errors, never panics, on any mismatch.
pub(crate) fn quantize_rows(
    t: GgmlType,
    data: &[f32],
    rows: usize,
    cols: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let Some(quantize) = t.row().quantizer else {
        return Err(Error::unsupported(
            format!("quantizing {t}"),
            "qevo cannot quantize this type yet (dequantize only)",
        ));
    };
    let Some(total) = t.tensor_bytes(rows, cols) else {
        return Err(Error::Invalid(format!(
            "a row of {cols} values is not a whole number of {t} blocks ({})",
            t.block_len()
        )));
    };
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "{} values do not fill [{rows}, {cols}]",
            data.len()
        )));
    }
    if imatrix.is_none() && t.requires_imatrix() {
        return Err(Error::Invalid(format!(
            "{t} cannot be quantized without an importance matrix (as in llama.cpp)"
        )));
    }
    if imatrix.is_some_and(|im| im.len() != cols) {
        return Err(Error::Invalid(format!(
            "importance matrix has {} values, rows have {cols}",
            imatrix.map_or(0, <[f32]>::len)
        )));
    }
    let mut out = vec![0u8; total];
    if total == 0 {
        return Ok(out);
    }
    let row_bytes = total / rows;
    let chunk = rows_per_chunk(rows, cols);
    out.par_chunks_mut(chunk * row_bytes)
        .zip(data.par_chunks(chunk * cols))
        .for_each(|(o, d)| {
            for (y, x) in o.chunks_exact_mut(row_bytes).zip(d.chunks_exact(cols)) {
                quantize(x, imatrix, y);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_enum_discriminants() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.ty as usize, i, "{}", row.name);
            assert_eq!(GgmlType::parse(row.name), Some(row.ty));
            assert_eq!(GgmlType::from_gguf_id(row.id), Some(row.ty));
        }
        assert!(GgmlType::ALL.iter().all(|t| t.can_quantize()));
        assert_eq!(
            GgmlType::EVERY.iter().filter(|t| t.can_quantize()).count(),
            GgmlType::ALL.len()
        );
    }

    #[test]
    fn sizes_agree_with_candle() {
        for t in GgmlType::EVERY {
            if let Some(d) = t.candle_dtype() {
                assert_eq!(t.block_len(), d.block_size(), "{t}");
                assert_eq!(t.block_bytes(), d.type_size(), "{t}");
            }
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
            // IQ sizes: the static_asserts on the block structs in ggml-common.h.
            (GgmlType::Iq4Nl, 4.5),
            (GgmlType::Iq4Xs, 4.25),
            (GgmlType::Iq3S, 3.4375),
            (GgmlType::Iq3Xxs, 3.0625),
            (GgmlType::Iq2S, 2.5625),
            (GgmlType::Iq2Xs, 2.3125),
            (GgmlType::Iq2Xxs, 2.0625),
            (GgmlType::Iq1M, 1.75),
            (GgmlType::Iq1S, 1.5625),
        ];
        for (t, bpw) in expect {
            assert_eq!(t.bits_per_weight(), bpw, "{t}");
        }
    }

    #[test]
    fn chunked_quantize_equals_row_by_row_quantize() {
        let rows = 300;
        let cols = 256;
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let im: Vec<f32> = (0..cols).map(|i| 0.5 + (i % 7) as f32).collect();
        for t in GgmlType::ALL {
            for imatrix in [None, Some(&im[..])] {
                if imatrix.is_none() && t.requires_imatrix() {
                    assert!(quantize_rows(t, &data, rows, cols, None).is_err(), "{t}");
                    continue;
                }
                let ours = quantize_rows(t, &data, rows, cols, imatrix).unwrap();
                let rb = t.tensor_bytes(1, cols).unwrap();
                let mut serial = vec![0u8; rb * rows];
                for (y, x) in serial.chunks_exact_mut(rb).zip(data.chunks_exact(cols)) {
                    (t.row().quantizer.unwrap())(x, imatrix, y);
                }
                assert_eq!(ours, serial, "{t}");
                assert_eq!(ours.len(), t.tensor_bytes(rows, cols).unwrap());
            }
        }
    }

    #[test]
    fn quantize_rows_refuses_ragged_rows_and_wrong_lengths() {
        let t = GgmlType::Q4K;
        assert!(quantize_rows(t, &[0.0; 288], 1, 288, None).is_err());
        assert!(quantize_rows(t, &[0.0; 255], 1, 256, None).is_err());
        assert!(quantize_rows(t, &[0.0; 256], 1, 256, Some(&[1.0; 3])).is_err());
        assert_eq!(
            quantize_rows(t, &[0.0; 256], 1, 256, None).unwrap().len(),
            144
        );
    }

    #[test]
    fn fallbacks_follow_llama_cpp_tensor_type_fallback() {
        use GgmlType as G;
        // 576 = 18·32: every 256-block type falls back; 32-block types fit.
        let expect = [
            (G::Q4K, G::Q5_0),
            (G::Q5K, G::Q5_1),
            (G::Q6K, G::Q8_0),
            (G::Q3K, G::Q4_0),
            (G::Q2K, G::Q4_0),
            (G::Iq4Xs, G::Iq4Nl),
            (G::Iq2Xxs, G::Iq4Nl),
            (G::Iq1M, G::Iq4Nl),
            (G::Q4_1, G::Q4_1),
            (G::Q8_0, G::Q8_0),
            (G::F32, G::F32),
        ];
        for (t, want) in expect {
            assert_eq!(t.for_cols(576), want, "{t}");
            assert_eq!(t.for_cols(512), t, "{t}");
        }
        // 100 is not a multiple of 32: everything block-quantized ends at f16.
        for t in GgmlType::EVERY.into_iter().filter(|t| t.is_quantized()) {
            assert_eq!(t.for_cols(100), G::F16, "{t}");
        }
        assert_eq!(G::BF16.for_cols(100), G::BF16);
    }

    #[test]
    fn dequantize_rejects_short_or_ragged_input_without_panicking() {
        for t in GgmlType::EVERY {
            let n = 2 * t.block_len();
            let bytes = vec![0u8; 2 * t.block_bytes()];
            assert!(dequantize(t, &bytes[..bytes.len() - 1], n).is_err(), "{t}");
            assert!(
                dequantize(t, &bytes, n + 1).is_err() || t.block_len() == 1,
                "{t}"
            );
            let y = dequantize(t, &bytes, n).unwrap();
            assert_eq!(y.len(), n, "{t}");
        }
        assert!(dequantize(GgmlType::Iq2Xxs, &[], usize::MAX - 255).is_err());
    }

    #[test]
    fn every_table_type_quantizes_and_iq1_s_alone_of_the_iq1_pair_requires_an_imatrix() {
        assert_eq!(GgmlType::ALL.len(), GgmlType::EVERY.len());
        assert_eq!(GgmlType::Iq1S.capability(), Capability::Quantize);
        // ggml_quantize_requires_imatrix: iq1_s yes, iq1_m no (llama-quantize still refuses
        // the IQ1_M ftype without one, token_embd / output excepted).
        assert!(GgmlType::Iq1S.requires_imatrix() && GgmlType::Iq1S.needs_imatrix());
        assert!(!GgmlType::Iq1M.requires_imatrix() && GgmlType::Iq1M.needs_imatrix());
        assert!(quantize_rows(GgmlType::Iq1S, &[0.0; 256], 1, 256, None).is_err());
        assert_eq!(
            quantize_rows(GgmlType::Iq1M, &[0.5; 256], 1, 256, None)
                .unwrap()
                .len(),
            56
        );
    }
}
