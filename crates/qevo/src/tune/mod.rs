//! Quantization-aware training of a chosen plan (`qevo tune`): KL distillation of every
//! GGML tensor's block scales (and min scales), optionally the integer sub-scales of the
//! K-quants, iq4_xs and iq3_s, plus the norms and biases toward the FP model on
//! calibration windows, keeping the plan's formats and codes, so the tuned model is still
//! a standard file of the same size.
//!
//! - `params`: the plan as trainable variables, projected onto f16 after every step;
//! - `loss`: KL(FP ‖ quantized) against the evaluator's `Reference`, differentiable;
//! - `adam`: the optimizer, with state a checkpoint can hold;
//! - `checkpoint`: atomic save and exact resume.
//!
//! Before and after scores come from decoding the block bytes through the standard
//! dequantizer, on calibration and on held-out windows: the same numbers the exported
//! file re-scores to.

mod adam;
mod checkpoint;
mod decode_op;
mod loss;
mod params;

use crate::error::{Error, Result};
use crate::eval::{Metrics, Reference};
use crate::export::ResolvedPlan;
use crate::model::{Model, NoHook};
use crate::quant::{GgmlType, RoundingInputs};
use candle_core::{Device, Tensor};
pub use params::Codes;
use params::{Params, Slot};
use rand::SeedableRng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How to train.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TuneConfig {
    pub steps: usize,
    /// Adam rate of the scale corrections (relative: 0.01 moves a scale by about 1%).
    pub lr: f32,
    /// Adam rate of the norms and biases (absolute).
    pub lr_aux: f32,
    /// Train the integer sub-scales (and sub-mins) of the K-quants, iq4_xs and iq3_s too.
    pub sub_scales: bool,
    /// Adam rate of the sub-scale offsets, in integer steps of the stored field.
    pub lr_sub: f32,
    /// Calibration windows per step.
    pub batch: usize,
    pub seed: u64,
    /// Train norms and biases too.
    pub train_aux: bool,
    /// Keep the plan's codes, or re-derive the legacy types' codes at the trained scales.
    pub codes: Codes,
    /// Held-out KL every this many steps (0: only before and after).
    pub eval_every: usize,
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
            eval_every: 0,
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
    /// Calibration loss of this step's batch (before its update).
    pub loss: f64,
    /// Held-out KL after this step, when measured.
    pub heldout_kl: Option<f64>,
    pub seconds: f64,
}

/// A plan's quality on calibration and held-out windows.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    pub calibration: Metrics,
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
    pub after: Scores,
    pub history: Vec<StepRecord>,
    /// The step a checkpoint resumed from, if any.
    pub resumed_from: Option<usize>,
    /// Training did not lower the calibration KL, so `tuned` is the plan as it was.
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

/// The model, plan and texts a run trains on.
pub struct TuneSetup<'a> {
    pub model: &'a Model,
    pub plan: &'a ResolvedPlan,
    pub rounding: &'a RoundingInputs,
    pub calibration: &'a Reference,
    pub heldout: &'a Reference,
}

/// Identifies a run for resume: model weights, plan types, texts and settings.
fn run_identity(s: &TuneSetup, cfg: &TuneConfig) -> String {
    let types: Vec<&str> = s.plan.types.iter().map(|t| t.name()).collect();
    let text = |r: &Reference| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&r.windows.ids, &mut h);
        std::hash::Hasher::finish(&h)
    };
    format!(
        "model {} | types {} | calib {:x} | heldout {:x} | lr {} {} | batch {} | seed {} | aux {} | codes {:?} | sub-scales {} {}",
        s.model.fingerprint,
        types.join(","),
        text(s.calibration),
        text(s.heldout),
        cfg.lr,
        cfg.lr_aux,
        cfg.batch,
        cfg.seed,
        cfg.train_aux,
        cfg.codes,
        cfg.sub_scales,
        cfg.lr_sub
    )
}

