//! Test fixtures made in temporary directories: random-weight Hugging Face model
//! directories for every supported architecture, written with the safetensors crate.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct LlamaOpts {
    pub arch: &'static str,
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tie: bool,
    pub qkv_bias: bool,
}

impl Default for LlamaOpts {
    fn default() -> Self {
        LlamaOpts {
            arch: "LlamaForCausalLM",
            hidden: 64,
            inter: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 96,
            tie: false,
            qkv_bias: false,
        }
    }
}

pub struct Weights {
    rng: ChaCha8Rng,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn new(seed: u64) -> Self {
        Weights {
            rng: ChaCha8Rng::seed_from_u64(seed),
            tensors: BTreeMap::new(),
        }
    }
    /// Uniform in [center - scale, center + scale].
    pub fn add(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|_| center + scale * (2.0 * self.rng.random::<f32>() - 1.0)).collect();
        self.tensors.insert(name.to_string(), (shape.to_vec(), v));
    }
    pub fn write(&self, path: &Path) {
        let bytes: BTreeMap<&String, Vec<u8>> = self
            .tensors
            .iter()
            .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(k, (s, _))| (k.clone(), TensorView::new(Dtype::F32, s.clone(), &bytes[k]).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }
}

pub fn write_llama_dir(dir: &Path, o: &LlamaOpts, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let hd = o.hidden / o.heads;
    let model_type = match o.arch {
        "Qwen2ForCausalLM" => "qwen2",
        "MistralForCausalLM" => "mistral",
        _ => "llama",
    };
    let cfg = serde_json::json!({
        "architectures": [o.arch],
        "model_type": model_type,
        "hidden_size": o.hidden,
        "intermediate_size": o.inter,
        "num_hidden_layers": o.layers,
        "num_attention_heads": o.heads,
        "num_key_value_heads": o.kv_heads,
        "vocab_size": o.vocab,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": o.tie,
        "hidden_act": "silu",
        "sliding_window": 4096,
        "max_window_layers": o.layers,
        "use_sliding_window": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut w = Weights::new(seed);
    let s = 1.0 / (o.hidden as f32).sqrt();
    w.add("model.embed_tokens.weight", &[o.vocab, o.hidden], 0.0, 1.0);
    for l in 0..o.layers {
        let p = format!("model.layers.{l}");
        w.add(&format!("{p}.input_layernorm.weight"), &[o.hidden], 1.0, 0.2);
        w.add(&format!("{p}.post_attention_layernorm.weight"), &[o.hidden], 1.0, 0.2);
        w.add(&format!("{p}.self_attn.q_proj.weight"), &[o.heads * hd, o.hidden], 0.0, s * 1.5);
        w.add(&format!("{p}.self_attn.k_proj.weight"), &[o.kv_heads * hd, o.hidden], 0.0, s * 1.5);
        w.add(&format!("{p}.self_attn.v_proj.weight"), &[o.kv_heads * hd, o.hidden], 0.0, s);
        w.add(&format!("{p}.self_attn.o_proj.weight"), &[o.hidden, o.heads * hd], 0.0, s);
        if o.qkv_bias {
            w.add(&format!("{p}.self_attn.q_proj.bias"), &[o.heads * hd], 0.0, 0.1);
            w.add(&format!("{p}.self_attn.k_proj.bias"), &[o.kv_heads * hd], 0.0, 0.1);
            w.add(&format!("{p}.self_attn.v_proj.bias"), &[o.kv_heads * hd], 0.0, 0.1);
        }
        w.add(&format!("{p}.mlp.gate_proj.weight"), &[o.inter, o.hidden], 0.0, s);
        w.add(&format!("{p}.mlp.up_proj.weight"), &[o.inter, o.hidden], 0.0, s);
        w.add(&format!("{p}.mlp.down_proj.weight"), &[o.hidden, o.inter], 0.0, 1.0 / (o.inter as f32).sqrt());
    }
    w.add("model.norm.weight", &[o.hidden], 1.0, 0.2);
    if !o.tie {
        w.add("lm_head.weight", &[o.vocab, o.hidden], 0.0, s * 2.0);
    }
    w.write(&dir.join("model.safetensors"));
}

pub fn write_bert_dir(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, inter, layers, heads, vocab, pos) = (64usize, 128usize, 2usize, 4usize, 80usize, 64usize);
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
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
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
    w.write(&dir.join("model.safetensors"));
}

/// Max |a-b| / max(|b|) over two equal-length slices.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
