//! What each llama.cpp architecture needs from a qevo Llama-family model: the
//! `general.architecture` name, the `<arch>.*` hyper-parameter keys, how q/k rows are
//! laid out, which tensors are fused, and the refusals for what llama.cpp cannot express.
//! Facts from llama.cpp's `src/models/<arch>.cpp` (hyper-parameters, tensor shapes),
//! `src/llama-model.cpp` (`create_tensor_qkv`, common keys) and `conversion/*.py` (what
//! its converter writes). Policy is the `ARCHS` table; the functions only read it.

use crate::error::{Error, Result};
use crate::model::gguf::Value;
use crate::model::rope::yarn_mscale;
use crate::model::{
    llama_cpp_attn_scale, llama_cpp_no_rope_layers, ArchKind, LlamaConfig, RopeScaling,
    WindowLayers,
};
use std::path::Path;

/// How an architecture's sliding window reaches llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// llama.cpp's graph has no window: a model with one is refused.
    Refused,
    /// `attention.sliding_window` and `attention.sliding_window_pattern` (Gemma).
    Keys,
    /// Written as the converter writes it (0 when none), but llama.cpp's phi3 disables
    /// its window ("Phi SWA is currently disabled"), and so does qevo reading the GGUF:
    /// the two agree; both differ from the HF model only beyond the window.
    IgnoredByLlamaCpp,
}

/// Which soft-caps the architecture's graph applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Softcaps {
    None,
    /// Gemma-2: both caps, always applied (a zero cap would divide by zero).
    AttnAndFinal,
    /// Gemma-3: the final cap only, when non-zero.
    FinalOnly,
}

/// Which rope factor tensors the architecture's loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeTensors {
    None,
    /// `rope_freqs.weight` (llama3's per-frequency divisors).
    Freqs,
    /// `rope_factors_long.weight` and `rope_factors_short.weight` (LongRoPE).
    LongShort,
}

/// One llama.cpp architecture; every property is a column.
#[derive(Debug)]
pub(crate) struct GgufArch {
    kinds: &'static [ArchKind],
    pub name: &'static str,
    /// `attn_q` / `attn_output` are `{n_embd, n_embd}` here, so heads × head_dim must
    /// equal the hidden size.
    q_is_hidden: bool,
    /// `attn_output.bias` and the `ffn_*` biases are read (only `llama` reads them; q/k/v
    /// biases are read by every architecture through `create_tensor_qkv`).
    out_and_mlp_bias: bool,
    /// The graph always multiplies by `token_embd` (no `output.weight`).
    must_tie: bool,
    /// gate and up are one `ffn_up` of 2·n_ff rows, gate rows first (Phi-3).
    pub fused_gate_up: bool,
    window: Window,
    softcaps: Softcaps,
    rope_tensors: RopeTensors,
    /// `output.weight` is required (no tie to `token_embd`).
    must_untie: bool,
}

// A table row constructor: one argument per column, in the table's column order.
#[allow(clippy::too_many_arguments)]
const fn arch(
    kinds: &'static [ArchKind],
    name: &'static str,
    q_is_hidden: bool,
    out_and_mlp_bias: bool,
    must_tie: bool,
    fused_gate_up: bool,
    window: Window,
    softcaps: Softcaps,
    rope_tensors: RopeTensors,
    must_untie: bool,
) -> GgufArch {
    GgufArch {
        kinds,
        name,
        q_is_hidden,
        out_and_mlp_bias,
        must_tie,
        fused_gate_up,
        window,
        softcaps,
        rope_tensors,
        must_untie,
    }
}

use ArchKind as K;
use RopeTensors as R;
use Softcaps as S;
use Window as W;

#[rustfmt::skip]
const ARCHS: [GgufArch; 10] = [
    //   qevo kinds                   name       q=hidden o/mlp bias tie   gate+up window                 softcaps         rope tensors  untie
    arch(&[K::Llama, K::Mistral, K::Mixtral], "llama",   false,   true,      false, false,  W::Refused,            S::None,         R::Freqs,     false),
    arch(&[K::Qwen2],             "qwen2",   true,    false,     false, false,  W::Refused,            S::None,         R::None,      false),
    arch(&[K::Qwen3],             "qwen3",   false,   false,     false, false,  W::Refused,            S::None,         R::None,      false),
    arch(&[K::Gemma2],            "gemma2",  false,   false,     true,  false,  W::Keys,               S::AttnAndFinal, R::None,      false),
    arch(&[K::Gemma3],            "gemma3",  false,   false,     false, false,  W::Keys,               S::FinalOnly,    R::None,      false),
    arch(&[K::Phi3],              "phi3",    true,    false,     false, true,   W::IgnoredByLlamaCpp,  S::None,         R::LongShort, false),
    arch(&[K::Smollm3],           "smollm3", false,   false,     false, false,  W::Refused,            S::None,         R::None,      false),
    arch(&[K::Granite],           "granite", false,   false,     false, false,  W::Refused,            S::None,         R::Freqs,     false),
    arch(&[K::Qwen3Moe],          "qwen3moe", false,   false,     false, false,  W::Refused,            S::None,         R::None,      false),
    arch(&[K::Olmo2],             "olmo2",   true,    false,     false, false,  W::Refused,            S::None,         R::None,      true),
];

