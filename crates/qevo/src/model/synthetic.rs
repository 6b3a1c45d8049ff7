//! Random-weight Hugging Face model directories (config.json + model.safetensors) for
//! tests and benchmarks: any Llama-family shape, written with the safetensors crate, so
//! loaders and forward passes can be checked at sizes no committed fixture has.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

/// Shape of a random Llama-family model.
#[derive(Clone, Debug)]
pub struct LlamaShape {
    /// `LlamaForCausalLM`, `Qwen2ForCausalLM` or `MistralForCausalLM`.
    pub arch: &'static str,
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub tie: bool,
    /// q/k/v biases; Llama and Mistral write them as `attention_bias`, with an o bias.
    pub qkv_bias: bool,
}

impl Default for LlamaShape {
    fn default() -> Self {
        LlamaShape {
            arch: "LlamaForCausalLM",
            hidden: 64,
            inter: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 96,
            max_positions: 128,
            tie: false,
            qkv_bias: false,
        }
    }
}

/// Named f32 tensors filled from one seeded RNG, written as one safetensors file.
pub struct RandomTensors {
    rng: ChaCha8Rng,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl RandomTensors {
    pub fn new(seed: u64) -> Self {
        RandomTensors {
            rng: ChaCha8Rng::seed_from_u64(seed),
            tensors: BTreeMap::new(),
        }
    }
    /// Uniform in `[center - scale, center + scale]`.
    pub fn add(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| center + scale * (2.0 * self.rng.random::<f32>() - 1.0))
            .collect();
        self.tensors.insert(name.to_string(), (shape.to_vec(), v));
    }
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes: BTreeMap<&String, Vec<u8>> = self
            .tensors
            .iter()
            .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views = self
            .tensors
            .iter()
            .map(|(k, (s, _))| {
                TensorView::new(Dtype::F32, s.clone(), &bytes[k])
                    .map(|v| (k.clone(), v))
                    .map_err(|e| Error::tensor(path, k, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let data =
            safetensors::serialize(views, None).map_err(|e| Error::format(path, e.to_string()))?;
        crate::fsutil::write_atomic(path, &data)
    }
}

/// Writes a random-weight Llama-family HF directory (no tokenizer).
// One piece: a linear listing of a checkpoint's config keys and tensors.
pub fn write_llama_dir(dir: &Path, o: &LlamaShape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let hd = o.hidden / o.heads;
    let model_type = match o.arch {
        "Qwen2ForCausalLM" => "qwen2",
        "MistralForCausalLM" => "mistral",
        _ => "llama",
    };
    // Llama and Mistral spell q/k/v biases `attention_bias`, which adds an o bias too.
    let attention_bias = o.qkv_bias && model_type != "qwen2";
    let cfg = serde_json::json!({
        "architectures": [o.arch],
        "attention_bias": attention_bias,
        "model_type": model_type,
        "hidden_size": o.hidden,
        "intermediate_size": o.inter,
        "num_hidden_layers": o.layers,
        "num_attention_heads": o.heads,
        "num_key_value_heads": o.kv_heads,
        "vocab_size": o.vocab,
        "max_position_embeddings": o.max_positions,
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
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::serialize(&path, e))?;
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    let mut w = RandomTensors::new(seed);
    let s = 1.0 / (o.hidden as f32).sqrt();
    w.add("model.embed_tokens.weight", &[o.vocab, o.hidden], 0.0, 1.0);
    for l in 0..o.layers {
        let p = format!("model.layers.{l}");
        w.add(
            &format!("{p}.input_layernorm.weight"),
            &[o.hidden],
            1.0,
            0.2,
        );
        w.add(
            &format!("{p}.post_attention_layernorm.weight"),
            &[o.hidden],
            1.0,
            0.2,
        );
        w.add(
            &format!("{p}.self_attn.q_proj.weight"),
            &[o.heads * hd, o.hidden],
            0.0,
            s * 1.5,
        );
        w.add(
            &format!("{p}.self_attn.k_proj.weight"),
            &[o.kv_heads * hd, o.hidden],
            0.0,
            s * 1.5,
        );
        w.add(
            &format!("{p}.self_attn.v_proj.weight"),
            &[o.kv_heads * hd, o.hidden],
            0.0,
            s,
        );
        w.add(
            &format!("{p}.self_attn.o_proj.weight"),
            &[o.hidden, o.heads * hd],
            0.0,
            s,
        );
        if attention_bias {
            w.add(&format!("{p}.self_attn.o_proj.bias"), &[o.hidden], 0.0, 0.1);
        }
        if o.qkv_bias {
            w.add(
                &format!("{p}.self_attn.q_proj.bias"),
                &[o.heads * hd],
                0.0,
                0.1,
            );
            w.add(
                &format!("{p}.self_attn.k_proj.bias"),
                &[o.kv_heads * hd],
                0.0,
                0.1,
            );
            w.add(
                &format!("{p}.self_attn.v_proj.bias"),
                &[o.kv_heads * hd],
                0.0,
                0.1,
            );
        }
        w.add(
            &format!("{p}.mlp.gate_proj.weight"),
            &[o.inter, o.hidden],
            0.0,
            s,
        );
        w.add(
            &format!("{p}.mlp.up_proj.weight"),
            &[o.inter, o.hidden],
            0.0,
            s,
        );
        w.add(
            &format!("{p}.mlp.down_proj.weight"),
            &[o.hidden, o.inter],
            0.0,
            1.0 / (o.inter as f32).sqrt(),
        );
    }
    w.add("model.norm.weight", &[o.hidden], 1.0, 0.2);
    if !o.tie {
        w.add("lm_head.weight", &[o.vocab, o.hidden], 0.0, s * 2.0);
    }
    w.write(&dir.join("model.safetensors"))
}
