//! GGML formats against llama.cpp's own Python `gguf` package (fixtures in
//! tests/fixtures/gguf_quants, see tests/fixtures/README.md): byte equality of quantize
//! for every type gguf.quants can encode, value equality of dequantize for every type it
//! decodes that qevo reads (IQ types included).

use qevo::quant::{GgmlType, Packed, WeightFormat};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_quants")
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

struct Entry {
    ty: GgmlType,
    kind: String,
    quantized: Vec<u8>,
    dequantized: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// Fixture entries whose type qevo offers, plus the names of those it does not.
fn entries() -> (Vec<Entry>, Vec<String>) {
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("index.json")).unwrap()).unwrap();
    let rows = idx["rows"].as_u64().unwrap() as usize;
    let cols = idx["cols"].as_u64().unwrap() as usize;
    let mut out = Vec::new();
    let mut other = Vec::new();
    for e in idx["entries"].as_array().unwrap() {
        let name = e["type"].as_str().unwrap();
        let Some(ty) = GgmlType::parse(name) else {
            other.push(name.to_string());
            continue;
        };
        assert_eq!(
            ty.gguf_id() as u64,
            e["ggml_type_id"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            ty.block_bytes() as u64,
            e["type_size"].as_u64().unwrap(),
            "{name}"
        );
        out.push(Entry {
            ty,
            kind: e["kind"].as_str().unwrap().to_string(),
            quantized: std::fs::read(dir().join(e["quantized"].as_str().unwrap())).unwrap(),
            dequantized: f32s(e["dequantized"].as_str().unwrap()),
            rows,
            cols,
        });
    }
    (out, other)
}

#[test]
fn fixtures_cover_every_offered_quantized_type() {
    let (e, other) = entries();
    let mut have: Vec<GgmlType> = e.iter().map(|e| e.ty).collect();
    have.sort();
    let mut want: Vec<GgmlType> = GgmlType::EVERY
        .into_iter()
        .filter(|t| *t != GgmlType::F32)
        .collect();
    want.sort();
    // F32 is not in the fixtures (trivial); everything else qevo reads is (the IQ types
    // as dequantize-only entries).
    assert_eq!(have, want);
    assert!(
        other
            .iter()
            .all(|n| n.starts_with("TQ") || n.ends_with("FP4")),
        "{other:?}"
    );
}

#[test]
fn quantize_bytes_equal_gguf_reference() {
    let (entries, _) = entries();
    let input = f32s("input.f32");
    let mut checked = Vec::new();
    for e in entries.iter().filter(|e| e.kind == "quantize") {
        let f = WeightFormat::Ggml(e.ty);
        let p = f.quantize(&input, e.rows, e.cols, None).unwrap();
        assert_eq!(p.bytes.len(), e.quantized.len(), "{}", e.ty);
        let first_diff = p.bytes.iter().zip(&e.quantized).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{}: first differing byte", e.ty);
        checked.push(e.ty);
    }
    checked.sort();
    assert_eq!(
        checked,
        vec![
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q5_1,
            GgmlType::Q5_0,
            GgmlType::Q4_1,
            GgmlType::Q4_0
        ]
    );
}

#[test]
fn dequantize_values_equal_gguf_reference() {
    let (entries, _) = entries();
    for e in &entries {
        let f = WeightFormat::Ggml(e.ty);
        let packed = Packed {
            format: f,
            rows: e.rows,
            cols: e.cols,
            bytes: e.quantized.clone(),
        };
        let ours = f.dequantize(&packed).unwrap();
        assert_eq!(ours.len(), e.dequantized.len());
        for (i, (a, b)) in ours.iter().zip(&e.dequantized).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{} value {i}: {a} vs {b}", e.ty);
        }
    }
}

#[test]
fn fixture_zero_row_quantizes_without_nan() {
    let input = f32s("input.f32");
    for t in GgmlType::ALL {
        let f = WeightFormat::Ggml(t);
        let im = vec![1.0f32; 256];
        let y = f
            .fake_quant(&input, 4, 256, t.requires_imatrix().then_some(&im[..]))
            .unwrap();
        assert!(y[512..768].iter().all(|&v| v == 0.0), "{t}: zero row");
        assert!(y.iter().all(|v| v.is_finite()), "{t}");
    }
}
