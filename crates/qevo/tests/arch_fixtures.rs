//! The decoder families beyond Llama — Qwen3, Gemma-2, Gemma-3, Phi-3 — against
//! Hugging Face transformers on committed random-weight fixtures, and the same models
//! written as GGUF the way llama.cpp's converter writes them (scripts/make_fixtures.py).
//! Each fixture's config makes its family's features matter: head_dim ≠ hidden/heads,
//! a sliding window (4) shorter than the input (16), soft-caps below the raw range, a
//! global layer beside a sliding one with another rope base, fused Phi-3 matrices.

use candle_core::{Device, Tensor};
use qevo::model::{LinearHook, Model, NoHook};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_words(p: &Path) -> Vec<[u8; 4]> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| c.try_into().unwrap())
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn ids_of(dir: &Path) -> Vec<u32> {
    read_words(&dir.join("input_ids.u32"))
        .into_iter()
        .map(u32::from_le_bytes)
        .collect()
}

fn logits_of(m: &Model, ids: &[u32], hook: &dyn LinearHook) -> Vec<f32> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.forward(&m.weights, hook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Loads the HF directory, compares its logits with transformers', and returns the error.
fn hf_error(name: &str) -> f32 {
    let d = fixture(name);
    let m = Model::load(&d).unwrap();
    let want: Vec<f32> = read_words(&d.join("logits.f32"))
        .into_iter()
        .map(f32::from_le_bytes)
        .collect();
    let err = rel_err(&logits_of(&m, &ids_of(&d), &NoHook), &want);
    println!("{name}: max relative logit error vs transformers {err:.3e}");
    err
}

/// The GGUF beside the HF directory must hold the same weights and give the same logits.
fn gguf_matches_hf(name: &str) {
    let d = fixture(name);
    let hf = Model::load(&d).unwrap();
    let gg = Model::load(&d.join(format!("{name}.gguf"))).unwrap();
    assert_eq!(hf.tensors, gg.tensors, "{name}: tensor lists differ");
    assert_eq!(hf.fingerprint, gg.fingerprint, "{name}: weights differ");
    assert_eq!(
        hf.aux_params(),
        gg.aux_params(),
        "{name}: norms/biases differ"
    );
    let ids = ids_of(&d);
    let err = rel_err(
        &logits_of(&gg, &ids, &NoHook),
        &logits_of(&hf, &ids, &NoHook),
    );
    println!("{name}: GGUF vs HF load {err:.3e}");
    assert!(
        err <= 1e-6,
        "{name}: GGUF logits differ from HF load by {err}"
    );
}

#[test]
fn tiny_qwen3_qk_norm_logits_match_transformers() {
    assert!(hf_error("tiny_qwen3") <= 1e-4);
}

#[test]
fn tiny_gemma2_softcap_window_logits_match_transformers() {
    assert!(hf_error("tiny_gemma2") <= 1e-4);
}

#[test]
fn tiny_gemma3_local_global_rope_logits_match_transformers() {
    assert!(hf_error("tiny_gemma3") <= 1e-4);
}

#[test]
fn tiny_phi3_fused_qkv_gate_up_logits_match_transformers() {
    assert!(hf_error("tiny_phi3") <= 1e-4);
}

#[test]
fn qwen3_gguf_loads_like_hf() {
    gguf_matches_hf("tiny_qwen3");
}

#[test]
fn gemma2_gguf_with_stored_one_plus_w_norms_loads_like_hf() {
    gguf_matches_hf("tiny_gemma2");
}

#[test]
fn gemma3_gguf_loads_like_hf() {
    gguf_matches_hf("tiny_gemma3");
}

#[test]
fn phi3_gguf_fused_tensors_load_like_hf() {
    gguf_matches_hf("tiny_phi3");
}

/// Records which tensors' linear inputs the forward pass hooked.
struct Seen(Mutex<Vec<usize>>);

impl LinearHook for Seen {
    fn linear_input(&self, tensor: usize, x: &Tensor) -> qevo::Result<Tensor> {
        self.0.lock().unwrap().push(tensor);
        Ok(x.clone())
    }
}

#[test]
fn every_linear_of_every_family_passes_the_hook() {
    for name in ["tiny_qwen3", "tiny_gemma2", "tiny_gemma3", "tiny_phi3"] {
        let d = fixture(name);
        let m = Model::load(&d).unwrap();
        let seen = Seen(Mutex::new(Vec::new()));
        logits_of(&m, &ids_of(&d), &seen);
        let mut seen = seen.0.into_inner().unwrap();
        seen.sort();
        seen.dedup();
        // Every tensor but the embedding (a gather) is a linear layer; a tied output
        // reuses the embedding's index.
        let mut want: Vec<usize> = (0..m.tensors.len())
            .filter(|&i| m.tensors[i].role != qevo::model::Role::Embedding)
            .collect();
        if m.tied_output() {
            want.insert(0, m.tensor_index("token_embd.weight").unwrap());
        }
        assert_eq!(seen, want, "{name}");
    }
}

#[test]
fn phi3_fused_matrices_become_separate_tensors() {
    let m = Model::load(&fixture("tiny_phi3")).unwrap();
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    for part in ["attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"] {
        assert!(
            names.contains(&format!("blk.0.{part}.weight").as_str()),
            "{names:?}"
        );
    }
    let up = &m.tensors[m.tensor_index("blk.0.ffn_up.weight").unwrap()];
    assert_eq!((up.rows, up.cols), (128, 64), "gate/up split in halves");
    let k = &m.tensors[m.tensor_index("blk.0.attn_k.weight").unwrap()];
    assert_eq!((k.rows, k.cols), (32, 64), "k is 2 kv heads × 16");
}
