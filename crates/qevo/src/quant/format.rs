//! `WeightFormat`: the one closed set of weight formats the search chooses from (generic
//! integer formats and GGML block formats), with their names, exact sizes, what each
//! becomes at a tensor shape (`resolve`), and quantize / dequantize / pack through one
//! entry point that rejects non-finite input with an error naming the tensor.
//!
//! Every format applies to every non-empty shape. Generic group formats give each row a
//! ragged last group (`quant::int`). A GGML type whose block does not divide the row is
//! written as the type llama.cpp falls back to (`GgmlType::for_cols`): `resolve` is the
//! one function that says which, and sizes, quantization and export all go through it.

use super::ggml::{self, GgmlType};
use super::int::{Granularity, IntFormat, BITS, GROUP_SIZES, SCHEMES};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// A weight format: generic integer or GGML block type (which includes f32/f16/bf16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFormat {
    Int(IntFormat),
    Ggml(GgmlType),
}

/// What a format becomes at one tensor shape: the format asked for and the one actually
/// written (they differ only where a GGML type fell back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Resolved {
    pub requested: WeightFormat,
    pub written: WeightFormat,
}

impl Resolved {
    /// Whether the written format is a fallback for the requested one.
    pub fn fell_back(&self) -> bool {
        self.requested != self.written
    }
}

/// A quantized tensor: the format its bytes are in (the *written* one, after any
/// fallback), shape and packed bytes (GGML: exactly the bytes a GGUF file holds for it;
/// generic: the layout in `quant::int`).
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

/// How a GGML block type chooses its scales and codes. Every variant writes a standard
/// tensor of the same type and size; they differ in which error they minimise.
#[derive(Debug, Clone, Copy, Default)]
pub enum Rounding<'a> {
    /// Each block's own weight error, unweighted (`llama-quantize` without `--imatrix`).
    #[default]
    Plain,
    /// Each block's weight error weighted by these importances, one per column
    /// (`llama-quantize --imatrix`).
    Imatrix(&'a [f32]),
    /// qevo's output-error rounding (`quant::gptq`): error carried across blocks under the
    /// input moments `hessian`, blocks weighted by `imatrix` or else the moments' diagonal.
    /// The generic integer formats ignore it.
    Output {
        hessian: &'a super::gptq::Hessian,
        imatrix: Option<&'a [f32]>,
    },
}

impl<'a> Rounding<'a> {
    pub fn from_imatrix(imatrix: Option<&'a [f32]>) -> Self {
        imatrix.map_or(Rounding::Plain, Rounding::Imatrix)
    }

    /// The importance matrix the blocks are weighted by, when one was given.
    pub fn imatrix(&self) -> Option<&'a [f32]> {
        match *self {
            Rounding::Plain => None,
            Rounding::Imatrix(im) => Some(im),
            Rounding::Output { imatrix, .. } => imatrix,
        }
    }
}

const UNNAMED: &str = "(unnamed)";

fn tensor_err(name: &str, msg: impl Into<String>) -> Error {
    Error::Tensor {
        path: std::path::PathBuf::new(),
        tensor: name.to_string(),
        msg: msg.into(),
    }
}

/// Fails on the first NaN or ±Inf, naming its position.
fn check_finite(name: &str, data: &[f32], cols: usize) -> Result<()> {
    let ok = data
        .par_chunks(1 << 16)
        .all(|c| c.iter().fold(true, |a, x| a & x.is_finite()));
    if ok {
        return Ok(());
    }
    let i = data.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(tensor_err(
        name,
        format!(
            "non-finite value {} at row {}, column {}",
            data[i],
            i / cols.max(1),
            i % cols.max(1)
        ),
    ))
}

impl WeightFormat {
    /// Every format: the 105 generic ones (bits × scheme × granularity) then the 13 GGML ones.
    pub fn all() -> Vec<WeightFormat> {
        let mut v = Vec::new();
        for bits in BITS {
            for (scheme, _) in SCHEMES {
                let grans = [Granularity::Tensor, Granularity::Channel]
                    .into_iter()
                    .chain(GROUP_SIZES.iter().map(|&g| Granularity::Group(g)));
                for granularity in grans {
                    v.push(WeightFormat::Int(IntFormat {
                        bits,
                        scheme,
                        granularity,
                    }));
                }
            }
        }
        v.extend(GgmlType::ALL.iter().map(|&t| WeightFormat::Ggml(t)));
        v
    }