/// The llama.cpp architecture a model of `kind` is written as, or a refusal naming it.
pub(crate) fn gguf_arch(kind: ArchKind, source: &Path) -> Result<&'static GgufArch> {
    ARCHS
        .iter()
        .find(|a| a.kinds.contains(&kind))
        .ok_or_else(|| Error::UnsupportedArch {
            path: source.into(),
            key: "architecture".into(),
            arch: format!("{} (GGUF export)", kind.as_str()),
            supported:
                "llama, mistral, mixtral, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3, smollm3, \
                granite, olmo2"
                    .into(),
        })
}

impl GgufArch {
    /// Refuses a model llama.cpp would load but compute differently (or not load):
    /// the error names the setting (as config.json spells it) and the architecture.
    pub(crate) fn check(&self, cfg: &LlamaConfig, source: &Path) -> Result<()> {
        let refuse = |key: &str, why: String| {
            Err(Error::config(
                source,
                key,
                format!("GGUF export refused: llama.cpp's `{}` {why}", self.name),
            ))
        };
        if self.q_is_hidden && cfg.q_dim() != cfg.hidden {
            return refuse(
                "head_dim",
                format!(
                    "needs heads × head_dim = hidden_size ({} × {} ≠ {})",
                    cfg.n_heads, cfg.head_dim, cfg.hidden
                ),
            );
        }
        if !self.out_and_mlp_bias && (cfg.o_bias || cfg.mlp_bias) {
            let key = if cfg.mlp_bias {
                "mlp_bias"
            } else {
                "attention_bias"
            };
            return refuse(key, "reads no attn_output or ffn biases".into());
        }
        if self.must_tie && !cfg.tie_embeddings {
            return refuse(
                "tie_word_embeddings",
                "always ties the output to token_embd".into(),
            );
        }
        if self.must_untie && cfg.tie_embeddings {
            return refuse("tie_word_embeddings", "needs its own output.weight".into());
        }
        self.check_rope(cfg, &refuse)?;
        self.check_moe(cfg, &refuse)?;
        self.check_window(cfg, &refuse)?;
        self.check_softcaps(cfg, &refuse)?;
        self.check_scale(cfg, &refuse)
    }

    fn check_window(
        &self,
        cfg: &LlamaConfig,
        refuse: &dyn Fn(&str, String) -> Result<()>,
    ) -> Result<()> {
        if self.window == W::Refused && cfg.sliding_window.is_some() {
            return refuse("sliding_window", "has no sliding-window attention".into());
        }
        Ok(())
    }

    /// The rope must be one llama.cpp's loader and kernels compute: its scaling as keys
    /// or factor tensors this architecture reads, YaRN with ggml's fixed betas, partial
    /// rotation only in the half-split layout, and SmolLM3's fixed NoPE step.
    fn check_rope(
        &self,
        cfg: &LlamaConfig,
        refuse: &dyn Fn(&str, String) -> Result<()>,
    ) -> Result<()> {
        let r = &cfg.rope;
        if crate::model::gguf_permutes_qk(cfg.kind) && r.dims != cfg.head_dim {
            return refuse(
                "partial_rotary_factor",
                "rotates whole heads in its interleaved layout".into(),
            );
        }
        let tensors_ok = match &r.scaling {
            RopeScaling::FreqFactors { .. } => self.rope_tensors == R::Freqs,
            RopeScaling::LongRope { .. } => self.rope_tensors == R::LongShort,
            _ => true,
        };
        if !tensors_ok {
            return refuse(
                "rope_scaling",
                "reads no rope factor tensors of this kind".into(),
            );
        }
        if let RopeScaling::Yarn {
            beta_fast,
            beta_slow,
            truncate,
            ..
        } = r.scaling
        {
            if (beta_fast, beta_slow, truncate) != (32.0, 1.0, true) {
                return refuse(
                    "rope_scaling",
                    "runs YaRN with beta_fast 32, beta_slow 1 and a truncated range only".into(),
                );
            }
        }
        if cfg.no_rope_layers != llama_cpp_no_rope_layers(cfg.kind, cfg.n_layers) {
            return refuse(
                "no_rope_layers",
                "skips rope on every 4th layer exactly".into(),
            );
        }
        Ok(())
    }

