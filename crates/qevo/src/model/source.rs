//! Where weights come from: Hugging Face safetensors (single or sharded) and GGUF, both
//! memory-mapped. Both end in the same `fetch(name, shape)` the architectures call, which
//! checks the shape against the config; NaN/Inf are rejected by name (norms and biases as
//! they are read, matrices in the one streamed pass that also fingerprints them). The
//! Llama family's weight matrices stay ranges of the mapped file, f32/f16/bf16 or GGML
//! block bytes (`weight.rs`), decoded where they are used (see `Model::weight_f32`);
//! everything else is read into f32. `Read::Headers` reads no tensor data at all
//! (`Model::inspect`).

use super::bert::{BertConfig, BertNet};
use super::config::{ArchKind, HfConfig};
use super::gguf::{Gguf, Value};
use super::gpt2::{Gpt2Config, Gpt2Net};
use super::llama::{
    llama_cpp_attn_scale, llama_cpp_no_rope_layers, Activation, LlamaConfig, LlamaNet, Moe, QkNorm,
    WindowLayers, MAX_EXPERTS,
};
use super::packed_st::{self, PackedIndex};
use super::rope::{self, RopeScaling, RopeSpec};
use super::{tokenizer, Arch, Model, Net, Stored, TensorInfo};
use super::{Encoding, Mapped, MappedFile, StoredWeights, Weight};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How much of a file a loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Every tensor's data.
    Weights,
    /// Headers only: shapes and types are checked, and each tensor is a zero-stride f32
    /// placeholder of its shape (no data read, nothing allocated), so the architectures'
    /// own loaders list the tensors exactly as a full load would.
    Headers,
}

/// A zero-stride tensor of `shape`: one element, however large the shape.
fn placeholder(shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)?)
}

/// Stored type and bytes of every tensor fetched, by the name the architecture asked for.
#[derive(Default)]
struct Records(RefCell<HashMap<String, (Stored, usize)>>);

impl Records {
    fn note(&self, name: &str, stored: Stored, elems: usize) {
        self.0
            .borrow_mut()
            .insert(name.to_string(), (stored, elems));
    }

    /// How each quantizable tensor is stored: its own record, else (Phi-3) its share of
    /// the fused tensor it was cut from, else the file's most common matrix type (GPT-2
    /// and BERT ask by other names).
    fn stored_of(&self, infos: &[TensorInfo]) -> Vec<Stored> {
        let recs = self.0.borrow();
        let common = most_common_dtype(&recs);
        infos
            .iter()
            .map(|t| {
                let share = |(s, elems): &(Stored, usize)| Stored {
                    dtype: s.dtype,
                    bytes: (s.bytes as u128 * t.params() as u128 / (*elems).max(1) as u128)
                        as usize,
                };
                recs.get(&t.name)
                    .or_else(|| fused_source(t).and_then(|f| recs.get(&f)))
                    .map(share)
                    .unwrap_or_else(|| Stored {
                        dtype: common.0,
                        bytes: (t.params() as u128 * common.1 as u128 / 8) as usize,
                    })
            })
            .collect()
    }
}

/// The fused tensor a Phi-3 q/k/v or gate matrix is cut from.
fn fused_source(t: &TensorInfo) -> Option<String> {
    let b = t.block?;
    match t.role {
        super::Role::AttnQ | super::Role::AttnK | super::Role::AttnV => {
            Some(format!("blk.{b}.attn_qkv.weight"))
        }
        super::Role::FfnGate => Some(format!("blk.{b}.ffn_up.weight")),
        _ => None,
    }
}

/// The type most matrices of a file have, with its bits per element.
fn most_common_dtype(recs: &HashMap<String, (Stored, usize)>) -> (&'static str, usize) {
    let mut count: HashMap<&'static str, (usize, usize)> = HashMap::new();
    for (s, elems) in recs.values().filter(|(_, e)| *e > 0) {
        let c = count.entry(s.dtype).or_default();
        c.0 += 1;
        c.1 = s.bytes * 8 / elems;
    }
    count
        .into_iter()
        .max_by_key(|(name, (n, _))| (*n, *name))
        .map_or(("f32", 32), |(name, (_, bits))| (name, bits))
}

fn st_dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::BF16 => "bf16",
        _ => "other",
    }
}

/// One memory-mapped safetensors file with its validated header.
struct StFile {
    path: PathBuf,
    map: Arc<MappedFile>,
    header_len: usize,
    meta: Metadata,
}

/// All safetensors files of a model directory, indexed by tensor name.
struct StStore {
    files: Vec<StFile>,
    index: HashMap<String, usize>,
    /// Names read so far: what is left after loading was never used.
    used: RefCell<BTreeSet<String>>,
    read: Read,
}

impl StStore {
    fn open(dir: &Path, read: Read) -> Result<StStore> {
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
            // safetensors validates the header and every tensor's offsets against the
            // mapped length here, before any tensor is read.
            let map = MappedFile::open(&path)?;
            let (header_len, meta) = SafeTensors::read_metadata(map.bytes())
                .map_err(|e| Error::format(&path, format!("invalid safetensors: {e}")))?;
            for name in meta.tensors().keys() {
                index.insert(name.clone(), files.len());
            }
            files.push(StFile {
                path,
                map,
                header_len,
                meta,
            });
        }
        Ok(StStore {
            files,
            index,
            used: RefCell::new(BTreeSet::new()),
            read,
        })
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    fn mark_used(&self, name: &str) {
        self.used.borrow_mut().insert(name.to_string());
    }

