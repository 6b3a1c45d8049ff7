//! Quantization-aware training of a chosen plan (`qevo tune`): KL distillation of every
//! GGML tensor's block scales (and min scales), optionally the integer sub-scales of the
//! K-quants, iq4_xs and iq3_s, plus the norms and biases toward the FP model on
//! calibration windows, keeping the plan's formats and codes, so the tuned model is still
//! a standard file of the same size.
//!
//! - `params`: the plan as trainable variables, projected onto f16 after every step;
//! - `loss`: KL(FP ‖ quantized) against the evaluator's `Reference`, differentiable;
//! - `adam`: the optimizer, with state a checkpoint can hold;
//! - `control`: the trust region, warm-up and backtracking that keep a noisy batch from
//!   wrecking a run;
//! - `trainer`: one step, and the best step by validation;
//! - `checkpoint`: atomic save and exact resume.
//!
//! The calibration windows are split: the first train, the last (`validation`, a
//! quarter by default) choose the step that is returned, so the choice is made on text
//! the training never saw, and the held-out text stays untouched for the report.
//! Before and after scores come from decoding the block bytes through the standard
//! dequantizer: the same numbers the exported file re-scores to.

mod adam;
mod checkpoint;
mod control;
mod decode_op;
mod loss;
mod params;
mod trainer;

use crate::error::{Error, Result};
use crate::eval::{Metrics, Reference};
use crate::model::{Model, NoHook};
use crate::plan::ResolvedPlan;
use crate::quant::{GgmlType, RoundingInputs};
use candle_core::Tensor;
pub use checkpoint::{inspect as inspect_checkpoint, CheckpointSummary};
pub use params::Codes;
use params::Params;
use rand::SeedableRng;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use trainer::Trainer;

/// Calibration windows a front end cuts by default (the first three quarters train,
/// the last quarter validates). Measured on the embedded model (docs/tune.md): on
/// calibration text no run saw, 64 windows lowered uniform q3_k's KL by 13% and q2_k's
/// by 19%, 16 windows by 6% and 10%: fitting 12 windows fits those windows.
pub const DEFAULT_WINDOWS: usize = 64;
/// Tokens per calibration window by default (fewer where the model has fewer positions;
/// not measured against others: the embedded model's positions stop at 256).
pub const DEFAULT_SEQ_LEN: usize = 128;

/// How to train.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TuneConfig {
    pub steps: usize,
    /// Adam rate of the scale corrections (relative: 0.01 moves a scale by about 1%).
    pub lr: f32,
    /// Adam rate of the norms and biases, relative to each element's size (its own
    /// magnitude, floored at a tenth of the tensor's RMS).
    pub lr_aux: f32,
    /// Train the integer sub-scales (and sub-mins) of the K-quants, iq4_xs and iq3_s too.
    pub sub_scales: bool,
    /// Adam rate of the sub-scale offsets, in integer steps of the stored field.
    pub lr_sub: f32,
    /// Training windows per step.
    pub batch: usize,
    pub seed: u64,
    /// Train norms and biases too.
    pub train_aux: bool,
    /// Keep the plan's codes, or re-derive the legacy types' codes at the trained scales.
    pub codes: Codes,
    /// Share of the calibration windows kept out of training to choose the step that is
    /// returned (the last windows of the text; at least 2).
    pub validation: f32,
    /// Validation KL every this many steps (0: only at the end); the best step measured
    /// is the one returned.
    pub eval_every: usize,
    /// Training windows the before/after calibration score covers (None: all of them);
    /// a caller that judges on validation alone saves the forward passes.
    pub score_training_windows: Option<usize>,
    /// Checkpoint every this many steps (0: never); needs `checkpoint`.
    pub checkpoint_every: usize,
    pub checkpoint: Option<PathBuf>,
    /// Continue from `checkpoint` when it exists.
    pub resume: bool,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            steps: 100,
            lr: 2e-3,
            lr_aux: 1e-3,
            sub_scales: false,
            lr_sub: 0.05,
            batch: 4,
            seed: 0,
            train_aux: true,
            codes: Codes::Fixed,
            validation: 0.25,
            eval_every: 5,
            score_training_windows: None,
            checkpoint_every: 0,
            checkpoint: None,
            resume: false,
        }
    }
}

/// One training step as the progress line and `tune.json` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// Loss of this step's training batch before its update.
    pub loss: f64,
    /// The same batch's loss after the update.
    pub loss_after: f64,
    /// False when the update raised its batch's loss by more than 2% and was undone.
    pub kept: bool,
    /// The factor the configured rates were multiplied by (warm-up and backtracking).
    pub rate: f32,
    /// Validation KL after this step, when measured.
    pub validation_kl: Option<f64>,
    pub seconds: f64,
}

