//! Quantizable weights as their file stores them. A *mapped* weight is a byte range of a
//! memory-mapped safetensors or GGUF file (f32, f16, bf16, or a GGML block type such as
//! q4_k), decoded to f32 at each use; a *held* weight is an in-memory tensor (GPT-2 and
//! BERT, whose loaders transform their weights; qevo's packed safetensors; a weight set
//! built in memory).
//!
//! Why mapped: an 8B model's 16 GB file then costs no heap at all, and a quantized GGUF
//! stays its block bytes instead of four bytes per weight. The pages a use touches are
//! dropped from this process again after it (`MappedFile::release`), so resident memory
//! holds what is being decoded, not the file. Decoding is exact (f16/bf16 widen exactly;
//! GGML blocks decode through the one dequantizer, row by row the same as whole), so every
//! reader sees the values an all-f32 load gave.
//!
//! A file changed underneath: the map is read-only and every range was checked against
//! the file's length when it was opened. Before each use the open file is `fstat`ed: a
//! file now shorter, or with another length or modification time, is an error naming the
//! file and tensor rather than a read of other bytes. A truncation that lands between that
//! check and the read itself still raises SIGBUS, which no check short of copying the
//! whole file can exclude; qevo accepts that window (it is the same one llama.cpp's mmap
//! loader has) for the memory it saves.

use super::gguf::dequantize_gguf_tensor;
use super::Weights;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A read-only memory-mapped model file, with its length and modification time when it
/// was opened (what `check` compares against).
pub(crate) struct MappedFile {
    pub(crate) path: PathBuf,
    file: File,
    map: Mmap,
    len: u64,
    modified: Option<SystemTime>,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl MappedFile {
    pub(crate) fn open(path: &Path) -> Result<Arc<MappedFile>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        // SAFETY: a read-only, file-backed map. Its bytes may change if another process
        // writes the file; every reader bounds-checks offsets against `map.len()` (fixed
        // at this call), decodes whatever bytes it finds into checked values, and `check`
        // refuses a file whose length or modification time changed. Only a truncation
        // racing a read can fault (SIGBUS); see the module comment.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Arc::new(MappedFile {
            path: path.to_path_buf(),
            len: meta.len(),
            modified: meta.modified().ok(),
            file,
            map,
        }))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file is still the one that was mapped: a shorter file would fault on read.
    pub(crate) fn check(&self, tensor: &str) -> Result<()> {
        let meta = self.file.metadata().map_err(|e| Error::io(&self.path, e))?;
        if meta.len() < self.len {
            return Err(Error::tensor(
                &self.path,
                tensor,
                format!(
                    "the file was truncated to {} bytes after it was loaded ({} bytes then)",
                    meta.len(),
                    self.len
                ),
            ));
        }
        if meta.len() != self.len || meta.modified().ok() != self.modified {
            return Err(Error::tensor(
                &self.path,
                tensor,
                "the file changed after it was loaded; load the model again",
            ));
        }
        Ok(())
    }

    /// `len` bytes at `offset`, or an error naming the tensor (ranges are checked at open;
    /// this keeps a wrong offset an error, never a panic).
    fn range(&self, tensor: &str, offset: usize, len: usize) -> Result<&[u8]> {
        offset
            .checked_add(len)
            .and_then(|end| self.map.get(offset..end))
            .ok_or_else(|| {
                Error::tensor(
                    &self.path,
                    tensor,
                    format!(
                        "bytes {offset}..+{len} lie past the end of the file ({} bytes)",
                        self.map.len()
                    ),
                )
            })
    }

    /// Drops the mapped pages of `len` bytes at `offset` from this process once they are
    /// decoded, so resident memory does not grow into the file (the pages stay in the page
    /// cache; touching them again maps them back).
    #[cfg(unix)]
    pub(crate) fn release(&self, offset: usize, len: usize) {
        // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED loses nothing: a
        // later read of the range faults the file's bytes back in. Failure only keeps the
        // pages resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
    }

    #[cfg(not(unix))]
    pub(crate) fn release(&self, _offset: usize, _len: usize) {}
}

/// How a mapped weight's bytes encode its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    F32,
    F16,
    Bf16,
    /// A GGML block type by its GGUF type id (checked decodable at load).
    Ggml(u32),
}

