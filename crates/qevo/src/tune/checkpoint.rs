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
    /// Identifies model, plan, rounding, texts and settings; see `tune::run_identity`.
    pub identity: String,
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

/// Reads a checkpoint written by `save`; every tensor must be f32 with the shape of the
/// variable it restores (`shapes`, in order).
pub(crate) fn load(path: &Path, shapes: &[Vec<usize>]) -> Result<(Meta, Vec<VarState>)> {
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
            identity: "abc".into(),
            step: 7,
            updates: 6,
            control: Control { rate: 0.625 },
            best_step: 5,
            best_validation: 0.125,
            history: vec![StepRecord {
                step: 7,
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