    /// Tensors no architecture asked for, sorted (see `check_unused`).
    fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut out: Vec<String> = self
            .index
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
        out.sort();
        out
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
        self.mark_used(name);
        f.map.bytes().get(start..end).map(Some).ok_or_else(|| {
            Error::tensor(&f.path, name, "data offsets lie past the end of the file")
        })
    }

    /// Loads `name` with the expected shape, with how it is stored; `Ok(None)` when
    /// absent. A weight matrix (`keep`) stays a range of the mapped file; anything else is
    /// read into f32.
    fn get(&self, name: &str, shape: &[usize], keep: bool) -> Result<Option<(Weight, Stored)>> {
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
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::tensor(
                &f.path,
                name,
                format!("dtype {:?} is not supported (f32, f16, bf16)", info.dtype),
            ));
        }
        let start = 8 + f.header_len + info.data_offsets.0;
        let end = 8 + f.header_len + info.data_offsets.1;
        let bytes = f.map.bytes().get(start..end).ok_or_else(|| {
            Error::tensor(&f.path, name, "data offsets lie past the end of the file")
        })?;
        self.mark_used(name);
        let stored = Stored {
            dtype: st_dtype_name(info.dtype),
            bytes: bytes.len(),
        };
        let w = match (self.read, keep && shape.len() == 2) {
            (Read::Headers, _) => Weight::Held(placeholder(shape)?),
            (Read::Weights, true) => {
                let enc = match info.dtype {
                    Dtype::F16 => Encoding::F16,
                    Dtype::BF16 => Encoding::Bf16,
                    _ => Encoding::F32,
                };
                let dims = (shape[0], shape[1]);
                Weight::Mapped(Mapped::new(f.map.clone(), name, start, dims, enc, None)?)
            }
            (Read::Weights, false) => {
                let t = finite_tensor(&f.path, name, widen(info.dtype, bytes), shape)?;
                f.map.release(start, end - start);
                Weight::Held(t)
            }
        };
        Ok(Some((w, stored)))
    }
}

/// Little-endian f32/f16/bf16 bytes as f32 (the caller checked the dtype).
fn widen(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
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

/// One tensor of a safetensors file as stored: name, dtype, shape and bytes.
pub(crate) struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The tensors of an HF directory's safetensors files whose names `keep` accepts, as
/// stored (so an export copies what it does not quantize bit for bit).
pub(crate) fn raw_tensors(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<RawTensor>> {
    let store = StStore::open(dir, Read::Headers)?;
    let mut out = Vec::new();
    for f in &store.files {
        let st = SafeTensors::deserialize(f.map.bytes())
            .map_err(|e| Error::format(&f.path, format!("invalid safetensors: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        for name in names.into_iter().filter(|n| keep(n)) {
            let v = st
                .tensor(&name)
                .map_err(|e| Error::tensor(&f.path, &name, e.to_string()))?;
            out.push(RawTensor {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                bytes: v.data().to_vec(),
                name,
            });
        }
    }
    Ok(out)
}

/// Hugging Face llama-family names for the canonical (GGUF) names.
pub(crate) fn llama_hf_name(canonical: &str) -> String {
    hf_name(ArchKind::Llama, canonical)
}

/// canonical (GGUF) block part → Hugging Face module, shared by the Llama family.
const HF_BLOCK: [(&str, &str); 12] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_qkv", "self_attn.qkv_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Families whose modules differ from `HF_BLOCK`: Gemma's four norms, Phi-3's fused MLP
/// (GGUF `ffn_up` of 2·intermediate rows is HF `gate_up_proj`).
const HF_BLOCK_OVERRIDES: [(ArchKind, &str, &str); 9] = [
    (ArchKind::Gemma2, "ffn_norm", "pre_feedforward_layernorm"),
    (
        ArchKind::Gemma2,
        "post_attention_norm",
        "post_attention_layernorm",
    ),
    (
        ArchKind::Gemma2,
        "post_ffw_norm",
        "post_feedforward_layernorm",
    ),
    (ArchKind::Gemma3, "ffn_norm", "pre_feedforward_layernorm"),
    (
        ArchKind::Gemma3,
        "post_attention_norm",
        "post_attention_layernorm",
    ),
    (
        ArchKind::Gemma3,
        "post_ffw_norm",
        "post_feedforward_layernorm",
    ),
    (ArchKind::Phi3, "ffn_up", "mlp.gate_up_proj"),
    (
        ArchKind::Olmo2,
        "post_attention_norm",
        "post_attention_layernorm",
    ),
    (
        ArchKind::Olmo2,
        "post_ffw_norm",
        "post_feedforward_layernorm",
    ),
];

/// Module names of a mixture-of-experts MLP per family: the router, the experts' list,
/// and each expert's gate, up and down matrices.
fn hf_moe_names(kind: ArchKind) -> Option<(&'static str, &'static str, [&'static str; 3])> {
    match kind {
        ArchKind::Qwen3Moe => Some((
            "mlp.gate",
            "mlp.experts",
            ["gate_proj", "up_proj", "down_proj"],
        )),
        ArchKind::Mixtral => Some((
            "block_sparse_moe.gate",
            "block_sparse_moe.experts",
            ["w1", "w3", "w2"],
        )),
        _ => None,
    }
}

/// The HF name of a canonical router or per-expert name (`blk.B.ffn_gate_inp.weight`,
/// `blk.B.ffn_{gate,up,down}_exps.E.weight`), if it is one.
fn hf_moe_name(kind: ArchKind, b: &str, part: &str, suffix: &str) -> Option<String> {
    let (router, experts, roles) = hf_moe_names(kind)?;
    if part == "ffn_gate_inp" {
        return Some(format!("model.layers.{b}.{router}.{suffix}"));
    }
    let j = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]
        .iter()
        .position(|p| *p == part)?;
    let (e, rest) = suffix.split_once('.')?;
    Some(format!(
        "model.layers.{b}.{experts}.{e}.{}.{rest}",
        roles[j]
    ))
}

/// The Hugging Face name of a canonical (GGUF) tensor name in family `kind`.
pub(crate) fn hf_name(kind: ArchKind, canonical: &str) -> String {
    const TOP: [(&str, &str); 3] = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, hf)) = TOP.iter().find(|(c, _)| *c == canonical) {
        return hf.to_string();
    }
    let Some((b, part, suffix)) = canonical
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(b, r)| r.split_once('.').map(|(p, s)| (b, p, s)))
    else {
        return canonical.to_string();
    };
    if let Some(name) = hf_moe_name(kind, b, part, suffix) {
        return name;
    }
    let over = HF_BLOCK_OVERRIDES
        .iter()
        .find(|(k, c, _)| *k == kind && *c == part)
        .map(|(_, _, hf)| *hf);
    match over.or_else(|| HF_BLOCK.iter().find(|(c, _)| *c == part).map(|(_, hf)| *hf)) {
        Some(hf) => format!("model.layers.{b}.{hf}.{suffix}"),
        None => canonical.to_string(),
    }
}

/// Gemma checkpoints store RMSNorm weights as `w` and compute with `1 + w`; GGUF (and
/// qevo internally) store `1 + w`.
fn hf_norm_shift(kind: ArchKind, canonical: &str) -> Option<f64> {
    let gemma = matches!(kind, ArchKind::Gemma2 | ArchKind::Gemma3);
    (gemma && canonical.ends_with("norm.weight")).then_some(1.0)
}

/// The number of blocks a file holds: one more than the largest `N` in names
/// `<prefix>N.…`, for any of `prefixes`.
fn blocks_present<'a>(names: impl Iterator<Item = &'a str>, prefixes: &[&str]) -> usize {
    names
        .filter_map(|n| {
            prefixes.iter().find_map(|p| {
                let rest = n.strip_prefix(p)?;
                rest.split_once('.')?.0.parse::<usize>().ok()
            })
        })
        .map(|b| b + 1)
        .max()
        .unwrap_or(0)
}

