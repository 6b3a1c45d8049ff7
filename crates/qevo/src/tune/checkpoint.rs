//! Tune checkpoints: one safetensors file holding every trained variable, its Adam
//! moments and its value at the best step by validation (f32, exact), with the run's
//! identity, history and step controller as JSON metadata, written atomically. Resuming restores them bit for bit, so a resumed run gives the bytes an
//! uninterrupted one gives.

use super::adam::Moments;
use super::control::Control;
use super::StepRecord;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

const META_KEY: &str = "qevo_tune";

/// What a checkpoint must match to be resumed, and where the run stood.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    /// The run's settings by field: model, plan, rounding, texts and training settings
    /// (`tune::run_settings`); a resume must match each.
    pub identity: Vec<(String, String)>,
    pub step: usize,
    /// Adam's step count (kept steps).
    pub updates: u64,
    pub control: Control,
    /// The best step by validation so far and its KL (its values are `best.{k}`).
    pub best_step: usize,
    pub best_validation: f64,
    pub history: Vec<StepRecord>,
}

/// One trained variable's values, moments and values at the best step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VarState {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub moments: Moments,
    pub best: Vec<f32>,
}

/// Tensors saved per variable.
const PER_VAR: usize = 4;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the checkpoint atomically.
pub(crate) fn save(path: &Path, meta: &Meta, vars: &[VarState]) -> Result<()> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(vars.len() * PER_VAR);
    for (k, s) in vars.iter().enumerate() {
        owned.push((format!("var.{k}"), s.shape.clone(), f32_bytes(&s.values)));
        owned.push((format!("m.{k}"), s.shape.clone(), f32_bytes(&s.moments.m)));
        owned.push((format!("v.{k}"), s.shape.clone(), f32_bytes(&s.moments.v)));
        owned.push((format!("best.{k}"), s.shape.clone(), f32_bytes(&s.best)));
    }
    let views = owned
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(path, n, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(meta).map_err(|e| Error::format(path, e.to_string()))?;
    let data = safetensors::serialize(views, Some(HashMap::from([(META_KEY.into(), json)])))
        .map_err(|e| Error::format(path, e.to_string()))?;
    write_atomic(path, &data)
}

/// What `inspect` finds in a checkpoint: where its run stood.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSummary {
    /// Steps taken.
    pub step: usize,
    /// Trained variables it holds.
    pub variables: usize,
    /// The settings its run was started with, by field.
    pub settings: Vec<(String, String)>,
}

/// Reads and checks a tune checkpoint without the run it belongs to: the variables'
/// shapes are taken from the file itself (`var.0`, `var.1`, ...), then it is loaded and
/// checked as a resume would (every number finite, the history backing the step).
pub fn inspect(path: &Path) -> Result<CheckpointSummary> {
    crate::fsutil::check_regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    let shapes: Vec<Vec<usize>> = (0..st.len() / PER_VAR)
        .map_while(|k| {
            st.tensor(&format!("var.{k}"))
                .ok()
                .map(|t| t.shape().to_vec())
        })
        .collect();
    drop(st);
    let (meta, vars) = load(path, &shapes)?;
    Ok(CheckpointSummary {
        step: meta.step,
        variables: vars.len(),
        settings: meta.identity,
    })
}

/// Reads a checkpoint written by `save`; every tensor must be f32 with the shape of the
/// variable it restores (`shapes`, in order).
pub(crate) fn load(path: &Path, shapes: &[Vec<usize>]) -> Result<(Meta, Vec<VarState>)> {
    load_if(path, shapes, |_| Ok(()))
}

