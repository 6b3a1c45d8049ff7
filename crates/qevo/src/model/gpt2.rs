//! GPT-2: learned positions, pre-LayerNorm blocks, fused Conv1D q/k/v (stored `[in, out]`,
//! split and transposed at load so every weight is `[out, in]`), tanh-GELU MLP, output tied
//! to the token embedding.

use super::config::HfConfig;
use super::llama::{attention, block_at, causal_mask, embed_rows, require, split_heads, Fetch};
use super::{head_product, linear, LinearHook, Role, TensorInfo, Weights};
use crate::error::{Error, Result};
use candle_core::Tensor;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Gpt2Config {
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub inner: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub ln_eps: f64,
}

impl Gpt2Config {
    pub(crate) fn from_hf(c: &HfConfig) -> Result<Self> {
        let (hidden, n_heads) = c.heads("n_embd", "n_head")?;
        c.one_of("activation_function", &["gelu_new", "gelu_pytorch_tanh"])?;
        Ok(Gpt2Config {
            hidden,
            n_layers: c.usize("n_layer")?,
            n_heads,
            inner: c.usize_or("n_inner", 4 * hidden)?,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_or("n_positions", 1024)?,
            ln_eps: c.f64_or("layer_norm_epsilon", 1e-5)?,
        })
    }
}

#[derive(Debug)]
struct Gpt2Block {
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    /// q, k, v, attn_out, ffn_up, ffn_down.
    bias: [Tensor; 6],
    idx: [usize; 6],
}

#[derive(Debug)]
pub(crate) struct Gpt2Net {
    cfg: Gpt2Config,
    wpe: Tensor,
    blocks: Vec<Gpt2Block>,
    ln_f: (Tensor, Tensor),
    embed_idx: usize,
}

const ROLES: [(Role, &str); 6] = [
    (Role::AttnQ, "attn_q"),
    (Role::AttnK, "attn_k"),
    (Role::AttnV, "attn_v"),
    (Role::AttnOut, "attn_output"),
    (Role::FfnUp, "ffn_up"),
    (Role::FfnDown, "ffn_down"),
];

impl Gpt2Net {
    /// `fetch` takes Hugging Face names (without the optional `transformer.` prefix).
    // One piece: a linear walk over the tensors each block needs, in file order.
    pub(crate) fn load(
        cfg: Gpt2Config,
        fetch: &Fetch,
    ) -> Result<(Self, Vec<TensorInfo>, Vec<Tensor>)> {
        let (h, v, inner) = (cfg.hidden, cfg.vocab, cfg.inner);
        let mut infos = vec![TensorInfo {
            name: "token_embd.weight".into(),
            role: Role::Embedding,
            block: None,
            rows: v,
            cols: h,
            experts: None,
        }];
        let mut weights = vec![require(fetch, "wte.weight", &[v, h])?];
        let wpe = require(fetch, "wpe.weight", &[cfg.max_positions, h])?;
        let ln = |p: &str, n: usize| -> Result<(Tensor, Tensor)> {
            Ok((
                require(fetch, &format!("{p}.weight"), &[n])?,
                require(fetch, &format!("{p}.bias"), &[n])?,
            ))
        };
        let mut blocks = Vec::new();
        for b in 0..cfg.n_layers {
            let p = format!("h.{b}");
            // Conv1D stores [in, out]; transpose to [out, in].
            let c_attn = require(fetch, &format!("{p}.attn.c_attn.weight"), &[h, 3 * h])?.t()?;
            let c_attn_b = require(fetch, &format!("{p}.attn.c_attn.bias"), &[3 * h])?;
            let c_proj = require(fetch, &format!("{p}.attn.c_proj.weight"), &[h, h])?.t()?;
            let c_fc = require(fetch, &format!("{p}.mlp.c_fc.weight"), &[h, inner])?.t()?;
            let m_proj = require(fetch, &format!("{p}.mlp.c_proj.weight"), &[inner, h])?.t()?;
            let ws = [
                c_attn.narrow(0, 0, h)?,
                c_attn.narrow(0, h, h)?,
                c_attn.narrow(0, 2 * h, h)?,
                c_proj,
                c_fc,
                m_proj,
            ];
            let bias = [
                c_attn_b.narrow(0, 0, h)?,
                c_attn_b.narrow(0, h, h)?,
                c_attn_b.narrow(0, 2 * h, h)?,
                require(fetch, &format!("{p}.attn.c_proj.bias"), &[h])?,
                require(fetch, &format!("{p}.mlp.c_fc.bias"), &[inner])?,
                require(fetch, &format!("{p}.mlp.c_proj.bias"), &[h])?,
            ];
            let mut idx = [0usize; 6];
            for (j, w) in ws.into_iter().enumerate() {
                let w = w.contiguous()?;
                let (rows, cols) = w.dims2()?;
                infos.push(TensorInfo {
                    name: format!("blk.{b}.{}.weight", ROLES[j].1),
                    role: ROLES[j].0,
                    block: Some(b),
                    rows,
                    cols,
                    experts: None,
                });
                weights.push(w);
                idx[j] = weights.len() - 1;
            }
            let bias = bias.map(|t| t.contiguous()).map(|r| r.map_err(Error::from));
            let [b0, b1, b2, b3, b4, b5] = bias;
            blocks.push(Gpt2Block {
                ln1: ln(&format!("{p}.ln_1"), h)?,
                ln2: ln(&format!("{p}.ln_2"), h)?,
                bias: [b0?, b1?, b2?, b3?, b4?, b5?],
                idx,
            });
        }
        let ln_f = ln("ln_f", h)?;
        Ok((
            Gpt2Net {
                cfg,
                wpe,
                blocks,
                ln_f,
                embed_idx: 0,
            },
            infos,
            weights,
        ))
    }

