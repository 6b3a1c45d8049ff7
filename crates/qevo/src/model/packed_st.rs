//! The packed-safetensors layout (`quant_method: "qevo-int"`): the schema of
//! `quantization_config.json` shared by the exporter and the loader, and the loader's side,
//! which rebuilds each generic-integer tensor from its U8 sections (`.scales`, `.zeros`,
//! `.codes`) and decodes it with `WeightFormat::dequantize`.
//!
//! The files are untrusted: every section's dtype, rank and length is checked against the
//! format and the config's shape before anything is allocated, and errors name the tensor.

use crate::error::{Error, Result};
use crate::quant::{IntFormat, Packed, Scheme, WeightFormat};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

/// A directory's packed tensors by Hugging Face name, with the format each decodes as.
#[derive(Debug)]
pub(crate) struct PackedIndex {
    path: PathBuf,
    entries: HashMap<String, (IntFormat, PackedTensorEntry)>,
}

/// Whether a config.json says its directory holds qevo-int packed weights.
pub(crate) fn is_packed(config: &serde_json::Value) -> bool {
    config
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(|m| m.as_str())
        == Some(QUANT_METHOD)
}

impl PackedIndex {
    /// Reads and checks `dir/quantization_config.json`: every entry's format must be a
    /// generic integer format and its declared fields must agree with what the format and
    /// shape imply (so a hand-edited file cannot describe one layout and hold another).
    pub(crate) fn open(dir: &Path) -> Result<PackedIndex> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let file: QuantConfigFile = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("invalid quantization config: {e}")))?;
        if file.quant_method != QUANT_METHOD {
            return Err(Error::config(
                &path,
                "quant_method",
                format!("`{}`, expected `{QUANT_METHOD}`", file.quant_method),
            ));
        }
        if file.format_version != FORMAT_VERSION {
            return Err(Error::config(
                &path,
                "format_version",
                format!(
                    "{} is not supported (this qevo reads version {FORMAT_VERSION})",
                    file.format_version
                ),
            ));
        }
        let mut entries = HashMap::new();
        for e in file.tensors {
            let bad = |msg: String| Error::tensor(&path, &e.name, msg);
            let f = match WeightFormat::parse(&e.format) {
                Ok(WeightFormat::Int(f)) => f,
                Ok(other) => {
                    return Err(bad(format!(
                        "format {other} is not a generic integer format"
                    )))
                }
                Err(err) => return Err(bad(err.to_string())),
            };
            if !f.applies_to(e.rows, e.cols) || e.rows.checked_mul(e.cols).is_none() {
                return Err(bad(format!(
                    "format {} does not apply to shape [{}, {}]",
                    e.format, e.rows, e.cols
                )));
            }
            let want = PackedTensorEntry::new(&e.name, &e.canonical_name, f, e.rows, e.cols);
            if want != e {
                return Err(bad(format!(
                    "entry does not match format {} at shape [{}, {}] (expected bits {}, scheme {}, \
                     granularity {}, group size {}, {} groups, scale dtype {}, sections {:?})",
                    e.format,
                    e.rows,
                    e.cols,
                    want.bits,
                    want.scheme,
                    want.granularity,
                    want.group_size,
                    want.groups,
                    want.scale_dtype,
                    want.sections
                )));
            }
            let name = e.name.clone();
            if entries.insert(name.clone(), (f, e)).is_some() {
                return Err(Error::tensor(&path, &name, "listed twice"));
            }
        }
        Ok(PackedIndex { path, entries })
    }

    pub(crate) fn contains(&self, hf_name: &str) -> bool {
        self.entries.contains_key(hf_name)
    }

    /// Names listed in the config that are not in `used` (a packed tensor the architecture
    /// never asked for means the file belongs to another model).
    pub(crate) fn check_all_used(&self, used: &[String]) -> Result<()> {
        let mut extra: Vec<&String> = self.entries.keys().filter(|n| !used.contains(n)).collect();
        extra.sort();
        match extra.first() {
            None => Ok(()),
            Some(n) => Err(Error::tensor(
                &self.path,
                n,
                "listed as packed but the model has no such weight",
            )),
        }
    }

    /// Rebuilds `hf_name` as f32 `[shape]` from its sections. `section` returns a section's
    /// raw U8 bytes (`Ok(None)` when absent) after checking its dtype and rank.
    pub(crate) fn decode<'s>(
        &self,
        hf_name: &str,
        shape: &[usize],
        section: &dyn Fn(&str) -> Result<Option<&'s [u8]>>,
    ) -> Result<Vec<f32>> {
        let (f, e) = self
            .entries
            .get(hf_name)
            .ok_or_else(|| Error::tensor(&self.path, hf_name, "not a packed tensor"))?;
        if shape != [e.rows, e.cols] {
            return Err(Error::tensor(
                &self.path,
                hf_name,
                format!(
                    "packed shape [{}, {}] does not match the config's {shape:?}",
                    e.rows, e.cols
                ),
            ));
        }
        let (s, z, c) = f.sections(e.rows, e.cols);
        let mut parts = Vec::with_capacity(3);
        for (suffix, want) in SECTIONS.iter().zip([s, z, c]) {
            let name = format!("{hf_name}.{suffix}");
            match (section(&name)?, want) {
                (None, 0) => {}
                (None, _) => {
                    return Err(Error::tensor(
                        &self.path,
                        &name,
                        format!("missing section ({want} bytes expected)"),
                    ))
                }
                (Some(b), _) if b.len() != want => {
                    return Err(Error::tensor(
                        &self.path,
                        &name,
                        format!(
                            "has {} bytes, format {} at [{}, {}] needs {want}",
                            b.len(),
                            e.format,
                            e.rows,
                            e.cols
                        ),
                    ))
                }
                (Some(b), _) => parts.push(b),
            }
        }
        // Every length checked: now the allocation is the size the format implies.
        let mut bytes = Vec::with_capacity(s + z + c);
        for p in parts {
            bytes.extend_from_slice(p);
        }
        let fmt = WeightFormat::Int(*f);
        fmt.dequantize(&Packed {
            format: fmt,
            rows: e.rows,
            cols: e.cols,
            bytes,
        })
        .map_err(|err| Error::tensor(&self.path, hf_name, err.to_string()))
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

    #[test]
    fn packed_flag_reads_quant_method() {
        let yes = serde_json::json!({"quantization_config": {"quant_method": "qevo-int"}});
        let no = serde_json::json!({"quantization_config": {"quant_method": "gptq"}});
        assert!(is_packed(&yes));
        assert!(!is_packed(&no));
        assert!(!is_packed(&serde_json::json!({})));
    }
}
