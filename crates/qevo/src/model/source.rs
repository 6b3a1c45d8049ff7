//! Where weights come from: Hugging Face safetensors (single or sharded, memory-mapped)
//! and GGUF. Both end in the same `fetch(name, shape)` the architectures call, which
//! checks the shape against the config, converts to f32 and rejects NaN/Inf by name.

use super::bert::{BertConfig, BertNet};
use super::config::{ArchKind, HfConfig};
use super::gguf::{Gguf, Value};
use super::gpt2::{Gpt2Config, Gpt2Net};
use super::llama::{LlamaConfig, LlamaNet};
use super::packed_st::{self, PackedIndex};
use super::{tokenizer, Arch, Model, Net, TensorInfo};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One memory-mapped safetensors file with its validated header.
struct StFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// All safetensors files of a model directory, indexed by tensor name.
struct StStore {
    files: Vec<StFile>,
    index: HashMap<String, usize>,
}

impl StStore {
    fn open(dir: &Path) -> Result<StStore> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if sharded.exists() {
            let text = std::fs::read_to_string(&sharded).map_err(|e| Error::io(&sharded, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::format(&sharded, format!("invalid JSON: {e}")))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::config(&sharded, "weight_map", "missing or not an object"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            for f in &files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(Error::config(
                        &sharded,
                        "weight_map",
                        format!("shard `{f}` is not a plain file name"),
                    ));
                }
            }
            files.into_iter().map(|f| dir.join(f)).collect()
        } else if dir.join("pytorch_model.bin").exists() {
            return Err(Error::format(
                dir,
                "only pytorch_model.bin found: qevo reads safetensors (convert the checkpoint first)",
            ));
        } else {
            return Err(Error::format(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map; safetensors validates the header against its length.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::format(&path, format!("invalid safetensors: {e}")))?;
            for name in meta.tensors().keys() {
                index.insert(name.clone(), files.len());
            }
            files.push(StFile {
                path,
                mmap,
                header_len,
                meta,
            });
        }
        Ok(StStore { files, index })
    }

    /// The raw bytes of a 1-D U8 tensor (a packed section); `Ok(None)` when absent.
    fn raw_u8(&self, name: &str) -> Result<Option<&[u8]>> {
        let Some(&fi) = self.index.get(name) else {
            return Ok(None);
        };
        let f = &self.files[fi];
        let info = f
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&f.path, name, "listed but not found"))?;
        if info.dtype != Dtype::U8 || info.shape.len() != 1 {
            return Err(Error::tensor(
                &f.path,
                name,
                format!(
                    "packed section is {:?} {:?}, expected 1-D U8",
                    info.dtype, info.shape
                ),
            ));
        }
        let start = 8 + f.header_len + info.data_offsets.0;
        let end = 8 + f.header_len + info.data_offsets.1;
        Ok(Some(&f.mmap[start..end]))
    }

    /// Loads `name` as f32 with the expected shape; `Ok(None)` when absent.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some(&fi) = self.index.get(name) else {
            return Ok(None);
        };
        let f = &self.files[fi];
        let info = f
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&f.path, name, "listed but not found"))?;
        if info.shape != shape {
            return Err(Error::tensor(
                &f.path,
                name,
                format!(
                    "shape {:?} does not match the config's {:?}",
                    info.shape, shape
                ),
            ));
        }
        let start = 8 + f.header_len + info.data_offsets.0;
        let end = 8 + f.header_len + info.data_offsets.1;
        let bytes = &f.mmap[start..end];
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::tensor(
                    &f.path,
                    name,
                    format!("dtype {other:?} is not supported (f32, f16, bf16)"),
                ))
            }
        };
        finite_tensor(&f.path, name, data, shape).map(Some)
    }
}

