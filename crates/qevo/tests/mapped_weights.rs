//! Weights memory-mapped from their files: safetensors and GGUF matrices stay ranges of
//! the file (a quantized GGUF its block bytes) and give the same bits as held copies; a
//! file truncated or changed after loading is an error naming the file and the tensor.

use candle_core::{Device, Tensor};
use qevo::eval::WeightCache;
use qevo::export::export_gguf;
use qevo::model::{Model, NoHook};
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::{GgmlType, RoundingInputs, WeightFormat};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// A copy of the tiny Llama's HF directory that a test may damage.
fn tiny_copy() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_llama").join(f), d.path().join(f)).unwrap();
    }
    let p = d.path().to_path_buf();
    (d, p)
}

fn logits<W: qevo::model::WeightSet + ?Sized>(m: &Model, w: &W) -> Vec<f32> {
    let ids: Vec<u32> = (0..24).map(|i| (i * 7 % 50) as u32).collect();
    let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.forward(w, &NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn safetensors_matrices_are_mapped_and_score_as_held_copies() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    assert!(m.weights.iter().all(|w| w.is_mapped()));
    assert_eq!(m.held_weight_bytes(), 0);
    let held = m.weights.tensors().unwrap();
    assert_eq!(bits(&logits(&m, &m.weights)), bits(&logits(&m, &held)));
}

#[test]
fn gguf_quantized_tensors_are_kept_as_block_bytes() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let tplan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::Q8_0), 16).unwrap();
    let plan = resolve_ggml(&m, &tplan, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    export_gguf(&m, &plan, &RoundingInputs::default(), &out).unwrap();
    let back = Model::load(&out).unwrap();
    for (w, info) in back.weights.iter().zip(&back.tensors) {
        assert!(w.is_mapped(), "{}", info.name);
        assert_eq!(w.encoding(), "q8_0", "{}", info.name);
    }
    // Nothing decoded is held: the f32 expansion happens per use.
    assert_eq!(back.held_weight_bytes(), 0);
    // Decoded per use, they are the weights the plan was scored with, and a forward pass
    // over the mapped bytes gives the logits of one over held f32 copies.
    let scored = WeightCache::new(usize::MAX)
        .weights_for(&m, &tplan)
        .unwrap();
    for (i, s) in scored.iter().enumerate() {
        let want = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&back.weight_values(i).unwrap()), bits(&want));
    }
    let held = back.weights.tensors().unwrap();
    assert_eq!(
        bits(&logits(&back, &back.weights)),
        bits(&logits(&back, &held))
    );
}

#[test]
fn truncated_mapped_safetensors_is_an_error_naming_the_tensor() {
    let (_d, dir) = tiny_copy();
    let m = Model::load(&dir).unwrap();
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let i = m.tensor_index("blk.0.attn_q.weight").unwrap();
    let e = m.weight_values(i).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(e.contains("model.layers.0.self_attn.q_proj.weight"), "{e}");
    assert!(e.contains("truncated"), "{e}");
    // A forward pass stops at the first weight it reads, with the same kind of error.
    let x = Tensor::from_slice(&[1u32, 2, 3], (1, 3), &Device::Cpu).unwrap();
    let e = m.forward(&m.weights, &NoHook, &x).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn changed_mapped_file_is_an_error_naming_the_tensor() {
    let (_d, dir) = tiny_copy();
    let m = Model::load(&dir).unwrap();
    let file = dir.join("model.safetensors");
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    f.set_modified(later).unwrap();
    let i = m.tensor_index("blk.1.ffn_down.weight").unwrap();
    let e = m.weight_values(i).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(e.contains("model.layers.1.mlp.down_proj.weight"), "{e}");
    assert!(e.contains("changed after it was loaded"), "{e}");
}

#[test]
fn truncated_mapped_gguf_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.gguf");
    std::fs::copy(fixture("tiny_llama/tiny_llama.gguf"), &file).unwrap();
    let m = Model::load(&file).unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let i = m.tensor_index("blk.1.ffn_up.weight").unwrap();
    let e = m.weight_values(i).unwrap_err().to_string();
    assert!(e.contains("m.gguf"), "{e}");
    assert!(e.contains("blk.1.ffn_up.weight"), "{e}");
    assert!(e.contains("truncated"), "{e}");
}
