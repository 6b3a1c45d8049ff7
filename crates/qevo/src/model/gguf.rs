//! GGUF reading: header, metadata and tensor directory, with every length and offset
//! checked against the file size before anything is allocated (candle's own reader
//! trusts the lengths a file declares, which lets a 100-byte file ask for gigabytes).
//! `GGML_TYPES` sizes every tensor type llama.cpp defines, so every tensor's extent is
//! checked whatever its type; `dequantize_gguf_tensor` is the one place a stored type
//! becomes f32, and names the types it cannot decode yet.

use super::MappedFile;
use crate::error::{Error, Result};
use crate::quant::ggml::stored_type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// GGUF value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One row of `GGML_TYPES`: a tensor type as GGUF stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlTypeInfo {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block (1 for plain scalars).
    pub block_len: usize,
    /// Bytes per block.
    pub block_bytes: usize,
}

const fn ty(id: u32, name: &'static str, block_len: usize, block_bytes: usize) -> GgmlTypeInfo {
    GgmlTypeInfo {
        id,
        name,
        block_len,
        block_bytes,
    }
}

/// Every tensor type of llama.cpp's `enum ggml_type` (ggml.h), with block length and
/// block bytes from `ggml_type_traits` (ggml.c) and the `block_*` structs (ggml-common.h).
/// Ids 4, 5 and 31..=33, 36..=38 were removed from ggml and are refused.
pub const GGML_TYPES: [GgmlTypeInfo; 35] = [
    ty(0, "f32", 1, 4),
    ty(1, "f16", 1, 2),
    ty(2, "q4_0", 32, 18),
    ty(3, "q4_1", 32, 20),
    ty(6, "q5_0", 32, 22),
    ty(7, "q5_1", 32, 24),
    ty(8, "q8_0", 32, 34),
    ty(9, "q8_1", 32, 36),
    ty(10, "q2_k", 256, 84),
    ty(11, "q3_k", 256, 110),
    ty(12, "q4_k", 256, 144),
    ty(13, "q5_k", 256, 176),
    ty(14, "q6_k", 256, 210),
    ty(15, "q8_k", 256, 292),
    ty(16, "iq2_xxs", 256, 66),
    ty(17, "iq2_xs", 256, 74),
    ty(18, "iq3_xxs", 256, 98),
    ty(19, "iq1_s", 256, 50),
    ty(20, "iq4_nl", 32, 18),
    ty(21, "iq3_s", 256, 110),
    ty(22, "iq2_s", 256, 82),
    ty(23, "iq4_xs", 256, 136),
    ty(24, "i8", 1, 1),
    ty(25, "i16", 1, 2),
    ty(26, "i32", 1, 4),
    ty(27, "i64", 1, 8),
    ty(28, "f64", 1, 8),
    ty(29, "iq1_m", 256, 56),
    ty(30, "bf16", 1, 2),
    ty(34, "tq1_0", 256, 54),
    ty(35, "tq2_0", 256, 66),
    ty(39, "mxfp4", 32, 17),
    ty(40, "nvfp4", 64, 36),
    ty(41, "q1_0", 128, 18),
    ty(42, "q2_0", 64, 18),
];

/// The size row of a GGUF type id.
pub fn ggml_type_info(id: u32) -> Option<&'static GgmlTypeInfo> {
    GGML_TYPES.iter().find(|t| t.id == id)
}

/// Decodes `n` elements of GGUF type `type_id` from `bytes` (whose length the caller
/// checked against `GGML_TYPES`) to f32, laid out as `rows × (n / rows)`. The single
/// route from a stored type to f32: types candle decodes go through
/// `quant::ggml::dequantize_stored`; plain scalars convert here; every other type is an
/// error naming the type and `tensor`, where new dequantizers slot in.
pub fn dequantize_gguf_tensor(
    path: &Path,
    tensor: &str,
    type_id: u32,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    let info = check_gguf_tensor(path, tensor, type_id, bytes.len(), rows, cols)?;
    let le = |c: &[u8], n: usize| -> u64 {
        c[..n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64)
    };
    let scalar: Option<Vec<f32>> = match info.name {
        "i8" => Some(bytes.iter().map(|&b| b as i8 as f32).collect()),
        "i16" => Some(
            bytes
                .chunks_exact(2)
                .map(|c| le(c, 2) as u16 as i16 as f32)
                .collect(),
        ),
        "i32" => Some(
            bytes
                .chunks_exact(4)
                .map(|c| le(c, 4) as u32 as i32 as f32)
                .collect(),
        ),
        "i64" => Some(
            bytes
                .chunks_exact(8)
                .map(|c| le(c, 8) as i64 as f32)
                .collect(),
        ),
        "f64" => Some(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_bits(le(c, 8)) as f32)
                .collect(),
        ),
        _ => None,
    };
    if let Some(v) = scalar {
        return Ok(v);
    }
    let Some(st) = stored_type(type_id) else {
        return Err(unsupported(path, tensor, info));
    };
    crate::quant::ggml::dequantize_stored(st.dtype, st.block_bytes, st.block_len, bytes, rows, cols)
        .map_err(|e| Error::tensor(path, tensor, format!("{}: {e}", st.name)))
}

