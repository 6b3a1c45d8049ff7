//! The Llama family (Llama, Mistral, Qwen2): RMSNorm, rotary positions (HF half-split
//! layout), grouped-query attention, SwiGLU MLP; optional q/k/v/o/MLP biases, tied or
//! untied output, optional sliding window.

use super::config::{ArchKind, HfConfig};
use super::{linear, LinearHook, Role, TensorInfo, Weights};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor, D};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LlamaConfig {
    pub kind: ArchKind,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl LlamaConfig {
    pub(crate) fn from_hf(c: &HfConfig, kind: ArchKind) -> Result<Self> {
        let hidden = c.usize("hidden_size")?;
        let n_heads = c.usize("num_attention_heads")?;
        let n_kv_heads = c.usize_or("num_key_value_heads", n_heads)?;
        let head_dim = match c.opt_usize("head_dim")? {
            Some(h) => h,
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
        if let Some(rs) = c.json.get("rope_scaling").filter(|v| !v.is_null()) {
            let ty = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if ty != "default" {
                return Err(c.err(
                    "rope_scaling",
                    format!("rope scaling `{ty}` is not supported"),
                ));
            }
        }
        c.one_of("hidden_act", &["silu"])?;
        let attention_bias = c.bool_or("attention_bias", false)?;
        let qkv_bias = kind == ArchKind::Qwen2 || attention_bias;
        let sliding_window =
            if kind == ArchKind::Mistral || c.bool_or("use_sliding_window", false)? {
                c.opt_usize("sliding_window")?
            } else {
                None
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
            n_layers: c.usize("num_hidden_layers")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_or("max_position_embeddings", 2048)?,
            rope_theta: c.f64_or("rope_theta", 10000.0)?,
            rms_eps: c.f64_or("rms_norm_eps", 1e-6)?,
            tie_embeddings: c.bool_or("tie_word_embeddings", kind == ArchKind::Qwen2)?,
            qkv_bias,
            o_bias: attention_bias,
            mlp_bias: c.bool_or("mlp_bias", false)?,
            sliding_window,
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

#[derive(Debug)]
pub(crate) struct LlamaBlock {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// Biases in BLOCK_ROLES order.
    bias: [Option<Tensor>; 7],
    idx: [usize; 7],
}

#[derive(Debug)]
pub(crate) struct LlamaNet {
    pub cfg: LlamaConfig,
    blocks: Vec<LlamaBlock>,
    norm: Tensor,
    embed_idx: usize,
    output_idx: usize,
    cos: Tensor,
    sin: Tensor,
}

/// Fetches a tensor by its canonical (GGUF) name with the expected row-major shape.
pub(crate) type Fetch<'a> = dyn Fn(&str, &[usize]) -> Result<Option<Tensor>> + 'a;

pub(crate) fn require(fetch: &Fetch, name: &str, shape: &[usize]) -> Result<Tensor> {
    fetch(name, shape)?.ok_or_else(|| Error::Invalid(format!("missing tensor `{name}`")))
}

impl LlamaNet {
    /// Builds the network; returns it with the quantizable tensors and their weights.
    pub(crate) fn load(
        cfg: LlamaConfig,
        fetch: &Fetch,
    ) -> Result<(Self, Vec<TensorInfo>, Vec<Tensor>)> {
        let mut infos = Vec::new();
        let mut weights = Vec::new();
        let mut push = |name: String, role, block, rows, cols, w: Tensor| {
            infos.push(TensorInfo {
                name,
                role,
                block,
                rows,
                cols,
            });
            weights.push(w);
            weights.len() - 1
        };
        let (h, v) = (cfg.hidden, cfg.vocab);
        let embed = require(fetch, "token_embd.weight", &[v, h])?;
        let embed_idx = push(
            "token_embd.weight".into(),
            Role::Embedding,
            None,
            v,
            h,
            embed,
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
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for b in 0..cfg.n_layers {
            let attn_norm = require(fetch, &format!("blk.{b}.attn_norm.weight"), &[h])?;
            let ffn_norm = require(fetch, &format!("blk.{b}.ffn_norm.weight"), &[h])?;
            let mut idx = [0usize; 7];
            let mut bias: [Option<Tensor>; 7] = Default::default();
            for (j, (role, short)) in BLOCK_ROLES.iter().enumerate() {
                let name = format!("blk.{b}.{short}.weight");
                let (rows, cols) = shapes[j];
                let w = require(fetch, &name, &[rows, cols])?;
                idx[j] = push(name, *role, Some(b), rows, cols, w);
                if has_bias[j] {
                    bias[j] = Some(require(fetch, &format!("blk.{b}.{short}.bias"), &[rows])?);
                }
            }
            blocks.push(LlamaBlock {
                attn_norm,
                ffn_norm,
                bias,
                idx,
            });
        }
        let norm = require(fetch, "output_norm.weight", &[h])?;
        let output_idx = if cfg.tie_embeddings {
            embed_idx
        } else {
            match fetch("output.weight", &[v, h])? {
                Some(w) => push("output.weight".into(), Role::Output, None, v, h, w),
                // Checkpoints that tie without saying so (GGUF files omit output.weight).
                None => embed_idx,
            }
        };
        let (cos, sin) = rope_tables(&cfg)?;
        Ok((
            LlamaNet {
                cfg,
                blocks,
                norm,
                embed_idx,
                output_idx,
                cos,
                sin,
            },
            infos,
            weights,
        ))
    }

    pub(crate) fn tied_output(&self) -> bool {
        self.output_idx == self.embed_idx
    }

    /// The non-quantized tensors by canonical (GGUF) name: per block the norms, then
    /// biases in `BLOCK_ROLES` order; `output_norm` last. Exporters write these as f32.
    pub(crate) fn aux_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (b, blk) in self.blocks.iter().enumerate() {
            out.push((format!("blk.{b}.attn_norm.weight"), blk.attn_norm.clone()));
            out.push((format!("blk.{b}.ffn_norm.weight"), blk.ffn_norm.clone()));
            for (j, (_, short)) in BLOCK_ROLES.iter().enumerate() {
                if let Some(t) = &blk.bias[j] {
                    out.push((format!("blk.{b}.{short}.bias"), t.clone()));
                }
            }
        }
        out.push(("output_norm.weight".into(), self.norm.clone()));
        out
    }

    pub(crate) fn aux_params(&self) -> usize {
        let per_block: usize = self
            .blocks
            .first()
            .map(|b| {
                b.attn_norm.elem_count()
                    + b.ffn_norm.elem_count()
                    + b.bias
                        .iter()
                        .flatten()
                        .map(|t| t.elem_count())
                        .sum::<usize>()
            })
            .unwrap_or(0);
        per_block * self.blocks.len() + self.norm.elem_count()
    }

    pub(crate) fn embed(&self, w: &dyn Weights, ids: &Tensor) -> Result<Tensor> {
        embed_rows(&w.table(self.embed_idx)?, ids)
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
        let (b, t, _) = x.dims3()?;
        let eps = cfg.rms_eps as f32;
        let hn = candle_nn::ops::rms_norm(x, &blk.attn_norm, eps)?;
        let lin = |x: &Tensor, j: usize| linear(x, w, blk.idx[j], blk.bias[j].as_ref(), hook);
        let q = lin(&hn, 0)?;
        let k = lin(&hn, 1)?;
        let v = lin(&hn, 2)?;
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let q = candle_nn::rotary_emb::rope(&split_heads(&q, (nh, hd))?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&split_heads(&k, (nkv, hd))?, &cos, &sin)?;
        let v = split_heads(&v, (nkv, hd))?;
        let attn = grouped_attention(&q, &k, &v, nh / nkv, cfg.sliding_window)?;
        let attn = attn.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        let x = (x + lin(&attn, 3)?)?;
        let hn = candle_nn::ops::rms_norm(&x, &blk.ffn_norm, eps)?;
        let gate = lin(&hn, 4)?;
        let up = lin(&hn, 5)?;
        let act = (candle_nn::ops::silu(&gate)? * up)?;
        Ok((x + lin(&act, 6)?)?)
    }

    pub(crate) fn head(
        &self,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        x: &Tensor,
    ) -> Result<Tensor> {
        let hn = candle_nn::ops::rms_norm(x, &self.norm, self.cfg.rms_eps as f32)?;
        linear(&hn, w, self.output_idx, None, hook)
    }
}

/// The block at `i`, or an error (a caller-supplied index, not an internal invariant).
pub(crate) fn block_at<T>(blocks: &[T], i: usize) -> Result<&T> {
    blocks
        .get(i)
        .ok_or_else(|| Error::Invalid(format!("block {i} out of range ({} blocks)", blocks.len())))
}

/// `[batch, seq, heads·head_dim]` → contiguous `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads(x: &Tensor, (n, hd): (usize, usize)) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
}

/// Gathers embedding rows for `[batch, seq]` ids, rejecting ids outside the vocabulary
/// (candle's index_select would index out of bounds).
pub(crate) fn embed_rows(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let vocab = table.dim(0)?;
    let flat = ids.flatten_all()?;
    if let Some(bad) = flat
        .to_vec1::<u32>()?
        .into_iter()
        .find(|&i| i as usize >= vocab)
    {
        return Err(Error::Invalid(format!(
            "token id {bad} is outside the embedding table ({vocab} rows)"
        )));
    }
    let rows = table.index_select(&flat, 0)?;
    Ok(rows.reshape((b, t, table.dim(1)?))?)
}

/// cos/sin tables `[max_positions, head_dim / 2]` for the half-split rotary layout.
fn rope_tables(cfg: &LlamaConfig) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let n = cfg.max_positions.min(1 << 16);
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32)
        .collect();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for &f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (n, half), &Device::Cpu)?,
    ))
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

/// Causal attention with `rep` query heads per key/value head. Queries of one group are
/// stacked along the sequence axis so K and V are used in place, never repeated.
fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let nkv = nh / rep;
    let q = q.reshape((b, nkv, rep * t, hd))?;
    let scale = 1.0 / (hd as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let mask = causal_mask(t, window)?;
    let mask = if rep > 1 {
        mask.unsqueeze(0)?
            .expand((rep, t, t))?
            .reshape((rep * t, t))?
    } else {
        mask
    };
    let scores = scores.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(v)?;
    Ok(out.reshape((b, nh, t, hd))?)
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
