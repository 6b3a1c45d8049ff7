//! Test fixtures made in temporary directories: random-weight Hugging Face model
//! directories for every supported architecture, written with the safetensors crate.

#![allow(dead_code)]

pub mod llama_tools;

use std::path::Path;

pub use qevo::model::synthetic::{LlamaShape as LlamaOpts, RandomTensors as Weights};

pub fn write_llama_dir(dir: &Path, o: &LlamaOpts, seed: u64) {
    qevo::model::synthetic::write_llama_dir(dir, o, seed).unwrap();
}

pub fn write_bert_dir(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, inter, layers, heads, vocab, pos) =
        (64usize, 128usize, 2usize, 4usize, 80usize, 64usize);
    let cfg = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "vocab_size": vocab, "max_position_embeddings": pos,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "pad_token_id": 0, "position_embedding_type": "absolute",
        "use_cache": true, "classifier_dropout": null, "model_type": "bert"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let mut w = Weights::new(seed);
    let s = 1.0 / (h as f32).sqrt();
    w.add("embeddings.word_embeddings.weight", &[vocab, h], 0.0, 1.0);
    w.add("embeddings.position_embeddings.weight", &[pos, h], 0.0, 0.5);
    w.add("embeddings.token_type_embeddings.weight", &[2, h], 0.0, 0.5);
    w.add("embeddings.LayerNorm.weight", &[h], 1.0, 0.2);
    w.add("embeddings.LayerNorm.bias", &[h], 0.0, 0.1);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (n, rows, cols) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", inter, h),
            ("output.dense", h, inter),
        ] {
            w.add(&format!("{p}.{n}.weight"), &[rows, cols], 0.0, s);
            w.add(&format!("{p}.{n}.bias"), &[rows], 0.0, 0.1);
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            w.add(&format!("{p}.{n}.weight"), &[h], 1.0, 0.2);
            w.add(&format!("{p}.{n}.bias"), &[h], 0.0, 0.1);
        }
    }
    w.write(&dir.join("model.safetensors")).unwrap();
}

/// The FP model's logits for one sequence of `ids`, flattened `[len · vocab]`.
pub fn logits_of(m: &qevo::Model, ids: &[u32]) -> Vec<f32> {
    let x =
        candle_core::Tensor::from_slice(ids, (1, ids.len()), &candle_core::Device::Cpu).unwrap();
    m.forward(&m.weights, &qevo::model::NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// A tensor's values as f32, whatever it is held as (16-bit weights are kept as stored).
pub fn f32_values(t: &candle_core::Tensor) -> Vec<f32> {
    qevo::model::widened(t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Max |a-b| / max(|b|) over two equal-length slices.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Tensor `i` in `cycle[i % len]`.
pub fn cycled(m: &qevo::Model, cycle: &[qevo::quant::WeightFormat]) -> qevo::plan::TensorPlan {
    qevo::plan::TensorPlan {
        entries: m
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t.name.clone(),
                    qevo::plan::TensorChoice {
                        format: cycle[i % cycle.len()],
                        act_bits: 16,
                    },
                )
            })
            .collect(),
    }
}
