//! The importance matrix as llama.cpp keeps it, and its files.
//!
//! llama-imatrix (tools/imatrix) accumulates, for every matrix product whose weight is a
//! `blk.*` tensor (and `output.weight` with `--process-output`), the sum over calibration
//! tokens of each input column's squared activation, and the number of tokens summed.
//! `token_embd.weight` never has an entry: it is read with `get_rows`, not multiplied.
//! llama-quantize hands the quantizers `sum / count` per column (`load_imatrix` in
//! tools/quantize), which is what `Imatrix::for_model` returns.
//!
//! Files, both read (llama.cpp's `common_imatrix_load` tries GGUF, then legacy):
//! - GGUF (what llama-imatrix writes now, and what qevo writes): `general.type =
//!   imatrix`, `imatrix.datasets` (strings), `imatrix.chunk_count` and
//!   `imatrix.chunk_size` (u32), and per weight `NAME.in_sum2` (f32, `[cols, n_mat]`, the
//!   raw sums) and `NAME.counts` (f32, `[1, n_mat]`, tokens per matrix). `n_mat > 1` only
//!   for stacked expert tensors, which qevo's models do not have: such entries are refused.
//! - legacy `.dat`: i32 entry count; per entry i32 name length, name, i32 `ncall`, i32
//!   `nval`, `nval` f32 holding `mean · ncall`; optionally i32 chunk count, i32 length and
//!   the dataset name. Read as sums `mean · ncall` over count `ncall`, so `for_model` gives
//!   llama-quantize's values for both (a legacy `ncall` of 0 keeps the stored values, as
//!   llama-quantize does).
//!
//! Files are untrusted: every count and length is checked against the bytes present
//! before anything is allocated, and an entry naming a tensor the model lacks, or of
//! another width, is an error naming it.

use crate::error::{Error, Result};
use crate::model::gguf::{Gguf, Value, GGUF_MAGIC};
use crate::model::gguf_writer::{GgufTensorOut, GgufWriter};
use crate::model::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SUMS: &str = ".in_sum2";
const COUNTS: &str = ".counts";
/// ggml's type id of f32.
const F32: u32 = 0;

/// One weight's accumulators (one matrix; qevo has no stacked experts).
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Σ x² per input column.
    pub sums: Vec<f32>,
    /// Tokens summed.
    pub count: u64,
}

impl ImatrixEntry {
    /// What llama-quantize hands the quantizers: `sum / count` per column in f32, all
    /// ones when no token was counted.
    pub fn weights(&self) -> Vec<f32> {
        let c = self.count as f32;
        match self.count {
            0 => vec![1.0; self.sums.len()],
            _ => self.sums.iter().map(|s| s / c).collect(),
        }
    }
}

/// An importance matrix: per weight name, llama.cpp's raw sums and counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    /// The file it was read from (empty when collected by qevo), for error messages.
    pub source: PathBuf,
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// Texts it was computed on (`imatrix.datasets`).
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    /// Tokens per chunk (0 when unknown, as in legacy files).
    pub chunk_size: u32,
}

impl Imatrix {
    /// Reads a GGUF or legacy imatrix file.
    pub fn read(path: &Path) -> Result<Imatrix> {
        let head = read_head(path)?;
        let mut m = match &head == GGUF_MAGIC {
            true => read_gguf(path)?,
            false => read_legacy(path, &std::fs::read(path).map_err(|e| Error::io(path, e))?)?,
        };
        m.source = path.to_path_buf();
        Ok(m)
    }