/// A layer count from a config must not exceed the blocks the file holds: checked before
/// any per-layer allocation, so a count of 10^9 is an error naming `key`, not an abort.
fn check_layer_count(path: &Path, key: &str, n_layers: usize, present: usize) -> Result<()> {
    if n_layers > present {
        return Err(Error::config(
            path,
            key,
            format!("{n_layers} layers, but the weights hold {present} blocks"),
        ));
    }
    Ok(())
}

/// Tensors a loader may leave unread: buffers older exporters saved, heads qevo does not
/// run (BERT pooler / MLM head), and an output matrix duplicated beside a tied one.
fn ignorable(name: &str) -> bool {
    // `embeddings.position_ids` is the arange buffer transformers saved in BERT
    // checkpoints (all-MiniLM-L6-v2 carries it).
    const SUFFIXES: [&str; 4] = [
        "rotary_emb.inv_freq",
        ".attn.bias",
        ".attn.masked_bias",
        "embeddings.position_ids",
    ];
    const PREFIXES: [&str; 4] = ["pooler.", "bert.pooler.", "cls.", "lm_head."];
    SUFFIXES.iter().any(|s| name.ends_with(s)) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What llama.cpp tensors qevo does not run are for, by a part of their name, so a
/// refusal says what the file holds (a family feature, not a stray tensor).
const TENSOR_PURPOSES: [(&str, &str); 8] = [
    ("_shexp", "a shared expert (Qwen2-MoE, DeepSeek)"),
    ("attn_sinks", "attention sinks (gpt-oss)"),
    ("exp_probs_b", "an expert routing bias (DeepSeek-V3)"),
    ("ssm_", "a state-space layer (Mamba, hybrid models)"),
    ("shortconv", "a short convolution (LFM2)"),
    ("pos_embd", "learned position embeddings"),
    ("token_types", "token-type embeddings"),
    ("ffn_gate_inp", "a mixture-of-experts router"),
];

/// `name`, with what it is for when llama.cpp's naming says.
fn described(name: &str) -> String {
    match TENSOR_PURPOSES.iter().find(|(part, _)| name.contains(part)) {
        Some((_, what)) => format!("{name} ({what})"),
        None => name.to_string(),
    }
}

/// Every tensor in a file must be used: a config with fewer layers than the checkpoint,
/// or a tensor no architecture knows, is an error naming the first few.
fn check_unused(path: &Path, unused: Vec<String>) -> Result<()> {
    let unused: Vec<String> = unused.into_iter().filter(|n| !ignorable(n)).collect();
    let Some(first) = unused.first() else {
        return Ok(());
    };
    let shown: Vec<String> = unused.iter().take(5).map(|n| described(n)).collect();
    Err(Error::tensor(
        path,
        first,
        format!(
            "{} tensor(s) in the file are not used by the model's config (fewer layers than the checkpoint, or an unknown tensor): {}{}",
            unused.len(),
            shown.join(", "),
            if unused.len() > shown.len() { ", …" } else { "" }
        ),
    ))
}

/// Adds a constant to every element (Gemma's norm offset).
fn shifted(t: Tensor, by: Option<f64>) -> Result<Tensor> {
    match by {
        Some(b) => Ok(t.affine(1.0, b)?),
        None => Ok(t),
    }
}

// One piece: a linear sequence of reading steps (config, shards, tensors, tokenizer).
pub(crate) fn load_hf_dir(dir: &Path, read: Read) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let cfg = HfConfig::read(&cfg_path)?;
    let kind = cfg.arch_kind()?;
    let store = StStore::open(dir, read)?;
    let records = Records::default();
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        Some(tokenizer::load_tokenizer_json(&tok_path)?)
    } else {
        None
    };
    // Some exports prefix every name with the base model's name. GPT-2 and BERT are
    // small and transform their weights at load: they get f32 throughout.
    let prefixed = |prefix: &'static str| {
        let (store, records) = (&store, &records);
        move |name: &str, shape: &[usize]| -> Result<Option<Tensor>> {
            let got = match store.get(name, shape, false)? {
                Some(t) => Some(t),
                None => store.get(&format!("{prefix}{name}"), shape, false)?,
            };
            got.map(|(w, stored)| {
                records.note(name, stored, shape.iter().product());
                w.tensor()
            })
            .transpose()
        }
    };
    let held = |w: Vec<Tensor>| w.into_iter().map(Weight::Held).collect::<Vec<_>>();
    let built = (|| -> Result<(Arch, Net, Vec<TensorInfo>, Vec<Weight>)> {
        Ok(match kind {
            ArchKind::Gpt2 if packed_st::is_packed(&cfg.json) => {
                return Err(Error::UnsupportedArch {
                    path: cfg_path.clone(),
                    key: "quantization_config".into(),
                    arch: format!("{} with qevo-int packed weights", kind.as_str()),
                    supported: "the llama family and BERT".into(),
                })
            }
            ArchKind::Gpt2 => {
                let c = Gpt2Config::from_hf(&cfg)?;
                let present = blocks_present(store.names(), &["h.", "transformer.h."]);
                check_layer_count(&cfg_path, "n_layer", c.n_layers, present)?;
                let (net, i, w) = Gpt2Net::load(c.clone(), &prefixed("transformer."))?;
                (Arch::Gpt2(c), Net::Gpt2(net), i, held(w))
            }
            ArchKind::Bert => {
                let c = BertConfig::from_hf(&cfg)?;
                let present =
                    blocks_present(store.names(), &["encoder.layer.", "bert.encoder.layer."]);
                check_layer_count(&cfg_path, "num_hidden_layers", c.n_layers, present)?;
                let packed = open_packed(dir, &cfg)?;
                let plain = prefixed("bert.");
                let fetch = |name: &str, shape: &[usize]| match &packed {
                    Some(p) if p.contains(name) => {
                        read_packed(dir, &store, p, name, shape, &records)
                    }
                    _ => plain(name, shape),
                };
                let (net, i, w) = BertNet::load(c.clone(), &fetch)?;
                if let Some(p) = &packed {
                    let used: Vec<String> = i
                        .iter()
                        .filter_map(|t| super::bert_hf_name(&t.name))
                        .collect();
                    p.check_all_used(&used)?;
                }
                (Arch::Bert(c), Net::Bert(net), i, held(w))
            }
            _ => {
                let c = LlamaConfig::from_hf(&cfg, kind)?;
                let present = blocks_present(store.names(), &["model.layers."]);
                check_layer_count(&cfg_path, "num_hidden_layers", c.n_layers, present)?;
                // A qevo-int directory: tensors its quantization config lists are decoded
                // from their packed sections, everything else is read as usual.
                let packed = open_packed(dir, &cfg)?;
                // Matrices stay as stored; norms and biases become f32.
                let fetch = |name: &str, shape: &[usize]| -> Result<Option<Weight>> {
                    let hf = hf_name(kind, name);
                    let w = match &packed {
                        Some(p) if p.contains(&hf) => {
                            read_packed(dir, &store, p, &hf, shape, &records)?.map(Weight::Held)
                        }
                        _ => store.get(&hf, shape, shape.len() == 2)?.map(|(w, stored)| {
                            records.note(name, stored, shape.iter().product());
                            w
                        }),
                    };
                    match (w, hf_norm_shift(kind, name)) {
                        (Some(w), Some(by)) => {
                            Ok(Some(Weight::Held(shifted(w.tensor()?, Some(by))?)))
                        }
                        (w, _) => Ok(w),
                    }
                };
                let (net, i, w) = LlamaNet::load(c.clone(), &fetch).map_err(|e| e.in_file(dir))?;
                if let Some(p) = &packed {
                    let used: Vec<String> = i.iter().map(|t| hf_name(kind, &t.name)).collect();
                    p.check_all_used(&used)?;
                }
                (Arch::Llama(c), Net::Llama(net), i, w)
            }
        })
    })();
    // Architectures report absent tensors without a path; name the directory.
    let (arch, net, infos, weights) = built.map_err(|e| match e {
        Error::Invalid(msg) => Error::format(dir, msg),
        e => e,
    })?;
    check_unused(dir, store.unused())?;
    let stored = records.stored_of(&infos);
    finish(arch, net, infos, weights, stored, tokenizer, dir, read)
}

