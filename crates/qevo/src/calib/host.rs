//! Host calibration: [`calibrate`] fits the two costs the roofline cannot see from isolated
//! matmuls, on real forward passes of a model under the uniform q4_k plan:
//! a fixed cost per layer call (`layer_overhead_us`) and element-wise work per
//! token per block (`block_other_ns_per_token`). With predicted time `P(t)` and
//! measured time `M(t)` of a pass over `t` tokens (both terms set to 0), blocks `B`
//! and `N` the long pass's tokens:
//!
//! ```text
//! block_other_ns_per_token = max(0, ((M(N) − P(N)) − (M(1) − P(1))) / (N − 1) / B) · 10^6
//! layer_overhead_us        = max(0, (M(1) − P(1) − block_other · B · 10^-6) / C)
//! ```
//!
//! where `C` is the predicted ms that 1 µs per call adds to a one-token pass. It
//! then predicts and times other plans to show how far the calibrated profile is
//! off. Unlike `hw`'s measurement (`hw::host`), calibration runs a model and prices
//! plans, so it sits above `plan`.

use std::time::Instant;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{Error, HwError, Result as QResult};
use crate::hw::host::{measurement_header, HostMeasurement};

use crate::hw::{profile_to_toml, Profile, Workload};
use crate::model::{Model, NoHook, Quantized, Role};
use crate::plan::TensorChoice;
use crate::quant::{GgmlType, WeightFormat};

/// The calibrated host profile as TOML: the measurement's comments, how the two
/// calibrated terms were obtained and how well the profile predicts the checked plans,
/// then `cal.profile` serialised as is (so parsing the text gives `cal.profile` back).
pub fn calibrated_profile_toml(m: &HostMeasurement, cal: &Calibration) -> Result<String, HwError> {
    let mut head = measurement_header(m);
    head.push_str(&format!(
        "# layer_overhead_us and block_other_ns_per_token: calibrated on forward passes of {} \
         under uniform q4_k at 1 and {} tokens (a lone call measured {:.2} us).\n",
        cal.model, cal.tokens, m.layer_overhead_us
    ));
    for t in [cal.tokens, 1] {
        if let Some(e) = cal.median_abs_error(t) {
            head.push_str(&format!(
                "# Check on the other plans, {t} token(s): median absolute prediction error {:.1}%.\n",
                e * 100.0
            ));
        }
    }
    Ok(head + &profile_to_toml(&cal.profile)?)
}

/// How [`calibrate`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrateOptions {
    /// Tokens of the long forward pass (the short one has 1).
    pub tokens: usize,
    /// Timed repetitions of each pass; the best is kept.
    pub reps: usize,
    /// Also predict and time the other plans of [`check_plans`].
    pub check: bool,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            tokens: 128,
            reps: 5,
            check: true,
        }
    }
}

/// One plan's forward pass: the calibrated profile's prediction against the clock.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTiming {
    pub plan: String,
    /// The plan the calibration was fitted on (its error says little).
    pub calibration: bool,
    pub tokens: usize,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

impl PlanTiming {
    /// Relative prediction error, (predicted − measured) / measured.
    pub fn error(&self) -> f64 {
        (self.predicted_ms - self.measured_ms) / self.measured_ms
    }
}

/// The outcome of [`calibrate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The input profile with `layer_overhead_us` and `block_other_ns_per_token` fitted.
    pub profile: Profile,
    /// The model the passes ran (its source path).
    pub model: String,
    /// Tokens of the long pass.
    pub tokens: usize,
    /// The calibration plan first, then every checked plan, each at `tokens` and at 1.
    pub timings: Vec<PlanTiming>,
}

impl Calibration {
    /// Median |error| over the checked plans (calibration plan excluded) at `tokens`;
    /// `None` when no plan was checked at that length.
    pub fn median_abs_error(&self, tokens: usize) -> Option<f64> {
        let mut e: Vec<f64> = self
            .timings
            .iter()
            .filter(|t| !t.calibration && t.tokens == tokens)
            .map(|t| t.error().abs())
            .collect();
        e.sort_by(f64::total_cmp);
        e.get(e.len() / 2).copied()
    }
}

