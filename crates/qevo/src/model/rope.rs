//! Rotary position embeddings as transformers and llama.cpp compute them: the base, how
//! many dimensions of each head rotate, and every scaling rule the deployed families ship
//! (linear, dynamic NTK, llama3, YaRN, LongRoPE, GGUF's per-frequency factor tensors),
//! reduced to cos/sin tables. One home: the config readers build a `RopeSpec`, the
//! network asks it for tables, the GGUF writer asks it for keys and factor tensors.
//!
//! Sources: transformers' `modeling_rope_utils.py` (`_compute_*_parameters`,
//! `standardize_rope_params`) and llama.cpp's `llama-model.cpp` (`load_hparams`,
//! `get_rope_factors`), `llama-context.cpp` (YaRN's attention factor) and ggml's
//! `rope_yarn` / `ggml_rope_yarn_corr_dims`.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;

/// How a rope's frequencies are scaled.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear {
        factor: f64,
    },
    /// Dynamic NTK changes the base only for sequences longer than
    /// `max_position_embeddings`; qevo never runs those (windows are checked against it),
    /// so it computes as the unscaled rope, as transformers does below that length.
    DynamicNtk {
        factor: f64,
    },
    /// Each frequency divided by its own factor: llama3's smooth ramp, computed from its
    /// keys, or a GGUF `rope_freqs.weight` as the converter wrote that ramp.
    FreqFactors {
        factors: Vec<f64>,
    },
    /// YaRN: interpolation by `factor` below a correction range of dimensions,
    /// extrapolation above it, a linear ramp between.
    Yarn {
        factor: f64,
        original_ctx: usize,
        beta_fast: f64,
        beta_slow: f64,
        truncate: bool,
    },
    /// LongRoPE: per-frequency `short` factors up to `original_ctx` tokens, `long` ones
    /// beyond. transformers switches on the sequence length, llama.cpp on the context
    /// size; both are the window length when qevo runs a window.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_ctx: usize,
    },
}

/// One rope: everything that decides its cos/sin tables.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RopeSpec {
    pub theta: f64,
    /// Leading dimensions of each head that rotate (Phi-4-mini: ¾ of head_dim); the rest
    /// pass through unchanged.
    pub dims: usize,
    pub scaling: RopeScaling,
    /// Multiplies cos and sin (LongRoPE's and YaRN's attention factor).
    pub attn_factor: f64,
}