impl Encoding {
    /// Bytes of one row of `cols` values, or `None` when `cols` is not whole blocks.
    fn row_bytes(self, cols: usize) -> Option<usize> {
        match self {
            Encoding::F32 => cols.checked_mul(4),
            Encoding::F16 | Encoding::Bf16 => cols.checked_mul(2),
            Encoding::Ggml(id) => {
                let info = super::gguf::ggml_type_info(id)?;
                if !cols.is_multiple_of(info.block_len) {
                    return None;
                }
                (cols / info.block_len).checked_mul(info.block_bytes)
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Bf16 => "bf16",
            Encoding::Ggml(id) => super::gguf::ggml_type_info(id).map_or("ggml", |i| i.name),
        }
    }
}

/// A weight matrix `[rows, cols]` as a byte range of a mapped file.
#[derive(Debug, Clone)]
pub struct Mapped {
    file: Arc<MappedFile>,
    /// The tensor's name in its file (what errors name).
    name: String,
    offset: usize,
    rows: usize,
    cols: usize,
    encoding: Encoding,
    /// llama.cpp's interleaved q/k rows, undone after decoding (`source::unpermute_rows`)
    /// with this many heads.
    unpermute: Option<usize>,
}

impl Mapped {
    /// The matrix at `offset` of `file`, checked to lie inside it.
    pub(crate) fn new(
        file: Arc<MappedFile>,
        name: &str,
        offset: usize,
        (rows, cols): (usize, usize),
        encoding: Encoding,
        unpermute: Option<usize>,
    ) -> Result<Mapped> {
        let len = encoding
            .row_bytes(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| {
                Error::tensor(
                    &file.path,
                    name,
                    format!("[{rows}, {cols}] is not whole {} rows", encoding.name()),
                )
            })?;
        file.range(name, offset, len)?;
        Ok(Mapped {
            file,
            name: name.to_string(),
            offset,
            rows,
            cols,
            encoding,
            unpermute,
        })
    }

    fn row_bytes(&self) -> usize {
        // Checked in `new`.
        self.encoding.row_bytes(self.cols).unwrap_or(0)
    }

    /// Rows `[start, start + len)` decoded to f32, in file order (before any unpermute).
    /// Rows decode independently, so large ranges decode in parallel pieces (the same
    /// values as one piece).
    fn decode_rows(&self, start: usize, len: usize) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        self.file.check(&self.name)?;
        let rb = self.row_bytes();
        let off = self.offset + start * rb;
        let bytes = self.file.range(&self.name, off, len * rb)?;
        let piece_rows = (PARALLEL_ELEMS / self.cols.max(1)).max(1);
        let out = match self.encoding {
            Encoding::F32 => bytes
                .par_chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Encoding::F16 => bytes
                .par_chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Encoding::Bf16 => bytes
                .par_chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Encoding::Ggml(id) => {
                // Into one buffer, piece by piece: a whole-tensor concat would hold it twice.
                let mut out = vec![0f32; len * self.cols];
                out.par_chunks_mut(piece_rows * self.cols)
                    .zip(bytes.par_chunks(piece_rows * rb))
                    .try_for_each(|(o, b)| -> Result<()> {
                        let rows = b.len() / rb.max(1);
                        let (path, name) = (&self.file.path, &self.name);
                        o.copy_from_slice(&dequantize_gguf_tensor(
                            path, name, id, b, rows, self.cols,
                        )?);
                        Ok(())
                    })?;
                out
            }
        };
        self.file.release(off, len * rb);
        Ok(out)
    }

    /// The whole matrix as f32 in model row order.
    fn f32(&self) -> Result<Tensor> {
        let t = Tensor::from_vec(
            self.decode_rows(0, self.rows)?,
            (self.rows, self.cols),
            &Device::Cpu,
        )?;
        match self.unpermute {
            Some(h) => super::source::unpermute_rows(&t, h),
            None => Ok(t),
        }
    }

    /// The matrix in its stored 16-bit type (f16/bf16), else f32.
    fn stored_tensor(&self) -> Result<Tensor> {
        let halves = |dtype: DType| -> Result<Tensor> {
            self.file.check(&self.name)?;
            let n = self.rows * self.row_bytes();
            let bytes = self.file.range(&self.name, self.offset, n)?;
            let t = match dtype {
                DType::F16 => Tensor::from_vec(
                    bytes
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<_>>(),
                    (self.rows, self.cols),
                    &Device::Cpu,
                )?,
                _ => Tensor::from_vec(
                    bytes
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<_>>(),
                    (self.rows, self.cols),
                    &Device::Cpu,
                )?,
            };
            self.file.release(self.offset, n);
            Ok(t)
        };
        let t = match self.encoding {
            Encoding::F16 => halves(DType::F16)?,
            Encoding::Bf16 => halves(DType::BF16)?,
            _ => return self.f32(),
        };
        match self.unpermute {
            Some(h) => super::source::unpermute_rows(&t, h),
            None => Ok(t),
        }
    }
}

