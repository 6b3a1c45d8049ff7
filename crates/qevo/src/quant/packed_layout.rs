//! The packed-safetensors schema (`quant_method: "qevo-int"`): what
//! `quantization_config.json` says about each packed tensor (format, shape, groups, the
//! byte length of its `.scales`, `.zeros` and `.codes` sections) and the layout text it
//! carries. The exporter writes it; `model::packed_st` reads files back against it.

use super::{IntFormat, Scheme, WeightFormat};
use std::collections::BTreeMap;

/// Value of `quant_method` in config.json and quantization_config.json.
pub const QUANT_METHOD: &str = "qevo-int";
/// File next to config.json that lists every packed tensor and its layout.
pub const CONFIG_FILE: &str = "quantization_config.json";
/// Version of the layout below; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// Section suffixes in the order their bytes follow each other in a `Packed` buffer.
pub const SECTIONS: [&str; 3] = ["scales", "zeros", "codes"];

/// How the bytes of every packed tensor are laid out (written once per file, for readers
/// outside qevo).
pub fn layout_description() -> serde_json::Value {
    serde_json::json!({
        "tensors": "each packed weight W [rows, cols] (row-major, rows = output channels) is stored as 1-D U8 safetensors tensors `<name>.scales`, `<name>.zeros` (asym only) and `<name>.codes`",
        "groups": "tensor: one group of rows*cols values; channel: one group per row; gN: N consecutive columns of one row, never crossing a row: when N does not divide cols, each row ends with a ragged group of the last cols % N columns, whose scale and zero point come from those values only (ceil(cols/N) groups per row). Groups are numbered in row-major order (row 0 group 0, row 0 group 1, ..., row 1 group 0, ...)",
        "scales": "sym/asym: one f16 little-endian per group (scale_dtype f16). pow2: one i8 per group, the exponent e of the scale 2^e (scale_dtype i8_exponent)",
        "zeros": "asym only: one zero point per group, an unsigned integer of `bits` bits, bit-packed exactly like the codes, padded to a whole byte",
        "codes": "rows*cols unsigned codes of `bits` bits in row-major order; code i occupies bits i*bits .. i*bits+bits of the stream, stream bit k is bit k%8 of byte k/8 (little-endian), padded to a whole byte",
        "dequantize": "sym and pow2: x = scale * (u - 2^(bits-1)); asym: x = scale * (u - zero)",
        "unpacked": "tensors listed under `unpacked` are stored under their own name in the dtype their format names (f32, f16, bf16); norms and biases are f32"
    })
}

/// One packed tensor in `quantization_config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PackedTensorEntry {
    /// Hugging Face name; the sections are `<name>.scales` etc.
    pub name: String,
    /// qevo / GGUF name (`blk.0.attn_q.weight`).
    pub canonical_name: String,
    /// `int4-asym-g128` ...
    pub format: String,
    pub rows: usize,
    pub cols: usize,
    pub bits: u8,
    pub scheme: String,
    /// `tensor`, `channel` or `group`.
    pub granularity: String,
    /// Values per (full) group; a row's last group holds `cols % group_size` when that is
    /// not zero.
    pub group_size: usize,
    pub groups: usize,
    /// `f16` or `i8_exponent`.
    pub scale_dtype: String,
    /// Byte length of each present section, by suffix.
    pub sections: BTreeMap<String, usize>,
}

/// A planned tensor kept in a float dtype under its own name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnpackedTensorEntry {
    pub name: String,
    pub canonical_name: String,
    pub format: String,
}

/// `quantization_config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantConfigFile {
    pub format_version: u32,
    pub quant_method: String,
    pub layout: serde_json::Value,
    pub tensors: Vec<PackedTensorEntry>,
    #[serde(default)]
    pub unpacked: Vec<UnpackedTensorEntry>,
}

impl PackedTensorEntry {
    /// The entry describing `f` for a `[rows, cols]` tensor.
    pub fn new(name: &str, canonical: &str, f: IntFormat, rows: usize, cols: usize) -> Self {
        let (s, z, c) = f.sections(rows, cols);
        let group_size = f.group_len(rows, cols);
        let mut sections = BTreeMap::new();
        for (suffix, len) in SECTIONS.iter().zip([s, z, c]) {
            if len > 0 {
                sections.insert(suffix.to_string(), len);
            }
        }
        PackedTensorEntry {
            name: name.to_string(),
            canonical_name: canonical.to_string(),
            format: WeightFormat::Int(f).name(),
            rows,
            cols,
            bits: f.bits,
            scheme: f.scheme.name().to_string(),
            granularity: f.granularity.kind().to_string(),
            group_size,
            groups: f.group_count(rows, cols),
            scale_dtype: match f.scheme {
                Scheme::Pow2 => "i8_exponent",
                _ => "f16",
            }
            .to_string(),
            sections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sections_add_up_to_the_format_size() {
        for name in ["int4-asym-g128", "int3-pow2-g32", "int8-sym-channel"] {
            let WeightFormat::Int(f) = WeightFormat::parse(name).unwrap() else {
                unreachable!()
            };
            let e = PackedTensorEntry::new("w", "blk.0.attn_q.weight", f, 8, 256);
            let total: usize = e.sections.values().sum();
            assert_eq!(
                Some(total as u64),
                WeightFormat::Int(f).tensor_bytes(8, 256)
            );
            assert_eq!(e.sections.contains_key("zeros"), name.contains("asym"));
        }
    }
}