/// cos/sin tables `[positions, dims / 2]`.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeSpec {
    /// The unscaled rope over `dims` dimensions.
    pub fn plain(theta: f64, dims: usize) -> RopeSpec {
        RopeSpec {
            theta,
            dims,
            scaling: RopeScaling::None,
            attn_factor: 1.0,
        }
    }

    /// Whether a window of `t` tokens uses LongRoPE's long factors.
    pub fn uses_long(&self, t: usize) -> bool {
        matches!(self.scaling, RopeScaling::LongRope { original_ctx, .. } if t > original_ctx)
    }

    /// Inverse frequencies `[dims / 2]`, for windows that use the long factors or not:
    /// `1 / (θ^(2i/d) · divisor_i)`, in this order of operations so an unscaled or
    /// linearly scaled rope keeps the tables qevo always had, bit for bit.
    pub fn inv_freq(&self, long: bool) -> Vec<f64> {
        let d = self.dims as f64;
        let pow = |i: usize| self.theta.powf(2.0 * i as f64 / d);
        let half = self.dims / 2;
        let divided = |f: &dyn Fn(usize) -> f64| (0..half).map(|i| 1.0 / (pow(i) * f(i))).collect();
        match &self.scaling {
            RopeScaling::None | RopeScaling::DynamicNtk { .. } => {
                (0..half).map(|i| 1.0 / pow(i)).collect()
            }
            RopeScaling::Linear { factor } => divided(&|_| *factor),
            RopeScaling::FreqFactors { factors } => divided(&|i| factors[i]),
            RopeScaling::LongRope { short, long: l, .. } => {
                let f = if long { l } else { short };
                divided(&|i| f[i])
            }
            RopeScaling::Yarn {
                factor,
                original_ctx,
                beta_fast,
                beta_slow,
                truncate,
            } => {
                let (low, high) =
                    yarn_range(self, *original_ctx, *beta_fast, *beta_slow, *truncate);
                let span = if high == low { 0.001 } else { high - low };
                (0..half)
                    .map(|i| {
                        let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                        let extra = 1.0 - ramp;
                        let (extrapolated, interpolated) = (1.0 / pow(i), 1.0 / (factor * pow(i)));
                        interpolated * (1.0 - extra) + extrapolated * extra
                    })
                    .collect()
            }
        }
    }

    /// The inverse frequencies the tables use, in f32: the reciprocal is taken in f32 of
    /// `θ^(2i/d) · divisor` rounded to f32, as transformers computes `1 / base**(…)` on an
    /// f32 tensor (and as qevo's tables always were, bit for bit); YaRN's blend in f64.
    fn inv_freq_f32(&self, long: bool) -> Vec<f32> {
        let d = self.dims as f64;
        let pow = |i: usize| self.theta.powf(2.0 * i as f64 / d);
        let half = self.dims / 2;
        let divided = |f: &dyn Fn(usize) -> f64| -> Vec<f32> {
            (0..half).map(|i| 1.0 / (pow(i) * f(i)) as f32).collect()
        };
        match &self.scaling {
            RopeScaling::None | RopeScaling::DynamicNtk { .. } => divided(&|_| 1.0),
            RopeScaling::Linear { factor } => divided(&|_| *factor),
            RopeScaling::FreqFactors { factors } => divided(&|i| factors[i]),
            RopeScaling::LongRope { short, long: l, .. } => {
                let f = if long { l } else { short };
                divided(&|i| f[i])
            }
            RopeScaling::Yarn { .. } => self.inv_freq(long).iter().map(|&f| f as f32).collect(),
        }
    }

    /// cos/sin tables for positions `0..n`, each multiplied by the attention factor.
    pub(crate) fn tables(&self, n: usize, long: bool) -> Result<RopeTables> {
        let inv = self.inv_freq_f32(long);
        let half = inv.len();
        let m = self.attn_factor as f32;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos() * m);
                sin.push(a.sin() * m);
            }
        }
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, (n, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (n, half), &Device::Cpu)?,
        })
    }

    /// The per-frequency divisors a GGUF stores as `rope_freqs.weight` (llama3), if any.
    pub fn freq_factors(&self) -> Option<&[f64]> {
        match &self.scaling {
            RopeScaling::FreqFactors { factors } => Some(factors),
            _ => None,
        }
    }
}