    /// Writes llama.cpp's GGUF form at `path` (atomically), entries in name order as
    /// llama-imatrix writes them.
    pub fn write_gguf(&self, path: &Path) -> Result<()> {
        let mut w = GgufWriter::default();
        w.set("general.type", Value::String("imatrix".into()));
        let sets = self.datasets.iter().cloned().map(Value::String).collect();
        w.set("imatrix.datasets", Value::Array(sets));
        w.set("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.set("imatrix.chunk_size", Value::U32(self.chunk_size));
        for (name, e) in &self.entries {
            w.tensors.push(f32_out(format!("{name}{SUMS}"), &e.sums));
            w.tensors
                .push(f32_out(format!("{name}{COUNTS}"), &[e.count as f32]));
        }
        w.write(path).map(|_| ())
    }

    /// FNV-1a over the names and the quantizers' values (`ImatrixEntry::weights`) in name
    /// order: equal for two files
    /// that give the quantizers the same values, whatever their format or datasets.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        for (name, e) in &self.entries {
            eat(name.as_bytes());
            e.weights()
                .iter()
                .for_each(|x| eat(&x.to_bits().to_le_bytes()));
        }
        format!("{h:016x}")
    }

    /// llama-quantize's importance per tensor of `model`, by tensor index: `sum / count`
    /// per column (all ones for an entry with no tokens), `None` for tensors without an
    /// entry. An entry the model has no tensor for, or of another width, is an error.
    pub fn for_model(&self, model: &Model) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = vec![None; model.tensors.len()];
        for (name, e) in &self.entries {
            let bad = |msg: String| Error::Tensor {
                path: self.source.clone(),
                tensor: name.clone(),
                msg,
            };
            let i = model.tensor_index(name).ok_or_else(|| {
                bad(format!(
                    "not a tensor of {} (an imatrix for another model?)",
                    model.source.display()
                ))
            })?;
            let cols = model.tensors[i].cols;
            if e.sums.len() != cols {
                return Err(bad(format!(
                    "{} columns, but the model's tensor has {cols} (an imatrix for another model?)",
                    e.sums.len()
                )));
            }
            out[i] = Some(e.weights());
        }
        Ok(out)
    }
}

fn f32_out(name: String, v: &[f32]) -> GgufTensorOut {
    // ggml dims, innermost first: [cols, n_mat] and [1, n_mat].
    let dims = vec![v.len() as u64, 1];
    GgufTensorOut {
        name,
        dims,
        type_id: F32,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The first four bytes (fewer for a shorter file).
fn read_head(path: &Path) -> Result<[u8; 4]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match f.read(&mut head[n..]).map_err(|e| Error::io(path, e))? {
            0 => break,
            k => n += k,
        }
    }
    Ok(head)
}

fn read_gguf(path: &Path) -> Result<Imatrix> {
    let g = Gguf::open(path)?;
    let u32_key = |k: &str| g.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
    let datasets = match g.get("imatrix.datasets").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        None => Vec::new(),
    };
    let mut entries = BTreeMap::new();
    for t in &g.tensors {
        let Some(name) = t.name.strip_suffix(SUMS) else {
            continue;
        };
        let bad = |msg: &str| Error::Tensor {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            msg: msg.to_string(),
        };
        let counts = g
            .tensor(&format!("{name}{COUNTS}"))
            .ok_or_else(|| bad("has no matching .counts tensor"))?;
        if t.type_id != F32 || counts.type_id != F32 {
            return Err(bad("sums and counts must be f32"));
        }
        let counts = f32s(g.tensor_bytes(counts));
        let sums = f32s(g.tensor_bytes(t));
        if counts.len() != 1 {
            return Err(bad(&format!(
                "{} matrices (stacked experts); qevo's models have one per tensor",
                counts.len()
            )));
        }
        if sums.is_empty() || !counts[0].is_finite() || counts[0] < 0.0 {
            return Err(bad("no sums, or a negative or non-finite count"));
        }
        let count = counts[0].round() as u64;
        entries.insert(name.to_string(), ImatrixEntry { sums, count });
    }
    if let Some(t) = g.tensors.iter().find(|t| {
        t.name
            .strip_suffix(COUNTS)
            .is_some_and(|n| !entries.contains_key(n))
    }) {
        return Err(Error::Tensor {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            msg: "has no matching .in_sum2 tensor".into(),
        });
    }
    if entries.is_empty() {
        return Err(Error::format(path, "imatrix has no entries"));
    }
    Ok(Imatrix {
        source: PathBuf::new(),
        entries,
        datasets,
        chunk_count: u32_key("imatrix.chunk_count"),
        chunk_size: u32_key("imatrix.chunk_size"),
    })
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A bounds-checked reader over a legacy file's bytes.
struct Legacy<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Legacy<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.buf.len().checked_sub(self.pos) {
            Some(left) if left >= n => {
                self.pos += n;
                Ok(&self.buf[self.pos - n..self.pos])
            }
            _ => Err(Error::format(
                self.path,
                format!(
                    "legacy imatrix truncated reading {what} at byte {} ({n} bytes wanted)",
                    self.pos
                ),
            )),
        }
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative i32 length (or count) that `elem` bytes each of the rest must hold.
    fn len(&mut self, what: &str, elem: usize) -> Result<usize> {
        let n = self.i32(what)?;
        let left = self.buf.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(elem) <= left => Ok(n),
            _ => Err(Error::format(
                self.path,
                format!(
                    "legacy imatrix {what} {n} at byte {} exceeds the file",
                    self.pos - 4
                ),
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::format(self.path, format!("legacy imatrix {what} is not UTF-8")))
    }
}

