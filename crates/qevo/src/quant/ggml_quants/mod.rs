//! qevo's own quantizers for the GGML types, written from llama.cpp's current reference
//! quantizers (ggml-quants.c, as `ggml_quantize_chunk` calls them for `llama-quantize`)
//! and byte-identical with them (tests/ggml_quantize_llama_cpp.rs: every tensor of the
//! embedded model, with and without an importance matrix, against `llama-quantize --pure`).
//!
//! One function per type quantizes one row: `(row, importance, out)`, the importance
//! being one weight per column of the row (llama.cpp's imatrix values, already divided by
//! their counts) or `None`, and `out` exactly the row's bytes. A row is the unit because
//! the weighted legacy quantizers mix in the row's mean square. Which path runs with and
//! without an importance matrix follows `ggml_quantize_chunk` type by type; see each module.
//!
//! * `common`: rounding, f16 conversion and the scale searches the types share;
//! * `legacy`: q4_0, q4_1, q5_0, q5_1, q8_0;
//! * `kquants`: q2_k, q3_k, q4_k, q5_k, q6_k;
//! * `iquants`: iq4_nl, iq4_xs;
//! * `iq3`: iq3_xxs, iq3_s, `iq2`: iq2_xxs, iq2_xs, iq2_s, and `iq1`: iq1_s, iq1_m, on
//!   the lattice searches of `grid`.

mod common;
mod grid;
mod iq1;
mod iq2;
mod iq3;
mod iquants;
mod kquants;
mod legacy;

pub(crate) use iq1::{iq1_m, iq1_s};
pub(crate) use iq2::{iq2_s, iq2_xs, iq2_xxs};
pub(crate) use iq3::{iq3_s, iq3_xxs};
pub(crate) use iquants::{iq4_nl, iq4_xs};
pub(crate) use kquants::{
    get_q3_scale, get_scale_min, put_q3_scale, put_scale_min, q2_k, q3_k, q4_k, q5_k, q6_k,
};
pub(crate) use legacy::{levels_of, q4_0, q4_1, q5_0, q5_1, q8_0, write_levels, Levels};

/// Quantizes one row (`x.len()` a whole number of blocks) into exactly its bytes, with an
/// optional importance per column.
pub(crate) type RowQuantizer = fn(&[f32], Option<&[f32]>, &mut [u8]);

/// f32: the values' little-endian bytes.
pub(crate) fn f32_row(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// f16, rounded to nearest even (`GGML_FP32_TO_FP16`).
pub(crate) fn f16_row(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&common::fp16_bytes(*v));
    }
}

/// bf16, rounded to nearest even (`GGML_FP32_TO_BF16` for finite values; qevo refuses
/// non-finite input before quantizing).
pub(crate) fn bf16_row(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
    }
}