/// The plan both terms are fitted on.
const CALIBRATION_PLAN: (&str, GgmlType) = ("q4_k", GgmlType::Q4K);

/// Uniform plans the calibrated profile is checked on, besides the mixed one.
const CHECK_TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q6K,
    GgmlType::Q5K,
    GgmlType::Q4_0,
    GgmlType::Q3K,
    GgmlType::Q2K,
];

/// Role → type of the mixed check plan: the sensitive tensors at q6_k, the rest q4_k
/// (the shape of llama.cpp's Q4_K_M).
fn mixed_type(role: Role) -> GgmlType {
    match role {
        Role::Embedding | Role::Output | Role::AttnV | Role::FfnDown => GgmlType::Q6K,
        _ => GgmlType::Q4K,
    }
}

/// The checked plans, by name, one GGML type per tensor of `model`.
pub fn check_plans(model: &Model) -> Vec<(String, Vec<GgmlType>)> {
    let n = model.tensors.len();
    let mut plans: Vec<(String, Vec<GgmlType>)> = CHECK_TYPES
        .iter()
        .map(|&t| (t.name().to_string(), vec![t; n]))
        .collect();
    plans.push((
        "mixed q6_k/q4_k".into(),
        model.tensors.iter().map(|t| mixed_type(t.role)).collect(),
    ));
    plans
}

/// Predicted ms of one forward pass over `tokens` tokens under `types`.
fn predict(model: &Model, profile: &Profile, types: &[GgmlType], tokens: usize) -> QResult<f64> {
    let choices: Vec<TensorChoice> = types
        .iter()
        .map(|&g| TensorChoice {
            format: WeightFormat::Ggml(g),
            act_bits: 16,
        })
        .collect();
    let workload = Workload {
        prefill_tokens: tokens as u64,
        decode_tokens: 0,
    };
    let limits = crate::plan::UserLimits::default();
    let priced = crate::plan::price(model, &choices, profile, &workload, &limits, None)?;
    Ok(priced.cost.prefill_ms)
}

/// `model` under one GGML type per tensor, on candle's quantized kernels.
fn quantized(model: &Model, types: &[GgmlType]) -> QResult<Quantized> {
    let mut matmuls = Vec::with_capacity(types.len());
    let mut tables = Vec::with_capacity(types.len());
    for (i, (info, t)) in model.tensors.iter().zip(types).enumerate() {
        let w = &model.weight_f32(i)?;
        let dtype = t.candle_dtype().ok_or_else(|| {
            Error::from(HwError::Measure(format!(
                "{t}: candle has no kernel for this type, so the host cannot time it"
            )))
        })?;
        let q = QTensor::quantize(w, dtype)?;
        tables.push(if info.role == Role::Embedding {
            Some(q.dequantize(&Device::Cpu)?)
        } else {
            None
        });
        matmuls.push(QMatMul::from_qtensor(q)?);
    }
    Ok(Quantized { matmuls, tables })
}

