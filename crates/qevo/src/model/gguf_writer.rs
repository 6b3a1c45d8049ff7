//! The GGUF container format on the write side: header, metadata, tensor directory and
//! aligned data, byte for byte as the GGUF v3 spec lays them out (the same layout
//! `model::gguf` reads back). Knows nothing of models or plans.

use crate::error::{Error, Result};
use crate::model::gguf::{Value, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use std::io::Write;
use std::path::Path;

/// One tensor to write: `dims` in ggml order (innermost first), raw bytes in the
/// storage type `type_id`.
#[derive(Debug, Clone)]
pub struct GgufTensorOut {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub bytes: Vec<u8>,
}

/// An in-memory GGUF file waiting to be written.
#[derive(Debug, Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<GgufTensorOut>,
}

/// Byte counts of a written file, for checking sizes against a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GgufLayout {
    /// Header, metadata and tensor directory, before the alignment padding.
    pub header_bytes: u64,
    /// Sum of the tensors' own bytes (no padding).
    pub tensor_bytes: u64,
    /// Padding inserted for alignment.
    pub padding_bytes: u64,
    pub file_bytes: u64,
    pub alignment: u64,
}

impl GgufWriter {
    /// Sets (or replaces, keeping its position) a metadata key.
    pub fn set(&mut self, key: &str, v: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.metadata.push((key.to_string(), v)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => Ok(a),
                _ => Err(Error::Invalid(
                    "metadata general.alignment must be a power of two".into(),
                )),
            },
        }
    }

    /// Serializes header + metadata + directory (without the padding before the data).
    fn header(&self, heads: &[TensorHead], alignment: u64) -> Result<Vec<u8>> {
        let mut seen = std::collections::HashSet::new();
        for t in heads {
            if !seen.insert(t.name) {
                return Err(Error::Invalid(format!(
                    "tensor `{}` would be written twice",
                    t.name
                )));
            }
        }
        let mut b = Vec::new();
        b.extend_from_slice(GGUF_MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend((heads.len() as u64).to_le_bytes());
        b.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            b.extend(v.type_id().to_le_bytes());
            put_value(&mut b, v, k)?;
        }
        let mut offset = 0u64;
        for t in heads {
            put_str(&mut b, t.name);
            b.extend((t.dims.len() as u32).to_le_bytes());
            for d in t.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.type_id.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset = (offset + t.len).div_ceil(alignment) * alignment;
        }
        Ok(b)
    }

    fn heads(&self) -> Vec<TensorHead<'_>> {
        self.tensors
            .iter()
            .map(|t| TensorHead {
                name: &t.name,
                dims: &t.dims,
                type_id: t.type_id,
                len: t.bytes.len() as u64,
            })
            .collect()
    }

    /// The header's length (metadata and tensor directory, before the data's padding)
    /// and the alignment the data takes.
    pub fn header_bytes(&self) -> Result<(u64, u64)> {
        let alignment = self.alignment()?;
        Ok((
            self.header(&self.heads(), alignment)?.len() as u64,
            alignment,
        ))
    }

    /// The header's length for these tensors (in place of `tensors`), and the alignment.
    pub(crate) fn header_bytes_for(&self, heads: &[TensorHead]) -> Result<(u64, u64)> {
        let alignment = self.alignment()?;
        Ok((self.header(heads, alignment)?.len() as u64, alignment))
    }

    /// Writes the file atomically and returns its byte counts.
    pub fn write(&self, path: &Path) -> Result<GgufLayout> {
        self.write_streamed(path, &self.heads(), |i| {
            Ok(std::borrow::Cow::Borrowed(&self.tensors[i].bytes))
        })
    }

    /// Writes the metadata and the tensors `heads` (in place of `tensors`) atomically:
    /// the header first, from the declared lengths alone, then each tensor's bytes as
    /// `data(i)` makes them, one at a time, so only one tensor's bytes are held. Bytes
    /// of another length than declared are an error naming the tensor (and no file is
    /// left behind).
    pub(crate) fn write_streamed<'b>(
        &self,
        path: &Path,
        heads: &[TensorHead],
        mut data: impl FnMut(usize) -> Result<std::borrow::Cow<'b, [u8]>>,
    ) -> Result<GgufLayout> {
        let alignment = self.alignment()?;
        let header = self.header(heads, alignment)?;
        let data_start = (header.len() as u64).div_ceil(alignment) * alignment;
        let mut file_bytes = data_start;
        let mut tensor_bytes = 0u64;
        for t in heads {
            tensor_bytes += t.len;
            file_bytes = (file_bytes + t.len).div_ceil(alignment) * alignment;
        }
        // `data`'s own error, carried past the io::Result the atomic writer takes.
        let mut failed: Option<Error> = None;
        let written = crate::fsutil::write_atomic_with(path, |w| {
            w.write_all(&header)?;
            let zeros = vec![0u8; alignment as usize];
            let mut pos = header.len() as u64;
            let pad = |w: &mut dyn Write, pos: &mut u64| -> std::io::Result<()> {
                let next = pos.div_ceil(alignment) * alignment;
                w.write_all(&zeros[..(next - *pos) as usize])?;
                *pos = next;
                Ok(())
            };
            pad(w, &mut pos)?;
            for (i, t) in heads.iter().enumerate() {
                let bytes = match data(i) {
                    Ok(b) if b.len() as u64 == t.len => b,
                    Ok(b) => {
                        failed = Some(Error::Invalid(format!(
                            "tensor `{}`: {} bytes made, {} declared in the header",
                            t.name,
                            b.len(),
                            t.len
                        )));
                        return Err(std::io::Error::other("tensor bytes"));
                    }
                    Err(e) => {
                        failed = Some(e);
                        return Err(std::io::Error::other("tensor bytes"));
                    }
                };
                w.write_all(&bytes)?;
                pos += t.len;
                pad(w, &mut pos)?;
            }
            Ok(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
        written?;
        Ok(GgufLayout {
            header_bytes: header.len() as u64,
            tensor_bytes,
            padding_bytes: file_bytes - header.len() as u64 - tensor_bytes,
            file_bytes,
            alignment,
        })
    }
}

/// A tensor's directory entry: name, `dims` in ggml order, storage type and the length
/// of its bytes (what the offsets are laid out from before any byte is made).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorHead<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub type_id: u32,
    pub len: u64,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value, key: &str) -> Result<()> {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
        Value::Array(items) => {
            // GGUF arrays are homogeneous; an empty one still needs an element type.
            let elem = items
                .first()
                .map(Value::type_id)
                .unwrap_or(Value::U8(0).type_id());
            if items
                .iter()
                .any(|i| i.type_id() != elem || matches!(i, Value::Array(_)))
            {
                return Err(Error::Invalid(format!(
                    "metadata `{key}`: arrays must hold one non-array type"
                )));
            }
            b.extend(elem.to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(b, i, key)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::Gguf;

    #[test]
    fn written_gguf_reads_back_with_every_value_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let mut w = GgufWriter::default();
        let values = vec![
            Value::U8(1),
            Value::I8(-2),
            Value::U16(3),
            Value::I16(-4),
            Value::U32(5),
            Value::I32(-6),
            Value::F32(7.5),
            Value::Bool(true),
            Value::String("héllo".into()),
            Value::U64(9),
            Value::I64(-10),
            Value::F64(11.25),
            Value::Array(vec![Value::String("a b".into()), Value::String("c".into())]),
            Value::Array(vec![]),
        ];
        for (i, v) in values.iter().enumerate() {
            w.set(&format!("k.{i}"), v.clone());
        }
        w.set("general.alignment", Value::U32(64));
        let data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.tensors.push(GgufTensorOut {
            name: "a".into(),
            dims: vec![3],
            type_id: 0,
            bytes: data[..12].to_vec(),
        });
        w.tensors.push(GgufTensorOut {
            name: "b".into(),
            dims: vec![3, 3],
            type_id: 0,
            bytes: data[..36].to_vec(),
        });
        let layout = w.write(&p).unwrap();
        assert_eq!(layout.file_bytes, std::fs::metadata(&p).unwrap().len());
        assert_eq!(layout.tensor_bytes, 48);
        let g = Gguf::open(&p).unwrap();
        assert_eq!(g.alignment, 64);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(g.get(&format!("k.{i}")), Some(v), "k.{i}");
        }
        assert_eq!(g.tensors[1].offset % 64, 0);
        assert_eq!(
            g.dequantize(g.tensor("b").unwrap()).unwrap(),
            (0..9).map(|i| i as f32).collect::<Vec<_>>()
        );
    }

    /// A streamed write lays the header out from the declared lengths; bytes of another
    /// length, or a tensor that cannot be made, fail naming the tensor and leave no file.
    #[test]
    fn streamed_write_checks_each_tensor_and_leaves_nothing_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.gguf");
        let w = GgufWriter::default();
        let dims = [2u64];
        let heads = [
            TensorHead {
                name: "a",
                dims: &dims,
                type_id: 0,
                len: 8,
            },
            TensorHead {
                name: "b",
                dims: &dims,
                type_id: 0,
                len: 8,
            },
        ];
        let layout = w
            .write_streamed(&p, &heads, |_| Ok(std::borrow::Cow::Owned(vec![0u8; 8])))
            .unwrap();
        assert_eq!(layout.file_bytes, std::fs::metadata(&p).unwrap().len());
        assert_eq!(Gguf::open(&p).unwrap().tensors[1].offset, 32);
        let q = dir.path().join("t.gguf");
        let e = w
            .write_streamed(&q, &heads, |i| {
                Ok(std::borrow::Cow::Owned(vec![0u8; 8 + i]))
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("`b`") && e.contains("9 bytes"), "{e}");
        let e = w
            .write_streamed(&q, &heads, |_| Err(Error::Invalid("no bytes for x".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bytes for x"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mixed_type_array_is_rejected_with_its_key() {
        let mut w = GgufWriter::default();
        w.set("bad", Value::Array(vec![Value::U8(1), Value::U32(2)]));
        let dir = tempfile::tempdir().unwrap();
        let e = w.write(&dir.path().join("x.gguf")).unwrap_err().to_string();
        assert!(e.contains("bad"), "{e}");
    }
}
