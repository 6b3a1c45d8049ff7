//! The safetensors container on the write side, streamed: the header (names, dtypes,
//! shapes, data offsets and `__metadata__`) is laid out from the declared shapes alone,
//! then each tensor's bytes are written at their offset as they are made, so an export
//! holds one planned tensor's bytes at a time instead of the whole file. Knows nothing of
//! models or plans.
//!
//! The layout is the `safetensors` crate's own (0.8, `tensor::prepare`): tensors by
//! descending dtype, then by name; the header JSON space-padded to a multiple of 8 bytes
//! after its little-endian u64 length. So a file written here reads back with that crate
//! and holds the bytes `safetensors::serialize` would write, except that `__metadata__`
//! is a sorted map: the crate serializes a `HashMap`, whose order changes from run to
//! run, and two exports of one plan must be the same file.

use crate::error::{Error, Result};
use safetensors::tensor::TensorInfo;
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The crate's limit on a header (`MAX_HEADER_SIZE`): a longer one does not load.
const MAX_HEADER_BYTES: usize = 100_000_000;
/// The length prefix, and the alignment the header is padded to.
const N_LEN: usize = 8;

/// One tensor as the header declares it; its bytes are its elements times the dtype's
/// width.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StHead {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl StHead {
    /// Bytes of its data; `None` when the count overflows or is not whole bytes (a
    /// sub-byte dtype with an odd element count).
    pub(super) fn byte_len(&self) -> Option<usize> {
        let bits = self
            .shape
            .iter()
            .try_fold(self.dtype.bitsize(), |n, &d| n.checked_mul(d))?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }
}