fn read_legacy(path: &Path, buf: &[u8]) -> Result<Imatrix> {
    let mut c = Legacy { buf, pos: 0, path };
    // Each entry takes at least 12 bytes (name length, ncall, nval).
    let n = c.len("entry count", 12)?;
    if n == 0 {
        return Err(Error::format(path, "imatrix has no entries"));
    }
    let mut m = Imatrix::default();
    for _ in 0..n {
        let name = c.string("name length")?;
        let ncall = c.i32("ncall")?;
        let nval = c.len("value count", 4)?;
        let sums = f32s(c.take(nval * 4, "values")?);
        if nval == 0 || ncall < 0 {
            return Err(Error::Tensor {
                path: path.to_path_buf(),
                tensor: name,
                msg: format!("{nval} values, ncall {ncall}"),
            });
        }
        // The stored values are mean · ncall: sums over ncall "tokens" give the mean back;
        // ncall 0 keeps them as they are (count 1), as llama-quantize does.
        let count = (ncall as u64).max(1);
        m.entries.insert(name, ImatrixEntry { sums, count });
    }
    if c.pos < buf.len() {
        m.chunk_count = c.i32("chunk count")?.max(0) as u32;
        if c.pos < buf.len() {
            let set = c.string("dataset name length")?;
            if !set.is_empty() {
                m.datasets.push(set);
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        let mut m = Imatrix {
            datasets: vec!["calib.txt".into()],
            chunk_count: 2,
            chunk_size: 64,
            ..Imatrix::default()
        };
        let e = |sums: Vec<f32>, count| ImatrixEntry { sums, count };
        m.entries
            .insert("blk.0.attn_q.weight".into(), e(vec![1.0, 4.0, 9.0], 128));
        m.entries
            .insert("output.weight".into(), e(vec![2.0, 0.5, 3.0], 128));
        m
    }

    #[test]
    fn gguf_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("im.gguf");
        let m = sample();
        m.write_gguf(&p).unwrap();
        let back = Imatrix::read(&p).unwrap();
        assert_eq!(back.source, p);
        assert_eq!(
            Imatrix {
                source: PathBuf::new(),
                ..back
            },
            m
        );
    }

    fn legacy_bytes(name: &str, ncall: i32, vals: &[f32], tail: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(ncall.to_le_bytes());
        b.extend((vals.len() as i32).to_le_bytes());
        b.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        if tail {
            b.extend(7i32.to_le_bytes());
            b.extend(3i32.to_le_bytes());
            b.extend(b"a.t");
        }
        b
    }

    #[test]
    fn legacy_reads_with_and_without_its_tail() {
        let p = Path::new("x.dat");
        let m = read_legacy(p, &legacy_bytes("w", 4, &[8.0, 2.0], true)).unwrap();
        assert_eq!(m.entries["w"].sums, vec![8.0, 2.0]);
        assert_eq!(m.entries["w"].count, 4);
        assert_eq!((m.chunk_count, m.datasets.clone()), (7, vec!["a.t".into()]));
        let m = read_legacy(p, &legacy_bytes("w", 0, &[8.0], false)).unwrap();
        assert_eq!(m.entries["w"].count, 1);
    }

    #[test]
    fn legacy_lengths_past_the_end_are_refused_before_allocating() {
        let p = Path::new("x.dat");
        let mut b = legacy_bytes("w", 4, &[8.0, 2.0], false);
        b[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = read_legacy(p, &b).unwrap_err().to_string();
        assert!(e.contains("name length") && e.contains("exceeds"), "{e}");
        let b = legacy_bytes("w", 4, &[8.0, 2.0], false);
        for cut in 0..b.len() {
            assert!(read_legacy(p, &b[..cut]).is_err(), "cut at {cut}");
        }
        let e = read_legacy(p, &(-1i32).to_le_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry count"), "{e}");
    }
}