/// YaRN's correction range `[low, high]` of frequency indices, transformers'
/// `find_correction_range` and ggml's `ggml_rope_yarn_corr_dims` (both floor/ceil).
fn yarn_range(r: &RopeSpec, ctx: usize, fast: f64, slow: f64, truncate: bool) -> (f64, f64) {
    let d = r.dims as f64;
    let dim = |rot: f64| {
        d * (ctx as f64 / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * r.theta.ln())
    };
    let (mut low, mut high) = (dim(fast), dim(slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    (low.max(0.0), high.min(d - 1.0))
}

/// YaRN's default attention factor for a scale (transformers' `get_mscale`).
pub(crate) fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    match scale <= 1.0 {
        true => 1.0,
        false => 0.1 * mscale * scale.ln() + 1.0,
    }
}

/// The rotated dimensions of a head: `head_dim · partial_rotary_factor`, truncated as
/// transformers' `int()` does; even and at least 2.
pub(crate) fn rotary_dims(head_dim: usize, factor: f64) -> std::result::Result<usize, String> {
    if !(factor.is_finite() && factor > 0.0 && factor <= 1.0) {
        return Err(format!("must be in (0, 1], found {factor}"));
    }
    let dims = (head_dim as f64 * factor) as usize;
    if dims < 2 || !dims.is_multiple_of(2) {
        return Err(format!(
            "gives {dims} rotary dimensions of head_dim {head_dim}; rotary embeddings need an even count"
        ));
    }
    Ok(dims)
}

/// Keys a rope-scaling object may hold besides its type, per type (transformers'
/// `_compute_*_parameters` read exactly these).
fn allowed_keys(ty: &str) -> Option<&'static [&'static str]> {
    Some(match ty {
        "default" => &[],
        "linear" => &["factor"],
        "dynamic" => &["factor", "original_max_position_embeddings"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        "yarn" => &[
            "factor",
            "original_max_position_embeddings",
            "attention_factor",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
            "truncate",
        ],
        "longrope" => &[
            "factor",
            "original_max_position_embeddings",
            "attention_factor",
            "long_factor",
            "short_factor",
        ],
        _ => return None,
    })
}

/// The rope types qevo computes, for error messages.
pub(crate) const SUPPORTED: &str = "default, linear, dynamic, llama3, yarn, longrope";

/// A rope-scaling object of config.json (`rope_scaling`, or `rope_parameters` in
/// transformers 5) with the key it came from, for messages.
pub(crate) struct ScalingDict<'a> {
    pub key: &'a str,
    pub obj: &'a serde_json::Map<String, Value>,
}

/// Facts about the model the rope rules need beside the scaling object.
pub(crate) struct RopeContext {
    pub theta: f64,
    pub head_dim: usize,
    /// `partial_rotary_factor` from the top level of config.json (1 when absent).
    pub partial: f64,
    pub max_positions: usize,
    /// A top-level `original_max_position_embeddings` (Phi-3's config class always has
    /// one, 4096 by default), which overrides the scaling object's, as transformers'
    /// `standardize_rope_params` does.
    pub top_original: Option<usize>,
}

/// An error about `key` inside the scaling object.
type KeyErr = (String, String);