/// Rejects NaN/Inf weights by tensor name and element, then wraps the data.
fn finite_tensor(path: &Path, name: &str, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::tensor(
            path,
            name,
            format!("element {i} is {}", data[i]),
        ));
    }
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Hugging Face llama-family names for the canonical (GGUF) names.
pub(crate) fn llama_hf_name(canonical: &str) -> String {
    const TOP: [(&str, &str); 3] = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    const BLOCK: [(&str, &str); 9] = [
        ("attn_norm", "input_layernorm"),
        ("ffn_norm", "post_attention_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ];
    if let Some((_, hf)) = TOP.iter().find(|(c, _)| *c == canonical) {
        return hf.to_string();
    }
    if let Some(rest) = canonical.strip_prefix("blk.") {
        if let Some((b, rest)) = rest.split_once('.') {
            if let Some((part, suffix)) = rest.split_once('.') {
                if let Some((_, hf)) = BLOCK.iter().find(|(c, _)| *c == part) {
                    return format!("model.layers.{b}.{hf}.{suffix}");
                }
            }
        }
    }
    canonical.to_string()
}

pub(crate) fn load_hf_dir(dir: &Path) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let cfg = HfConfig::read(&cfg_path)?;
    let kind = cfg.arch_kind()?;
    let store = StStore::open(dir)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        Some(tokenizer::load_tokenizer_json(&tok_path)?)
    } else {
        None
    };
    // Some exports prefix every name with the base model's name.
    let prefixed = |prefix: &'static str| {
        let store = &store;
        move |name: &str, shape: &[usize]| -> Result<Option<Tensor>> {
            match store.get(name, shape)? {
                Some(t) => Ok(Some(t)),
                None => store.get(&format!("{prefix}{name}"), shape),
            }
        }
    };
    let built = (|| -> Result<(Arch, Net, Vec<TensorInfo>, Vec<Tensor>)> {
        Ok(match kind {
            ArchKind::Llama | ArchKind::Qwen2 | ArchKind::Mistral => {
                let c = LlamaConfig::from_hf(&cfg, kind)?;
                // A qevo-int directory: tensors its quantization config lists are decoded
                // from their packed sections, everything else is read as usual.
                let packed = match packed_st::is_packed(&cfg.json) {
                    true => Some(PackedIndex::open(dir)?),
                    false => None,
                };
                let fetch = |name: &str, shape: &[usize]| {
                    let hf = llama_hf_name(name);
                    match &packed {
                        Some(p) if p.contains(&hf) => {
                            let data = p.decode(&hf, shape, &|s| store.raw_u8(s))?;
                            finite_tensor(dir, &hf, data, shape).map(Some)
                        }
                        _ => store.get(&hf, shape),
                    }
                };
                let (net, i, w) = LlamaNet::load(c.clone(), &fetch)?;
                if let Some(p) = &packed {
                    let used: Vec<String> = i.iter().map(|t| llama_hf_name(&t.name)).collect();
                    p.check_all_used(&used)?;
                }
                (Arch::Llama(c), Net::Llama(net), i, w)
            }
            _ if packed_st::is_packed(&cfg.json) => {
                return Err(Error::UnsupportedArch {
                    path: cfg_path.clone(),
                    arch: format!("{} with qevo-int packed weights", kind.as_str()),
                    supported: "llama, qwen2, mistral".into(),
                })
            }
            ArchKind::Gpt2 => {
                let c = Gpt2Config::from_hf(&cfg)?;
                let (net, i, w) = Gpt2Net::load(c.clone(), &prefixed("transformer."))?;
                (Arch::Gpt2(c), Net::Gpt2(net), i, w)
            }
            ArchKind::Bert => {
                let c = BertConfig::from_hf(&cfg)?;
                let (net, i, w) = BertNet::load(c.clone(), &prefixed("bert."))?;
                (Arch::Bert(c), Net::Bert(net), i, w)
            }
        })
    })();
    // Architectures report absent tensors without a path; name the directory.
    let (arch, net, infos, weights) = built.map_err(|e| match e {
        Error::Invalid(msg) => Error::format(dir, msg),
        e => e,
    })?;
    finish(arch, net, infos, weights, tokenizer, dir)
}

fn finish(
    arch: Arch,
    net: Net,
    tensors: Vec<TensorInfo>,
    weights: Vec<Tensor>,
    tokenizer: Option<tokenizer::TextTokenizer>,
    source: &Path,
) -> Result<Model> {
    if let Some(tk) = &tokenizer {
        tokenizer::check_vocab(tk, arch.vocab(), source)?;
    }
    let fingerprint = fingerprint(&weights)?;
    Ok(Model {
        arch,
        tensors,
        weights,
        tokenizer,
        source: source.to_path_buf(),
        fingerprint,
        net,
    })
}

/// FNV-1a over every quantizable weight's f32 bits, in tensor order: the same weights give
/// the same fingerprint whatever file format they came from.
pub(crate) fn fingerprint(weights: &[Tensor]) -> Result<String> {
    use rayon::prelude::*;
    let parts: Vec<Result<u64>> = weights
        .par_iter()
        .map(|w| {
            let v = w.flatten_all()?.to_vec1::<f32>()?;
            let mut h: u64 = 0xcbf29ce484222325;
            for x in v {
                for b in x.to_bits().to_le_bytes() {
                    h ^= b as u64;
                    h = h.wrapping_mul(0x100000001b3);
                }
            }
            Ok(h)
        })
        .collect();
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        h ^= p?;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(format!("{h:016x}"))
}

fn gguf_u(g: &Gguf, key: &str) -> Result<usize> {
    g.get(key)
        .and_then(Value::as_u64)
        .filter(|&v| v > 0 && v < 1 << 40)
        .map(|v| v as usize)
        .ok_or_else(|| Error::config(&g.path, key, "missing or not a positive integer"))
}

fn gguf_f(g: &Gguf, key: &str, default: f64) -> Result<f64> {
    match g.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| Error::config(&g.path, key, "not a positive number")),
    }
}