/// A plan's quality on the training windows, the validation windows (the calibration
/// windows kept out of training) and the held-out text.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    pub calibration: Metrics,
    pub validation: Metrics,
    pub heldout: Metrics,
}

/// The tuned model: block bytes per tensor (qevo's row order, the plan's types) and the
/// norms and biases by GGUF name.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub types: Vec<GgmlType>,
    pub bytes: Vec<Vec<u8>>,
    pub aux: Vec<(String, Tensor)>,
}

/// What `tune` did.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    pub before: Scores,
    /// The scores of what `tuned` holds: the step kept.
    pub after: Scores,
    pub history: Vec<StepRecord>,
    /// The step a checkpoint resumed from, if any.
    pub resumed_from: Option<usize>,
    /// The step whose parameters `tuned` holds: the one with the lowest validation KL
    /// of those measured (0: the plan as it was).
    pub kept_step: usize,
    /// No step beat the plan on validation (`kept_step` 0), so `tuned` is the plan as
    /// it was.
    pub kept_initial: bool,
    /// Trained variables (scale corrections, norms and biases) and their element count.
    pub variables: usize,
    pub parameters: usize,
    pub tuned: Tuned,
}

/// Progress callback and a flag to stop after the current step.
#[derive(Default)]
pub struct TuneHooks<'a> {
    pub on_step: Option<&'a mut dyn FnMut(&StepRecord)>,
    pub stop: Option<&'a AtomicBool>,
}

/// The model, plan and texts a run trains on. The calibration windows are split into
/// training and validation windows (`TuneConfig::validation`); the held-out text is
/// only scored before and after.
pub struct TuneSetup<'a> {
    pub model: &'a Model,
    pub plan: &'a ResolvedPlan,
    pub rounding: &'a RoundingInputs,
    pub calibration: &'a Reference,
    pub heldout: &'a Reference,
}