/// Best-of-`reps` wall time of one forward pass, in ms, after one warm-up pass.
fn time_forward(model: &Model, w: &Quantized, ids: &Tensor, reps: usize) -> QResult<f64> {
    model.forward_with(w, &NoHook, ids)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        model.forward_with(w, &NoHook, ids)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// The token ids of the passes: the start of the embedded calibration text.
fn pass_tokens(model: &Model, tokens: usize) -> QResult<Vec<u32>> {
    let ids = model.encode(crate::assets::CALIB_TEXT)?;
    if ids.len() < tokens {
        return Err(Error::Invalid(format!(
            "host calibration: the calibration text gives {} tokens with {}'s tokenizer, \
             fewer than the {tokens} the long pass needs",
            ids.len(),
            model.source.display()
        )));
    }
    Ok(ids)
}

/// Times `types` at `tokens` and at 1 token against `profile`'s predictions.
fn time_plan(
    model: &Model,
    profile: &Profile,
    ids: &[u32],
    (name, types): (&str, &[GgmlType]),
    opts: &CalibrateOptions,
    calibration: bool,
) -> QResult<[PlanTiming; 2]> {
    let w = quantized(model, types)?;
    let timing = |tokens: usize| -> QResult<PlanTiming> {
        let input = Tensor::from_slice(&ids[..tokens], (1, tokens), &Device::Cpu)?;
        Ok(PlanTiming {
            plan: name.to_string(),
            calibration,
            tokens,
            predicted_ms: predict(model, profile, types, tokens)?,
            measured_ms: time_forward(model, &w, &input, opts.reps)?,
        })
    };
    Ok([timing(opts.tokens)?, timing(1)?])
}

/// The two fitted terms from the calibration plan's passes (see the module doc):
/// `long` and `short` are its timings at `tokens` and 1 token with both terms at 0;
/// `ms_per_call_us` is what 1 µs per layer call adds to the one-token prediction.
/// Returns (`block_other_ns_per_token`, `layer_overhead_us`), both clamped at 0.
pub fn fit_terms(
    long: &PlanTiming,
    short: &PlanTiming,
    blocks: usize,
    ms_per_call_us: f64,
) -> (f64, f64) {
    let blocks = blocks.max(1) as f64;
    let unexplained = |t: &PlanTiming| t.measured_ms - t.predicted_ms;
    let extra_tokens = long.tokens.saturating_sub(short.tokens).max(1) as f64;
    let per_token_ms = (unexplained(long) - unexplained(short)) / extra_tokens;
    let block_other_ns = (per_token_ms * 1e6 / blocks).max(0.0);
    let fixed_ms = unexplained(short) - block_other_ns * 1e-6 * blocks;
    let overhead_us = if ms_per_call_us > 0.0 {
        (fixed_ms / ms_per_call_us).max(0.0)
    } else {
        0.0
    };
    (block_other_ns, overhead_us)
}

/// Fits `layer_overhead_us` and `block_other_ns_per_token` of `profile` on forward
/// passes of `model` under uniform q4_k (see the module doc), then, with
/// `opts.check`, predicts and times the plans of [`check_plans`].
pub fn calibrate(
    model: &Model,
    profile: &Profile,
    opts: &CalibrateOptions,
) -> QResult<Calibration> {
    if opts.tokens < 2 {
        return Err(Error::Invalid(format!(
            "host calibration needs a long pass of at least 2 tokens, got {}",
            opts.tokens
        )));
    }
    let ids = pass_tokens(model, opts.tokens)?;
    let n = model.tensors.len();
    let calib_types = vec![CALIBRATION_PLAN.1; n];
    let calib_plan = (CALIBRATION_PLAN.0, calib_types.as_slice());

    let mut bare = profile.clone();
    bare.layer_overhead_us = 0.0;
    bare.block_other_ns_per_token = 0.0;
    let [long, short] = time_plan(model, &bare, &ids, calib_plan, opts, true)?;
    let mut unit = bare.clone();
    unit.layer_overhead_us = 1.0;
    let ms_per_call_us = predict(model, &unit, &calib_types, 1)? - short.predicted_ms;
    let (block_other, overhead) = fit_terms(&long, &short, model.n_blocks(), ms_per_call_us);
    let mut calibrated = profile.clone();
    calibrated.block_other_ns_per_token = block_other;
    calibrated.layer_overhead_us = overhead;

    let mut timings = time_plan(model, &calibrated, &ids, calib_plan, opts, true)?.to_vec();
    if opts.check {
        for (name, types) in check_plans(model) {
            timings.extend(time_plan(
                model,
                &calibrated,
                &ids,
                (&name, &types),
                opts,
                false,
            )?);
        }
    }
    Ok(Calibration {
        profile: calibrated,
        model: model.source.display().to_string(),
        tokens: opts.tokens,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::host::{host_profile, measure_host, HostOptions};
    use crate::hw::parse_profile;

    fn embedded_model() -> Model {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        Model::load(dir).unwrap()
    }

    fn tiny() -> HostOptions {
        HostOptions {
            reps: 1,
            decode_batch: 1,
            bandwidth_bytes: 1 << 20,
        }
    }

    fn timing(tokens: usize, predicted_ms: f64, measured_ms: f64) -> PlanTiming {
        PlanTiming {
            plan: "q4_k".into(),
            calibration: true,
            tokens,
            predicted_ms,
            measured_ms,
        }
    }

    #[test]
    fn fit_terms_recovers_known_overhead_and_per_token_work() {
        // 4 blocks; 1 us per call adds 0.05 ms to a one-token pass. Truth: 2 us per
        // call and 500 ns per token per block on top of the roofline's prediction.
        let (blocks, per_us) = (4, 0.05);
        let extra = |tokens: f64| 2.0 * per_us + 500e-6 * blocks as f64 * tokens;
        let short = timing(1, 1.0, 1.0 + extra(1.0));
        let long = timing(128, 10.0, 10.0 + extra(128.0));
        let (other_ns, overhead_us) = fit_terms(&long, &short, blocks, per_us);
        assert!((other_ns - 500.0).abs() < 1e-6, "{other_ns}");
        assert!((overhead_us - 2.0).abs() < 1e-9, "{overhead_us}");
        // Faster than predicted: both terms clamp at 0 instead of going negative.
        let (o, c) = fit_terms(
            &timing(128, 10.0, 5.0),
            &timing(1, 1.0, 0.5),
            blocks,
            per_us,
        );
        assert_eq!((o, c), (0.0, 0.0));
    }

    #[test]
    fn calibrate_on_the_embedded_model_fits_both_terms_and_times_every_plan() {
        let model = embedded_model();
        let profile = host_profile(&measure_host(&tiny()).unwrap());
        let opts = CalibrateOptions {
            tokens: 4,
            reps: 1,
            check: true,
        };
        let cal = calibrate(&model, &profile, &opts).unwrap();
        // Only the two fitted terms change.
        let mut back = cal.profile.clone();
        back.layer_overhead_us = profile.layer_overhead_us;
        back.block_other_ns_per_token = profile.block_other_ns_per_token;
        assert_eq!(back, profile);
        assert!(cal.profile.layer_overhead_us >= 0.0);
        assert!(cal.profile.block_other_ns_per_token >= 0.0);
        // The calibration plan, then every checked plan, each at 4 tokens and at 1.
        let plans = check_plans(&model);
        assert_eq!(cal.timings.len(), 2 * (1 + plans.len()));
        assert!(cal.timings[..2]
            .iter()
            .all(|t| t.calibration && t.plan == "q4_k"));
        for (pair, (name, _)) in cal.timings[2..].chunks(2).zip(&plans) {
            assert_eq!((pair[0].tokens, pair[1].tokens), (4, 1));
            assert!(pair.iter().all(|t| &t.plan == name && !t.calibration));
        }
        for t in &cal.timings {
            assert!(t.predicted_ms > 0.0 && t.predicted_ms.is_finite(), "{t:?}");
            assert!(t.measured_ms > 0.0 && t.measured_ms.is_finite(), "{t:?}");
        }
        assert!(cal.median_abs_error(4).is_some() && cal.median_abs_error(1).is_some());
        assert_eq!(cal.median_abs_error(128), None);
    }

    #[test]
    fn calibrate_refuses_a_long_pass_of_one_token() {
        let model = embedded_model();
        let opts = CalibrateOptions {
            tokens: 1,
            reps: 1,
            check: false,
        };
        let e = calibrate(&model, &builtin_like(), &opts).unwrap_err();
        assert!(e.to_string().contains("at least 2 tokens"), "{e}");
    }

    fn builtin_like() -> Profile {
        crate::hw::builtin("arm-neon").unwrap()
    }

    #[test]
    fn calibrated_profile_toml_round_trips_to_the_calibrated_profile() {
        let model = embedded_model();
        let m = measure_host(&tiny()).unwrap();
        let opts = CalibrateOptions {
            tokens: 3,
            reps: 1,
            check: false,
        };
        let cal = calibrate(&model, &host_profile(&m), &opts).unwrap();
        let text = calibrated_profile_toml(&m, &cal).unwrap();
        assert!(text.starts_with("# Host profile measured"), "{text}");
        assert!(text.contains("# Measured at "), "{text}");
        assert!(text.contains("calibrated on forward passes"), "{text}");
        assert_eq!(parse_profile(&text, "host.toml").unwrap(), cal.profile);
    }
}
