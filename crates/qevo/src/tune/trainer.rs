//! The trainer's state between steps: Adam's moments, the step controller, the history
//! and the best parameters by validation, with one step (`Trainer::step`) and the
//! checkpoint that saves and restores all of it exactly.

use super::control::{self, Control};
use super::params::{Params, Slot};
use super::{adam, batch_windows, checkpoint, loss, StepRecord, TuneConfig, TuneSetup};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor, Var};
use std::path::Path;

/// The parameters with the lowest validation KL measured so far.
pub(crate) struct Best {
    pub step: usize,
    pub validation: f64,
    pub values: Vec<Vec<f32>>,
}

impl Best {
    /// Keeps the current parameters when `validation` beats the best so far (a tie keeps
    /// the earlier step: fewer changes for the same quality).
    pub fn offer(&mut self, p: &Params, step: usize, validation: f64) -> Result<()> {
        if validation < self.validation {
            *self = Best {
                step,
                validation,
                values: values(&p.vars)?,
            };
        }
        Ok(())
    }

    /// Sets the variables to the best parameters.
    pub fn restore(&self, p: &Params) -> Result<()> {
        set_values(&p.vars, &self.values)
    }
}

fn units(p: &Params) -> Result<Vec<Option<Vec<f32>>>> {
    (0..p.vars.len()).map(|k| p.units(k)).collect()
}