/// A qevo-int directory's packed index: tensors its quantization config lists are
/// decoded from their packed sections, everything else is read as usual.
fn open_packed(dir: &Path, cfg: &HfConfig) -> Result<Option<PackedIndex>> {
    match packed_st::is_packed(&cfg.json) {
        true => Ok(Some(PackedIndex::open(dir)?)),
        false => Ok(None),
    }
}

/// One packed tensor, decoded and checked finite; held as decoded f32. Decoded under
/// `Read::Headers` too: decoding is what checks (and marks used) its packed sections.
fn read_packed(
    dir: &Path,
    store: &StStore,
    p: &PackedIndex,
    hf: &str,
    shape: &[usize],
    records: &Records,
) -> Result<Option<Tensor>> {
    let elems = shape.iter().product();
    let stored = Stored {
        dtype: "qevo-int",
        bytes: elems * 4,
    };
    records.note(hf, stored, elems);
    let data = p.decode(hf, shape, &|s| store.raw_u8(s))?;
    store.mark_used(hf);
    Ok(Some(finite_tensor(dir, hf, data, shape)?))
}

// Each argument is one part of the model the loaders built; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn finish(
    arch: Arch,
    net: Net,
    tensors: Vec<TensorInfo>,
    weights: Vec<Weight>,
    stored: Vec<Stored>,
    tokenizer: Option<tokenizer::TextTokenizer>,
    source: &Path,
    read: Read,
) -> Result<Model> {
    if let Some(tk) = &tokenizer {
        tokenizer::check_vocab(tk, arch.vocab(), source)?;
    }
    let fingerprint = match read {
        Read::Weights => fingerprint(&weights)?,
        Read::Headers => String::new(),
    };
    Ok(Model {
        arch,
        tensors,
        weights: StoredWeights::new(weights),
        stored,
        tokenizer,
        source: source.to_path_buf(),
        fingerprint,
        net,
    })
}

