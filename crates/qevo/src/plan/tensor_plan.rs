//! `TensorPlan`: the (weight format, activation bits) chosen for every quantizable tensor
//! of a model, its exact size, what each tensor is actually written as (GGML fallbacks,
//! through `WeightFormat::resolve`), and its validation against the model.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::{Resolved, WeightFormat};
use std::collections::HashMap;

/// Activation widths: 4 or 8 bits fake-quantize a linear layer's input, 16 leaves it alone.
pub const ACT_BITS: [u8; 3] = [4, 8, 16];

/// What one tensor becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TensorChoice {
    pub format: WeightFormat,
    /// 4, 8 or 16 (= no activation quantization).
    pub act_bits: u8,
}

/// One choice per quantizable tensor, by GGUF tensor name.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TensorPlan {
    pub entries: Vec<(String, TensorChoice)>,
}

impl TensorPlan {
    /// Every tensor in `format` with `act_bits`; fails if the format fits no tensor shape.
    pub fn uniform(model: &Model, format: WeightFormat, act_bits: u8) -> Result<TensorPlan> {
        let plan = TensorPlan {
            entries: model
                .tensors
                .iter()
                .map(|t| (t.name.clone(), TensorChoice { format, act_bits }))
                .collect(),
        };
        plan.validate(model)?;
        Ok(plan)
    }

    /// Every tensor must appear exactly once, be known to the model, and get a format that
    /// applies to its shape and an activation width in `ACT_BITS`.
    pub fn validate(&self, model: &Model) -> Result<()> {
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for (name, c) in &self.entries {
            let Some(i) = model.tensor_index(name) else {
                return Err(Error::tensor(
                    &model.source,
                    name,
                    "plan names a tensor the model does not have",
                ));
            };
            if seen.insert(name.as_str(), ()).is_some() {
                return Err(Error::tensor(
                    &model.source,
                    name,
                    "plan lists this tensor twice",
                ));
            }
            let t = &model.tensors[i];
            c.format
                .resolve(t.rows, t.cols)
                .map_err(|e| Error::tensor(&model.source, name, e.to_string()))?;
            if !c.format.can_quantize() {
                return Err(Error::tensor(
                    &model.source,
                    name,
                    format!("qevo can read {} but not quantize to it yet", c.format),
                ));
            }
            if !ACT_BITS.contains(&c.act_bits) {
                return Err(Error::tensor(
                    &model.source,
                    name,
                    format!("activation bits {} (allowed: 4, 8, 16)", c.act_bits),
                ));
            }
        }
        if let Some(t) = model
            .tensors
            .iter()
            .find(|t| !seen.contains_key(t.name.as_str()))
        {
            return Err(Error::tensor(
                &model.source,
                &t.name,
                "plan has no entry for this tensor",
            ));
        }
        Ok(())
    }

    /// Exact bytes of all quantizable tensors in the formats actually written
    /// (`plan::tensor_bytes`: after any GGML fallback); entries naming no tensor of the
    /// model count nothing.
    pub fn size_bytes(&self, model: &Model) -> u64 {
        self.entries
            .iter()
            .filter_map(|(name, c)| {
                let t = &model.tensors[model.tensor_index(name)?];
                Some(super::tensor_bytes(c.format, t.rows, t.cols))
            })
            .sum()
    }

    /// Mean bits per quantizable weight.
    pub fn bits_per_weight(&self, model: &Model) -> f64 {
        let params: usize = model.tensors.iter().map(|t| t.params()).sum();
        self.size_bytes(model) as f64 * 8.0 / params.max(1) as f64
    }

    pub fn choice(&self, tensor_name: &str) -> Option<&TensorChoice> {
        self.entries
            .iter()
            .find(|(n, _)| n == tensor_name)
            .map(|(_, c)| c)
    }

    /// Choices in `model.tensors` order (after `validate`).
    pub fn per_tensor(&self, model: &Model) -> Result<Vec<TensorChoice>> {
        self.validate(model)?;
        let by_name: HashMap<&str, &TensorChoice> =
            self.entries.iter().map(|(n, c)| (n.as_str(), c)).collect();
        Ok(model
            .tensors
            .iter()
            .map(|t| *by_name[t.name.as_str()])
            .collect())
    }

    /// What each tensor is written as, in `model.tensors` order (after `validate`): the
    /// planned format and, where a GGML type's block does not divide the row, the
    /// llama.cpp fallback actually written (`Resolved::fell_back`).
    pub fn resolved(&self, model: &Model) -> Result<Vec<Resolved>> {
        self.per_tensor(model)?
            .iter()
            .zip(&model.tensors)
            .map(|(c, t)| c.format.resolve(t.rows, t.cols))
            .collect()
    }

    /// The tensors written as llama.cpp's fallback for their planned format (a GGML
    /// type whose block does not divide the row), each with what is planned and written,
    /// in `model.tensors` order.
    pub fn fallbacks(&self, model: &Model) -> Result<Vec<(String, Resolved)>> {
        Ok(self
            .resolved(model)?
            .into_iter()
            .zip(&model.tensors)
            .filter(|(r, _)| r.fell_back())
            .map(|(r, t)| (t.name.clone(), r))
            .collect())
    }

    /// Activation bits per tensor index, for `ActQuantHook::new`.
    pub fn act_bits(&self, model: &Model) -> Result<Vec<u8>> {
        Ok(self.per_tensor(model)?.iter().map(|c| c.act_bits).collect())
    }
}
