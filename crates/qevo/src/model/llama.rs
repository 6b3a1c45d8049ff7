//! The Llama family of decoders — Llama, Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3, Phi-3 —
//! as one network with per-family features: RMSNorm (Gemma's `1 + w` is folded into the
//! stored weight, as GGUF stores it), rotary positions (HF half-split layout) with a
//! separate base for sliding-window layers, grouped-query attention with a configurable
//! scale, optional score and logit soft-capping, per-head q/k norms, post-attention and
//! post-MLP norms, a gated MLP (SiLU or tanh-GELU), optional biases, tied or untied
//! output, and fused q/k/v and gate/up matrices (Phi-3) split into their parts at load so
//! every part is its own quantizable tensor.

use super::config::{ArchKind, HfConfig};
use super::fused::{self, AttnScores};
use super::rope::{RopeContext, RopeSpec, RopeTables, ScalingDict};
use super::{head_product, linear, Experts, LinearHook, Role, TensorInfo, Weight, Weights};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor, D};

/// The non-linearity of the gated MLP: `act(gate) · up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Which layers attend through `LlamaConfig::sliding_window`; the others see the whole
/// causal prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowLayers {
    /// Every layer (Mistral, Phi-3).
    All,
    /// Layer `i` slides unless `(i + 1) % n == 0`: Gemma-2 (n = 2: even layers slide),
    /// Gemma-3 (n = 6: every 6th layer is global). transformers' and llama.cpp's rule.
    Pattern(usize),
    /// An explicit flag per layer (`layer_types` in config.json, or a GGUF bool array).
    List(Vec<bool>),
}

impl WindowLayers {
    pub fn is_sliding(&self, layer: usize) -> bool {
        match self {
            WindowLayers::All => true,
            WindowLayers::Pattern(n) => *n == 0 || !(layer + 1).is_multiple_of(*n),
            WindowLayers::List(v) => v.get(layer).copied().unwrap_or(false),
        }
    }
}

/// Where a family puts per-head q/k norms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    None,
    /// An RMS norm over each head's `head_dim` values (Qwen3, Gemma-3).
    PerHead,
    /// One RMS norm over the whole q (or k) projection, before heads split (OLMo-2).
    Full,
}

/// A mixture-of-experts MLP (Qwen3-MoE, Mixtral): a router picks `used` of `experts`
/// gated MLPs of width `expert_ff` per token and mixes their outputs by its softmax
/// weights, renormalised over the chosen experts when `norm_topk`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Moe {
    pub experts: usize,
    pub used: usize,
    pub expert_ff: usize,
    pub norm_topk: bool,
    /// Layers whose MLP routes; the others are dense MLPs of `intermediate` (Qwen3-MoE's
    /// `mlp_only_layers` and `decoder_sparse_step`).
    pub layers: Vec<bool>,
}

/// The most experts qevo accepts in one layer (published models have at most a few
/// hundred); a count beyond it is a config error, not an allocation.
pub(crate) const MAX_EXPERTS: usize = 4096;

/// The MoE settings of config.json: Qwen3-MoE's `num_experts`, `num_experts_per_tok`,
/// `moe_intermediate_size`, `norm_topk_prob`, `decoder_sparse_step`, `mlp_only_layers`;
/// Mixtral's `num_local_experts` and `num_experts_per_tok` (always renormalised).
fn moe_setting(c: &HfConfig, kind: ArchKind, n_layers: usize) -> Result<Option<Moe>> {
    let (experts_key, ff_key) = match kind {
        ArchKind::Qwen3Moe => ("num_experts", "moe_intermediate_size"),
        ArchKind::Mixtral => ("num_local_experts", "intermediate_size"),
        _ => return Ok(None),
    };
    let experts = c.usize_or(experts_key, if kind == ArchKind::Mixtral { 8 } else { 128 })?;
    if experts > MAX_EXPERTS {
        return Err(c.err(
            experts_key,
            format!("{experts} experts: at most {MAX_EXPERTS}"),
        ));
    }
    let used = c.usize_or(
        "num_experts_per_tok",
        if kind == ArchKind::Mixtral { 2 } else { 8 },
    )?;
    if used > experts {
        return Err(c.err(
            "num_experts_per_tok",
            format!("{used} exceeds the {experts} experts ({experts_key})"),
        ));
    }
    for key in ["shared_expert_intermediate_size", "n_shared_experts"] {
        if c.raw(key).and_then(|v| v.as_u64()).unwrap_or(0) > 0 {
            return Err(c.err(key, "shared experts are not supported in this family"));
        }
    }
    let (norm_topk, layers) = match kind {
        ArchKind::Mixtral => (true, vec![true; n_layers]),
        _ => {
            let step = c.usize_or("decoder_sparse_step", 1)?;
            let dense = match c.raw("mlp_only_layers") {
                None => Vec::new(),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_u64().map(|n| n as usize))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| c.err("mlp_only_layers", "expected a list of layer indices"))?,
            };
            let layers = (0..n_layers)
                .map(|i| !dense.contains(&i) && (i + 1) % step == 0)
                .collect();
            (c.bool_or("norm_topk_prob", false)?, layers)
        }
    };
    Ok(Some(Moe {
        experts,
        used,
        expert_ff: c.usize(ff_key)?,
        norm_topk,
        layers,
    }))
}