/// FNV-1a over every quantizable weight's f32 bits, in tensor order: the same weights give
/// the same fingerprint whatever file format they came from. The one pass that reads a
/// mapped weight whole at load, so it is also where its NaN/Inf are refused, by file,
/// tensor and element; it streams each weight in bounded pieces.
pub(crate) fn fingerprint(weights: &[Weight]) -> Result<String> {
    use rayon::prelude::*;
    let parts: Vec<Result<u64>> = weights
        .par_iter()
        .map(|w| {
            let mut h: u64 = 0xcbf29ce484222325;
            let mut seen = 0usize;
            w.for_each_piece(|v| {
                if let (Some(i), Some((path, name))) =
                    (v.iter().position(|x| !x.is_finite()), w.origin())
                {
                    let at = seen + i;
                    return Err(Error::tensor(
                        path,
                        name,
                        format!("element {at} is {}", v[i]),
                    ));
                }
                seen += v.len();
                for x in v {
                    for b in x.to_bits().to_le_bytes() {
                        h ^= b as u64;
                        h = h.wrapping_mul(0x100000001b3);
                    }
                }
                Ok(())
            })?;
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

/// GGUF `general.architecture` → family. llama.cpp writes Mistral as `llama`.
const GGUF_ARCHS: [(&str, ArchKind); 10] = [
    ("llama", ArchKind::Llama),
    ("qwen2", ArchKind::Qwen2),
    ("qwen3", ArchKind::Qwen3),
    ("gemma2", ArchKind::Gemma2),
    ("gemma3", ArchKind::Gemma3),
    ("phi3", ArchKind::Phi3),
    ("smollm3", ArchKind::Smollm3),
    ("granite", ArchKind::Granite),
    ("olmo2", ArchKind::Olmo2),
    ("qwen3moe", ArchKind::Qwen3Moe),
];

/// Architectures whose llama.cpp converter interleaves each head's q/k rows for its NORM
/// rope (`llama_model_rope_type`); the others keep HF's half-split (NEOX) layout.
pub(crate) fn gguf_permutes_qk(kind: ArchKind) -> bool {
    matches!(
        kind,
        ArchKind::Llama
            | ArchKind::Mistral
            | ArchKind::Mixtral
            | ArchKind::Smollm3
            | ArchKind::Granite
    )
}

/// Metadata of one GGUF architecture: keys are `<arch>.<key>`, as llama.cpp names them.
struct GgufMeta<'a> {
    g: &'a Gguf,
    arch: &'a str,
}

impl GgufMeta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn get(&self, k: &str) -> Option<&Value> {
        self.g.get(&self.key(k))
    }
    fn usize(&self, k: &str) -> Result<usize> {
        gguf_u(self.g, &self.key(k))
    }
    fn usize_or(&self, k: &str, default: usize) -> Result<usize> {
        match self.get(k) {
            None => Ok(default),
            Some(_) => self.usize(k),
        }
    }
    fn f64_or(&self, k: &str, default: f64) -> Result<f64> {
        gguf_f(self.g, &self.key(k), default)
    }
    /// A soft-cap: absent → `default`, 0 → none.
    fn softcap(&self, k: &str, default: Option<f64>) -> Result<Option<f64>> {
        match self.get(k).map(|v| v.as_f64()) {
            None => Ok(default),
            Some(Some(0.0)) => Ok(None),
            Some(_) => self.f64_or(k, 1.0).map(Some),
        }
    }
    fn err(&self, k: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.g.path, &self.key(k), msg)
    }
}

