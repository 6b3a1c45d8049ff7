//! Logits against another implementation: small random models made and run by Hugging
//! Face transformers (fixtures committed with scripts/make_fixtures.py), and the same
//! llama written as GGUF by llama.cpp's `gguf` package.

mod common;

use candle_core::{Device, IndexOp, Tensor};
use common::{logits_of, rel_err};
use qevo::model::{Model, NoHook};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_u32(p: &Path) -> Vec<u32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn check_decoder(dir: &str) {
    let d = fixture(dir);
    let m = Model::load(&d).unwrap();
    let ids = read_u32(&d.join("input_ids.u32"));
    let want = read_f32(&d.join("logits.f32"));
    let err = rel_err(&logits_of(&m, &ids), &want);
    assert!(
        err <= 1e-4,
        "{dir}: relative error {err} against transformers"
    );
}

#[test]
fn tiny_llama_logits_match_transformers() {
    check_decoder("tiny_llama");
}

#[test]
fn tiny_gpt2_conv1d_logits_match_transformers() {
    check_decoder("tiny_gpt2");
}

#[test]
fn tiny_qwen2_bias_logits_match_transformers() {
    check_decoder("tiny_qwen2");
}

#[test]
fn tiny_mistral_logits_match_transformers() {
    check_decoder("tiny_mistral");
}

#[test]
fn gguf_and_safetensors_of_one_model_give_the_same_logits() {
    let d = fixture("tiny_llama");
    let hf = Model::load(&d).unwrap();
    let gg = Model::load(&d.join("tiny_llama.gguf")).unwrap();
    assert_eq!(hf.tensors, gg.tensors);
    assert_eq!(
        hf.fingerprint, gg.fingerprint,
        "f32 GGUF must hold exactly the HF weights after un-permuting"
    );
    let ids = read_u32(&d.join("input_ids.u32"));
    let err = rel_err(&logits_of(&gg, &ids), &logits_of(&hf, &ids));
    assert!(err <= 1e-6, "relative error {err}");
    let want = read_f32(&d.join("logits.f32"));
    assert!(rel_err(&logits_of(&gg, &ids), &want) <= 1e-4);
}

#[test]
fn gguf_tokenizer_encodes_like_tokenizer_json() {
    let d = fixture("tiny_llama");
    let hf = Model::load(&d).unwrap();
    let gg = Model::load(&d.join("tiny_llama.gguf")).unwrap();
    for text in [
        "Hello world, this is a test.",
        "  spaces\tand\nnewlines 123 45678!",
        "ünïcödé text",
    ] {
        assert_eq!(
            hf.encode(text).unwrap(),
            gg.encode(text).unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn tiny_bert_mean_pooled_matches_transformers() {
    let d = fixture("tiny_bert");
    let m = Model::load(&d).unwrap();
    let ids = read_u32(&d.join("input_ids.u32"));
    let mask = read_u32(&d.join("attention_mask.u32"));
    let want = read_f32(&d.join("mean_pooled.f32"));
    let (n, t) = (2, 12);
    let h = want.len() / n;
    for s in 0..n {
        // Padding is masked out in transformers; running the unpadded tokens is the same.
        let len = mask[s * t..(s + 1) * t].iter().filter(|&&x| x == 1).count();
        let seq = &ids[s * t..s * t + len];
        let x = Tensor::from_slice(seq, (1, len), &Device::Cpu).unwrap();
        let got = m
            .forward(&m.weights, &NoHook, &x)
            .unwrap()
            .i(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = rel_err(&got, &want[s * h..(s + 1) * h]);
        assert!(err <= 1e-4, "sequence {s}: relative error {err}");
    }
}