/// The Llama-family decoder's hyper-parameters. One config covers every family member:
/// the per-family differences are the feature fields below, set by `from_hf` or the
/// GGUF reader, so the forward pass has one body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LlamaConfig {
    pub kind: ArchKind,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Independent of hidden / heads (Gemma, Qwen3).
    pub head_dim: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// The rope of global layers.
    pub rope: RopeSpec,
    /// The rope of sliding-window layers (Gemma-3: base 10000 and unscaled beside a
    /// global 1e6; every other family: the global rope).
    pub rope_local: RopeSpec,
    /// Layers that attend without rotary positions (SmolLM3's NoPE layers).
    pub no_rope_layers: Vec<usize>,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub sliding_window: Option<usize>,
    pub window_layers: WindowLayers,
    pub qk_norm: QkNorm,
    /// RMS norms before attention and before the MLP (every family but OLMo-2).
    pub pre_norms: bool,
    /// RMS norms after attention and after the MLP, before each residual add (Gemma-2/3,
    /// OLMo-2).
    pub post_norms: bool,
    /// Token embeddings are multiplied by this (Gemma: √hidden, in f32; Granite's
    /// `embedding_multiplier`).
    pub embed_scale: Option<f64>,
    /// Each block's attention and MLP outputs are multiplied by this before the residual
    /// add (Granite's `residual_multiplier`; 1 elsewhere).
    pub residual_scale: f64,
    /// Output logits are divided by this (Granite's `logits_scaling`; 1 elsewhere).
    pub logit_scale: f64,
    pub act: Activation,
    /// Multiplies q·k before the softmax (1/√head_dim, Gemma's 1/√query_pre_attn_scalar,
    /// Granite's `attention_multiplier`).
    pub attn_scale: f64,
    /// `cap · tanh(scores / cap)` on attention scores (Gemma-2).
    pub attn_softcap: Option<f64>,
    /// `cap · tanh(logits / cap)` on output logits (Gemma-2).
    pub final_softcap: Option<f64>,
    /// q/k/v and gate/up are stored fused (Phi-3 `qkv_proj`, `gate_up_proj`; GGUF
    /// `attn_qkv`, `ffn_up` of 2·intermediate rows) and split into separate tensors at load.
    pub fused_proj: bool,
    /// Mixture-of-experts MLPs (Qwen3-MoE, Mixtral).
    pub moe: Option<Moe>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// Per-family defaults and features that config.json does not spell out.
struct Family {
    qkv_bias: bool,
    tie: bool,
    qk_norm: QkNorm,
    gemma: bool,
    fused_proj: bool,
}

fn family(kind: ArchKind) -> Family {
    let f = |qkv_bias, tie, qk_norm, gemma, fused_proj| Family {
        qkv_bias,
        tie,
        qk_norm,
        gemma,
        fused_proj,
    };
    // Ties follow each config class's `tie_word_embeddings` default in transformers.
    match kind {
        ArchKind::Qwen2 => f(true, false, QkNorm::None, false, false),
        ArchKind::Qwen3 | ArchKind::Qwen3Moe => f(false, false, QkNorm::PerHead, false, false),
        ArchKind::Gemma2 => f(false, true, QkNorm::None, true, false),
        ArchKind::Gemma3 => f(false, true, QkNorm::PerHead, true, false),
        ArchKind::Phi3 => f(false, false, QkNorm::None, false, true),
        ArchKind::Smollm3 => f(false, true, QkNorm::None, false, false),
        ArchKind::Olmo2 => f(false, false, QkNorm::Full, false, false),
        _ => f(false, false, QkNorm::None, false, false),
    }
}

/// Whether a family ties its output to the embedding when config.json does not say.
pub(crate) fn ties_by_default(kind: ArchKind) -> bool {
    family(kind).tie
}

/// A rope read from either config layout: transformers 4 (`rope_theta`, `rope_scaling`,
/// top-level `partial_rotary_factor`, Gemma-3's `rope_local_base_freq`) or 5
/// (`rope_parameters`, possibly keyed by layer type).
fn rope_setting(
    c: &HfConfig,
    kind: ArchKind,
    layer_type: &str,
    default_theta: f64,
    head_dim: usize,
) -> Result<RopeSpec> {
    let params = c.raw("rope_parameters");
    let scoped = params.and_then(|p| p.get(layer_type)).or(params);
    let theta = match scoped
        .and_then(|p| p.get("rope_theta"))
        .and_then(|v| v.as_f64())
    {
        Some(t) if t.is_finite() && t > 0.0 => t,
        Some(_) => return Err(c.err("rope_parameters", "rope_theta must be positive")),
        None if layer_type == "sliding_attention" => {
            c.f64_or("rope_local_base_freq", default_theta)?
        }
        None => c.f64_or("rope_theta", default_theta)?,
    };
    let partial = c
        .raw("partial_rotary_factor")
        .map(|_| c.f64_or("partial_rotary_factor", 1.0));
    let top_original = match kind {
        // Phi-3's config class always holds one (4096 by default), which wins.
        ArchKind::Phi3 => Some(c.usize_or("original_max_position_embeddings", 4096)?),
        _ => c.opt_usize("original_max_position_embeddings")?,
    };
    let cx = RopeContext {
        theta,
        head_dim,
        partial: partial.transpose()?.unwrap_or(1.0),
        max_positions: c.usize_or("max_position_embeddings", 2048)?,
        top_original,
    };
    // Local layers of Gemma-3 never scale unless their own parameters say so (v5);
    // elsewhere `rope_scaling` (v4) or the scoped parameters (v5) say how.
    let (key, scaling) = match (layer_type, c.raw("rope_scaling")) {
        ("sliding_attention", _) => ("rope_parameters", params.and_then(|p| p.get(layer_type))),
        (_, Some(rs)) => ("rope_scaling", Some(rs)),
        _ => ("rope_parameters", scoped),
    };
    let empty = serde_json::Map::new();
    let obj = match scaling {
        None => &empty,
        Some(v) => v
            .as_object()
            .ok_or_else(|| c.err(key, format!("expected an object, found {v}")))?,
    };
    let dict = ScalingDict { key, obj };
    dict.spec(&cx).map_err(|(k, msg)| c.err(&k, msg))
}

/// Which layers slide, from `layer_types` when present, else the family's rule:
/// Gemma's pattern, Qwen2/3's `max_window_layers` (layers from that index on slide),
/// SmolLM3's NoPE layers, every layer for Mistral and Phi-3.
fn window_layers(c: &HfConfig, n_layers: usize, rule: WindowLayers) -> Result<WindowLayers> {
    let Some(list) = c.raw("layer_types") else {
        return Ok(rule);
    };
    let items = list
        .as_array()
        .ok_or_else(|| c.err("layer_types", "expected a list"))?;
    if items.len() != n_layers {
        return Err(c.err(
            "layer_types",
            format!("{} entries for num_hidden_layers {n_layers}", items.len()),
        ));
    }
    items
        .iter()
        .map(|v| match v.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(c.err(
                "layer_types",
                format!("`{v}` is not sliding_attention or full_attention"),
            )),
        })
        .collect::<Result<Vec<bool>>>()
        .map(WindowLayers::List)
}

