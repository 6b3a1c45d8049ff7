//! Reading packed safetensors (`quant_method: "qevo-int"`, schema in
//! `quant::packed_layout`): rebuilds each generic-integer tensor from its U8 sections
//! (`.scales`, `.zeros`, `.codes`) and decodes it with `WeightFormat::dequantize`.
//!
//! The files are untrusted: every section's dtype, rank and length is checked against the
//! format and the config's shape before anything is allocated, and errors name the tensor.

use crate::error::{Error, Result};
use crate::quant::packed_layout::{
    PackedTensorEntry, QuantConfigFile, CONFIG_FILE, FORMAT_VERSION, QUANT_METHOD, SECTIONS,
};
use crate::quant::{IntFormat, Packed, WeightFormat};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    fn packed_flag_reads_quant_method() {
        let yes = serde_json::json!({"quantization_config": {"quant_method": "qevo-int"}});
        let no = serde_json::json!({"quantization_config": {"quant_method": "gptq"}});
        assert!(is_packed(&yes));
        assert!(!is_packed(&no));
        assert!(!is_packed(&serde_json::json!({})));
    }
}