/// `load`, with `accept` judging the metadata before any tensor is read (a checkpoint of
/// another run is refused for its settings, not for its tensor count).
pub(crate) fn load_if(
    path: &Path,
    shapes: &[Vec<usize>],
    accept: impl FnOnce(&Meta) -> Result<()>,
) -> Result<(Meta, Vec<VarState>)> {
    crate::fsutil::check_regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            Error::format(
                path,
                format!("not a qevo tune checkpoint (no `{META_KEY}`)"),
            )
        })?;
    let meta: Meta = serde_json::from_str(json).map_err(|e| Error::format(path, e.to_string()))?;
    check_meta(path, &meta)?;
    accept(&meta)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    let read = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(&name)
            .map_err(|_| Error::tensor(path, &name, "missing"))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            return Err(Error::tensor(
                path,
                &name,
                format!("{:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape()),
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let vars = shapes
        .iter()
        .enumerate()
        .map(|(k, shape)| {
            Ok(VarState {
                shape: shape.clone(),
                values: read(format!("var.{k}"), shape)?,
                moments: Moments {
                    m: read(format!("m.{k}"), shape)?,
                    v: read(format!("v.{k}"), shape)?,
                },
                best: read(format!("best.{k}"), shape)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_values(path, &vars)?;
    if st.len() != shapes.len() * PER_VAR {
        return Err(Error::format(
            path,
            format!(
                "{} tensors, expected {} (another plan's checkpoint?)",
                st.len(),
                shapes.len() * PER_VAR
            ),
        ));
    }
    Ok((meta, vars))
}

/// The checkpoint's own numbers: every value, moment and best value finite (second
/// moments not negative).
fn check_values(path: &Path, vars: &[VarState]) -> Result<()> {
    for (k, s) in vars.iter().enumerate() {
        let lists = [
            ("var", &s.values),
            ("m", &s.moments.m),
            ("v", &s.moments.v),
            ("best", &s.best),
        ];
        for (name, list) in lists {
            let at = list
                .iter()
                .position(|x| !x.is_finite() || (name == "v" && *x < 0.0));
            if let Some(i) = at {
                let what = match name == "v" && list[i].is_finite() {
                    true => "negative",
                    false => "not finite",
                };
                return Err(Error::tensor(
                    path,
                    &format!("{name}.{k}"),
                    format!("element {i} is {} ({what})", list[i]),
                ));
            }
        }
    }
    Ok(())
}

/// The metadata's own numbers: one history record per step in order, the counters and
/// the best step within the steps taken, the best KL and the rate finite.
fn check_meta(path: &Path, meta: &Meta) -> Result<()> {
    let bad = |key: &str, msg: String| Err(Error::config(path, key, msg));
    if meta.history.len() != meta.step {
        return bad(
            "step",
            format!("{} but {} step records", meta.step, meta.history.len()),
        );
    }
    if let Some((i, r)) = meta
        .history
        .iter()
        .enumerate()
        .find(|(i, r)| r.step != i + 1)
    {
        return bad(
            "history",
            format!("record {i} is of step {}, expected {}", r.step, i + 1),
        );
    }
    if meta.updates > meta.step as u64 {
        return bad(
            "updates",
            format!("{} updates in {} steps", meta.updates, meta.step),
        );
    }
    if meta.best_step > meta.step {
        return bad(
            "best_step",
            format!("{} is past step {}", meta.best_step, meta.step),
        );
    }
    if !(meta.best_validation.is_finite() && meta.best_validation >= 0.0) {
        return bad(
            "best_validation",
            format!("{}: a KL is finite and not negative", meta.best_validation),
        );
    }
    if !(meta.control.rate.is_finite() && meta.control.rate > 0.0 && meta.control.rate <= 1.0) {
        return bad(
            "control.rate",
            format!("{}: a rate factor lies in (0, 1]", meta.control.rate),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_values_moments_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let vars = vec![VarState {
            shape: vec![2, 2],
            values: vec![0.1, -0.2, 1e-9, 3.0],
            moments: Moments {
                m: vec![1.0, 2.0, 3.0, 4.0],
                v: vec![0.5; 4],
            },
            best: vec![0.0, -0.1, 2e-9, 2.5],
        }];
        let meta = Meta {
            identity: vec![("model".into(), "abc".into())],
            step: 1,
            updates: 1,
            control: Control { rate: 0.625 },
            best_step: 1,
            best_validation: 0.125,
            history: vec![StepRecord {
                step: 1,
                loss: 0.25,
                loss_after: 0.5,
                kept: false,
                rate: 1.0,
                validation_kl: Some(0.3),
                seconds: 1.5,
            }],
        };
        save(&path, &meta, &vars).unwrap();
        let (m2, v2) = load(&path, &[vec![2, 2]]).unwrap();
        assert_eq!(m2, meta);
        assert_eq!(v2, vars);
        let err = load(&path, &[vec![4]]).unwrap_err().to_string();
        assert!(err.contains("var.0"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        let err = load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("x.safetensors"), "{err}");
    }
}
