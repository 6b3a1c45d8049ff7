//! qevo's GGML quantizers against llama.cpp's own: every tensor of the embedded model,
//! quantized by qevo, must hash to the bytes `llama-quantize --pure` wrote for it, per
//! type, with and without an importance matrix.
//!
//! The fixture (tests/fixtures/ggml_quants, made by scripts/make_ggml_fixtures.py) holds
//! the sha256 of every tensor llama-quantize wrote, and the imatrix file it used. The input
//! is derived here exactly as the script derives it: the embedded model (f16 on disk, so
//! f16 → f32 is exact) exported by qevo as an f32 GGUF (which puts q/k rows in llama.cpp's
//! order); the f32 tensors' own hashes are in the fixture too and are checked first. No
//! llama.cpp tool is needed to run this.

use qevo::export::export_gguf;
use qevo::model::gguf::Gguf;
use qevo::model::Model;
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::RoundingInputs;
use qevo::quant::{GgmlType, WeightFormat};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ggml_quants")
}

fn index() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The embedded model's quantizable tensors as f32, in llama.cpp's layout, by name:
/// (rows, cols, values).
fn f32_tensors() -> HashMap<String, (usize, usize, Vec<f32>)> {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let model = Model::load(&assets).unwrap();
    let plan = TensorPlan::uniform(&model, WeightFormat::Ggml(GgmlType::F32), 16).unwrap();
    let plan = resolve_ggml(&model, &plan, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model-f32.gguf");
    export_gguf(&model, &plan, &RoundingInputs::default(), &path).unwrap();
    let g = Gguf::open(&path).unwrap();
    model
        .tensors
        .iter()
        .map(|info| {
            let t = g.tensor(&info.name).unwrap();
            assert_eq!(t.type_name(), "f32", "{}", info.name);
            let v = g
                .tensor_bytes(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (info.name.clone(), (info.rows, info.cols, v))
        })
        .collect()
}

/// llama-quantize's importance values (`load_imatrix` in tools/quantize) as qevo reads
/// them: per tensor, `in_sum2 / counts` in f32 (`ImatrixEntry::weights`).
fn imatrix() -> HashMap<String, Vec<f32>> {
    let m = qevo::calib::Imatrix::read(&fixture_dir().join("imatrix.gguf")).unwrap();
    m.entries
        .iter()
        .map(|(name, e)| (name.clone(), e.weights()))
        .collect()
}

#[test]
fn input_tensors_equal_the_ones_llama_quantize_read() {
    let idx = index();
    for (name, (_, _, v)) in f32_tensors() {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            sha256_hex(&bytes),
            idx["f32"][&name]["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn every_quantizable_type_is_byte_identical_to_llama_quantize() {
    let idx = index();
    let tensors = f32_tensors();
    let im = imatrix();
    let mut checked: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut mismatches: Vec<String> = Vec::new();
    for (key, run) in idx["quantized"].as_object().unwrap() {
        let with_imatrix = key.ends_with("/imatrix");
        let Some(written) = run["tensors"].as_object() else {
            continue; // llama-quantize refused (no imatrix for a type that needs one)
        };
        let (mut n, mut bad) = (0, 0);
        for (name, (rows, cols, data)) in &tensors {
            let want = &written[name];
            let t = GgmlType::parse(want["type"].as_str().unwrap()).unwrap();
            if !t.can_quantize() {
                skipped.push(format!("{key}: {name} ({t})"));
                continue;
            }
            let qw = im.get(name).filter(|_| with_imatrix).map(Vec::as_slice);
            let packed = WeightFormat::Ggml(t)
                .quantize_named(name, data, *rows, *cols, qw)
                .unwrap();
            n += 1;
            if sha256_hex(&packed.bytes) != want["sha256"].as_str().unwrap() {
                bad += 1;
                mismatches.push(format!("{key}: {name} ({t})"));
            }
        }
        checked.push(format!("{key}: {} of {n} identical", n - bad));
    }
    println!("{}", checked.join("\n"));
    if !skipped.is_empty() {
        println!("not quantizable by qevo yet: {} tensors", skipped.len());
    }
    assert!(
        mismatches.is_empty(),
        "differ from llama.cpp:\n{}",
        mismatches.join("\n")
    );
    // The fixture covers every type qevo quantizes (floats aside), with an imatrix, and
    // without one where llama-quantize writes the type without one.
    for t in GgmlType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let modes: &[&str] = if t.needs_imatrix() {
            &["imatrix"]
        } else {
            &["plain", "imatrix"]
        };
        for mode in modes {
            let key = format!("{t}/{mode}");
            assert!(
                idx["quantized"][&key]["tensors"].is_object(),
                "{key} not in the fixture"
            );
        }
    }
}

/// SHA-256 (FIPS 180-4), to compare with the fixture's hashes without a crypto crate.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_matches_known_digests() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