/// FNV-1a of `bytes`, as 16 hex digits (the fingerprints a checkpoint compares).
fn fnv(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Everything a run's numbers depend on, by field, for resume: model weights, plan
/// types, rounding inputs (importance matrix, output-rounding moments), the texts'
/// windows and each training setting. A checkpoint whose list differs is another run's;
/// the fields that differ are named.
fn run_settings(s: &TuneSetup, cfg: &TuneConfig) -> Vec<(String, String)> {
    let types: Vec<&str> = s.plan.types.iter().map(|t| t.name()).collect();
    let windows = |r: &Reference| {
        let w = &r.windows;
        let ids = w.ids.iter().flat_map(|t| t.to_le_bytes());
        format!(
            "{} windows of {} tokens, tokens {}",
            w.len(),
            w.seq_len,
            fnv(ids)
        )
    };
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let imatrix: Vec<u8> = s
        .rounding
        .imatrix
        .iter()
        .flat_map(|c| c.as_deref().map_or_else(|| vec![0xff], floats))
        .collect();
    let moments: Vec<u8> = s
        .rounding
        .moments
        .iter()
        .flat_map(|h| {
            h.as_deref()
                .map_or_else(|| vec![0xff], |h| floats(h.diag()))
        })
        .collect();
    let rounding = match (
        imatrix.iter().all(|&b| b == 0xff),
        s.rounding.moments.is_empty(),
    ) {
        (true, true) => "per block, no importance matrix".to_string(),
        _ => format!("importance {} moments {}", fnv(imatrix), fnv(moments)),
    };
    [
        ("model", s.model.fingerprint.clone()),
        ("plan", fnv(types.join(",").into_bytes())),
        ("rounding", rounding),
        ("text", windows(s.calibration)),
        ("heldout", windows(s.heldout)),
        ("lr", cfg.lr.to_string()),
        ("lr_aux", cfg.lr_aux.to_string()),
        ("batch", cfg.batch.to_string()),
        ("seed", cfg.seed.to_string()),
        ("train_aux", cfg.train_aux.to_string()),
        ("codes", format!("{:?}", cfg.codes).to_lowercase()),
        ("sub_scales", cfg.sub_scales.to_string()),
        ("lr_sub", cfg.lr_sub.to_string()),
        ("validation", cfg.validation.to_string()),
        ("eval_every", cfg.eval_every.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The windows step `step` trains on: `batch` distinct ones of the `n` training windows,
/// drawn by a generator seeded from (seed, step) alone, so a resumed run draws what an
/// uninterrupted one does.
fn batch_windows(seed: u64, step: usize, n: usize, batch: usize) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut v = rand::seq::index::sample(&mut rng, n, batch.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// Fewest validation windows: one window's KL is too noisy to choose a step by.
const MIN_VALIDATION: usize = 2;

/// How many of `n` calibration windows train (the first ones); the rest validate.
fn training_windows(n: usize, validation: f32) -> Result<usize> {
    let val = ((n as f32 * validation).round() as usize).max(MIN_VALIDATION);
    match n.checked_sub(val).filter(|&t| t >= 1) {
        Some(t) => Ok(t),
        None => Err(Error::setting(
            "validation",
            format!(
                "{n} calibration windows: {val} validate, which leaves none to train on \
                 (at least {} windows are needed)",
                MIN_VALIDATION + 1
            ),
        )),
    }
}

/// Windows per forward pass when scoring: a 49k-vocabulary head makes 25 MB of logits
/// per 128-token window, and scoring keeps two copies of a batch's.
const SCORE_BATCH: usize = 4;

/// Scores block bytes and norms on windows `range` of `r`, through the standard
/// decoding path.
fn score(
    s: &TuneSetup,
    p: &Params,
    (bytes, aux): (&[Vec<u8>], &[Tensor]),
    r: &Reference,
    range: Range<usize>,
) -> Result<Metrics> {
    let m = s.model.with_llama_aux(aux, false)?;
    let w = params::decode(p, bytes)?;
    let mut r = r.clone();
    r.batch = r.batch.min(SCORE_BATCH);
    Ok(r.score_range(&m, &w, &NoHook, range)?.metrics())
}

/// Training, validation and held-out scores of block bytes and norms.
fn scores(
    s: &TuneSetup,
    p: &Params,
    at: (&[Vec<u8>], &[Tensor]),
    train: usize,
    scored: Option<usize>,
) -> Result<Scores> {
    let n = s.calibration.windows.len();
    let k = scored.map_or(train, |k| k.clamp(1, train));
    Ok(Scores {
        calibration: score(s, p, at, s.calibration, 0..k)?,
        validation: score(s, p, at, s.calibration, train..n)?,
        heldout: score(s, p, at, s.heldout, 0..s.heldout.windows.len())?,
    })
}

/// Validation KL of the current parameters, as the file would hold them.
fn validation_kl(s: &TuneSetup, p: &Params, train: usize) -> Result<f64> {
    let n = s.calibration.windows.len();
    let at = (&p.finish()?[..], &snapshot(&p.aux()?)?[..]);
    Ok(score(s, p, at, s.calibration, train..n)?.kl)
}

/// Copies of the tensors' current values, outside the graph. Not `detach`, which shares
/// storage: a variable's later `set` would show through it.
fn snapshot(ts: &[Tensor]) -> Result<Vec<Tensor>> {
    ts.iter().map(|t| Ok(t.detach().copy()?)).collect()
}

fn check_config(cfg: &TuneConfig, s: &TuneSetup) -> Result<()> {
    for (field, n) in [("steps", cfg.steps), ("batch", cfg.batch)] {
        if n == 0 {
            return Err(Error::setting(field, "must be at least 1"));
        }
    }
    let positive = |r: f32| r.is_finite() && r > 0.0;
    let rates = [
        ("lr", cfg.lr, positive(cfg.lr)),
        ("lr_sub", cfg.lr_sub, positive(cfg.lr_sub)),
        (
            "lr_aux",
            cfg.lr_aux,
            cfg.lr_aux.is_finite() && cfg.lr_aux >= 0.0,
        ),
    ];
    if let Some((field, r, _)) = rates.iter().find(|r| !r.2) {
        return Err(Error::setting(
            field,
            format!("{r}: a learning rate must be finite and positive"),
        ));
    }
    if !(cfg.validation > 0.0 && cfg.validation < 1.0) {
        return Err(Error::setting(
            "validation",
            format!(
                "{}: the validation share must lie between 0 and 1",
                cfg.validation
            ),
        ));
    }
    if cfg.checkpoint_every > 0 && cfg.checkpoint.is_none() {
        return Err(Error::setting(
            "checkpoint",
            "checkpoint_every needs a checkpoint path",
        ));
    }
    if s.plan.types.len() != s.model.tensors.len() {
        return Err(Error::tensor_count(
            "plan",
            s.plan.types.len(),
            s.model.tensors.len(),
        ));
    }
    Ok(())
}

/// Trains the plan's scales and the norms on the training windows, reporting each step
/// to `hooks`, and returns the step whose validation KL was lowest (the plan itself when
/// no step beat it); checkpoints as configured. A non-finite loss or gradient stops the
/// run with an error that says which checkpoint is kept.
pub fn tune(s: &TuneSetup, cfg: &TuneConfig, hooks: TuneHooks) -> Result<TuneOutcome> {
    check_config(cfg, s)?;
    let train = training_windows(s.calibration.windows.len(), cfg.validation)?;
    let p = Params::new(
        s.model,
        s.plan,
        s.rounding,
        cfg.train_aux,
        cfg.codes,
        cfg.sub_scales,
    )?;
    let initial: Vec<Vec<u8>> = p.tensors.iter().map(|q| q.bytes.clone()).collect();
    let aux0 = snapshot(&p.aux()?)?;
    let before = scores(s, &p, (&initial, &aux0), train, cfg.score_training_windows)?;
    let identity = run_settings(s, cfg);
    let mut tr = match (&cfg.checkpoint, cfg.resume) {
        (Some(path), true) if path.exists() => Trainer::restore(&p, path, &identity, cfg.steps)?,
        _ => Trainer::new(&p, before.validation.kl)?,
    };
    let resumed_from = (tr.step > 0).then_some(tr.step);
    train_loop(s, &p, cfg, &mut tr, hooks, &identity, train)?;
    let kept_step = tr.best.step;
    let (bytes, aux, after) = match kept_step {
        0 => (initial, aux0, before),
        _ => {
            tr.best.restore(&p)?;
            let (bytes, aux) = (p.finish()?, snapshot(&p.aux()?)?);
            let after = scores(s, &p, (&bytes, &aux), train, cfg.score_training_windows)?;
            (bytes, aux, after)
        }
    };
    Ok(TuneOutcome {
        before,
        after,
        kept_step,
        kept_initial: kept_step == 0,
        history: tr.history,
        resumed_from,
        variables: p.vars.len(),
        parameters: p.vars.iter().map(|v| v.elem_count()).sum(),
        tuned: Tuned {
            types: s.plan.types.clone(),
            bytes,
            aux: p.aux_names.iter().cloned().zip(aux).collect(),
        },
    })
}

/// The steps from where `tr` stands to `cfg.steps` (or a stop), measuring validation
/// every `eval_every` steps, and checkpointing as configured. The last step is measured
/// too, after the loop and its checkpoint: a run stopped there and resumed must take the
/// steps of an uninterrupted run, which did not measure it.
fn train_loop(
    s: &TuneSetup,
    p: &Params,
    cfg: &TuneConfig,
    tr: &mut Trainer,
    hooks: TuneHooks,
    identity: &[(String, String)],
    train: usize,
) -> Result<()> {
    let TuneHooks { mut on_step, stop } = hooks;
    let mut last_saved = (tr.step > 0).then_some(tr.step);
    let stopped = || stop.is_some_and(|f| f.load(Ordering::Relaxed));
    while tr.step < cfg.steps && !stopped() {
        let t0 = Instant::now();
        let mut rec = tr
            .step(s, p, cfg, train)
            .map_err(|e| diverged(e, cfg, last_saved))?;
        if cfg.eval_every > 0 && tr.step.is_multiple_of(cfg.eval_every) {
            rec.validation_kl = Some(tr.validate(s, p, train)?);
        }
        rec.seconds = t0.elapsed().as_secs_f64();
        tr.history.push(rec.clone());
        if let Some(f) = on_step.as_mut() {
            f(&rec);
        }
        if tr.save_if_due(p, cfg, identity)? {
            last_saved = Some(tr.step);
        }
    }
    if tr.history.last().is_some_and(|r| r.validation_kl.is_none()) {
        let v = tr.validate(s, p, train)?;
        if let Some(last) = tr.history.last_mut() {
            last.validation_kl = Some(v);
        }
    }
    Ok(())
}

/// A failed step's error, saying which checkpoint survives.
fn diverged(e: Error, cfg: &TuneConfig, last_saved: Option<usize>) -> Error {
    let kept = match (&cfg.checkpoint, last_saved) {
        (Some(p), Some(step)) => {
            format!("the checkpoint of step {step} is kept at {}", p.display())
        }
        _ => "no checkpoint was written".to_string(),
    };
    Error::Invalid(format!("{e}; stopped: {kept}"))
}

#[cfg(test)]
mod tests;