impl ScalingDict<'_> {
    fn err(&self, k: &str, msg: impl Into<String>) -> KeyErr {
        (format!("{}.{k}", self.key), msg.into())
    }

    fn num(&self, k: &str) -> std::result::Result<Option<f64>, KeyErr> {
        match self.obj.get(k).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                _ => Err(self.err(k, format!("expected a positive number, found {v}"))),
            },
        }
    }

    fn need(&self, k: &str) -> std::result::Result<f64, KeyErr> {
        self.num(k)?.ok_or_else(|| self.err(k, "missing"))
    }

    fn list(&self, k: &str, len: usize) -> std::result::Result<Vec<f64>, KeyErr> {
        let v = self.obj.get(k).ok_or_else(|| self.err(k, "missing"))?;
        let items = v
            .as_array()
            .ok_or_else(|| self.err(k, "expected a list of numbers"))?;
        if items.len() != len {
            return Err(self.err(
                k,
                format!(
                    "{} entries, expected {len} (rotary dimensions / 2)",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .map(|x| match x.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Ok(f),
                _ => Err(self.err(k, format!("expected positive numbers, found {x}"))),
            })
            .collect()
    }

    /// The type named by `rope_type` (or the older `type`); "default" when absent.
    fn ty(&self) -> std::result::Result<&str, KeyErr> {
        match self.obj.get("rope_type").or_else(|| self.obj.get("type")) {
            None | Some(Value::Null) => Ok("default"),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err("rope_type", format!("expected a string, found {v}"))),
        }
    }

    /// The original context length: top level first, then the object, then
    /// `max_position_embeddings`.
    fn original(&self, cx: &RopeContext) -> std::result::Result<usize, KeyErr> {
        if let Some(n) = cx.top_original {
            return Ok(n);
        }
        match self.num("original_max_position_embeddings")? {
            Some(n) if n.fract() == 0.0 && n <= (1u64 << 40) as f64 => Ok(n as usize),
            Some(n) => Err(self.err(
                "original_max_position_embeddings",
                format!("expected a positive integer, found {n}"),
            )),
            None => Ok(cx.max_positions),
        }
    }

    /// The rope this object describes.
    pub(crate) fn spec(&self, cx: &RopeContext) -> std::result::Result<RopeSpec, KeyErr> {
        let ty = self.ty()?;
        let allowed = allowed_keys(ty).ok_or_else(|| {
            self.err(
                "rope_type",
                format!("rope scaling `{ty}` is not supported ({SUPPORTED})"),
            )
        })?;
        const COMMON: [&str; 4] = ["rope_type", "type", "rope_theta", "partial_rotary_factor"];
        if let Some(k) = self
            .obj
            .keys()
            .find(|k| !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
        {
            return Err(self.err(k, format!("is not a key of `{ty}` rope scaling")));
        }
        let partial = self.num("partial_rotary_factor")?.unwrap_or(cx.partial);
        let dims =
            rotary_dims(cx.head_dim, partial).map_err(|m| self.err("partial_rotary_factor", m))?;
        let mut spec = RopeSpec::plain(cx.theta, dims);
        spec.scaling = match ty {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: self.need("factor")?,
            },
            "dynamic" => RopeScaling::DynamicNtk {
                factor: self.need("factor")?,
            },
            "llama3" => self.llama3(&spec, cx)?,
            "yarn" => return self.yarn(spec, cx),
            _ => return self.longrope(spec, cx),
        };
        Ok(spec)
    }

    /// llama3's per-frequency divisors (what llama.cpp's converter writes as
    /// `rope_freqs.weight`): 1 above the high-frequency wavelength, `factor` below the
    /// low one, a smooth blend between.
    fn llama3(
        &self,
        spec: &RopeSpec,
        cx: &RopeContext,
    ) -> std::result::Result<RopeScaling, KeyErr> {
        let factor = self.need("factor")?;
        let low = self.need("low_freq_factor")?;
        let high = self.need("high_freq_factor")?;
        if high <= low {
            return Err(self.err(
                "high_freq_factor",
                format!("must exceed low_freq_factor ({high} ≤ {low})"),
            ));
        }
        let ctx = self.original(cx)? as f64;
        let factors = spec
            .inv_freq(false)
            .into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < ctx / high {
                    1.0
                } else if wavelen > ctx / low {
                    factor
                } else {
                    let smooth = (ctx / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect();
        Ok(RopeScaling::FreqFactors { factors })
    }

    /// The original context and the scaling factor (`factor`, else the ratio of
    /// `max_position_embeddings` to the original context, as transformers derives it).
    fn context_and_factor(&self, cx: &RopeContext) -> std::result::Result<(usize, f64), KeyErr> {
        let original_ctx = self.original(cx)?;
        let factor = match self.num("factor")? {
            Some(f) => f,
            None => cx.max_positions as f64 / original_ctx as f64,
        };
        Ok((original_ctx, factor))
    }

    fn yarn(&self, mut spec: RopeSpec, cx: &RopeContext) -> std::result::Result<RopeSpec, KeyErr> {
        let (original_ctx, factor) = self.context_and_factor(cx)?;
        spec.attn_factor = match self.num("attention_factor")? {
            Some(a) => a,
            None => match (self.num("mscale")?, self.num("mscale_all_dim")?) {
                (Some(m), Some(all)) => yarn_mscale(factor, m) / yarn_mscale(factor, all),
                _ => yarn_mscale(factor, 1.0),
            },
        };
        let truncate = match self.obj.get("truncate") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(self.err("truncate", format!("expected true/false, found {v}"))),
        };
        spec.scaling = RopeScaling::Yarn {
            factor,
            original_ctx,
            beta_fast: self.num("beta_fast")?.unwrap_or(32.0),
            beta_slow: self.num("beta_slow")?.unwrap_or(1.0),
            truncate,
        };
        Ok(spec)
    }

    fn longrope(
        &self,
        mut spec: RopeSpec,
        cx: &RopeContext,
    ) -> std::result::Result<RopeSpec, KeyErr> {
        let half = spec.dims / 2;
        let (original_ctx, factor) = self.context_and_factor(cx)?;
        spec.attn_factor = match self.num("attention_factor")? {
            Some(a) => a,
            None if factor <= 1.0 => 1.0,
            None => (1.0 + factor.ln() / (original_ctx as f64).ln()).sqrt(),
        };
        spec.scaling = RopeScaling::LongRope {
            short: self.list("short_factor", half)?,
            long: self.list("long_factor", half)?,
            original_ctx,
        };
        Ok(spec)
    }
}

/// A per-frequency factor tensor read from a GGUF, checked (length, positive, finite).
pub(crate) fn check_factors(name: &str, v: Vec<f32>, dims: usize) -> Result<Vec<f64>> {
    if v.len() != dims / 2 {
        return Err(Error::tensor(
            "",
            name,
            format!(
                "{} entries, expected {} (rope dimensions / 2)",
                v.len(),
                dims / 2
            ),
        ));
    }
    match v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        Some(bad) => Err(Error::tensor(
            "",
            name,
            format!("rope factor {bad} is not a positive number"),
        )),
        None => Ok(v.into_iter().map(f64::from).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cx() -> RopeContext {
        RopeContext {
            theta: 500000.0,
            head_dim: 64,
            partial: 1.0,
            max_positions: 131072,
            top_original: None,
        }
    }

    fn spec_of(v: Value) -> std::result::Result<RopeSpec, KeyErr> {
        let obj = v.as_object().unwrap().clone();
        ScalingDict {
            key: "rope_scaling",
            obj: &obj,
        }
        .spec(&cx())
    }

    /// Llama-3.2's published rope: the highest frequencies stay, the lowest are divided
    /// by 32, as llama.cpp's converter writes `rope_freqs.weight`.
    #[test]
    fn llama3_factors_run_from_one_to_factor() {
        let s = spec_of(
            json!({"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
        )
        .unwrap();
        let f = s.freq_factors().unwrap();
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn rope_keys_are_validated_by_name() {
        let e = spec_of(
            json!({"rope_type": "llama3", "factor": -2.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0}),
        )
        .unwrap_err();
        assert_eq!(e.0, "rope_scaling.factor");
        let e =
            spec_of(json!({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}))
                .unwrap_err();
        assert!(
            e.0.ends_with("short_factor") && e.1.contains("expected 32"),
            "{e:?}"
        );
        let e = spec_of(json!({"rope_type": "yarn", "factor": 4.0, "warp": 1})).unwrap_err();
        assert_eq!(e.0, "rope_scaling.warp");
        let e = spec_of(json!({"rope_type": "su"})).unwrap_err();
        assert!(e.1.contains("longrope"), "{e:?}");
    }

    /// YaRN keeps the fastest-rotating frequencies and interpolates the slowest by the
    /// factor; its attention factor is 1 + 0.1·ln(factor).
    #[test]
    fn yarn_extrapolates_high_and_interpolates_low_frequencies() {
        let s = spec_of(json!({"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 32768}))
        .unwrap();
        let plain = RopeSpec::plain(s.theta, s.dims).inv_freq(false);
        let y = s.inv_freq(false);
        assert!((y[0] - plain[0]).abs() < 1e-15);
        assert!((y[31] - plain[31] / 4.0).abs() < 1e-15);
        assert!((s.attn_factor - (1.0 + 0.1 * 4f64.ln())).abs() < 1e-12);
    }

    #[test]
    fn partial_rotary_factor_keeps_an_even_count() {
        assert_eq!(rotary_dims(128, 0.75), Ok(96));
        assert!(rotary_dims(10, 0.5).is_err());
        assert!(rotary_dims(64, 1.5).is_err());
    }
}