/// One quantizable weight: in memory, or a range of a mapped file.
#[derive(Debug, Clone)]
pub enum Weight {
    /// An in-memory tensor, f32 or f16/bf16.
    Held(Tensor),
    Mapped(Mapped),
}

/// Elements a parallel decoding piece holds at least.
const PARALLEL_ELEMS: usize = 1 << 16;

/// Rows decoded per piece when a whole weight is streamed (`for_each_piece`): bounded
/// memory whatever the matrix.
const PIECE_ELEMS: usize = 1 << 22;

impl Weight {
    /// `[rows, cols]`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Weight::Held(t) => Ok(t.dims2()?),
            Weight::Mapped(m) => Ok((m.rows, m.cols)),
        }
    }

    /// Whether the weight is read from its mapped file at each use.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Weight::Mapped(_))
    }

    /// Whether `rows_f32` decodes just the rows asked for (a mapped weight read in file
    /// order), rather than widening the whole weight to take a slice of it.
    pub fn decodes_rows(&self) -> bool {
        matches!(self, Weight::Mapped(m) if m.unpermute.is_none())
    }

    /// The type the weight is held or mapped in (`bf16`, `q4_k`, ...).
    pub fn encoding(&self) -> &'static str {
        match self {
            Weight::Held(t) => match t.dtype() {
                DType::F16 => "f16",
                DType::BF16 => "bf16",
                _ => "f32",
            },
            Weight::Mapped(m) => m.encoding.name(),
        }
    }

    /// Bytes of the weight as stored (held in memory or mapped).
    pub fn stored_bytes(&self) -> usize {
        match self {
            Weight::Held(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Mapped(m) => m.rows * m.row_bytes(),
        }
    }

    /// Heap bytes the weight holds (a mapped weight holds none).
    pub fn held_bytes(&self) -> usize {
        match self {
            Weight::Held(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Mapped(_) => 0,
        }
    }

    /// The weight as f32 `[rows, cols]`: exact widening or decoding.
    pub fn f32(&self) -> Result<Tensor> {
        match self {
            Weight::Held(t) => Ok(t.to_dtype(DType::F32)?),
            Weight::Mapped(m) => m.f32(),
        }
    }

    /// The f32 values, row-major.
    pub fn values(&self) -> Result<Vec<f32>> {
        match self {
            // Decoded straight into the vector: one f32 copy, not two.
            Weight::Mapped(m) if m.unpermute.is_none() => m.decode_rows(0, m.rows),
            _ => Ok(self.f32()?.flatten_all()?.to_vec1::<f32>()?),
        }
    }

    /// The weight as an in-memory tensor in the type it is stored in: f32, f16 or bf16 as
    /// stored; a GGML block type decoded to f32.
    pub fn tensor(&self) -> Result<Tensor> {
        match self {
            Weight::Held(t) => Ok(t.clone()),
            Weight::Mapped(m) => m.stored_tensor(),
        }
    }

    /// Rows `[start, start + len)` as f32 (one expert of a stacked expert tensor).
    pub fn rows_f32(&self, start: usize, len: usize) -> Result<Tensor> {
        match self {
            Weight::Mapped(m) if m.unpermute.is_none() && start + len <= m.rows => Ok(
                Tensor::from_vec(m.decode_rows(start, len)?, (len, m.cols), &Device::Cpu)?,
            ),
            w => Ok(w.f32()?.narrow(0, start, len)?),
        }
    }

    /// Rows `[start, start + len)` as a weight of their own (a fused Phi-3 matrix's parts):
    /// a mapped weight stays mapped.
    pub(crate) fn rows(&self, start: usize, len: usize) -> Result<Weight> {
        match self {
            Weight::Mapped(m) if m.unpermute.is_none() && start + len <= m.rows => {
                let off = m.offset + start * m.row_bytes();
                let enc = m.encoding;
                Ok(Weight::Mapped(Mapped::new(
                    m.file.clone(),
                    &m.name,
                    off,
                    (len, m.cols),
                    enc,
                    None,
                )?))
            }
            w => Ok(Weight::Held(
                w.tensor()?.narrow(0, start, len)?.contiguous()?,
            )),
        }
    }

    /// The same bytes seen as `[rows, cols]` (a GGUF 3-d expert stack as one matrix).
    pub(crate) fn reshaped(self, rows: usize, cols: usize) -> Result<Weight> {
        match self {
            Weight::Mapped(m) if m.unpermute.is_none() && m.cols == cols => Ok(Weight::Mapped(
                Mapped::new(m.file, &m.name, m.offset, (rows, cols), m.encoding, None)?,
            )),
            w => Ok(Weight::Held(w.tensor()?.reshape((rows, cols))?)),
        }
    }

    /// The f32 rows `ids` `[ids.len(), cols]` (an embedding gather): a mapped table decodes
    /// only those rows. The caller checked every id against the rows.
    pub(crate) fn gather_f32(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Weight::Mapped(m) if m.unpermute.is_none() => {
                let mut out = Vec::with_capacity(ids.len() * m.cols);
                for &id in ids {
                    out.extend(m.decode_rows(id as usize, 1)?);
                }
                Ok(Tensor::from_vec(out, (ids.len(), m.cols), &Device::Cpu)?)
            }
            w => {
                let idx = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
                Ok(w.tensor()?.index_select(&idx, 0)?.to_dtype(DType::F32)?)
            }
        }
    }

    /// Hands the f32 values to `f` in row-major pieces of bounded size (a mapped weight is
    /// never decoded whole, except q/k rows llama.cpp interleaved).
    pub(crate) fn for_each_piece(&self, mut f: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
        match self {
            Weight::Mapped(m) if m.unpermute.is_none() => {
                let step = (PIECE_ELEMS / m.cols.max(1)).max(1);
                let mut start = 0;
                while start < m.rows {
                    let len = step.min(m.rows - start);
                    f(&m.decode_rows(start, len)?)?;
                    start += len;
                }
                Ok(())
            }
            w => f(&w.values()?),
        }
    }

    /// The name and file errors about this weight use, when it is mapped.
    pub(crate) fn origin(&self) -> Option<(&Path, &str)> {
        match self {
            Weight::Mapped(m) => Some((&m.file.path, &m.name)),
            Weight::Held(_) => None,
        }
    }
}