    fn check_softcaps(
        &self,
        cfg: &LlamaConfig,
        refuse: &dyn Fn(&str, String) -> Result<()>,
    ) -> Result<()> {
        let (attn_ok, final_ok) = match self.softcaps {
            S::None => (cfg.attn_softcap.is_none(), cfg.final_softcap.is_none()),
            S::AttnAndFinal => (cfg.attn_softcap.is_some(), cfg.final_softcap.is_some()),
            S::FinalOnly => (cfg.attn_softcap.is_none(), true),
        };
        if !attn_ok {
            return refuse(
                "attn_logit_softcapping",
                "cannot express this attention soft-cap".into(),
            );
        }
        if !final_ok {
            return refuse(
                "final_logit_softcapping",
                "cannot express this logit soft-cap".into(),
            );
        }
        Ok(())
    }

    /// llama.cpp's MoE graphs route every block, renormalise the chosen experts'
    /// weights, and exist for llama (Mixtral) and qwen3moe only.
    fn check_moe(
        &self,
        cfg: &LlamaConfig,
        refuse: &dyn Fn(&str, String) -> Result<()>,
    ) -> Result<()> {
        let Some(m) = &cfg.moe else {
            return Ok(());
        };
        if !matches!(self.name, "llama" | "qwen3moe") {
            return refuse("num_experts", "has no mixture-of-experts MLP".into());
        }
        if !m.norm_topk {
            return refuse(
                "norm_topk_prob",
                "always renormalises the chosen experts' weights".into(),
            );
        }
        if m.layers.iter().any(|&l| !l) {
            return refuse(
                "mlp_only_layers",
                "routes every block through experts".into(),
            );
        }
        Ok(())
    }

    /// llama.cpp keeps no `query_pre_attn_scalar`: its scale follows from the shapes
    /// (Granite's is written as `attention.scale`).
    fn check_scale(
        &self,
        cfg: &LlamaConfig,
        refuse: &dyn Fn(&str, String) -> Result<()>,
    ) -> Result<()> {
        if cfg.kind == K::Granite {
            return Ok(());
        }
        let theirs = llama_cpp_attn_scale(
            cfg.kind,
            cfg.n_layers,
            cfg.hidden,
            cfg.n_heads,
            cfg.head_dim,
        );
        if (theirs - cfg.attn_scale).abs() > 1e-9 * theirs {
            return refuse(
                "query_pre_attn_scalar",
                format!(
                    "scales attention by {theirs}, this model by {}",
                    cfg.attn_scale
                ),
            );
        }
        Ok(())
    }

    /// `<arch>.*` hyper-parameters as llama.cpp reads them, for an HF source.
    pub(crate) fn hparams(&self, cfg: &LlamaConfig) -> Vec<(String, Value)> {
        let key = |k: &str| format!("{}.{k}", self.name);
        let u = |v: usize| Value::U32(v as u32);
        let mut md = vec![
            (key("vocab_size"), u(cfg.vocab)),
            (key("context_length"), u(cfg.max_positions)),
            (key("embedding_length"), u(cfg.hidden)),
            (key("block_count"), u(cfg.n_layers)),
            (key("feed_forward_length"), u(cfg.intermediate)),
            (key("attention.head_count"), u(cfg.n_heads)),
            (key("attention.head_count_kv"), u(cfg.n_kv_heads)),
            (key("attention.key_length"), u(cfg.head_dim)),
            (key("attention.value_length"), u(cfg.head_dim)),
            (key("rope.dimension_count"), u(cfg.rope.dims)),
            (key("rope.freq_base"), Value::F32(cfg.rope.theta as f32)),
            (
                key("attention.layer_norm_rms_epsilon"),
                Value::F32(cfg.rms_eps as f32),
            ),
        ];
        md.extend(rope_keys(cfg).into_iter().map(|(k, v)| (key(k), v)));
        if let Some(m) = &cfg.moe {
            md.push((key("expert_count"), u(m.experts)));
            md.push((key("expert_used_count"), u(m.used)));
            md.push((key("expert_feed_forward_length"), u(m.expert_ff)));
        }
        if cfg.kind == K::Granite {
            let f = |v: f64| Value::F32(v as f32);
            md.push((key("embedding_scale"), f(cfg.embed_scale.unwrap_or(1.0))));
            md.push((key("residual_scale"), f(cfg.residual_scale)));
            md.push((key("attention.scale"), f(cfg.attn_scale)));
            md.push((key("logit_scale"), f(cfg.logit_scale)));
        }
        md.extend(self.window_keys(cfg).into_iter().map(|(k, v)| (key(k), v)));
        let cap = |c: Option<f64>| Value::F32(c.unwrap_or(0.0) as f32);
        if self.softcaps == S::AttnAndFinal {
            md.push((key("attn_logit_softcapping"), cap(cfg.attn_softcap)));
        }
        if self.softcaps != S::None && cfg.final_softcap.is_some() {
            md.push((key("final_logit_softcapping"), cap(cfg.final_softcap)));
        }
        md
    }