/// The windows step `step` trains on: `batch` distinct ones drawn by a generator seeded
/// from (seed, step) alone, so a resumed run draws what an uninterrupted one does.
fn batch_windows(seed: u64, step: usize, n: usize, batch: usize) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut v = rand::seq::index::sample(&mut rng, n, batch.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// Windows per forward pass when scoring: a 49k-vocabulary head makes 25 MB of logits
/// per 128-token window, and scoring keeps two copies of a batch's.
const SCORE_BATCH: usize = 4;

/// Scores block bytes and norms through the standard decoding path.
fn score(
    s: &TuneSetup,
    p: &Params,
    bytes: &[Vec<u8>],
    aux: &[Tensor],
    r: &Reference,
) -> Result<Metrics> {
    let m = s.model.with_llama_aux(aux, false)?;
    let w = params::decode(p, bytes)?;
    let mut r = r.clone();
    r.batch = r.batch.min(SCORE_BATCH);
    r.score(&m, &w, &NoHook)
}

/// Calibration and held-out scores of block bytes and norms.
fn scores(s: &TuneSetup, p: &Params, bytes: &[Vec<u8>], aux: &[Tensor]) -> Result<Scores> {
    Ok(Scores {
        calibration: score(s, p, bytes, aux, s.calibration)?,
        heldout: score(s, p, bytes, aux, s.heldout)?,
    })
}

/// Copies of the tensors' current values, outside the graph. Not `detach`, which shares
/// storage: a variable's later `set` would show through it.
fn snapshot(ts: &[Tensor]) -> Result<Vec<Tensor>> {
    ts.iter().map(|t| Ok(t.detach().copy()?)).collect()
}

fn check_config(cfg: &TuneConfig, s: &TuneSetup) -> Result<()> {
    if cfg.steps == 0 || cfg.batch == 0 {
        return Err(Error::setting(
            "steps",
            "steps and batch must be at least 1",
        ));
    }
    let positive = |r: f32| r.is_finite() && r > 0.0;
    if !(positive(cfg.lr) && positive(cfg.lr_sub) && cfg.lr_aux.is_finite() && cfg.lr_aux >= 0.0) {
        return Err(Error::setting(
            "lr",
            "learning rates must be finite and positive",
        ));
    }
    if cfg.checkpoint_every > 0 && cfg.checkpoint.is_none() {
        return Err(Error::setting(
            "checkpoint",
            "checkpoint_every needs a checkpoint path",
        ));
    }
    if s.plan.types.len() != s.model.tensors.len() {
        return Err(Error::Invalid(format!(
            "plan has {} tensors, model has {}",
            s.plan.types.len(),
            s.model.tensors.len()
        )));
    }
    Ok(())
}

/// Bounds and rate per variable kind: a scale may move by −50% … +100%, a sub-scale by
/// 16 steps of its field (the forward pass clamps it to the field's range).
fn rule(slot: Slot, cfg: &TuneConfig) -> (f32, (f32, f32)) {
    match slot {
        Slot::Scale(_) | Slot::Min(_) => (cfg.lr, (-0.5, 1.0)),
        Slot::Sub(_) | Slot::SubMin(_) => (cfg.lr_sub, (-16.0, 16.0)),
        Slot::Aux(_) => (cfg.lr_aux, (f32::MIN, f32::MAX)),
    }
}

/// The trainer's state between steps.
struct Trainer {
    moments: Vec<adam::Moments>,
    history: Vec<StepRecord>,
    step: usize,
}

impl Trainer {
    /// Step 0: zero moments for every variable.
    fn new(p: &Params) -> Trainer {
        Trainer {
            moments: p
                .vars
                .iter()
                .map(|v| adam::Moments::zeros(v.elem_count()))
                .collect(),
            history: Vec::new(),
            step: 0,
        }
    }

    /// Writes the checkpoint when one is configured and this step is a multiple of
    /// `checkpoint_every`; true when it wrote.
    fn save_if_due(&self, p: &Params, cfg: &TuneConfig, identity: &str) -> Result<bool> {
        let due = cfg.checkpoint_every > 0 && self.step.is_multiple_of(cfg.checkpoint_every);
        let Some(path) = cfg.checkpoint.as_ref().filter(|_| due) else {
            return Ok(false);
        };
        let meta = checkpoint::Meta {
            identity: identity.to_string(),
            step: self.step,
            history: self.history.clone(),
        };
        checkpoint::save(path, &meta, &self.states(p)?)?;
        Ok(true)
    }

    fn states(&self, p: &Params) -> Result<Vec<checkpoint::VarState>> {
        p.vars
            .iter()
            .zip(&self.moments)
            .map(|(v, m)| {
                Ok(checkpoint::VarState {
                    shape: v.dims().to_vec(),
                    values: v.flatten_all()?.to_vec1::<f32>()?,
                    moments: m.clone(),
                })
            })
            .collect()
    }

    fn restore(p: &Params, path: &std::path::Path, identity: &str) -> Result<Trainer> {
        let shapes: Vec<Vec<usize>> = p.vars.iter().map(|v| v.dims().to_vec()).collect();
        let (meta, states) = checkpoint::load(path, &shapes)?;
        if meta.identity != identity {
            return Err(Error::format(
                path,
                format!(
                    "checkpoint of another run (model, plan, texts or settings differ):\n  \
                     checkpoint: {}\n  this run:   {identity}",
                    meta.identity
                ),
            ));
        }
        for (v, st) in p.vars.iter().zip(&states) {
            v.set(&Tensor::from_vec(
                st.values.clone(),
                st.shape.clone(),
                &Device::Cpu,
            )?)?;
        }
        Ok(Trainer {
            moments: states.into_iter().map(|s| s.moments).collect(),
            history: meta.history,
            step: meta.step,
        })
    }

    /// Loss and gradients of the step's windows, one window per backward pass (so the
    /// activations kept for the backward pass are one window's), summed in window order.
    fn gradients(s: &TuneSetup, p: &Params, wins: &[usize]) -> Result<(f64, Vec<Vec<f32>>)> {
        let w = p.weights(true)?;
        let train = s.model.with_llama_aux(&p.aux()?, true)?;
        let mut all: Vec<Vec<f32>> = p.vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
        let mut total = 0f64;
        let share = 1.0 / wins.len() as f64;
        for win in wins {
            let loss =
                (loss::batch_loss(&train, &w, s.calibration, std::slice::from_ref(win))? * share)?;
            total += loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            for (acc, v) in all.iter_mut().zip(&p.vars) {
                if let Some(g) = grads.get(v) {
                    for (a, x) in acc.iter_mut().zip(g.flatten_all()?.to_vec1::<f32>()?) {
                        *a += x;
                    }
                }
            }
        }
        Ok((total, all))
    }

    /// One step: loss and gradients on this step's windows, then Adam on every variable.
    /// A non-finite loss or gradient leaves the variables untouched and is an error.
    fn step(&mut self, s: &TuneSetup, p: &Params, cfg: &TuneConfig) -> Result<f64> {
        let wins = batch_windows(cfg.seed, self.step, s.calibration.windows.len(), cfg.batch);
        let (lv, all) = Self::gradients(s, p, &wins)?;
        let finite = lv.is_finite() && all.iter().flatten().all(|g| g.is_finite());
        if !finite {
            return Err(Error::Invalid(format!(
                "training diverged at step {} (loss {lv})",
                self.step + 1
            )));
        }
        let t = self.step as u64 + 1;
        for ((k, v), g) in p.vars.iter().enumerate().zip(&all) {
            let (lr, bounds) = rule(p.slots[k], cfg);
            let mut x = v.flatten_all()?.to_vec1::<f32>()?;
            adam::step(&mut x, g, &mut self.moments[k], t, lr, bounds);
            v.set(&Tensor::from_vec(x, v.dims(), &Device::Cpu)?)?;
        }
        self.step += 1;
        Ok(lv)
    }
}

/// Trains the plan's scales and the norms, reporting each step to `hooks`; checkpoints
/// as configured. Divergence stops the run with an error that says which checkpoint is
/// kept.
pub fn tune(s: &TuneSetup, cfg: &TuneConfig, hooks: TuneHooks) -> Result<TuneOutcome> {
    check_config(cfg, s)?;
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
    let before = scores(s, &p, &initial, &aux0)?;
    let identity = run_identity(s, cfg);
    let mut tr = match (&cfg.checkpoint, cfg.resume) {
        (Some(path), true) if path.exists() => Trainer::restore(&p, path, &identity)?,
        _ => Trainer::new(&p),
    };
    let resumed_from = (tr.step > 0).then_some(tr.step);
    let TuneHooks { mut on_step, stop } = hooks;
    let mut last_saved = resumed_from;
    while tr.step < cfg.steps {
        if stop.is_some_and(|f| f.load(Ordering::Relaxed)) {
            break;
        }
        let t0 = Instant::now();
        let lv = tr
            .step(s, &p, cfg)
            .map_err(|e| diverged(e, cfg, last_saved))?;
        let eval = cfg.eval_every > 0 && tr.step.is_multiple_of(cfg.eval_every);
        let heldout_kl = match eval {
            true => Some(score(s, &p, &p.finish()?, &snapshot(&p.aux()?)?, s.heldout)?.kl),
            false => None,
        };
        let rec = StepRecord {
            step: tr.step,
            loss: lv,
            heldout_kl,
            seconds: t0.elapsed().as_secs_f64(),
        };
        tr.history.push(rec.clone());
        if let Some(f) = on_step.as_mut() {
            f(&rec);
        }
        if tr.save_if_due(&p, cfg, &identity)? {
            last_saved = Some(tr.step);
        }
    }
    let mut bytes = p.finish()?;
    let mut aux = snapshot(&p.aux()?)?;
    let mut after = scores(s, &p, &bytes, &aux)?;
    // Training never hands back a model worse on what it was asked to fit: a plan
    // already at (or near) the FP model's KL only picks up the optimiser's noise.
    let kept_initial = after.calibration.kl >= before.calibration.kl;
    if kept_initial {
        (bytes, aux, after) = (initial, aux0, before);
    }
    Ok(TuneOutcome {
        before,
        after,
        kept_initial,
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
