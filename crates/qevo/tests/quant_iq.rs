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

// ---------------------------------------------------------------------------------------
// iq1_s / iq1_m quantizers against llama-quantize on edge rows (tests/fixtures/iq1, made by
// scripts/make_iq1_fixtures.py): all-zero rows, zero / tiny sub-blocks, exact ties with
// both zeros, outliers, constants, a huge dynamic range, and an importance matrix with zero
// columns, a zero sub-block and huge values. No llama.cpp tool is needed to run these.

fn iq1_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iq1")
}

/// One fixture case: `rows` rows of a tensor, its importance (if llama-quantize used one)
/// and the bytes llama-quantize wrote for them.
struct Iq1Case {
    ty: GgmlType,
    tensor: String,
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    imatrix: Option<Vec<f32>>,
    want: Vec<u8>,
}

fn iq1_cases() -> Vec<Iq1Case> {
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(iq1_dir().join("index.json")).unwrap())
            .unwrap();
    let im = qevo::calib::Imatrix::read(&iq1_dir().join("imatrix.gguf")).unwrap();
    idx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let tensor = c["tensor"].as_str().unwrap().to_string();
            let values: Vec<f32> = std::fs::read(iq1_dir().join(c["values"].as_str().unwrap()))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let imatrix = c["imatrix"]
                .as_bool()
                .unwrap()
                .then(|| im.entries[&tensor].weights());
            Iq1Case {
                ty: GgmlType::parse(c["type"].as_str().unwrap()).unwrap(),
                rows: c["rows"].as_u64().unwrap() as usize,
                cols: c["cols"].as_u64().unwrap() as usize,
                values,
                imatrix,
                want: std::fs::read(iq1_dir().join(c["bytes"].as_str().unwrap())).unwrap(),
                tensor,
            }
        })
        .collect()
}

fn quantize_case(c: &Iq1Case) -> Vec<u8> {
    qevo::quant::WeightFormat::Ggml(c.ty)
        .quantize_named(&c.tensor, &c.values, c.rows, c.cols, c.imatrix.as_deref())
        .unwrap()
        .bytes
}

#[test]
fn iq1_quantizers_are_byte_identical_to_llama_quantize_on_edge_rows() {
    let cases = iq1_cases();
    for ty in [GgmlType::Iq1S, GgmlType::Iq1M] {
        assert!(
            cases.iter().any(|c| c.ty == ty && c.imatrix.is_some()),
            "{ty}"
        );
    }
    // iq1_m without an importance matrix: llama-quantize writes token_embd so.
    assert!(cases
        .iter()
        .any(|c| c.ty == GgmlType::Iq1M && c.imatrix.is_none()));
    let mut bad = Vec::new();
    for c in &cases {
        let ours = quantize_case(c);
        assert_eq!(ours.len(), c.want.len(), "{} {}", c.ty, c.tensor);
        let bb = c.ty.block_bytes();
        let blocks_per_row = c.cols / c.ty.block_len();
        for (b, (o, w)) in ours.chunks(bb).zip(c.want.chunks(bb)).enumerate() {
            if o != w {
                let (row, blk) = (b / blocks_per_row, b % blocks_per_row);
                bad.push(format!("{} {} row {row} block {blk}", c.ty, c.tensor));
            }
        }
    }
    assert!(bad.is_empty(), "differ from llama.cpp:\n{}", bad.join("\n"));
}

#[test]
fn iq1_round_trip_stays_near_the_input_and_reloads_exactly_from_gguf() {
    use qevo::export::{GgufTensorOut, GgufWriter};
    use qevo::model::gguf::Gguf;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq1.gguf");
    let cases = iq1_cases();
    let mut w = GgufWriter::default();
    let mut written = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let bytes = quantize_case(c);
        let back = dequantize(c.ty, &bytes, c.rows * c.cols).unwrap();
        // Rows 0 and the last keep the model's values: their error must be a fraction of
        // their RMS (1.56 / 1.75 bits per weight lose much, but not everything).
        for r in [0, c.rows - 1] {
            let x = &c.values[r * c.cols..(r + 1) * c.cols];
            let y = &back[r * c.cols..(r + 1) * c.cols];
            let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
            let err = (x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                / x.len() as f32)
                .sqrt();
            assert!(
                err < 0.8 * rms,
                "{} {} row {r}: {err} vs rms {rms}",
                c.ty,
                c.tensor
            );
        }
        w.tensors.push(GgufTensorOut {
            name: format!("t{i}"),
            dims: vec![c.cols as u64, c.rows as u64],
            type_id: c.ty.gguf_id(),
            bytes: bytes.clone(),
        });
        written.push((bytes, back));
    }
    w.write(&path).unwrap();
    let g = Gguf::open(&path).unwrap();
    for (i, (c, (bytes, back))) in cases.iter().zip(&written).enumerate() {
        let t = g.tensor(&format!("t{i}")).unwrap();
        assert_eq!(g.tensor_bytes(t), &bytes[..], "{} {}", c.ty, c.tensor);
        let loaded = g.dequantize(t).unwrap();
        let same = loaded.len() == back.len()
            && loaded
                .iter()
                .zip(back)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} {}", c.ty, c.tensor);
    }
}

#[test]
fn iq1_s_without_an_importance_matrix_is_refused_naming_the_tensor() {
    let c = iq1_cases()
        .into_iter()
        .find(|c| c.ty == GgmlType::Iq1S)
        .unwrap();
    let e = qevo::quant::WeightFormat::Ggml(GgmlType::Iq1S)
        .quantize_named(&c.tensor, &c.values, c.rows, c.cols, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&c.tensor) && e.contains("importance matrix"),
        "{e}"
    );
}