    /// Parses `int4-asym-g128`, `int8-sym-channel`, `int3-pow2-tensor`, `q4_k`, `f16`, ...
    pub fn parse(s: &str) -> Result<WeightFormat> {
        let l = s.trim().to_ascii_lowercase();
        if let Some(t) = GgmlType::parse(&l) {
            return Ok(WeightFormat::Ggml(t));
        }
        let bad = || {
            Error::Invalid(format!(
                "unknown weight format `{s}` (expected int{{2..8}}-{{sym|asym|pow2}}-{{tensor|channel|g32|g64|g128}} \
                 or one of {})",
                GgmlType::EVERY.map(|t| t.name()).join(", ")
            ))
        };
        let mut parts = l.split('-');
        let (Some(b), Some(sc), Some(gr), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let bits: u8 = b
            .strip_prefix("int")
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)?;
        if !BITS.contains(&bits) {
            return Err(bad());
        }
        let scheme = SCHEMES
            .iter()
            .find(|r| r.1 == sc)
            .map(|r| r.0)
            .ok_or_else(bad)?;
        let granularity = match gr {
            g if g == Granularity::Tensor.kind() => Granularity::Tensor,
            g if g == Granularity::Channel.kind() => Granularity::Channel,
            g => {
                let n: u32 = g
                    .strip_prefix('g')
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(bad)?;
                if !GROUP_SIZES.contains(&n) {
                    return Err(bad());
                }
                Granularity::Group(n)
            }
        };
        Ok(WeightFormat::Int(IntFormat {
            bits,
            scheme,
            granularity,
        }))
    }

    pub fn name(&self) -> String {
        match self {
            WeightFormat::Ggml(t) => t.name().to_string(),
            WeightFormat::Int(f) => format!(
                "int{}-{}-{}",
                f.bits,
                f.scheme.name(),
                f.granularity.format_part()
            ),
        }
    }

    /// Bits per weight including scales, mins and zero points, for rows of `cols` weights
    /// (exact for GGML, group and channel formats; see `IntFormat::bits_per_weight`).
    pub fn bits_per_weight(&self, cols: usize) -> f64 {
        match self {
            WeightFormat::Ggml(t) => t.bits_per_weight(),
            WeightFormat::Int(f) => f.bits_per_weight(cols),
        }
    }

    /// The format actually written for a `[rows, cols]` tensor, the one function that
    /// sizes, quantization and export agree on: generic formats are written as themselves
    /// (ragged last groups), GGML types as `GgmlType::for_cols` picks (llama.cpp's
    /// fallback: q4_k→q5_0, q5_k→q5_1, q6_k→q8_0, q2_k/q3_k→q4_0, iq*→iq4_nl, and f16
    /// where even that block does not divide the row). Errors only on an empty shape.
    pub fn resolve(self, rows: usize, cols: usize) -> Result<Resolved> {
        if rows == 0 || cols == 0 {
            return Err(Error::Invalid(format!(
                "format {self} cannot store an empty tensor [{rows}, {cols}]"
            )));
        }
        let written = match self {
            WeightFormat::Ggml(t) => WeightFormat::Ggml(t.for_cols(cols)),
            WeightFormat::Int(_) => self,
        };
        Ok(Resolved {
            requested: self,
            written,
        })
    }

    /// Exact bytes of a `[rows, cols]` tensor stored as this format asks (after any
    /// fallback, see `resolve`); `None` only for an empty shape or a size past `u64`.
    pub fn tensor_bytes(&self, rows: usize, cols: usize) -> Option<u64> {
        match self.resolve(rows, cols).ok()?.written {
            WeightFormat::Ggml(t) => t.tensor_bytes(rows, cols).map(|b| b as u64),
            WeightFormat::Int(f) => f.tensor_bytes(rows, cols),
        }
    }