    /// The window keys (without the `<arch>.` prefix).
    fn window_keys(&self, cfg: &LlamaConfig) -> Vec<(&'static str, Value)> {
        let w = |v: usize| Value::U32(v as u32);
        match (self.window, cfg.sliding_window) {
            (W::Refused, _) | (W::Keys, None) => vec![],
            (W::IgnoredByLlamaCpp, win) => vec![("attention.sliding_window", w(win.unwrap_or(0)))],
            (W::Keys, Some(win)) => {
                let pattern = match &cfg.window_layers {
                    WindowLayers::Pattern(n) => w(*n),
                    WindowLayers::All => w(0),
                    WindowLayers::List(v) => {
                        Value::Array(v.iter().map(|&b| Value::Bool(b)).collect())
                    }
                };
                vec![
                    ("attention.sliding_window", w(win)),
                    ("attention.sliding_window_pattern", pattern),
                    (
                        "rope.freq_base_swa",
                        Value::F32(cfg.rope_local.theta as f32),
                    ),
                ]
            }
        }
    }
}

/// The `rope.scaling.*` keys (without the `<arch>.` prefix) llama.cpp's loader reads
/// for this rope; factor tensors are written beside them (`rope_tensors`).
fn rope_keys(cfg: &LlamaConfig) -> Vec<(&'static str, Value)> {
    let f = |v: f64| Value::F32(v as f32);
    let r = &cfg.rope;
    match &r.scaling {
        RopeScaling::None | RopeScaling::DynamicNtk { .. } | RopeScaling::FreqFactors { .. } => {
            vec![]
        }
        RopeScaling::Linear { factor } => vec![
            ("rope.scaling.type", Value::String("linear".into())),
            ("rope.scaling.factor", f(*factor)),
        ],
        // llama.cpp multiplies YaRN's own mscale by this attention factor.
        RopeScaling::Yarn {
            factor,
            original_ctx,
            ..
        } => vec![
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", f(*factor)),
            (
                "rope.scaling.original_context_length",
                Value::U32(*original_ctx as u32),
            ),
            (
                "rope.scaling.attn_factor",
                f(r.attn_factor / yarn_mscale(*factor, 1.0)),
            ),
        ],
        RopeScaling::LongRope { original_ctx, .. } => vec![
            (
                "rope.scaling.original_context_length",
                Value::U32(*original_ctx as u32),
            ),
            ("rope.scaling.attn_factor", f(r.attn_factor)),
        ],
    }
}

/// The rope factor tensors of `cfg` as llama.cpp's converter writes them (f32, one per
/// model, `[rotary dims / 2]`).
pub(crate) fn rope_tensors(cfg: &LlamaConfig) -> Vec<(&'static str, Vec<f32>)> {
    let v = |x: &[f64]| x.iter().map(|&f| f as f32).collect();
    match &cfg.rope.scaling {
        RopeScaling::FreqFactors { factors } => vec![("rope_freqs.weight", v(factors))],
        RopeScaling::LongRope { short, long, .. } => vec![
            ("rope_factors_long.weight", v(long)),
            ("rope_factors_short.weight", v(short)),
        ],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_llama_family_kind_has_one_architecture() {
        let p = Path::new("m");
        for (kind, name) in [
            (K::Llama, "llama"),
            (K::Mistral, "llama"),
            (K::Qwen2, "qwen2"),
            (K::Qwen3, "qwen3"),
            (K::Gemma2, "gemma2"),
            (K::Gemma3, "gemma3"),
            (K::Phi3, "phi3"),
            (K::Smollm3, "smollm3"),
            (K::Granite, "granite"),
            (K::Olmo2, "olmo2"),
            (K::Qwen3Moe, "qwen3moe"),
            (K::Mixtral, "llama"),
        ] {
            assert_eq!(gguf_arch(kind, p).unwrap().name, name);
            assert_eq!(ARCHS.iter().filter(|a| a.kinds.contains(&kind)).count(), 1);
        }
        for kind in [K::Gpt2, K::Bert] {
            let e = gguf_arch(kind, p).unwrap_err().to_string();
            assert!(
                e.contains(kind.as_str()) && e.contains("GGUF export"),
                "{e}"
            );
        }
    }

    /// Only phi3 fuses gate and up.
    #[test]
    fn only_phi3_fuses() {
        for a in &ARCHS {
            assert_eq!(a.fused_gate_up, a.name == "phi3", "{}", a.name);
        }
    }
}