/// The header as the crate serializes it: `__metadata__` first, then every tensor in
/// data order.
struct Header<'a> {
    metadata: &'a BTreeMap<String, String>,
    tensors: Vec<(&'a str, TensorInfo)>,
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.tensors.len() + 1))?;
        map.serialize_entry("__metadata__", self.metadata)?;
        for (name, info) in &self.tensors {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

/// Where each declared tensor goes: the padded header, and the byte range of every head
/// (indexed as `heads`) within the data that follows it.
struct Layout {
    header: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    data_bytes: usize,
}

fn layout(path: &Path, heads: &[&StHead], metadata: &BTreeMap<String, String>) -> Result<Layout> {
    let mut order: Vec<usize> = (0..heads.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (heads[a], heads[b]);
        b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name))
    });
    // Sorted by name within a dtype, so a repeated name sits beside itself (names of
    // different dtypes are checked by the set).
    let mut seen = std::collections::HashSet::new();
    let mut ranges = vec![(0, 0); heads.len()];
    let mut tensors = Vec::with_capacity(heads.len());
    let mut offset = 0usize;
    for i in order {
        let h = heads[i];
        if !seen.insert(h.name.as_str()) {
            return Err(Error::tensor(path, &h.name, "would be written twice"));
        }
        let end = h
            .byte_len()
            .and_then(|n| offset.checked_add(n))
            .ok_or_else(|| {
                Error::tensor(
                    path,
                    &h.name,
                    "shape is not a whole number of bytes in its dtype, or too large to address",
                )
            })?;
        ranges[i] = (offset, end);
        tensors.push((
            h.name.as_str(),
            TensorInfo {
                dtype: h.dtype,
                shape: h.shape.clone(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let mut header =
        serde_json::to_vec(&Header { metadata, tensors }).map_err(|e| Error::serialize(path, e))?;
    header.resize(header.len().next_multiple_of(N_LEN), b' ');
    if header.len() > MAX_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!(
                "header of {} bytes is over safetensors' limit of {MAX_HEADER_BYTES}",
                header.len()
            ),
        ));
    }
    Ok(Layout {
        header,
        ranges,
        data_bytes: offset,
    })
}

/// Writes a safetensors file atomically from `units`, each a group of declared tensors
/// whose bytes `data(unit)` makes together, in its heads' order (a packed weight's
/// sections come from one quantization). The header is written first, from the declared
/// shapes; then each unit's bytes, one unit at a time, at their offsets, so only one
/// unit's bytes are held. Bytes of another length than declared, or a unit making
/// another number of tensors, are an error naming the tensor, and no file is left
/// behind. Returns the file's size.
pub(super) fn write_streamed<'b>(
    path: &Path,
    units: &[Vec<StHead>],
    metadata: &BTreeMap<String, String>,
    mut data: impl FnMut(usize) -> Result<Vec<Cow<'b, [u8]>>>,
) -> Result<u64> {
    let heads: Vec<&StHead> = units.iter().flatten().collect();
    let lay = layout(path, &heads, metadata)?;
    let base = (N_LEN + lay.header.len()) as u64;
    // `data`'s own error, carried past the io::Result the atomic writer takes.
    let mut failed: Option<Error> = None;
    let mut fail = |e: Error| {
        failed = Some(e);
        std::io::Error::other("tensor bytes")
    };
    let written = crate::fsutil::write_atomic_with(path, |w| {
        w.write_all(&(lay.header.len() as u64).to_le_bytes())?;
        w.write_all(&lay.header)?;
        let mut pos = base;
        let mut first = 0usize;
        for (u, unit) in units.iter().enumerate() {
            let made = data(u).map_err(&mut fail)?;
            if made.len() != unit.len() {
                let name = unit.first().map_or("(none)", |h| h.name.as_str());
                return Err(fail(Error::tensor(
                    path,
                    name,
                    format!(
                        "{} tensors made for this weight, {} declared in the header",
                        made.len(),
                        unit.len()
                    ),
                )));
            }
            for (k, (h, bytes)) in unit.iter().zip(&made).enumerate() {
                let (start, end) = lay.ranges[first + k];
                if bytes.len() != end - start {
                    return Err(fail(Error::tensor(
                        path,
                        &h.name,
                        format!(
                            "{} bytes made, {} declared in the header",
                            bytes.len(),
                            end - start
                        ),
                    )));
                }
                // A weight's parts of different dtypes lie apart in the file; parts
                // written in data order need no seek (a seek flushes the buffer).
                let at = base + start as u64;
                if at != pos {
                    w.seek(SeekFrom::Start(at))?;
                }
                w.write_all(bytes)?;
                pos = at + bytes.len() as u64;
            }
            first += unit.len();
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    written?;
    Ok(base + lay.data_bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn head(name: &str, dtype: Dtype, shape: &[usize]) -> StHead {
        StHead {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn bytes_of(h: &StHead, seed: u8) -> Vec<u8> {
        let n = h.shape.iter().product::<usize>() * h.dtype.bitsize() / 8;
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Units mixing dtypes (so parts of one unit lie apart in the file), written
    /// streamed: the same bytes as the crate's own `serialize` with the same metadata
    /// order, which the crate reads back.
    #[test]
    fn streamed_file_equals_the_crates_serialization() {
        let units = vec![
            vec![
                head("b.weight_packed", Dtype::I32, &[3, 2]),
                head("b.weight_scale", Dtype::F16, &[3, 1]),
                head("b.weight_shape", Dtype::I64, &[2]),
            ],
            vec![head("a.weight", Dtype::BF16, &[2, 5])],
            vec![
                head("norm", Dtype::F32, &[5]),
                head("z.codes", Dtype::U8, &[7]),
            ],
        ];
        let bytes: Vec<Vec<Vec<u8>>> = units
            .iter()
            .enumerate()
            .map(|(u, hs)| hs.iter().map(|h| bytes_of(h, u as u8)).collect())
            .collect();
        // One key, so the crate's HashMap has one order.
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let n = write_streamed(&path, &units, &meta, |u| {
            Ok(bytes[u]
                .iter()
                .map(|b| Cow::Borrowed(b.as_slice()))
                .collect())
        })
        .unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(n, got.len() as u64);
        let views: Vec<(String, TensorView)> = units
            .iter()
            .flatten()
            .zip(bytes.iter().flatten())
            .map(|(h, b)| {
                let v = TensorView::new(h.dtype, h.shape.clone(), b).unwrap();
                (h.name.clone(), v)
            })
            .collect();
        let want = safetensors::serialize(views, Some(meta.into_iter().collect())).unwrap();
        assert_eq!(got, want);
    }

    /// A weight whose bytes are not the declared length fails naming it, and leaves no
    /// file (nor a temporary one) behind.
    #[test]
    fn a_tensor_of_the_wrong_length_is_named_and_leaves_no_file() {
        let units = vec![
            vec![head("ok", Dtype::F32, &[2])],
            vec![head("short.codes", Dtype::U8, &[4])],
        ];
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let err = write_streamed(&path, &units, &BTreeMap::new(), |u| {
            Ok(vec![Cow::Owned(vec![0u8; if u == 0 { 8 } else { 3 }])])
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`short.codes`: 3 bytes made, 4 declared"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_name_declared_twice_is_refused_before_writing() {
        let units = vec![
            vec![head("w", Dtype::F32, &[1])],
            vec![head("w", Dtype::F16, &[1])],
        ];
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let err = write_streamed(&path, &units, &BTreeMap::new(), |_| {
            panic!("no bytes are made for a refused header")
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`w`: would be written twice"), "{err}");
        assert!(!path.exists());
    }
}
