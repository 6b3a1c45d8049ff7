//! The families people deploy, each a tiny random-weight model with its published
//! config.json keys (scaled in width and depth only), against transformers' logits, and
//! its GGUF as llama.cpp's own converter writes it (fixtures: tests/fixtures/families,
//! made by scripts/make_family_fixtures.py).

use candle_core::{Device, Tensor};
use qevo::model::{Arch, LlamaConfig, Model, NoHook, WindowLayers};
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

fn read_le<T>(p: &Path, f: fn([u8; 4]) -> T) -> Vec<T> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f(c.try_into().unwrap()))
        .collect()
}

fn meta(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir(name).join("fixture.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Largest absolute difference relative to the largest reference logit.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn logits(m: &Model, name: &str) -> Vec<f32> {
    let ids = read_le(&dir(name).join("input_ids.u32"), u32::from_le_bytes);
    let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.forward(&m.weights, &NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn config(m: &Model) -> &LlamaConfig {
    match &m.arch {
        Arch::Llama(c) => c,
        other => panic!("not a llama-family model: {other:?}"),
    }
}

/// The HF directory's logits and rope against transformers', within 1e-4 relative; the
/// model is returned for further checks.
fn check_hf(name: &str) -> Model {
    let m = Model::load(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = read_le(&dir(name).join("logits.f32"), f32::from_le_bytes);
    let err = rel_err(&logits(&m, name), &want);
    assert!(
        err <= 1e-4,
        "{name}: relative error {err} against transformers"
    );
    let rope = &meta(name)["rope"];
    let cfg = config(&m);
    if let Some(inv) = rope["inv_freq"].as_array() {
        let ours = cfg.rope.inv_freq(false);
        assert_eq!(ours.len(), inv.len(), "{name}: rotary frequencies");
        for (i, (a, b)) in ours.iter().zip(inv).enumerate() {
            let b = b.as_f64().unwrap();
            assert!(
                (a - b).abs() <= 1e-6 * b.abs(),
                "{name}: inv_freq[{i}] {a} vs transformers {b}"
            );
        }
    }
    let scaling = rope["attention_scaling"].as_f64().unwrap();
    assert!(
        (cfg.rope.attn_factor - scaling).abs() < 1e-6,
        "{name}: attention scaling"
    );
    m
}

/// The GGUF llama.cpp's converter wrote: transformers' logits where llama.cpp computes
/// as transformers does, else (a sliding window llama.cpp does not run) the same model
/// without its window, as llama.cpp runs it.
fn check_gguf(name: &str) -> Model {
    let path = dir(name).join("model.gguf");
    let m = Model::load(&path).unwrap_or_else(|e| panic!("{name} GGUF: {e}"));
    let ours = logits(&m, name);
    if meta(name)["gguf_agrees_with_transformers"]
        .as_bool()
        .unwrap()
    {
        let want = read_le(&dir(name).join("logits.f32"), f32::from_le_bytes);
        let err = rel_err(&ours, &want);
        assert!(
            err <= 1e-4,
            "{name} GGUF: relative error {err} against transformers"
        );
    } else {
        assert_eq!(
            config(&m).sliding_window,
            None,
            "{name}: llama.cpp runs no window"
        );
    }
    m
}

#[test]
fn llama32_llama3_rope_matches_transformers_from_hf_and_gguf() {
    let hf = check_hf("llama32");
    let gguf = check_gguf("llama32");
    // The converter's rope_freqs.weight holds the divisors qevo computes from the keys.
    let (a, b) = (
        config(&hf).rope.freq_factors(),
        config(&gguf).rope.freq_factors(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5 * x));
}

#[test]
fn qwen2_slides_only_layers_from_max_window_layers() {
    let m = check_hf("qwen25_window");
    let cfg = config(&m);
    assert_eq!(cfg.sliding_window, Some(4));
    assert_eq!(cfg.window_layers, WindowLayers::List(vec![false, true]));
    check_gguf("qwen25_window");
}

#[test]
fn qwen2_without_a_tie_key_keeps_its_lm_head() {
    let m = check_hf("qwen25_window");
    assert!(!config(&m).tie_embeddings);
    assert!(m.tensors.iter().any(|t| t.name == "output.weight"));
}

#[test]
fn linear_rope_scaling_applies_to_windowed_layers() {
    let m = check_hf("mistral_linear_window");
    assert_eq!(config(&m).rope_local, config(&m).rope);
    check_gguf("mistral_linear_window");
}

#[test]
fn qwen3_yarn_rope_matches_transformers_from_hf_and_gguf() {
    check_hf("qwen3_yarn");
    check_gguf("qwen3_yarn");
}

#[test]
fn phi4_mini_partial_longrope_matches_transformers_from_hf_and_gguf() {
    let m = check_hf("phi4_mini");
    assert_eq!(config(&m).rope.dims, 6);
    check_gguf("phi4_mini");
}

#[test]
fn smollm3_nope_layers_match_transformers_from_hf_and_gguf() {
    let m = check_hf("smollm3");
    assert_eq!(config(&m).no_rope_layers, vec![3]);
    check_gguf("smollm3");
}

#[test]
fn granite_multipliers_match_transformers_from_hf_and_gguf() {
    check_hf("granite");
    check_gguf("granite");
}

#[test]
fn olmo2_post_norms_match_transformers_from_hf_and_gguf() {
    check_hf("olmo2");
    check_gguf("olmo2");
}

#[test]
fn dynamic_ntk_rope_matches_transformers_within_max_positions() {
    check_hf("llama_dynamic");
    check_gguf("llama_dynamic");
}