/// Plain scalar types `dequantize_gguf_tensor` converts itself.
const SCALARS: [&str; 5] = ["i8", "i16", "i32", "i64", "f64"];

/// Everything `dequantize_gguf_tensor` checks before it decodes: a known type, `n_bytes`
/// holding exactly `[rows, cols]` of it, and a decoder for it. What `Model::inspect`
/// checks instead of decoding.
pub fn check_gguf_tensor(
    path: &Path,
    tensor: &str,
    type_id: u32,
    n_bytes: usize,
    rows: usize,
    cols: usize,
) -> Result<&'static GgmlTypeInfo> {
    let info = ggml_type_info(type_id)
        .ok_or_else(|| Error::tensor(path, tensor, format!("unknown GGML type id {type_id}")))?;
    let expect = rows
        .checked_mul(cols / info.block_len.max(1))
        .and_then(|b| b.checked_mul(info.block_bytes));
    if !cols.is_multiple_of(info.block_len) || expect != Some(n_bytes) {
        return Err(Error::tensor(
            path,
            tensor,
            format!(
                "{n_bytes} bytes do not hold [{rows}, {cols}] in {}",
                info.name
            ),
        ));
    }
    if !SCALARS.contains(&info.name) && stored_type(type_id).is_none() {
        return Err(unsupported(path, tensor, info));
    }
    Ok(info)
}

fn unsupported(path: &Path, tensor: &str, info: &GgmlTypeInfo) -> Error {
    Error::tensor(
        path,
        tensor,
        format!(
            "GGML type {} is not supported yet (qevo cannot dequantize it)",
            info.name
        ),
    )
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// Relative to the start of the data section.
    pub offset: u64,
    pub(crate) info: &'static GgmlTypeInfo,
    pub(crate) n_bytes: usize,
}

impl GgufTensor {
    pub fn type_name(&self) -> &'static str {
        self.info.name
    }
    /// Row-major shape, outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    /// The shape as a matrix: every outer dimension is a row, the innermost the columns.
    pub fn rows_cols(&self) -> (usize, usize) {
        let shape = self.shape();
        let cols = *shape.last().unwrap_or(&1);
        (
            shape[..shape.len().saturating_sub(1)].iter().product(),
            cols,
        )
    }
    /// Bytes in the file (checked against the file's length at open).
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }
}

/// A memory-mapped, validated GGUF file.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<GgufTensor>,
    pub alignment: u64,
    data_start: usize,
    map: Arc<MappedFile>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::format(
                self.path,
                format!(
                    "truncated: {what} needs {n} bytes at offset {}, file has {}",
                    self.pos,
                    self.buf.len()
                ),
            )),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// A count that must fit in what is left, given each item takes at least `min_bytes`.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err(Error::format(
                self.path,
                format!(
                    "{what} = {n} cannot fit in the {} bytes left at offset {}",
                    self.remaining(),
                    self.pos
                ),
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::format(self.path, format!("{what} is not valid UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(key)?[0]),
            1 => Value::I8(self.arr::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::format(
                        self.path,
                        format!("metadata `{key}`: bool byte {b} is not 0 or 1"),
                    ))
                }
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth > 0 {
                    return Err(Error::format(
                        self.path,
                        format!("metadata `{key}`: nested arrays are not supported"),
                    ));
                }
                let elem_ty = self.u32(key)?;
                let min = value_min_bytes(elem_ty).ok_or_else(|| {
                    Error::format(
                        self.path,
                        format!("metadata `{key}`: unknown array element type {elem_ty}"),
                    )
                })?;
                let n = self.count(key, min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(key)?)),
            t => {
                return Err(Error::format(
                    self.path,
                    format!("metadata `{key}`: unknown value type {t}"),
                ))
            }
        })
    }
}