/// SmolLM3's layers without rope: `no_rope_layers` (1 = rope, 0 = none, per layer), or
/// every `no_rope_layer_interval`-th layer (transformers' default: 4).
fn no_rope_layers(c: &HfConfig, n_layers: usize) -> Result<Vec<usize>> {
    let Some(list) = c.raw("no_rope_layers") else {
        let every = c.usize_or("no_rope_layer_interval", 4)?;
        return Ok(every_nth_layer(n_layers, every));
    };
    let items = list
        .as_array()
        .ok_or_else(|| c.err("no_rope_layers", "expected a list of 0/1"))?;
    if items.len() != n_layers {
        return Err(c.err(
            "no_rope_layers",
            format!("{} entries for num_hidden_layers {n_layers}", items.len()),
        ));
    }
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v.as_u64() {
            Some(1) => {}
            Some(0) => out.push(i),
            _ => {
                return Err(c.err(
                    "no_rope_layers",
                    format!("entry {i} is {v}, expected 0 or 1"),
                ))
            }
        }
    }
    Ok(out)
}

/// Layers `every - 1, 2·every - 1, …` of `n_layers`: SmolLM3's NoPE layers for a step.
fn every_nth_layer(n_layers: usize, every: usize) -> Vec<usize> {
    (0..n_layers).filter(|i| (i + 1) % every == 0).collect()
}

/// The layers llama.cpp's graph runs without rope: SmolLM3's every 4th, its fixed
/// `n_no_rope_layer_step`; none elsewhere. The GGUF reader takes these, and the GGUF
/// writer refuses a model whose own NoPE layers differ.
pub(crate) fn llama_cpp_no_rope_layers(kind: ArchKind, n_layers: usize) -> Vec<usize> {
    match kind {
        ArchKind::Smollm3 => every_nth_layer(n_layers, 4),
        _ => Vec::new(),
    }
}

/// The window of a family that slides some layers: (window, which layers).
fn window_of_family(
    c: &HfConfig,
    kind: ArchKind,
    n_layers: usize,
    no_rope: &[usize],
) -> Result<(Option<usize>, WindowLayers)> {
    let uses = match kind {
        ArchKind::Mistral | ArchKind::Phi3 | ArchKind::Mixtral => true,
        ArchKind::Qwen2 | ArchKind::Qwen3 | ArchKind::Qwen3Moe | ArchKind::Smollm3 => {
            c.bool_or("use_sliding_window", false)?
        }
        _ => false,
    };
    if !uses {
        return Ok((None, WindowLayers::All));
    }
    let (window, rule) = match kind {
        // transformers' Qwen2/3 config: window 4096 unless given, layers from
        // `max_window_layers` (28 by default) on slide.
        ArchKind::Qwen2 | ArchKind::Qwen3 | ArchKind::Qwen3Moe => {
            let from = c.usize_or("max_window_layers", 28)?;
            let w = c.usize_or("sliding_window", 4096)?;
            (
                Some(w),
                WindowLayers::List((0..n_layers).map(|i| i >= from).collect()),
            )
        }
        // SmolLM3 slides its NoPE layers.
        ArchKind::Smollm3 => (
            c.opt_usize("sliding_window")?,
            WindowLayers::List((0..n_layers).map(|i| no_rope.contains(&i)).collect()),
        ),
        _ => (c.opt_usize("sliding_window")?, WindowLayers::All),
    };
    Ok((window, window_layers(c, n_layers, rule)?))
}