/// The rope tensors a llama.cpp converter writes beside the weights: llama3's divisors
/// and LongRoPE's two factor sets. The loader reads them into the config.
pub(crate) const GGUF_ROPE_TENSORS: [&str; 3] = [
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
];

/// A rope factor tensor of the file, checked, if present.
fn gguf_rope_factors(m: &GgufMeta, name: &str, dims: usize) -> Result<Option<Vec<f64>>> {
    let Some(t) = m.g.tensor(name) else {
        return Ok(None);
    };
    rope::check_factors(name, m.g.dequantize(t)?, dims)
        .map(Some)
        .map_err(|e| e.in_file(&m.g.path))
}

/// The rope as llama.cpp's loader reads it (`load_hparams`, `get_rope_factors`, and
/// `llama_context`'s YaRN attention factor): base, rotated dimensions, scaling type,
/// factor, original context and the factor tensors.
fn gguf_rope(m: &GgufMeta, head_dim: usize) -> Result<RopeSpec> {
    let dims = m.usize_or("rope.dimension_count", head_dim)?;
    if dims > head_dim || dims % 2 != 0 {
        return Err(m.err(
            "rope.dimension_count",
            format!(
                "{dims} rotary dimensions of head size {head_dim}: expected an even count up to it"
            ),
        ));
    }
    let mut spec = RopeSpec::plain(m.f64_or("rope.freq_base", 10000.0)?, dims);
    let factor = m.f64_or("rope.scaling.factor", 1.0)?;
    let ctx = m.usize("context_length")?;
    let original_ctx = m.usize_or("rope.scaling.original_context_length", ctx)?;
    spec.attn_factor = m.f64_or("rope.scaling.attn_factor", 1.0)?;
    if m.get("rope.scaling.yarn_log_multiplier").is_some() {
        return Err(m.err(
            "rope.scaling.yarn_log_multiplier",
            "YaRN with an mscale_all_dim (DeepSeek) is not supported",
        ));
    }
    let ty = m
        .get("rope.scaling.type")
        .and_then(Value::as_str)
        .unwrap_or("linear");
    spec.scaling = match ty {
        "none" => RopeScaling::None,
        "linear" if factor == 1.0 => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor },
        "yarn" => {
            spec.attn_factor *= rope::yarn_mscale(factor, 1.0);
            RopeScaling::Yarn {
                factor,
                original_ctx,
                beta_fast: 32.0,
                beta_slow: 1.0,
                truncate: true,
            }
        }
        t => {
            return Err(m.err(
                "rope.scaling.type",
                format!("rope scaling `{t}` is not supported (none, linear, yarn)"),
            ))
        }
    };
    let freqs = gguf_rope_factors(m, "rope_freqs.weight", dims)?;
    let long = gguf_rope_factors(m, "rope_factors_long.weight", dims)?;
    let short = gguf_rope_factors(m, "rope_factors_short.weight", dims)?;
    match (freqs, long, short) {
        (None, None, None) => {}
        (Some(factors), None, None) if spec.scaling == RopeScaling::None => {
            spec.scaling = RopeScaling::FreqFactors { factors };
        }
        (None, Some(long), Some(short)) if spec.scaling == RopeScaling::None => {
            spec.scaling = RopeScaling::LongRope {
                short,
                long,
                original_ctx,
            };
        }
        _ => {
            return Err(Error::tensor(
                &m.g.path,
                "rope_freqs.weight",
                format!(
                    "rope factor tensors with rope scaling `{ty}`: expected rope_freqs alone, \
                     or rope_factors_long with rope_factors_short, without a scaling type"
                ),
            ))
        }
    }
    Ok(spec)
}

/// Mixture-of-experts settings as llama.cpp's loader reads them: `expert_count` experts
/// in every block, `expert_used_count` per token, softmax weights renormalised over them
/// (`build_moe_ffn`'s `norm_w`, on for llama and qwen3moe), experts as wide as
/// `expert_feed_forward_length` (else `feed_forward_length`).
fn gguf_moe(m: &GgufMeta, n_layers: usize) -> Result<Option<Moe>> {
    if m.get("expert_count").is_none() {
        return Ok(None);
    }
    let experts = m.usize("expert_count")?;
    if experts > MAX_EXPERTS {
        return Err(m.err(
            "expert_count",
            format!("{experts} experts: at most {MAX_EXPERTS}"),
        ));
    }
    let used = m.usize("expert_used_count")?;
    if used > experts {
        return Err(m.err(
            "expert_used_count",
            format!("{used} exceeds the {experts} experts"),
        ));
    }
    let ff = match m.get("expert_feed_forward_length") {
        Some(_) => m.usize("expert_feed_forward_length")?,
        None => m.usize("feed_forward_length")?,
    };
    Ok(Some(Moe {
        experts,
        used,
        expert_ff: ff,
        norm_topk: true,
        layers: vec![true; n_layers],
    }))
}