    /// Whether a `[rows, cols]` tensor is written in this very format, without a fallback:
    /// GGML blocks run along rows, so `cols` must be a multiple of the block length (32
    /// for q*_0/q*_1/q8_0/iq4_nl, 256 for K- and most IQ types); generic formats apply to
    /// every non-empty shape. Every format can *store* every non-empty shape (`resolve`);
    /// this says whether it does so as itself, so a search space need not list both a
    /// type and its fallback.
    pub fn applies_to(&self, rows: usize, cols: usize) -> bool {
        self.resolve(rows, cols).is_ok_and(|r| !r.fell_back())
    }

    /// Whether qevo can quantize to this format (every GGML type in the table can today).
    pub fn can_quantize(&self) -> bool {
        self.ggml().is_none_or(GgmlType::can_quantize)
    }

    /// The width the hardware computes at: 2..=8, 16 or 32.
    pub fn compute_bits(&self) -> u8 {
        match self {
            WeightFormat::Int(f) => f.bits,
            WeightFormat::Ggml(t) => t.compute_bits(),
        }
    }

    pub fn ggml(&self) -> Option<GgmlType> {
        match self {
            WeightFormat::Ggml(t) => Some(*t),
            WeightFormat::Int(_) => None,
        }
    }

    /// Whether quantizing needs an importance matrix (iq2_xxs, iq2_xs, iq1_s: llama.cpp's
    /// quantizers cannot run without one, so `quantize` refuses then, naming the tensor).
    pub fn requires_imatrix(&self) -> bool {
        self.ggml().is_some_and(GgmlType::requires_imatrix)
    }

    /// Whether the quantizer uses an importance matrix (the GGML types llama.cpp weights:
    /// all block types but q8_0; other formats ignore one).
    pub fn uses_imatrix(&self) -> bool {
        self.ggml().is_some_and(GgmlType::supports_imatrix)
    }

    fn check_input(
        &self,
        name: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<()> {
        if data.len() != rows * cols {
            return Err(tensor_err(
                name,
                format!("{} values for shape [{rows}, {cols}]", data.len()),
            ));
        }
        if rows == 0 || cols == 0 {
            return Err(tensor_err(
                name,
                format!("format {self} cannot store an empty tensor [{rows}, {cols}]"),
            ));
        }
        if !self.can_quantize() {
            return Err(tensor_err(
                name,
                format!("qevo can read {self} but not quantize to it yet"),
            ));
        }
        if let Some(im) = imatrix {
            if im.len() != cols {
                return Err(tensor_err(
                    name,
                    format!(
                        "importance matrix has {} values, tensor has {cols} columns",
                        im.len()
                    ),
                ));
            }
            if im.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(tensor_err(
                    name,
                    "importance matrix has negative or non-finite values",
                ));
            }
        }
        check_finite(name, data, cols)
    }