    pub(crate) fn aux_params(&self) -> usize {
        let per: usize = self
            .blocks
            .first()
            .map(|b| 4 * self.cfg.hidden + b.bias.iter().map(|t| t.elem_count()).sum::<usize>())
            .unwrap_or(0);
        self.wpe.elem_count() + per * self.blocks.len() + 2 * self.cfg.hidden
    }

    pub(crate) fn embed(&self, w: &dyn Weights, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.cfg.max_positions {
            return Err(Error::Invalid(format!(
                "sequence of {t} tokens exceeds GPT-2's {} positions",
                self.cfg.max_positions
            )));
        }
        let x = embed_rows(w, self.embed_idx, self.cfg.vocab, self.cfg.hidden, ids)?;
        Ok(x.broadcast_add(&self.wpe.narrow(0, 0, t)?)?)
    }

    pub(crate) fn block(
        &self,
        i: usize,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        x: &Tensor,
    ) -> Result<Tensor> {
        let blk = block_at(&self.blocks, i)?;
        let (b, t, h) = x.dims3()?;
        let eps = self.cfg.ln_eps as f32;
        let nh = self.cfg.n_heads;
        let hd = h / nh;
        let lin = |x: &Tensor, j: usize| linear(x, w, blk.idx[j], Some(&blk.bias[j]), hook);
        let hn = candle_nn::ops::layer_norm(x, &blk.ln1.0, &blk.ln1.1, eps)?;
        let q = split_heads(&lin(&hn, 0)?, (nh, hd))?;
        let k = split_heads(&lin(&hn, 1)?, (nh, hd))?;
        let v = split_heads(&lin(&hn, 2)?, (nh, hd))?;
        let mask = causal_mask(t, None)?;
        let a = attention(&q, &k, &v, Some(&mask))?;
        let a = a.transpose(1, 2)?.reshape((b, t, h))?;
        let x = (x + lin(&a, 3)?)?;
        let hn = candle_nn::ops::layer_norm(&x, &blk.ln2.0, &blk.ln2.1, eps)?;
        let m = lin(&hn, 4)?.gelu()?;
        Ok((x + lin(&m, 5)?)?)
    }

    /// Final norm, then the logits: at every vocabulary row, or at `rows` only.
    pub(crate) fn head(
        &self,
        w: &dyn Weights,
        hook: &dyn LinearHook,
        x: &Tensor,
        rows: Option<&[u32]>,
    ) -> Result<Tensor> {
        head_product(&self.final_norm(x)?, w, self.embed_idx, rows, hook)
    }

    fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.ln_f.0,
            &self.ln_f.1,
            self.cfg.ln_eps as f32,
        )?)
    }
}