/// The family's hyper-parameters from GGUF metadata, following llama.cpp's loader
/// (`llama-model.cpp` and `src/models/<arch>.cpp`) for defaults.
// One piece: a linear reading of the GGUF metadata keys into a config, in key order;
// splitting it would scatter one schema over several functions.
fn gguf_config(g: &Gguf, arch: &str, kind: ArchKind) -> Result<LlamaConfig> {
    let m = GgufMeta { g, arch };
    let path = &g.path;
    let hidden = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    let n_kv_heads = m.usize_or("attention.head_count_kv", n_heads)?;
    if n_heads % n_kv_heads != 0 {
        return Err(m.err("attention.head_count_kv", "does not divide the head count"));
    }
    let head_dim = match m.get("attention.key_length") {
        Some(_) => m.usize("attention.key_length")?,
        None if hidden % n_heads == 0 => hidden / n_heads,
        None => {
            return Err(m.err(
                "attention.head_count",
                "does not divide the embedding length",
            ))
        }
    };
    if m.get("attention.value_length").is_some() && m.usize("attention.value_length")? != head_dim {
        return Err(m.err(
            "attention.value_length",
            "differs from key_length (not supported)",
        ));
    }
    if head_dim % 2 != 0 {
        return Err(m.err(
            "attention.key_length",
            "rotary embeddings need an even head dimension",
        ));
    }
    let n_layers = m.usize("block_count")?;
    let present = blocks_present(g.tensors.iter().map(|t| t.name.as_str()), &["blk."]);
    check_layer_count(path, &m.key("block_count"), n_layers, present)?;
    let rope = gguf_rope(&m, head_dim)?;
    let gemma = matches!(kind, ArchKind::Gemma2 | ArchKind::Gemma3);
    // Gemma-2 always slides (default window 4096); Gemma-3 only with a window key;
    // llama.cpp runs Phi-3 and the others without a window.
    let sliding_window = match kind {
        ArchKind::Gemma2 => Some(m.usize_or("attention.sliding_window", 4096)?),
        ArchKind::Gemma3 => match m.get("attention.sliding_window") {
            Some(_) => Some(m.usize("attention.sliding_window")?),
            None => None,
        },
        _ => None,
    };
    let pattern_default = if kind == ArchKind::Gemma2 { 2 } else { 6 };
    let window_layers = match m.get("attention.sliding_window_pattern") {
        None => WindowLayers::Pattern(pattern_default),
        Some(Value::Array(a)) => {
            if a.len() != n_layers {
                return Err(m.err(
                    "attention.sliding_window_pattern",
                    format!("{} entries for {n_layers} blocks", a.len()),
                ));
            }
            let flags: Option<Vec<bool>> = a
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            WindowLayers::List(
                flags.ok_or_else(|| m.err("attention.sliding_window_pattern", "expected bools"))?,
            )
        }
        Some(_) => WindowLayers::Pattern(m.usize("attention.sliding_window_pattern")?),
    };
    // Gemma-3's sliding layers: base 10000 unless the file says, never scaled.
    let rope_local = match kind {
        ArchKind::Gemma3 => RopeSpec::plain(m.f64_or("rope.freq_base_swa", 10000.0)?, rope.dims),
        _ => RopeSpec {
            theta: m.f64_or("rope.freq_base_swa", rope.theta)?,
            ..rope.clone()
        },
    };
    let granite = kind == ArchKind::Granite;
    let attn_scale = match granite {
        true => m.f64_or("attention.scale", 1.0)?,
        false => llama_cpp_attn_scale(kind, n_layers, hidden, n_heads, head_dim),
    };
    let tokens_len = g
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|a| a.len());
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::format(path, "missing tensor `token_embd.weight`"))?;
    let vocab = match m.get("vocab_size") {
        Some(_) => m.usize("vocab_size")?,
        None => embd
            .dims
            .get(1)
            .map(|&d| d as usize)
            .or(tokens_len)
            .unwrap_or(0),
    };
    if g.tensor("blk.0.attn_qkv.bias").is_some() {
        return Err(Error::tensor(
            path,
            "blk.0.attn_qkv.bias",
            "fused q/k/v biases are not supported",
        ));
    }
    let token_id = |key: &str| {
        g.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    Ok(LlamaConfig {
        kind,
        hidden,
        intermediate: m.usize("feed_forward_length")?,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        max_positions: m.usize("context_length")?,
        rope,
        rope_local,
        // llama.cpp's smollm3 graph hard-codes a NoPE layer every 4th block.
        no_rope_layers: llama_cpp_no_rope_layers(kind, n_layers),
        rms_eps: m.f64_or("attention.layer_norm_rms_epsilon", 1e-5)?,
        tie_embeddings: g.tensor("output.weight").is_none(),
        qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: g.tensor("blk.0.ffn_up.bias").is_some(),
        sliding_window,
        window_layers,
        qk_norm: match kind {
            ArchKind::Qwen3 | ArchKind::Qwen3Moe | ArchKind::Gemma3 => QkNorm::PerHead,
            ArchKind::Olmo2 => QkNorm::Full,
            _ => QkNorm::None,
        },
        pre_norms: kind != ArchKind::Olmo2,
        post_norms: gemma || kind == ArchKind::Olmo2,
        embed_scale: match (gemma, granite) {
            (true, _) => Some((hidden as f64).sqrt()),
            (_, true) => Some(m.f64_or("embedding_scale", 1.0)?),
            _ => None,
        },
        residual_scale: match granite {
            true => m.f64_or("residual_scale", 1.0)?,
            false => 1.0,
        },
        logit_scale: match granite {
            true => m.f64_or("logit_scale", 1.0)?,
            false => 1.0,
        },
        act: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        attn_scale,
        attn_softcap: match kind {
            ArchKind::Gemma2 => m.softcap("attn_logit_softcapping", Some(50.0))?,
            _ => None,
        },
        final_softcap: match kind {
            ArchKind::Gemma2 => m.softcap("final_logit_softcapping", Some(30.0))?,
            ArchKind::Gemma3 => m.softcap("final_logit_softcapping", None)?,
            _ => None,
        },
        fused_proj: kind == ArchKind::Phi3,
        moe: gguf_moe(&m, n_layers)?,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id"),
    })
}