    /// The importance matrix handed to the quantizer: exactly the values given (what
    /// llama-quantize uses, so the bytes agree), or none when the format does not weight
    /// by one or the matrix is all zero (it carries no information; llama.cpp would zero
    /// every weighted block with it).
    fn usable_imatrix<'a>(&self, imatrix: Option<&'a [f32]>) -> Option<&'a [f32]> {
        imatrix
            .filter(|_| self.uses_imatrix())
            .filter(|im| im.iter().any(|&v| v > 0.0))
    }

    /// Quantizes `[rows, cols]` row-major data into the format `resolve` writes (the
    /// result's `format`), llama.cpp's way: weighted by `imatrix` where the type takes
    /// one; `name` appears in any error.
    pub fn quantize_named(
        &self,
        name: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<Packed> {
        self.quantize_rounded(name, data, rows, cols, Rounding::from_imatrix(imatrix))
    }

    /// Quantizes with the given rounding (`Rounding`): the one path search scoring and
    /// export share, so exported bytes are the scored ones.
    pub fn quantize_rounded(
        &self,
        name: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        rounding: Rounding<'_>,
    ) -> Result<Packed> {
        self.check_input(name, data, rows, cols, rounding.imatrix())?;
        let written = self.resolve(rows, cols)?.written;
        let bytes = match written {
            WeightFormat::Ggml(t) => {
                let im = written.usable_imatrix(rounding.imatrix());
                match rounding {
                    Rounding::Output { hessian, .. } if t.is_quantized() => {
                        let weights = im.unwrap_or(hessian.diag());
                        super::gptq::quantize_rows_output(t, data, rows, cols, hessian, weights)
                    }
                    _ => ggml::quantize_rows(t, data, rows, cols, im),
                }
                .map_err(|e| tensor_err(name, e.to_string()))?
            }
            WeightFormat::Int(f) => f
                .pack(data, rows, cols)
                .map_err(|e| overflow(name, self, e.amax))?,
        };
        Ok(Packed {
            format: written,
            rows,
            cols,
            bytes,
        })
    }

    pub fn quantize(
        &self,
        data: &[f32],
        rows: usize,
        cols: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<Packed> {
        self.quantize_named(UNNAMED, data, rows, cols, imatrix)
    }

    /// Decodes packed bytes to f32, checking format, shape and length first. `packed`
    /// must be in the format this one resolves to at its shape (itself, or its fallback).
    pub fn dequantize(&self, packed: &Packed) -> Result<Vec<f32>> {
        let (rows, cols) = (packed.rows, packed.cols);
        let written = self.resolve(rows, cols)?.written;
        if packed.format != written {
            return Err(Error::Invalid(format!(
                "packed tensor is {}, asked to decode as {} (written as {written})",
                packed.format.name(),
                self.name()
            )));
        }
        let want = self.tensor_bytes(rows, cols).ok_or_else(|| {
            Error::Invalid(format!(
                "format {} does not apply to shape [{rows}, {cols}]",
                self.name()
            ))
        })?;
        if packed.bytes.len() as u64 != want {
            return Err(Error::Invalid(format!(
                "packed {} tensor [{rows}, {cols}] has {} bytes, expected {want}",
                self.name(),
                packed.bytes.len()
            )));
        }
        Ok(match written {
            WeightFormat::Ggml(t) => ggml::dequantize(t, &packed.bytes, rows * cols)?,
            WeightFormat::Int(f) => f.unpack(&packed.bytes, rows, cols),
        })
    }

    /// Quantize then dequantize: exactly the values `dequantize(quantize(..))` gives, which
    /// are the values that get exported. Generic formats skip the packing step.
    pub fn fake_quant_named(
        &self,
        name: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.fake_quant_rounded(name, data, rows, cols, Rounding::from_imatrix(imatrix))
    }

    /// `fake_quant_named` with the given rounding.
    pub fn fake_quant_rounded(
        &self,
        name: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        rounding: Rounding<'_>,
    ) -> Result<Vec<f32>> {
        match self {
            WeightFormat::Ggml(GgmlType::F32) => {
                self.check_input(name, data, rows, cols, None)?;
                Ok(data.to_vec())
            }
            WeightFormat::Ggml(_) => {
                let p = self.quantize_rounded(name, data, rows, cols, rounding)?;
                self.dequantize(&p)
            }
            WeightFormat::Int(f) => {
                self.check_input(name, data, rows, cols, rounding.imatrix())?;
                f.fake_quant(data, rows, cols)
                    .map_err(|e| overflow(name, self, e.amax))
            }
        }
    }

    pub fn fake_quant(
        &self,
        data: &[f32],
        rows: usize,
        cols: usize,
        imatrix: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.fake_quant_named(UNNAMED, data, rows, cols, imatrix)
    }
}

fn overflow(name: &str, f: &WeightFormat, amax: f32) -> Error {
    tensor_err(
        name,
        format!(
            "max |value| {amax:e} is beyond the scale range of {}",
            f.name()
        ),
    )
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        WeightFormat::parse(s)
    }
}

impl serde::Serialize for WeightFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for WeightFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WeightFormat::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl From<GgmlType> for WeightFormat {
    fn from(t: GgmlType) -> Self {
        WeightFormat::Ggml(t)
    }
}