/// Smallest encoding of a value of this type (bounds array counts before allocating).
fn value_min_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Gguf> {
        // Every read below is bounds-checked against the mapped length (see `MappedFile`).
        Self::parse(path, MappedFile::open(path)?)
    }

    // One piece: a linear parser of the GGUF header, metadata and tensor directory, each
    // count and offset checked where it is read.
    fn parse(path: &Path, map: Arc<MappedFile>) -> Result<Gguf> {
        let mut c = Cursor {
            buf: map.bytes(),
            pos: 0,
            path,
        };
        let magic = c.arr::<4>("magic")?;
        if &magic != GGUF_MAGIC {
            return Err(Error::format(path, "not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(
                path,
                format!("unsupported GGUF version {version}"),
            ));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.push((key, v));
        }
        if n_tensors > (c.remaining() / 24) as u64 {
            return Err(Error::format(
                path,
                format!("tensor count {n_tensors} cannot fit in the file"),
            ));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(Error::config(
                        path,
                        "general.alignment",
                        "must be a power of two",
                    ))
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("{n_dims} dimensions (1 to 4 allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let type_id = c.u32(&name)?;
            let offset = c.u64(&name)?;
            let info = ggml_type_info(type_id).ok_or_else(|| {
                Error::tensor(path, &name, format!("unknown GGML type id {type_id}"))
            })?;
            let n_bytes = tensor_bytes(&dims, info).ok_or_else(|| {
                Error::tensor(
                    path,
                    &name,
                    format!(
                        "shape {dims:?} is not a whole number of {} blocks of {} or overflows",
                        info.name, info.block_len
                    ),
                )
            })?;
            if offset % alignment != 0 {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("offset {offset} is not aligned to {alignment}"),
                ));
            }
            tensors.push(GgufTensor {
                name,
                dims,
                type_id,
                offset,
                info,
                n_bytes,
            });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.bytes().len() as u64;
        for t in &tensors {
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes as u64));
            if end.is_none_or(|e| e > file_len) {
                return Err(Error::tensor(
                    path,
                    &t.name,
                    format!(
                        "data at offset {} (data section at {data_start}) + {} bytes runs past the end of the file ({file_len} bytes): truncated?",
                        t.offset,
                        t.n_bytes
                    ),
                ));
            }
        }
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_start: data_start as usize,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds checked at open).
    pub fn tensor_bytes(&self, t: &GgufTensor) -> &[u8] {
        let start = self.data_offset(t);
        &self.map.bytes()[start..start + t.n_bytes]
    }

    /// Where a tensor's bytes start in the file (checked against its length at open).
    pub(crate) fn data_offset(&self, t: &GgufTensor) -> usize {
        self.data_start + t.offset as usize
    }

    /// The mapped file, shared with the weights that stay in it.
    pub(crate) fn mapped(&self) -> Arc<MappedFile> {
        self.map.clone()
    }

    /// Drops a tensor's mapped pages from this process once it is copied (see
    /// `MappedFile::release`).
    pub(crate) fn release(&self, t: &GgufTensor) {
        self.map.release(self.data_offset(t), t.n_bytes);
    }

    /// Dequantizes a tensor to f32, row-major.
    pub fn dequantize(&self, t: &GgufTensor) -> Result<Vec<f32>> {
        let (rows, cols) = t.rows_cols();
        dequantize_gguf_tensor(
            &self.path,
            &t.name,
            t.type_id,
            self.tensor_bytes(t),
            rows,
            cols,
        )
    }
}