pub(crate) fn load_gguf(path: &Path, read: Read) -> Result<Model> {
    let g = Gguf::open(path)?;
    let arch_name = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config(path, "general.architecture", "missing"))?;
    let Some(&(_, kind)) = GGUF_ARCHS.iter().find(|(n, _)| *n == arch_name) else {
        return Err(Error::UnsupportedArch {
            path: path.into(),
            key: "general.architecture".into(),
            arch: arch_name.to_string(),
            supported: GGUF_ARCHS.map(|(n, _)| n).join(", "),
        });
    };
    let cfg = gguf_config(&g, arch_name, kind)?;
    // Only llama.cpp's `llama` converter interleaves q/k rows; the others use the
    // half-split (NEOX) layout that HF checkpoints have.
    let permuted = gguf_permutes_qk(kind);
    let (n_heads, n_kv_heads) = (cfg.n_heads, cfg.n_kv_heads);
    // The config read the rope factor tensors.
    let used = RefCell::new(
        GGUF_ROPE_TENSORS
            .iter()
            .map(|n| n.to_string())
            .collect::<BTreeSet<_>>(),
    );
    let records = Records::default();
    let fetch = |name: &str, shape: &[usize]| -> Result<Option<Weight>> {
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
        used.borrow_mut().insert(name.to_string());
        let stored = Stored {
            dtype: t.type_name(),
            bytes: t.n_bytes(),
        };
        records.note(name, stored, shape.iter().product());
        if read == Read::Headers {
            let (rows, cols) = t.rows_cols();
            super::gguf::check_gguf_tensor(path, name, t.type_id, t.n_bytes(), rows, cols)?;
            return Ok(Some(Weight::Held(placeholder(shape)?)));
        }
        // The converter permutes q/k biases with their weights.
        let heads = if !permuted {
            None
        } else if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
            Some(n_heads)
        } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
            Some(n_kv_heads)
        } else {
            None
        };
        // Matrices (and 3-d expert stacks) stay their mapped bytes, decoded at each use.
        if shape.len() >= 2 {
            let (rows, cols) = t.rows_cols();
            super::gguf::check_gguf_tensor(path, name, t.type_id, t.n_bytes(), rows, cols)?;
            let enc = match t.type_name() {
                "f32" => Encoding::F32,
                "f16" => Encoding::F16,
                "bf16" => Encoding::Bf16,
                _ => Encoding::Ggml(t.type_id),
            };
            let at = g.data_offset(t);
            let m = Mapped::new(g.mapped(), name, at, (rows, cols), enc, heads)?;
            return Ok(Some(Weight::Mapped(m)));
        }
        let w = gguf_tensor(&g, t, shape)?;
        g.release(t);
        match heads {
            Some(h) => Ok(Some(Weight::Held(unpermute_rows(&w, h)?))),
            None => Ok(Some(Weight::Held(w))),
        }
    };
    let (net, infos, weights) = LlamaNet::load(cfg.clone(), &fetch).map_err(|e| match e {
        Error::Invalid(msg) => Error::format(path, msg),
        e => e.in_file(path),
    })?;
    let used = used.into_inner();
    let unused: Vec<String> = g
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| !used.contains(n))
        .collect();
    check_unused(path, unused)?;
    let tokenizer = if g.get("tokenizer.ggml.model").is_some() {
        Some(tokenizer::from_gguf(&g)?)
    } else {
        None
    };
    let stored = records.stored_of(&infos);
    finish(
        Arch::Llama(cfg),
        Net::Llama(net),
        infos,
        weights,
        stored,
        tokenizer,
        path,
        read,
    )
}

/// A small GGUF tensor (norm, bias, router) dequantized to f32.
fn gguf_tensor(g: &Gguf, t: &super::gguf::GgufTensor, shape: &[usize]) -> Result<Tensor> {
    finite_tensor(&g.path, &t.name, g.dequantize(t)?, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_position_ids_buffer_does_not_count_as_an_unused_tensor() {
        assert!(check_unused(Path::new("m"), vec!["embeddings.position_ids".into()]).is_ok());
        assert!(check_unused(Path::new("m"), vec!["bert.embeddings.position_ids".into()]).is_ok());
        assert!(check_unused(
            Path::new("m"),
            vec!["encoder.layer.6.output.dense.weight".into()]
        )
        .is_err());
    }

    #[test]
    fn an_unused_tensor_is_named_with_what_it_is_for() {
        let e = check_unused(
            Path::new("m.gguf"),
            vec!["blk.0.ffn_gate_shexp.weight".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("blk.0.ffn_gate_shexp.weight (a shared expert"),
            "{e}"
        );
    }

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