impl From<IntFormat> for WeightFormat {
    fn from(f: IntFormat) -> Self {
        WeightFormat::Int(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_format() {
        let all = WeightFormat::all();
        // Every generic combination and every type of the GGML table (all quantize).
        assert_eq!(all.len(), 7 * 3 * 5 + GgmlType::EVERY.len());
        for f in all {
            assert_eq!(WeightFormat::parse(&f.name()).unwrap(), f, "{f}");
        }
        assert!(WeightFormat::parse("int9-sym-g32").is_err());
        assert!(WeightFormat::parse("int4-sym-g48").is_err());
        assert!(WeightFormat::parse("int4-foo-g32").is_err());
        assert!(WeightFormat::parse("q4_k_m").is_err());
    }

    #[test]
    fn int_sizes_are_exact_to_the_byte() {
        let f = WeightFormat::parse("int4-asym-g128").unwrap();
        // 8 rows × 256 cols: 16 groups × (2-byte scale) + ⌈16·4/8⌉ zero bytes + 1024 code bytes.
        assert_eq!(f.tensor_bytes(8, 256), Some(32 + 8 + 1024));
        assert_eq!(f.bits_per_weight(256), 4.0 + 20.0 / 128.0);
        let f = WeightFormat::parse("int3-pow2-channel").unwrap();
        assert_eq!(f.tensor_bytes(3, 5), Some(3 + 6));
        let p = f.quantize(&[0.5; 15], 3, 5, None).unwrap();
        assert_eq!(p.bytes.len(), 9);
        // 2 rows × 96 cols at g64: per row one full group and one ragged group of 32.
        assert_eq!(
            WeightFormat::parse("int4-sym-g64")
                .unwrap()
                .tensor_bytes(2, 96),
            Some(4 * 2 + 96)
        );
    }

    #[test]
    fn ggml_block_divisibility() {
        let q4k = WeightFormat::parse("q4_k").unwrap();
        assert!(q4k.applies_to(3, 512));
        assert!(!q4k.applies_to(3, 384));
        let q40 = WeightFormat::parse("q4_0").unwrap();
        assert!(q40.applies_to(3, 96));
        assert!(!q40.applies_to(3, 100));
    }

    #[test]
    fn resolve_names_the_fallback_and_sizes_follow_it() {
        let q4k = WeightFormat::parse("q4_k").unwrap();
        let r = q4k.resolve(3, 576).unwrap();
        assert!(r.fell_back());
        assert_eq!(r.written, WeightFormat::Ggml(GgmlType::Q5_0));
        assert_eq!(q4k.tensor_bytes(3, 576), Some(3 * 18 * 22));
        assert_eq!(q4k.tensor_bytes(3, 100), Some(3 * 100 * 2));
        assert!(!q4k.resolve(3, 512).unwrap().fell_back());
        assert!(q4k.resolve(0, 512).is_err());
        let p = q4k.quantize(&vec![0.25; 3 * 576], 3, 576, None).unwrap();
        assert_eq!(p.format, r.written);
        assert_eq!(p.bytes.len() as u64, q4k.tensor_bytes(3, 576).unwrap());
        assert_eq!(q4k.dequantize(&p).unwrap().len(), 3 * 576);
        let g = WeightFormat::parse("int4-asym-g128").unwrap();
        assert!(!g.resolve(2, 576).unwrap().fell_back());
    }

    #[test]
    fn iq1_types_are_offered_and_iq1_s_without_an_imatrix_is_refused_naming_the_tensor() {
        for name in ["iq1_s", "iq1_m"] {
            let f = WeightFormat::parse(name).unwrap();
            assert!(
                f.can_quantize() && WeightFormat::all().contains(&f),
                "{name}"
            );
        }
        let f = WeightFormat::parse("iq1_s").unwrap();
        let err = f
            .quantize_named("blk.3.attn_v.weight", &[0.5; 256], 1, 256, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.3.attn_v.weight") && err.contains("importance matrix"),
            "{err}"
        );
    }
}