fn tensor_bytes(dims: &[u64], st: &GgmlTypeInfo) -> Option<usize> {
    let row = *dims.first()? as usize;
    if row == 0 || !row.is_multiple_of(st.block_len) {
        return None;
    }
    // A row of 2^63 elements overflows bytes-per-row already (found by fuzzing).
    let mut n: usize = (row / st.block_len).checked_mul(st.block_bytes)?;
    for &d in &dims[1..] {
        n = n.checked_mul(usize::try_from(d).ok()?)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
    }

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    #[test]
    fn gguf_bad_magic_is_named() {
        let (_d, p) = write(b"GGML\x03\0\0\0");
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("bad magic") && e.contains("m.gguf"), "{e}");
    }

    #[test]
    fn gguf_huge_string_length_is_rejected_before_allocating() {
        let mut b = header(0, 1);
        b.extend(u64::MAX.to_le_bytes()); // key length
        let (_d, p) = write(&b);
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("cannot fit"), "{e}");
    }

    #[test]
    fn gguf_huge_array_count_is_rejected_before_allocating() {
        let mut b = header(0, 1);
        b.extend(3u64.to_le_bytes());
        b.extend(b"arr");
        b.extend(9u32.to_le_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        let (_d, p) = write(&b);
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("arr") && e.contains("cannot fit"), "{e}");
    }

    #[test]
    fn gguf_tensor_past_end_of_file_is_named() {
        let mut b = header(1, 0);
        b.extend(1u64.to_le_bytes());
        b.extend(b"w");
        b.extend(2u32.to_le_bytes());
        b.extend(64u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // f32
        b.extend(0u64.to_le_bytes());
        let (_d, p) = write(&b);
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("tensor `w`") && e.contains("past the end"),
            "{e}"
        );
    }

    /// A tensor header with `dims` of f32 (type 0) at offset 0.
    fn one_tensor(dims: &[u64]) -> Vec<u8> {
        let mut b = header(1, 0);
        b.extend(1u64.to_le_bytes());
        b.extend(b"w");
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn gguf_row_bytes_overflow_is_refused_not_wrapped() {
        let (_d, p) = write(&one_tensor(&[1 << 63, 1]));
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("tensor `w`") && e.contains("overflows"), "{e}");
    }

    #[test]
    fn ggml_type_sizes_agree_with_the_gguf_package() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_quants/index.json");
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let entries = index["entries"].as_array().unwrap();
        assert!(entries.len() >= 25);
        for e in entries {
            let id = e["ggml_type_id"].as_u64().unwrap() as u32;
            let t = ggml_type_info(id).unwrap_or_else(|| panic!("type id {id} missing"));
            assert_eq!(t.name, e["type"].as_str().unwrap().to_lowercase());
            assert_eq!(
                t.block_len as u64,
                e["block_size"].as_u64().unwrap(),
                "{}",
                t.name
            );
            assert_eq!(
                t.block_bytes as u64,
                e["type_size"].as_u64().unwrap(),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn ggml_type_ids_are_unique_and_removed_ids_are_refused() {
        for (i, a) in GGML_TYPES.iter().enumerate() {
            assert!(GGML_TYPES[i + 1..]
                .iter()
                .all(|b| b.id != a.id && b.name != a.name));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43] {
            assert!(ggml_type_info(removed).is_none(), "{removed}");
        }
    }

    #[test]
    fn undecodable_type_error_names_type_and_tensor() {
        let bytes = vec![0u8; 66]; // one tq2_0 block (ternary types are not decoded)
        let e = dequantize_gguf_tensor(
            Path::new("m.gguf"),
            "blk.0.attn_q.weight",
            35,
            &bytes,
            1,
            256,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tq2_0")
                && e.contains("not supported yet")
                && e.contains("blk.0.attn_q.weight"),
            "{e}"
        );
    }

    #[test]
    fn dequantize_checks_byte_length_against_the_type() {
        let e = dequantize_gguf_tensor(Path::new("m.gguf"), "w", 8, &[0u8; 33], 1, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("33 bytes") && e.contains("q8_0"), "{e}");
        let v = dequantize_gguf_tensor(Path::new("m.gguf"), "w", 28, &2.5f64.to_le_bytes(), 1, 1)
            .unwrap();
        assert_eq!(v, vec![2.5]);
    }

    #[test]
    fn gguf_tensor_offset_near_2_pow_64_is_reported_unwrapped() {
        let mut b = header(1, 0);
        b.extend(1u64.to_le_bytes());
        b.extend(b"w");
        b.extend(1u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // f32
        let offset = u64::MAX - 31; // aligned to 32
        b.extend(offset.to_le_bytes());
        let (_d, p) = write(&b);
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(
            e.contains(&offset.to_string()) && e.contains("past the end"),
            "{e}"
        );
    }

    #[test]
    fn gguf_truncated_header_is_named() {
        let (_d, p) = write(b"GGUF\x03\0\0\0\x01");
        let e = Gguf::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