fn values(vars: &[Var]) -> Result<Vec<Vec<f32>>> {
    vars.iter()
        .map(|v| Ok(v.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

fn set_values(vars: &[Var], values: &[Vec<f32>]) -> Result<()> {
    for (v, x) in vars.iter().zip(values) {
        v.set(&Tensor::from_vec(x.clone(), v.dims(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// Rate of a variable kind: the configured one, capped by the kind's trust radius.
fn rate(slot: Slot, cfg: &TuneConfig) -> f32 {
    let lr = match slot {
        Slot::Scale(_) | Slot::Min(_) => cfg.lr,
        Slot::Sub(_) | Slot::SubMin(_) => cfg.lr_sub,
        Slot::Aux(_) => cfg.lr_aux,
    };
    lr.min(control::radius(slot))
}

/// Bounds per variable kind: a scale may move by −50% … +100%, a sub-scale by 16 steps
/// of its field (the forward pass clamps it to the field's range).
fn bounds(slot: Slot) -> (f32, f32) {
    match slot {
        Slot::Scale(_) | Slot::Min(_) => (-0.5, 1.0),
        Slot::Sub(_) | Slot::SubMin(_) => (-16.0, 16.0),
        Slot::Aux(_) => (f32::MIN, f32::MAX),
    }
}

pub(crate) struct Trainer {
    pub moments: Vec<adam::Moments>,
    /// Per variable, what one unit of its rate is per element (`Params::units`).
    units: Vec<Option<Vec<f32>>>,
    pub history: Vec<StepRecord>,
    /// Steps taken, kept or undone.
    pub step: usize,
    /// Adam's step count: the kept steps (an undone step's moments are undone too).
    pub updates: u64,
    pub control: Control,
    pub best: Best,
}

impl Trainer {
    /// Step 0: zero moments for every variable; the best so far is the plan itself, at
    /// its validation KL.
    pub fn new(p: &Params, validation: f64) -> Result<Trainer> {
        Ok(Trainer {
            units: units(p)?,
            moments: p
                .vars
                .iter()
                .map(|v| adam::Moments::zeros(v.elem_count()))
                .collect(),
            history: Vec::new(),
            step: 0,
            updates: 0,
            control: Control::default(),
            best: Best {
                step: 0,
                validation,
                values: values(&p.vars)?,
            },
        })
    }

    /// Measures the validation KL of the current parameters and keeps them when they
    /// are the best so far.
    pub fn validate(&mut self, s: &TuneSetup, p: &Params, train: usize) -> Result<f64> {
        let v = super::validation_kl(s, p, train)?;
        self.best.offer(p, self.step, v)?;
        Ok(v)
    }

    /// Writes the checkpoint when one is configured and this step is a multiple of
    /// `checkpoint_every`; true when it wrote.
    pub fn save_if_due(
        &self,
        p: &Params,
        cfg: &TuneConfig,
        identity: &[(String, String)],
    ) -> Result<bool> {
        let due = cfg.checkpoint_every > 0 && self.step.is_multiple_of(cfg.checkpoint_every);
        let Some(path) = cfg.checkpoint.as_ref().filter(|_| due) else {
            return Ok(false);
        };
        let meta = checkpoint::Meta {
            identity: identity.to_vec(),
            step: self.step,
            updates: self.updates,
            control: self.control,
            best_step: self.best.step,
            best_validation: self.best.validation,
            history: self.history.clone(),
        };
        checkpoint::save(path, &meta, &self.states(p)?)?;
        Ok(true)
    }

    fn states(&self, p: &Params) -> Result<Vec<checkpoint::VarState>> {
        p.vars
            .iter()
            .zip(&self.moments)
            .zip(&self.best.values)
            .map(|((v, m), b)| {
                Ok(checkpoint::VarState {
                    shape: v.dims().to_vec(),
                    values: v.flatten_all()?.to_vec1::<f32>()?,
                    moments: m.clone(),
                    best: b.clone(),
                })
            })
            .collect()
    }

    /// Restores a checkpoint of this run (`identity`, `run_settings`) that stands at or
    /// before step `steps`; one of another run is refused naming each setting that
    /// differs.
    pub fn restore(
        p: &Params,
        path: &Path,
        identity: &[(String, String)],
        steps: usize,
    ) -> Result<Trainer> {
        let shapes: Vec<Vec<usize>> = p.vars.iter().map(|v| v.dims().to_vec()).collect();
        let accept = |meta: &checkpoint::Meta| {
            let mut differences = crate::error::differences(&meta.identity, identity);
            if meta.step > steps {
                differences.push(crate::error::Difference {
                    field: "steps".into(),
                    checkpoint: format!("{} steps already taken", meta.step),
                    now: format!("{steps} steps in all"),
                });
            }
            match differences.is_empty() {
                true => Ok(()),
                false => Err(Error::ResumeMismatch {
                    path: path.to_path_buf(),
                    differences,
                }),
            }
        };
        let (meta, states) = checkpoint::load_if(path, &shapes, accept)?;
        let now: Vec<Vec<f32>> = states.iter().map(|s| s.values.clone()).collect();
        set_values(&p.vars, &now)?;
        let best = states.iter().map(|s| s.best.clone()).collect();
        Ok(Trainer {
            units: units(p)?,
            moments: states.into_iter().map(|s| s.moments).collect(),
            history: meta.history,
            step: meta.step,
            updates: meta.updates,
            control: meta.control,
            best: Best {
                step: meta.best_step,
                validation: meta.best_validation,
                values: best,
            },
        })
    }

    /// Loss of the step's windows, one window per forward pass, summed in window order;
    /// with their gradients when `grad` (one backward pass per window, so the
    /// activations kept are one window's).
    pub fn loss_on(
        s: &TuneSetup,
        p: &Params,
        wins: &[usize],
        grad: bool,
    ) -> Result<(f64, Vec<Vec<f32>>)> {
        let w = p.weights(true)?;
        let train = s.model.with_llama_aux(&p.aux()?, true)?;
        let mut all: Vec<Vec<f32>> = match grad {
            true => p.vars.iter().map(|v| vec![0.0; v.elem_count()]).collect(),
            false => Vec::new(),
        };
        let mut total = 0f64;
        let share = 1.0 / wins.len() as f64;
        for win in wins {
            let loss =
                (loss::batch_loss(&train, &w, s.calibration, std::slice::from_ref(win))? * share)?;
            total += loss.to_scalar::<f32>()? as f64;
            if !grad {
                continue;
            }
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

    /// One step on this step's training windows: loss and gradients, Adam on every
    /// variable within its trust radius at the controller's rate, then the same batch's
    /// loss again; a step that raised it by more than `control::MAX_RISE` is undone
    /// (values and moments) and the rate shrinks. A non-finite loss or gradient leaves
    /// the variables untouched and is an error.
    pub fn step(
        &mut self,
        s: &TuneSetup,
        p: &Params,
        cfg: &TuneConfig,
        train: usize,
    ) -> Result<StepRecord> {
        let wins = batch_windows(cfg.seed, self.step, train, cfg.batch);
        let (lv, all) = Self::loss_on(s, p, &wins, true)?;
        let finite = lv.is_finite() && all.iter().flatten().all(|g| g.is_finite());
        if !finite {
            return Err(Error::Invalid(format!(
                "training diverged at step {} (loss {lv})",
                self.step + 1
            )));
        }
        let (x0, m0) = (values(&p.vars)?, self.moments.clone());
        let factor = self.control.rate * control::warmup(self.step);
        self.update(p, cfg, &all, factor)?;
        let (after, _) = Self::loss_on(s, p, &wins, false)?;
        let kept = self.control.judge(lv, after);
        match kept {
            true => self.updates += 1,
            false => {
                set_values(&p.vars, &x0)?;
                self.moments = m0;
            }
        }
        self.step += 1;
        Ok(StepRecord {
            step: self.step,
            loss: lv,
            loss_after: after,
            kept,
            rate: factor,
            validation_kl: None,
            seconds: 0.0,
        })
    }

    /// Adam on every variable with gradients `all`, at `factor` times each kind's rate.
    fn update(
        &mut self,
        p: &Params,
        cfg: &TuneConfig,
        all: &[Vec<f32>],
        factor: f32,
    ) -> Result<()> {
        let t = self.updates + 1;
        for ((k, v), g) in p.vars.iter().enumerate().zip(all) {
            let slot = p.slots[k];
            let mut x = v.flatten_all()?.to_vec1::<f32>()?;
            let lr = factor * rate(slot, cfg);
            let unit = self.units[k].as_deref();
            adam::step_scaled(&mut x, g, &mut self.moments[k], t, lr, bounds(slot), unit);
            v.set(&Tensor::from_vec(x, v.dims(), &Device::Cpu)?)?;
        }
        Ok(())
    }
}