impl LlamaConfig {
    // One piece: a linear reading of config.json's keys per family, in key order.
    pub(crate) fn from_hf(c: &HfConfig, kind: ArchKind) -> Result<Self> {
        let fam = family(kind);
        let hidden = c.usize("hidden_size")?;
        let n_heads = c.usize("num_attention_heads")?;
        let n_kv_heads = c.usize_or("num_key_value_heads", n_heads)?;
        let head_dim = match c.opt_usize("head_dim")? {
            Some(h) => h,
            None if fam.gemma => 256,
            None => {
                if hidden % n_heads != 0 {
                    return Err(c.err(
                        "num_attention_heads",
                        format!("{n_heads} does not divide hidden_size {hidden}"),
                    ));
                }
                hidden / n_heads
            }
        };
        if n_heads % n_kv_heads != 0 {
            return Err(c.err(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads {n_heads}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(c.err("head_dim", "rotary embeddings need an even head dimension"));
        }
        let n_layers = c.usize("num_hidden_layers")?;
        let act = if fam.gemma {
            let key = match c.raw("hidden_activation") {
                Some(_) => "hidden_activation",
                None => "hidden_act",
            };
            c.one_of(key, &["gelu_pytorch_tanh"])?;
            Activation::GeluTanh
        } else {
            c.one_of("hidden_act", &["silu"])?;
            Activation::Silu
        };
        let attention_bias = c.bool_or("attention_bias", false)?;
        let (default_theta, pattern, default_window) = match kind {
            ArchKind::Gemma2 => (10000.0, 2, Some(4096)),
            ArchKind::Gemma3 => (
                1_000_000.0,
                c.usize_or("sliding_window_pattern", 6)?,
                Some(4096),
            ),
            _ => (10000.0, 0, None),
        };
        let rope = rope_setting(c, kind, "full_attention", default_theta, head_dim)?;
        let no_rope_layers = match kind {
            ArchKind::Smollm3 => no_rope_layers(c, n_layers)?,
            _ => Vec::new(),
        };
        let (sliding_window, window_layers, rope_local) = if fam.gemma {
            let w = c.opt_usize("sliding_window")?.or(default_window);
            let local = match kind {
                ArchKind::Gemma3 => rope_setting(c, kind, "sliding_attention", 10000.0, head_dim)?,
                _ => rope.clone(),
            };
            let layers = window_layers(c, n_layers, WindowLayers::Pattern(pattern))?;
            (w, layers, local)
        } else {
            let (w, layers) = window_of_family(c, kind, n_layers, &no_rope_layers)?;
            (w, layers, rope.clone())
        };
        let softcap = |key: &str, default: Option<f64>| -> Result<Option<f64>> {
            match c.json.get(key) {
                None => Ok(default),
                Some(v) if v.is_null() => Ok(None),
                Some(_) => c.f64_or(key, 1.0).map(Some),
            }
        };
        let gemma2 = kind == ArchKind::Gemma2;
        let granite = kind == ArchKind::Granite;
        let attn_scale = match (fam.gemma, granite) {
            (true, _) => 1.0 / c.f64_or("query_pre_attn_scalar", 256.0)?.sqrt(),
            (_, true) => c.f64_or("attention_multiplier", 1.0)?,
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        let embed_scale = match (fam.gemma, granite) {
            (true, _) => Some((hidden as f64).sqrt()),
            (_, true) => Some(c.f64_or("embedding_multiplier", 1.0)?),
            _ => None,
        };
        let token_id = |key: &str| -> Option<u32> {
            c.json
                .get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(LlamaConfig {
            kind,
            hidden,
            intermediate: c.usize("intermediate_size")?,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_or("max_position_embeddings", 2048)?,
            rope,
            rope_local,
            no_rope_layers,
            rms_eps: c.f64_or("rms_norm_eps", 1e-6)?,
            tie_embeddings: c.bool_or("tie_word_embeddings", fam.tie)?,
            qkv_bias: fam.qkv_bias || attention_bias,
            o_bias: attention_bias,
            mlp_bias: c.bool_or("mlp_bias", false)?,
            sliding_window,
            window_layers,
            qk_norm: fam.qk_norm,
            pre_norms: kind != ArchKind::Olmo2,
            post_norms: fam.gemma || kind == ArchKind::Olmo2,
            embed_scale,
            residual_scale: match granite {
                true => c.f64_or("residual_multiplier", 1.0)?,
                false => 1.0,
            },
            logit_scale: match granite {
                true => c.f64_or("logits_scaling", 1.0)?,
                false => 1.0,
            },
            act,
            attn_scale,
            attn_softcap: softcap("attn_logit_softcapping", gemma2.then_some(50.0))?,
            final_softcap: softcap("final_logit_softcapping", gemma2.then_some(30.0))?,
            fused_proj: fam.fused_proj,
            moe: moe_setting(c, kind, n_layers)?,
            bos_token_id: token_id("bos_token_id"),
            eos_token_id: token_id("eos_token_id"),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// The window layer `i` attends through, if any.
    pub fn window_of(&self, layer: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| self.window_layers.is_sliding(layer))
    }
}

/// The attention scale llama.cpp's graphs apply, which keep no `query_pre_attn_scalar`:
/// Gemma's 27B models (recognised by layer count, as llama.cpp does) scale queries by
/// 1/√(hidden/heads), everything else by 1/√head_dim.
pub(crate) fn llama_cpp_attn_scale(
    kind: ArchKind,
    n_layers: usize,
    hidden: usize,
    n_heads: usize,
    head_dim: usize,
) -> f64 {
    match (kind, n_layers) {
        (ArchKind::Gemma2, 46) | (ArchKind::Gemma3, 62) => 1.0 / ((hidden / n_heads) as f64).sqrt(),
        _ => 1.0 / (head_dim as f64).sqrt(),
    }
}

/// Per-block roles in tensor order; `LlamaBlock::idx` follows it.
pub(crate) const BLOCK_ROLES: [(Role, &str); 7] = [
    (Role::AttnQ, "attn_q"),
    (Role::AttnK, "attn_k"),
    (Role::AttnV, "attn_v"),
    (Role::AttnOut, "attn_output"),
    (Role::FfnGate, "ffn_gate"),
    (Role::FfnUp, "ffn_up"),
    (Role::FfnDown, "ffn_down"),
];

#[derive(Debug, Clone)]
pub(crate) struct LlamaBlock {
    /// Norms before attention and the MLP (absent in OLMo-2).
    attn_norm: Option<Tensor>,
    ffn_norm: Option<Tensor>,
    /// Norms after attention and after the MLP (Gemma, OLMo-2).
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
    /// q/k norms: `[head_dim]` per head, or `[q_dim]` / `[kv_dim]` whole (`QkNorm`).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Biases in BLOCK_ROLES order.
    bias: [Option<Tensor>; 7],
    idx: [usize; 7],
    window: Option<usize>,
    /// Whether q and k rotate (SmolLM3's NoPE layers do not).
    uses_rope: bool,
    /// The router `[experts, hidden]` of a mixture-of-experts MLP (kept in f32, as
    /// llama.cpp keeps `ffn_gate_inp`); the MLP tensors are then stacked experts.
    router: Option<Tensor>,
}

/// One rope's tables: for short windows, and LongRoPE's long ones when some window
/// can be longer than its original context.
#[derive(Debug, Clone)]
struct Rope {
    spec: RopeSpec,
    short: RopeTables,
    long: Option<RopeTables>,
}

impl Rope {
    fn new(spec: &RopeSpec, n: usize) -> Result<Rope> {
        Ok(Rope {
            spec: spec.clone(),
            short: spec.tables(n, false)?,
            long: match spec.uses_long(n) {
                true => Some(spec.tables(n, true)?),
                false => None,
            },
        })
    }

    /// cos/sin for a window of `t` tokens.
    fn for_window(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let tables = match (&self.long, self.spec.uses_long(t)) {
            (Some(long), true) => long,
            _ => &self.short,
        };
        Ok((tables.cos.narrow(0, 0, t)?, tables.sin.narrow(0, 0, t)?))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LlamaNet {
    pub cfg: LlamaConfig,
    /// Use candle's composed (differentiable) norm, softmax and rope instead of its fused
    /// kernels, which have no backward pass: set only on the copy `tune` trains.
    autograd: bool,
    blocks: Vec<LlamaBlock>,
    norm: Tensor,
    embed_idx: usize,
    output_idx: usize,
    rope: Rope,
    /// Sliding-window layers' rope when its base differs from the global one.
    rope_local: Option<Rope>,
}

/// Fetches a tensor by its canonical (GGUF) name with the expected row-major shape.
pub(crate) type Fetch<'a> = dyn Fn(&str, &[usize]) -> Result<Option<Tensor>> + 'a;

pub(crate) fn require(fetch: &Fetch, name: &str, shape: &[usize]) -> Result<Tensor> {
    // The loader names the file (`Error::in_file`); the fetch only knows the name.
    fetch(name, shape)?.ok_or_else(|| Error::tensor("", name, "missing"))
}

/// Fetches a tensor as its file stores it (a weight matrix stays a mapped range), by
/// canonical (GGUF) name with the expected row-major shape: what the Llama loader takes.
pub(crate) type FetchWeight<'a> = dyn Fn(&str, &[usize]) -> Result<Option<Weight>> + 'a;

/// A weight matrix by name, as stored.
fn require_weight(fetch: &FetchWeight, name: &str, shape: &[usize]) -> Result<Weight> {
    fetch(name, shape)?.ok_or_else(|| Error::tensor("", name, "missing"))
}

/// A small tensor (norm, bias, router) by name, in memory.
fn require_tensor(fetch: &FetchWeight, name: &str, shape: &[usize]) -> Result<Tensor> {
    require_weight(fetch, name, shape)?.tensor()
}

/// Names of the aux (never quantized) per-block tensors, in `aux_tensors` order.
const NORMS: [&str; 6] = [
    "attn_norm",
    "ffn_norm",
    "post_attention_norm",
    "post_ffw_norm",
    "attn_q_norm",
    "attn_k_norm",
];

impl LlamaNet {
    /// Builds the network; returns it with the quantizable tensors and their weights.
    /// The caller has checked `cfg.n_layers` against the blocks the file holds.
    // One piece: a linear walk over the tensors one block needs, in file order.
    pub(crate) fn load(
        cfg: LlamaConfig,
        fetch: &FetchWeight,
    ) -> Result<(Self, Vec<TensorInfo>, Vec<Weight>)> {
        let mut infos = Vec::new();
        let mut weights = Vec::new();
        let mut push = |name: String, role, block, rows, cols, w: Weight, experts| {
            infos.push(TensorInfo {
                name,
                role,
                block,
                rows,
                cols,
                experts,
            });
            weights.push(w);
            weights.len() - 1
        };
        let (h, v) = (cfg.hidden, cfg.vocab);
        let embed = require_weight(fetch, "token_embd.weight", &[v, h])?;
        let embed_idx = push(
            "token_embd.weight".into(),
            Role::Embedding,
            None,
            v,
            h,
            embed,
            None,
        );
        let shapes = [
            (cfg.q_dim(), h),
            (cfg.kv_dim(), h),
            (cfg.kv_dim(), h),
            (h, cfg.q_dim()),
            (cfg.intermediate, h),
            (cfg.intermediate, h),
            (h, cfg.intermediate),
        ];
        let has_bias = [
            cfg.qkv_bias,
            cfg.qkv_bias,
            cfg.qkv_bias,
            cfg.o_bias,
            cfg.mlp_bias,
            cfg.mlp_bias,
            cfg.mlp_bias,
        ];
        let mut blocks = Vec::new();
        for b in 0..cfg.n_layers {
            let opt_norm = |on: bool, short: &str, dim: usize| {
                on.then(|| require_tensor(fetch, &format!("blk.{b}.{short}.weight"), &[dim]))
                    .transpose()
            };
            let mut mats = block_matrices(&cfg, b, fetch)?;
            let mut idx = [0usize; 7];
            let mut bias: [Option<Tensor>; 7] = Default::default();
            let moe = cfg.moe.as_ref().filter(|m| m.layers[b]);
            let router = moe
                .map(|m| {
                    require_tensor(
                        fetch,
                        &format!("blk.{b}.ffn_gate_inp.weight"),
                        &[m.experts, h],
                    )
                })
                .transpose()?
                .map(|r| super::widened(&r))
                .transpose()?;
            for (j, (role, short)) in BLOCK_ROLES.iter().enumerate() {
                if let (Some(m), 4..) = (moe, j) {
                    let (name, rows, cols, w) = expert_stack(fetch, b, short, m, h)?;
                    let e = Experts {
                        total: m.experts,
                        used: m.used,
                    };
                    idx[j] = push(name, *role, Some(b), rows, cols, w, Some(e));
                    continue;
                }
                let name = format!("blk.{b}.{short}.weight");
                let (rows, cols) = shapes[j];
                let w = match mats[j].take() {
                    Some(w) => w,
                    None => require_weight(fetch, &name, &[rows, cols])?,
                };
                idx[j] = push(name, *role, Some(b), rows, cols, w, None);
                if has_bias[j] {
                    bias[j] = Some(require_tensor(
                        fetch,
                        &format!("blk.{b}.{short}.bias"),
                        &[rows],
                    )?);
                }
            }
            let (qn, kn) = match cfg.qk_norm {
                QkNorm::Full => (cfg.q_dim(), cfg.kv_dim()),
                _ => (cfg.head_dim, cfg.head_dim),
            };
            let qk = cfg.qk_norm != QkNorm::None;
            blocks.push(LlamaBlock {
                attn_norm: opt_norm(cfg.pre_norms, "attn_norm", h)?,
                ffn_norm: opt_norm(cfg.pre_norms, "ffn_norm", h)?,
                post_attn_norm: opt_norm(cfg.post_norms, "post_attention_norm", h)?,
                post_ffn_norm: opt_norm(cfg.post_norms, "post_ffw_norm", h)?,
                q_norm: opt_norm(qk, "attn_q_norm", qn)?,
                k_norm: opt_norm(qk, "attn_k_norm", kn)?,
                bias,
                idx,
                window: cfg.window_of(b),
                uses_rope: !cfg.no_rope_layers.contains(&b),
                router,
            });
        }
        let norm = require_tensor(fetch, "output_norm.weight", &[h])?;
        let output_idx = if cfg.tie_embeddings {
            embed_idx
        } else {
            match fetch("output.weight", &[v, h])? {
                Some(w) => push("output.weight".into(), Role::Output, None, v, h, w, None),
                // Checkpoints that tie without saying so (GGUF files omit output.weight).
                None => embed_idx,
            }
        };
        let n = cfg.max_positions.min(1 << 16);
        let rope = Rope::new(&cfg.rope, n)?;
        let any_local = (0..cfg.n_layers).any(|b| cfg.window_of(b).is_some());
        let rope_local = match any_local && cfg.rope_local != cfg.rope {
            true => Some(Rope::new(&cfg.rope_local, n)?),
            false => None,
        };
        Ok((
            LlamaNet {
                cfg,
                autograd: false,
                blocks,
                norm,
                embed_idx,
                output_idx,
                rope,
                rope_local,
            },
            infos,
            weights,
        ))
    }

    pub(crate) fn tied_output(&self) -> bool {
        self.output_idx == self.embed_idx
    }

    /// The non-quantized tensors by canonical (GGUF) name: per block the norms (in
    /// `NORMS` order, those the family has; Gemma's hold `1 + w` as GGUF stores them),
    /// then biases in `BLOCK_ROLES` order; `output_norm` last. Exporters write these as f32.
    pub(crate) fn aux_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (b, blk) in self.blocks.iter().enumerate() {
            let norms = [
                blk.attn_norm.as_ref(),
                blk.ffn_norm.as_ref(),
                blk.post_attn_norm.as_ref(),
                blk.post_ffn_norm.as_ref(),
                blk.q_norm.as_ref(),
                blk.k_norm.as_ref(),
            ];
            for (short, t) in NORMS.iter().zip(norms) {
                if let Some(t) = t {
                    out.push((format!("blk.{b}.{short}.weight"), t.clone()));
                }
            }
            for (j, (_, short)) in BLOCK_ROLES.iter().enumerate() {
                if let Some(t) = &blk.bias[j] {
                    out.push((format!("blk.{b}.{short}.bias"), t.clone()));
                }
            }
            if let Some(t) = &blk.router {
                out.push((format!("blk.{b}.ffn_gate_inp.weight"), t.clone()));
            }
        }
        out.push(("output_norm.weight".into(), self.norm.clone()));
        out
    }

    pub(crate) fn aux_params(&self) -> usize {
        self.aux_tensors().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// A copy whose non-quantized tensors are `aux` (in `aux_tensors` order and shapes,
    /// e.g. trainable variables), running the differentiable ops when `autograd` is set.
    pub(crate) fn with_aux(&self, aux: &[Tensor], autograd: bool) -> Result<LlamaNet> {
        let mut net = self.clone();
        net.autograd = autograd;
        let mut it = aux.iter();
        let mut take = |slot: &mut Tensor| -> Result<()> {
            let t = it
                .next()
                .ok_or_else(|| Error::Invalid("too few non-quantized tensors".into()))?;
            if t.dims() != slot.dims() {
                return Err(Error::Shape {
                    what: "non-quantized tensor".into(),
                    got: t.dims().to_vec(),
                    expected: slot.dims().to_vec(),
                });
            }
            *slot = t.clone();
            Ok(())
        };
        for blk in &mut net.blocks {
            for slot in [
                blk.attn_norm.as_mut(),
                blk.ffn_norm.as_mut(),
                blk.post_attn_norm.as_mut(),
                blk.post_ffn_norm.as_mut(),
                blk.q_norm.as_mut(),
                blk.k_norm.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                take(slot)?;
            }
            for slot in blk.bias.iter_mut().flatten() {
                take(slot)?;
            }
            if let Some(slot) = blk.router.as_mut() {
                take(slot)?;
            }
        }
        take(&mut net.norm)?;
        match it.next() {
            Some(_) => Err(Error::Invalid("too many non-quantized tensors".into())),
            None => Ok(net),
        }
    }

    /// RMS norm: the fused kernel, or the composed ops autograd can differentiate.
    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.rms_eps as f32;
        Ok(match self.autograd {
            true => candle_nn::ops::rms_norm_slow(x, w, eps)?,
            false => candle_nn::ops::rms_norm(x, w, eps)?,
        })
    }

    /// Rotary embedding: the fused kernel, or the composed ops autograd can differentiate.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(match self.autograd {
            true => candle_nn::rotary_emb::rope_slow(x, cos, sin)?,
            false => candle_nn::rotary_emb::rope(x, cos, sin)?,
        })
    }

    pub(crate) fn embed(&self, w: &dyn Weights, ids: &Tensor) -> Result<Tensor> {
        let x = embed_rows(w, self.embed_idx, self.cfg.vocab, self.cfg.hidden, ids)?;
        match self.cfg.embed_scale {
            Some(s) => Ok(x.affine(s, 0.0)?),
            None => Ok(x),
        }
    }

    pub(crate) fn block(
        &self,
        i: usize,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        x: &Tensor,
    ) -> Result<Tensor> {
        let blk = block_at(&self.blocks, i)?;
        let cfg = &self.cfg;
        let rms = |x: &Tensor, w: &Option<Tensor>| match w {
            Some(w) => self.rms(x, w),
            None => Ok(x.clone()),
        };
        let hn = rms(x, &blk.attn_norm)?;
        let lin = |x: &Tensor, j: usize| linear(x, w, blk.idx[j], blk.bias[j].as_ref(), hook);
        let mut q = lin(&hn, 0)?;
        let mut k = lin(&hn, 1)?;
        let v = lin(&hn, 2)?;
        if cfg.qk_norm == QkNorm::Full {
            q = rms(&q, &blk.q_norm)?;
            k = rms(&k, &blk.k_norm)?;
        }
        let rope = match (&self.rope_local, blk.window) {
            (Some(local), Some(_)) => local,
            _ => &self.rope,
        };
        let scores = AttnScores {
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            window: blk.window,
        };
        let qkv = (&q, &k, &v);
        let attn = match self.autograd {
            true => self.composed_attention(blk, rope, &scores, qkv)?,
            false => self.fused_attention(blk, rope, &scores, qkv)?,
        };
        let o = rms(&lin(&attn, 3)?, &blk.post_attn_norm)?;
        let x = self.residual(o, x)?;
        let hn = rms(&x, &blk.ffn_norm)?;
        let f = match &blk.router {
            Some(router) => self.moe_mlp(blk, router, w, hook, &hn)?,
            None => {
                let gate = lin(&hn, 4)?;
                let up = lin(&hn, 5)?;
                lin(&self.gated(gate, up)?, 6)?
            }
        };
        let f = rms(&f, &blk.post_ffn_norm)?;
        self.residual(f, &x)
    }

    /// `act(gate) · up`.
    fn gated(&self, gate: Tensor, up: Tensor) -> Result<Tensor> {
        Ok(match (self.cfg.act, self.autograd) {
            (Activation::Silu, false) => fused::silu_mul(gate, &up)?,
            (Activation::Silu, true) => (candle_nn::ops::silu(&gate)? * up)?,
            (Activation::GeluTanh, _) => (gate.gelu()? * up)?,
        })
    }

    /// A mixture-of-experts MLP as transformers' Qwen3-MoE and Mixtral blocks compute it:
    /// router softmax in f32, the top `used` experts per token (renormalised when
    /// `norm_topk`), each expert's gated MLP on its tokens, outputs added weighted.
    fn moe_mlp(
        &self,
        blk: &LlamaBlock,
        router: &Tensor,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        hn: &Tensor,
    ) -> Result<Tensor> {
        let moe = self
            .cfg
            .moe
            .as_ref()
            .ok_or_else(|| Error::Invalid("router without MoE settings".into()))?;
        let (b, t, h) = hn.dims3()?;
        let x = hn.reshape((b * t, h))?;
        let probs = candle_nn::ops::softmax_last_dim(&x.matmul(&router.t()?)?)?;
        let routes = route(&probs.to_vec2::<f32>()?, moe);
        let ff = moe.expert_ff;
        let mut out = x.zeros_like()?;
        for (e, r) in routes.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let rows: Vec<u32> = r.iter().map(|&(i, _)| i).collect();
            let n = rows.len();
            let ids = Tensor::from_vec(rows, n, &Device::Cpu)?;
            let xe = x.index_select(&ids, 0)?;
            let part = |j: usize, input: &Tensor, len: usize| -> Result<Tensor> {
                let input = hook.linear_input(blk.idx[j], input)?;
                w.matmul_t_rows(blk.idx[j], e * len, len, &input)
            };
            let a = self.gated(part(4, &xe, ff)?, part(5, &xe, ff)?)?;
            let d = part(6, &a, h)?;
            let mix = Tensor::from_vec(
                r.iter().map(|&(_, p)| p).collect::<Vec<f32>>(),
                (n, 1),
                &Device::Cpu,
            )?;
            out = out.index_add(&ids, &d.broadcast_mul(&mix)?, 0)?;
        }
        Ok(out.reshape((b, t, h))?)
    }

    /// `x + s·o` (Granite's residual multiplier `s`, else 1): in place into `o` (a fresh
    /// output) unless autograd must see the sum.
    fn residual(&self, o: Tensor, x: &Tensor) -> Result<Tensor> {
        let o = match self.cfg.residual_scale {
            1.0 => o,
            s => o.affine(s, 0.0)?,
        };
        match self.autograd {
            true => Ok((x + o)?),
            false => fused::add_residual(o, x),
        }
    }

    /// `fused_attention` with candle's differentiable ops (heads transposed, full score
    /// matrices, composed softmax), for autograd.
    fn composed_attention(
        &self,
        blk: &LlamaBlock,
        rope: &Rope,
        scores: &AttnScores,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = q.dims3()?;
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let (mut q, mut k) = (split_heads(q, (nh, hd))?, split_heads(k, (nkv, hd))?);
        if let (QkNorm::PerHead, Some(qn), Some(kn)) = (cfg.qk_norm, &blk.q_norm, &blk.k_norm) {
            q = self.rms(&q, qn)?;
            k = self.rms(&k, kn)?;
        }
        if blk.uses_rope {
            let (cos, sin) = rope.for_window(t)?;
            let turn = |x: &Tensor| partial(x, rope.spec.dims, |r| self.rope(r, &cos, &sin));
            q = turn(&q)?;
            k = turn(&k)?;
        }
        let v = split_heads(v, (nkv, hd))?;
        let attn = grouped_attention(&q, &k, &v, nh / nkv, scores)?;
        Ok(attn.transpose(1, 2)?.reshape((b, t, nh * hd))?)
    }

    /// Attention of one block from the q/k/v projections `[b, t, heads·head_dim]`: per-head
    /// q/k norms and rope in the `[b, t, heads, head_dim]` layout, then the fused kernel.
    /// Returns `[b, t, n_heads·head_dim]`, the output projection's input.
    fn fused_attention(
        &self,
        blk: &LlamaBlock,
        rope: &Rope,
        scores: &AttnScores,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = q.dims3()?;
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let mut q = q.reshape((b, t, nh, hd))?;
        let mut k = k.reshape((b, t, nkv, hd))?;
        let v = v.reshape((b, t, nkv, hd))?;
        if let (QkNorm::PerHead, Some(qn), Some(kn)) = (cfg.qk_norm, &blk.q_norm, &blk.k_norm) {
            q = self.rms(&q, qn)?;
            k = self.rms(&k, kn)?;
        }
        if blk.uses_rope {
            let (cos, sin) = rope.for_window(t)?;
            let turn = |x: &Tensor| {
                partial(x, rope.spec.dims, |r| {
                    Ok(candle_nn::rotary_emb::rope_thd(r, &cos, &sin)?)
                })
            };
            q = turn(&q)?;
            k = turn(&k)?;
        }
        fused::attention(&q, &k, &v, scores)
    }

    /// Final norm, then the logits: at every vocabulary row, or at `rows` only.
    pub(crate) fn head(
        &self,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        x: &Tensor,
        rows: Option<&[u32]>,
    ) -> Result<Tensor> {
        let hn = self.rms(x, &self.norm)?;
        self.finish_logits(&head_product(&hn, w, self.output_idx, rows, hook)?)
    }

    /// What follows the output product: the logit scale, then the final soft-cap.
    fn finish_logits(&self, logits: &Tensor) -> Result<Tensor> {
        let logits = match self.cfg.logit_scale {
            1.0 => logits.clone(),
            s => logits.affine(1.0 / s, 0.0)?,
        };
        softcap(&logits, self.cfg.final_softcap)
    }
}

/// Per expert, the tokens routed to it with their mixing weights: each token's `used`
/// most probable experts (ties to the lower index, as `torch.topk` on CPU), weights
/// renormalised over them when `norm_topk`.
fn route(probs: &[Vec<f32>], moe: &Moe) -> Vec<Vec<(u32, f32)>> {
    let mut routes = vec![Vec::new(); moe.experts];
    let mut order: Vec<usize> = Vec::with_capacity(moe.experts);
    for (i, row) in probs.iter().enumerate() {
        order.clear();
        order.extend(0..row.len());
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top = &order[..moe.used];
        let sum: f32 = top.iter().map(|&e| row[e]).sum();
        for &e in top {
            let p = match moe.norm_topk {
                true => row[e] / sum,
                false => row[e],
            };
            routes[e].push((i as u32, p));
        }
    }
    routes
}

/// One block's experts of one role (`ffn_gate`, `ffn_up`, `ffn_down`) as one stacked
/// tensor `[experts · rows, cols]`: llama.cpp's `ffn_*_exps` when the file has it (GGUF),
/// else each expert's matrix by its own name (Hugging Face), stacked in expert order.
fn expert_stack(
    fetch: &FetchWeight,
    b: usize,
    short: &str,
    m: &Moe,
    h: usize,
) -> Result<(String, usize, usize, Weight)> {
    let (rows, cols) = match short {
        "ffn_down" => (h, m.expert_ff),
        _ => (m.expert_ff, h),
    };
    let name = format!("blk.{b}.{short}_exps.weight");
    let w = match fetch(&name, &[m.experts, rows, cols])? {
        Some(w) => w.reshaped(m.experts * rows, cols)?,
        // Stacked in memory: each expert is its own tensor in the file.
        None => {
            let parts = (0..m.experts)
                .map(|e| {
                    require_tensor(
                        fetch,
                        &format!("blk.{b}.{short}_exps.{e}.weight"),
                        &[rows, cols],
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Weight::Held(Tensor::cat(&parts, 0)?)
        }
    };
    Ok((name, m.experts * rows, cols, w))
}

/// The block's weight matrices that come out of fused tensors (Phi-3), in BLOCK_ROLES
/// order; `None` entries are fetched by their own names.
fn block_matrices(cfg: &LlamaConfig, b: usize, fetch: &FetchWeight) -> Result<[Option<Weight>; 7]> {
    let mut out: [Option<Weight>; 7] = Default::default();
    if !cfg.fused_proj {
        return Ok(out);
    }
    let (h, q, kv, ff) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    // llama.cpp also accepts separate q/k/v for Phi-3; the fused ffn_up is required.
    if let Some(qkv) = fetch(&format!("blk.{b}.attn_qkv.weight"), &[q + 2 * kv, h])? {
        out[0] = Some(qkv.rows(0, q)?);
        out[1] = Some(qkv.rows(q, kv)?);
        out[2] = Some(qkv.rows(q + kv, kv)?);
    }
    let gate_up = require_weight(fetch, &format!("blk.{b}.ffn_up.weight"), &[2 * ff, h])?;
    out[4] = Some(gate_up.rows(0, ff)?);
    out[5] = Some(gate_up.rows(ff, ff)?);
    Ok(out)
}

/// `cap · tanh(x / cap)`, or `x` without a cap.
fn softcap(x: &Tensor, cap: Option<f64>) -> Result<Tensor> {
    match cap {
        Some(c) => Ok(x.affine(1.0 / c, 0.0)?.tanh()?.affine(c, 0.0)?),
        None => Ok(x.clone()),
    }
}

/// The block at `i`, or an error (a caller-supplied index, not an internal invariant).
pub(crate) fn block_at<T>(blocks: &[T], i: usize) -> Result<&T> {
    blocks
        .get(i)
        .ok_or_else(|| Error::out_of_range("block", i, blocks.len()))
}

/// `[batch, seq, heads·head_dim]` → contiguous `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads(x: &Tensor, (n, hd): (usize, usize)) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
}

/// Gathers embedding rows of tensor `idx` (`vocab` rows) for `[batch, seq]` ids as f32,
/// rejecting ids outside the vocabulary (a gather would index out of bounds).
pub(crate) fn embed_rows(
    w: &dyn Weights,
    idx: usize,
    vocab: usize,
    hidden: usize,
    ids: &Tensor,
) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let flat = ids.flatten_all()?.to_vec1::<u32>()?;
    if let Some(&bad) = flat.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::out_of_range("token id", bad as usize, vocab));
    }
    // Widened after the gather: a 16-bit or mapped table stays as it is, only these rows
    // become f32.
    Ok(w.gather(idx, &flat)?.reshape((b, t, hidden))?)
}

/// Rotates the leading `dims` values of the last axis with `f` and passes the rest
/// through (partial rotary embeddings); the whole axis when `dims` covers it.
fn partial(x: &Tensor, dims: usize, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    if dims >= hd {
        return f(x);
    }
    let rot = f(&x.narrow(D::Minus1, 0, dims)?.contiguous()?)?;
    let pass = x.narrow(D::Minus1, dims, hd - dims)?;
    Ok(Tensor::cat(&[&rot, &pass], D::Minus1)?.contiguous()?)
}

/// Additive causal mask `[t, t]` (0 or -inf); with a window, keys more than
/// `window - 1` positions back are masked too.
pub(crate) fn causal_mask(t: usize, window: Option<usize>) -> Result<Tensor> {
    let w = window.unwrap_or(usize::MAX);
    let m: Vec<f32> = (0..t * t)
        .map(|k| {
            let (i, j) = (k / t, k % t);
            if j > i || i - j >= w {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, t), &Device::Cpu)?)
}

/// Causal attention with `rep` query heads per key/value head, in candle's differentiable
/// ops (autograd; the forward pass uses `fused::attention`). Queries of one group are
/// stacked along the sequence axis so K and V are used in place, never repeated.
fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
    how: &AttnScores,
) -> Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let nkv = nh / rep;
    let q = q.reshape((b, nkv, rep * t, hd))?;
    let scores = softcap(&(q.matmul(&k.t()?)? * how.scale)?, how.softcap)?;
    let mask = causal_mask(t, how.window)?;
    let mask = if rep > 1 {
        mask.unsqueeze(0)?
            .expand((rep, t, t))?
            .reshape((rep * t, t))?
    } else {
        mask
    };
    let probs = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    Ok(probs.matmul(v)?.reshape((b, nh, t, hd))?)
}

/// Standard attention for encoders and GPT-2 (`mask` additive, broadcast over heads).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let hd = q.dim(D::Minus1)?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(v)?)
}