/// llama.cpp's converter interleaves the two rotary halves of each head's rows
/// (row `h*D + 2i + s` holds HF row `h*D + s*D/2 + i`); undo it so the HF-layout rope
/// applies and logits match the source model.
pub(crate) fn unpermute_rows(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let rows = w.dim(0)?;
    let d = rows / n_heads;
    let idx: Vec<u32> = (0..rows)
        .map(|r| {
            let (h, j) = (r / d, r % d);
            let (s, i) = (j / (d / 2), j % (d / 2));
            (h * d + 2 * i + s) as u32
        })
        .collect();
    let idx = Tensor::from_vec(idx, rows, &Device::Cpu)?;
    Ok(w.index_select(&idx, 0)?)
}

/// The inverse of `unpermute_rows`, for writing GGUF.
pub(crate) fn permute_rows(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let rows = w.dim(0)?;
    let d = rows / n_heads;
    let idx: Vec<u32> = (0..rows)
        .map(|r| {
            let (h, j) = (r / d, r % d);
            let (i, s) = (j / 2, j % 2);
            (h * d + s * (d / 2) + i) as u32
        })
        .collect();
    let idx = Tensor::from_vec(idx, rows, &Device::Cpu)?;
    Ok(w.index_select(&idx, 0)?)
}

pub(crate) fn load_gguf(path: &Path) -> Result<Model> {
    let g = Gguf::open(path)?;
    let arch_name = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config(path, "general.architecture", "missing"))?;
    if arch_name != "llama" {
        return Err(Error::UnsupportedArch {
            path: path.into(),
            arch: arch_name.to_string(),
            supported: "llama".into(),
        });
    }
    let hidden = gguf_u(&g, "llama.embedding_length")?;
    let n_heads = gguf_u(&g, "llama.attention.head_count")?;
    let n_kv_heads = match g.get("llama.attention.head_count_kv") {
        None => n_heads,
        Some(_) => gguf_u(&g, "llama.attention.head_count_kv")?,
    };
    if hidden % n_heads != 0 || n_heads % n_kv_heads != 0 {
        return Err(Error::config(
            path,
            "llama.attention.head_count",
            "does not divide the embedding length / kv heads",
        ));
    }
    let head_dim = hidden / n_heads;
    if let Some(v) = g.get("llama.rope.dimension_count") {
        if v.as_u64() != Some(head_dim as u64) {
            return Err(Error::config(
                path,
                "llama.rope.dimension_count",
                "partial rotary embeddings are not supported",
            ));
        }
    }
    let tokens_len = g
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|a| a.len());
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::format(path, "missing tensor `token_embd.weight`"))?;
    let vocab = match g.get("llama.vocab_size") {
        Some(_) => gguf_u(&g, "llama.vocab_size")?,
        None => embd
            .dims
            .get(1)
            .map(|&d| d as usize)
            .or(tokens_len)
            .unwrap_or(0),
    };
    let token_id = |key: &str| {
        g.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let cfg = LlamaConfig {
        kind: ArchKind::Llama,
        hidden,
        intermediate: gguf_u(&g, "llama.feed_forward_length")?,
        n_layers: gguf_u(&g, "llama.block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        max_positions: gguf_u(&g, "llama.context_length")?,
        rope_theta: gguf_f(&g, "llama.rope.freq_base", 10000.0)?,
        rms_eps: gguf_f(&g, "llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        tie_embeddings: g.tensor("output.weight").is_none(),
        qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: g.tensor("blk.0.ffn_up.bias").is_some(),
        sliding_window: None,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id"),
    };
    let fetch = |name: &str, shape: &[usize]| -> Result<Option<Tensor>> {
        let Some(t) = g.tensor(name) else {
            return Ok(None);
        };
        if t.shape() != shape {
            return Err(Error::tensor(
                path,
                name,
                format!(
                    "shape {:?} does not match the metadata's {:?}",
                    t.shape(),
                    shape
                ),
            ));
        }
        let w = finite_tensor(path, name, g.dequantize(t)?, shape)?;
        let heads = if name.ends_with("attn_q.weight") {
            Some(n_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(n_kv_heads)
        } else {
            None
        };
        match heads {
            Some(h) => Ok(Some(unpermute_rows(&w, h)?)),
            None => Ok(Some(w)),
        }
    };
    let (net, infos, weights) = LlamaNet::load(cfg.clone(), &fetch).map_err(|e| match e {
        Error::Invalid(msg) => Error::format(path, msg),
        e => e,
    })?;
    let tokenizer = if g.get("tokenizer.ggml.model").is_some() {
        Some(tokenizer::from_gguf(&g)?)
    } else {
        None
    };
    finish(
        Arch::Llama(cfg),
        Net::Llama(net),
        infos,
        weights,
        tokenizer,
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_then_unpermute_is_identity() {
        let w = Tensor::arange(0f32, 8.0 * 16.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8 * 16, 3))
            .unwrap();
        let p = permute_rows(&w, 8).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = unpermute_rows(&p, 8).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn llama_names_map_to_hugging_face() {
        assert_eq!(
            llama_hf_name("blk.3.attn_q.weight"),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            llama_hf_name("blk.0.ffn_norm.weight"),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(llama_hf_name("output.weight"), "lm_head.weight");
    }
}