/// A model's quantizable weights, indexed like `Model::tensors`, as stored (see the
/// module comment). It is itself a weight set: each product decodes its weight.
#[derive(Debug, Clone, Default)]
pub struct StoredWeights(Vec<Weight>);

impl StoredWeights {
    pub fn new(weights: Vec<Weight>) -> StoredWeights {
        StoredWeights(weights)
    }

    /// In-memory tensors as a model's weights.
    pub fn from_tensors(tensors: Vec<Tensor>) -> StoredWeights {
        StoredWeights(tensors.into_iter().map(Weight::Held).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Weight `i`, or an error naming the index.
    pub fn get(&self, i: usize) -> Result<&Weight> {
        self.0
            .get(i)
            .ok_or_else(|| Error::out_of_range("tensor index", i, self.0.len()))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Weight> {
        self.0.iter()
    }

    /// Replaces weight `i` with an in-memory tensor.
    pub fn set(&mut self, i: usize, t: Tensor) -> Result<()> {
        self.get(i)?;
        self.0[i] = Weight::Held(t);
        Ok(())
    }

    /// Every weight as an in-memory tensor in its stored type (a copy of a mapped file:
    /// for small models and tests).
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        self.0.iter().map(Weight::tensor).collect()
    }

    /// Heap bytes the weights hold.
    pub fn held_bytes(&self) -> usize {
        self.0.iter().map(Weight::held_bytes).sum()
    }
}

impl<'a> IntoIterator for &'a StoredWeights {
    type Item = &'a Weight;
    type IntoIter = std::slice::Iter<'a, Weight>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Weights for StoredWeights {
    fn matmul_t(&self, idx: usize, x2: &Tensor) -> Result<Tensor> {
        Ok(x2.matmul(&self.get(idx)?.f32()?.t()?)?)
    }
    fn table(&self, idx: usize) -> Result<Tensor> {
        self.get(idx)?.tensor()
    }
    fn gather(&self, idx: usize, ids: &[u32]) -> Result<Tensor> {
        self.get(idx)?.gather_f32(ids)
    }
    fn matmul_t_rows(&self, idx: usize, start: usize, len: usize, x2: &Tensor) -> Result<Tensor> {
        Ok(x2.matmul(&self.get(idx)?.rows_f32(start, len)?.t()?)?)
    }
}
