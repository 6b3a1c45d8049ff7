//! BERT encoders (MiniLM-class sentence embedders): word + position + token-type
//! embeddings, post-LayerNorm blocks, erf-GELU MLP, mean pooling over the sequence.

use super::config::HfConfig;
use super::llama::{attention, block_at, embed_rows, require, split_heads, Fetch};
use super::{linear, LinearHook, Role, TensorInfo, Weights};
use crate::error::{Error, Result};
use candle_core::{Tensor, D};

#[derive(Debug, Clone, serde::Serialize)]
pub struct BertConfig {
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub ln_eps: f64,
}

impl BertConfig {
    pub(crate) fn from_hf(c: &HfConfig) -> Result<Self> {
        let (hidden, n_heads) = c.heads("hidden_size", "num_attention_heads")?;
        c.one_of("hidden_act", &["gelu"])?;
        Ok(BertConfig {
            hidden,
            n_layers: c.usize("num_hidden_layers")?,
            n_heads,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_or("max_position_embeddings", 512)?,
            type_vocab: c.usize_or("type_vocab_size", 2)?,
            ln_eps: c.f64_or("layer_norm_eps", 1e-12)?,
        })
    }
}

#[derive(Debug)]
struct BertBlock {
    /// q, k, v, attn_out, ffn_up, ffn_down.
    bias: [Tensor; 6],
    idx: [usize; 6],
    ln_attn: (Tensor, Tensor),
    ln_out: (Tensor, Tensor),
}

#[derive(Debug)]
pub(crate) struct BertNet {
    cfg: BertConfig,
    pos: Tensor,
    token_type0: Tensor,
    ln_emb: (Tensor, Tensor),
    blocks: Vec<BertBlock>,
}

const PARTS: [(Role, &str, &str); 6] = [
    (Role::AttnQ, "attn_q", "attention.self.query"),
    (Role::AttnK, "attn_k", "attention.self.key"),
    (Role::AttnV, "attn_v", "attention.self.value"),
    (Role::AttnOut, "attn_output", "attention.output.dense"),
    (Role::FfnUp, "ffn_up", "intermediate.dense"),
    (Role::FfnDown, "ffn_down", "output.dense"),
];

/// The Hugging Face name (without the optional `bert.` prefix) of a canonical tensor name.
pub(crate) fn hf_name(canonical: &str) -> Option<String> {
    if canonical == "token_embd.weight" {
        return Some("embeddings.word_embeddings.weight".into());
    }
    let (b, rest) = canonical.strip_prefix("blk.")?.split_once('.')?;
    let (part, suffix) = rest.split_once('.')?;
    let (_, _, hf) = PARTS.iter().find(|(_, short, _)| *short == part)?;
    Some(format!("encoder.layer.{b}.{hf}.{suffix}"))
}

impl BertNet {
    /// `fetch` takes Hugging Face names (without the optional `bert.` prefix).
    pub(crate) fn load(
        cfg: BertConfig,
        fetch: &Fetch,
    ) -> Result<(Self, Vec<TensorInfo>, Vec<Tensor>)> {
        let (h, v, inner) = (cfg.hidden, cfg.vocab, cfg.intermediate);
        let mut infos = vec![TensorInfo {
            name: "token_embd.weight".into(),
            role: Role::Embedding,
            block: None,
            rows: v,
            cols: h,
            experts: None,
        }];
        let mut weights = vec![require(
            fetch,
            "embeddings.word_embeddings.weight",
            &[v, h],
        )?];
        let pos = require(
            fetch,
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, h],
        )?;
        let types = require(
            fetch,
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, h],
        )?;
        let ln = |p: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                require(fetch, &format!("{p}.weight"), &[h])?,
                require(fetch, &format!("{p}.bias"), &[h])?,
            ))
        };
        let shapes = [(h, h), (h, h), (h, h), (h, h), (inner, h), (h, inner)];
        let mut blocks = Vec::new();
        for b in 0..cfg.n_layers {
            let p = format!("encoder.layer.{b}");
            let mut idx = [0usize; 6];
            let mut bias = Vec::with_capacity(6);
            for (j, (role, short, hf)) in PARTS.iter().enumerate() {
                let (rows, cols) = shapes[j];
                weights.push(require(fetch, &format!("{p}.{hf}.weight"), &[rows, cols])?);
                bias.push(require(fetch, &format!("{p}.{hf}.bias"), &[rows])?);
                infos.push(TensorInfo {
                    name: format!("blk.{b}.{short}.weight"),
                    role: *role,
                    block: Some(b),
                    rows,
                    cols,
                    experts: None,
                });
                idx[j] = weights.len() - 1;
            }
            let bias: [Tensor; 6] = bias
                .try_into()
                .map_err(|_| Error::Invalid("bias count".into()))?;
            blocks.push(BertBlock {
                bias,
                idx,
                ln_attn: ln(&format!("{p}.attention.output.LayerNorm"))?,
                ln_out: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let token_type0 = types.narrow(0, 0, 1)?;
        Ok((
            BertNet {
                ln_emb: ln("embeddings.LayerNorm")?,
                cfg,
                pos,
                token_type0,
                blocks,
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
        self.pos.elem_count()
            + self.cfg.type_vocab * self.cfg.hidden
            + 2 * self.cfg.hidden
            + per * self.blocks.len()
    }

    pub(crate) fn embed(&self, w: &dyn Weights, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.cfg.max_positions {
            return Err(Error::Invalid(format!(
                "sequence of {t} tokens exceeds the encoder's {} positions",
                self.cfg.max_positions
            )));
        }
        let x = embed_rows(w, 0, self.cfg.vocab, self.cfg.hidden, ids)?
            .broadcast_add(&self.pos.narrow(0, 0, t)?)?
            .broadcast_add(&self.token_type0)?;
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.ln_emb.0,
            &self.ln_emb.1,
            self.cfg.ln_eps as f32,
        )?)
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
        let nh = self.cfg.n_heads;
        let hd = h / nh;
        let eps = self.cfg.ln_eps as f32;
        let lin = |x: &Tensor, j: usize| linear(x, w, blk.idx[j], Some(&blk.bias[j]), hook);
        let q = split_heads(&lin(x, 0)?, (nh, hd))?;
        let k = split_heads(&lin(x, 1)?, (nh, hd))?;
        let v = split_heads(&lin(x, 2)?, (nh, hd))?;
        let a = attention(&q, &k, &v, None)?
            .transpose(1, 2)?
            .reshape((b, t, h))?;
        let x =
            candle_nn::ops::layer_norm(&(x + lin(&a, 3)?)?, &blk.ln_attn.0, &blk.ln_attn.1, eps)?;
        let m = lin(&x, 4)?.gelu_erf()?;
        Ok(candle_nn::ops::layer_norm(
            &(&x + lin(&m, 5)?)?,
            &blk.ln_out.0,
            &blk.ln_out.1,
            eps,
        )?)
    }

    /// Mean pooling over the sequence: `[batch, hidden]`.
    pub(crate) fn head(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mean(D::Minus2)?)
    }
}
