//! IQ dequantizers against llama.cpp: fixtures in tests/fixtures/iq made by
//! scripts/make_iq_fixtures.py (random blocks with edge-case scales, decoded by llama.cpp's
//! `gguf` Python package), compared bit for bit through the public entry point the GGUF
//! reader uses, and through a GGUF file read by `model::gguf`.

use qevo::quant::ggml::dequantize;
use qevo::quant::GgmlType;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iq")
}

struct Case {
    ty: GgmlType,
    blocks: usize,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("index.json")).unwrap()).unwrap();
    idx["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["type"].as_str().unwrap();
            let ty = GgmlType::parse(name).unwrap_or_else(|| panic!("unknown type {name}"));
            assert_eq!(ty.gguf_id() as u64, e["ggml_type_id"].as_u64().unwrap());
            assert_eq!(ty.block_len() as u64, e["block_size"].as_u64().unwrap());
            assert_eq!(ty.block_bytes() as u64, e["type_size"].as_u64().unwrap());
            let values = std::fs::read(dir().join(e["values"].as_str().unwrap()))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Case {
                ty,
                blocks: e["blocks"].as_u64().unwrap() as usize,
                bytes: std::fs::read(dir().join(e["bytes"].as_str().unwrap())).unwrap(),
                values,
            }
        })
        .collect()
}

#[test]
fn iq_fixtures_cover_every_type_qevo_decodes_itself() {
    let mut have: Vec<GgmlType> = cases().iter().map(|c| c.ty).collect();
    have.sort();
    // The IQ types: candle has no decoder for them, qevo's own decodes them.
    let want: Vec<GgmlType> = GgmlType::EVERY
        .into_iter()
        .filter(|t| t.candle_dtype().is_none())
        .collect();
    assert_eq!(have, want);
}

#[test]
fn iq_dequantize_is_bit_identical_to_llama_cpp() {
    for c in cases() {
        let n = c.blocks * c.ty.block_len();
        let ours = dequantize(c.ty, &c.bytes, n).unwrap();
        assert_eq!(ours.len(), c.values.len(), "{}", c.ty);
        let mismatched: Vec<usize> = (0..c.blocks)
            .filter(|b| {
                let r = b * c.ty.block_len()..(b + 1) * c.ty.block_len();
                ours[r.clone()]
                    .iter()
                    .zip(&c.values[r])
                    .any(|(a, e)| a.to_bits() != e.to_bits())
            })
            .collect();
        assert!(
            mismatched.is_empty(),
            "{}: blocks {mismatched:?} of {} differ",
            c.ty,
            c.blocks
        );
    }
}

#[test]
fn iq_dequantize_errors_on_short_input() {
    for c in cases() {
        let n = c.blocks * c.ty.block_len();
        let short = &c.bytes[..c.bytes.len() - 1];
        assert!(dequantize(c.ty, short, n).is_err(), "{}", c.ty);
        assert!(
            dequantize(c.ty, &c.bytes, n + c.ty.block_len()).is_err(),
            "{}",
            c.ty
        );
    }
}

#[test]
fn gguf_files_holding_iq_tensors_load_bit_identical() {
    use qevo::export::{GgufTensorOut, GgufWriter};
    use qevo::model::gguf::Gguf;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq.gguf");
    let cases = cases();
    let mut w = GgufWriter::default();
    for c in &cases {
        // One row of all the fixture's blocks, as a GGUF tensor of that type.
        w.tensors.push(GgufTensorOut {
            name: c.ty.name().to_string(),
            dims: vec![(c.blocks * c.ty.block_len()) as u64, 1],
            type_id: c.ty.gguf_id(),
            bytes: c.bytes.clone(),
        });
    }
    w.write(&path).unwrap();
    let g = Gguf::open(&path).unwrap();
    for c in &cases {
        let t = g.tensor(c.ty.name()).unwrap();
        let ours = g.dequantize(t).unwrap();
        let same = ours.len() == c.values.len()
            && ours
                .iter()
                .zip(&c.values)
                .all(|(a, e)| a.to_bits() == e.to_bits());
        assert!(same, "{}: GGUF load differs from llama.cpp", c.ty);
    }
}
