//! The trainable view of a quantized plan: every GGML tensor becomes `d · A + m · B`
//! (`quant::scale_fields`) with one multiplicative correction per block scale, and the
//! norms and biases become variables. `weights` builds the forward pass's weight set
//! from the current parameters; `finish` writes them back into standard block bytes.
//!
//! Scales are stored as f16, so the forward pass always uses the f16-rounded scale (the
//! value the file will hold), with the rounding passed straight through to the latent
//! f32 correction (a straight-through estimator): the model trained on is, after every
//! step, exactly representable. Codes and sub-scales stay as the plan's rounding chose
//! them.

use crate::error::{Error, Result};
use crate::export::ResolvedPlan;
use crate::model::Model;
use crate::quant::scale_fields::{basis, scale_fields, set_scales};
use crate::quant::{ggml, GgmlType, RoundingInputs, WeightFormat};
use candle_core::{DType, Device, Tensor, Var};

/// One quantizable tensor as training sees it.
#[derive(Debug)]
pub(crate) struct QuantTensor {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The block bytes as the plan's rounding wrote them (qevo's row order).
    pub bytes: Vec<u8>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A float type, or one without an f16 block scale: used as decoded.
    Frozen(Tensor),
    /// `[rows, blocks, block_len]` parts and the stored scales `[rows, blocks]`.
    Scaled {
        a: Tensor,
        b: Option<Tensor>,
        d0: Tensor,
        m0: Option<Tensor>,
    },
}

/// What training may change, and where each variable sits in `Params::vars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Tensor `i`'s block-scale correction (`1 + δ` multiplies `d`).
    Scale(usize),
    /// Tensor `i`'s min-scale correction.
    Min(usize),
    /// Non-quantized tensor `j` of `Model::llama_aux_tensors` (trained directly).
    Aux(usize),
}

/// The plan's tensors, the norms, and the variables training updates.
pub(crate) struct Params {
    pub tensors: Vec<QuantTensor>,
    pub aux_names: Vec<String>,
    aux: Vec<Tensor>,
    pub vars: Vec<Var>,
    pub slots: Vec<Slot>,
}

/// Quantizes tensor `i` exactly as export and the search do.
fn quantize(model: &Model, i: usize, t: GgmlType, rounding: &RoundingInputs) -> Result<Vec<u8>> {
    let info = &model.tensors[i];
    let data = model.weights[i].flatten_all()?.to_vec1::<f32>()?;
    Ok(WeightFormat::Ggml(t)
        .quantize_rounded(
            &info.name,
            &data,
            info.rows,
            info.cols,
            rounding.for_tensor(i),
        )?
        .bytes)
}

fn scaled(t: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Kind> {
    let bs = basis(t, bytes, rows * cols)?;
    let (bl, nb) = (t.block_len(), cols / t.block_len());
    let dev = &Device::Cpu;
    let parts = |v: Vec<f32>| Tensor::from_vec(v, (rows, nb, bl), dev);
    let has_min = !bs.b.is_empty();
    Ok(Kind::Scaled {
        a: parts(bs.a)?,
        b: has_min.then(|| parts(bs.b)).transpose()?,
        d0: Tensor::from_vec(bs.d, (rows, nb), dev)?,
        m0: has_min
            .then(|| Tensor::from_vec(bs.min, (rows, nb), dev))
            .transpose()?,
    })
}

impl QuantTensor {
    fn new(t: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        let kind = match scale_fields(t) {
            Some(_) => scaled(t, &bytes, rows, cols)?,
            None => Kind::Frozen(Tensor::from_vec(
                ggml::dequantize(t, &bytes, rows * cols)?,
                (rows, cols),
                &Device::Cpu,
            )?),
        };
        Ok(QuantTensor {
            ty: t,
            rows,
            cols,
            bytes,
            kind,
        })
    }

    /// The stored scales `[rows, blocks]` (block scale, then min scale where there is one).
    fn stored(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        match &self.kind {
            Kind::Scaled { d0, m0, .. } => Some((d0, m0.as_ref())),
            Kind::Frozen(_) => None,
        }
    }
}

/// `s · (1 + δ)` rounded to f16 as the file stores it, with the rounding passed straight
/// through to `δ` (or not rounded at all, for gradient checks).
fn corrected(s0: &Tensor, delta: &Tensor, project: bool) -> Result<Tensor> {
    let s = s0.mul(&(delta + 1.0)?)?;
    if !project {
        return Ok(s);
    }
    let stored = s.to_dtype(DType::F16)?.to_dtype(DType::F32)?.detach();
    Ok((&s + (stored - s.detach())?)?)
}

impl Params {
    /// The plan's tensors quantized with `rounding` (the bytes export would write) and
    /// the model's norms and biases, all as variables at their stored values.
    pub fn new(
        model: &Model,
        plan: &ResolvedPlan,
        rounding: &RoundingInputs,
        train_aux: bool,
    ) -> Result<Params> {
        let aux = model.llama_aux_tensors().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: tune supports the Llama family (llama, mistral, qwen2/3, gemma2/3, phi3)",
                model.source.display()
            ))
        })?;
        let mut tensors = Vec::with_capacity(model.tensors.len());
        for (i, &t) in plan.types.iter().enumerate() {
            let info = &model.tensors[i];
            let bytes = quantize(model, i, t, rounding)?;
            tensors.push(QuantTensor::new(t, bytes, info.rows, info.cols)?);
        }
        let mut p = Params {
            tensors,
            aux_names: aux.iter().map(|(n, _)| n.clone()).collect(),
            aux: aux.iter().map(|(_, t)| t.clone()).collect(),
            vars: Vec::new(),
            slots: Vec::new(),
        };
        p.add_vars(train_aux)?;
        Ok(p)
    }

    fn add_vars(&mut self, train_aux: bool) -> Result<()> {
        for (i, q) in self.tensors.iter().enumerate() {
            if let Some((d0, m0)) = q.stored() {
                self.vars.push(Var::zeros(d0.dims(), DType::F32, &Device::Cpu)?);
                self.slots.push(Slot::Scale(i));
                if let Some(m0) = m0 {
                    self.vars.push(Var::zeros(m0.dims(), DType::F32, &Device::Cpu)?);
                    self.slots.push(Slot::Min(i));
                }
            }
        }
        if train_aux {
            for (j, t) in self.aux.iter().enumerate() {
                self.vars.push(Var::from_tensor(&t.to_dtype(DType::F32)?)?);
                self.slots.push(Slot::Aux(j));
            }
        }
        Ok(())
    }

    fn var_of(&self, slot: Slot) -> Option<&Var> {
        self.slots
            .iter()
            .position(|&s| s == slot)
            .map(|k| &self.vars[k])
    }

    /// The weight set for a forward pass at the current parameters.
    pub fn weights(&self, project: bool) -> Result<Vec<Tensor>> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, q)| match &q.kind {
                Kind::Frozen(w) => Ok(w.clone()),
                Kind::Scaled { a, b, d0, m0 } => {
                    let delta = |s| self.var_of(s).map(|v| v.as_tensor().clone());
                    let d = match delta(Slot::Scale(i)) {
                        Some(v) => corrected(d0, &v, project)?,
                        None => d0.clone(),
                    };
                    let mut w = a.broadcast_mul(&d.unsqueeze(2)?)?;
                    if let (Some(b), Some(m0)) = (b, m0) {
                        let m = match delta(Slot::Min(i)) {
                            Some(v) => corrected(m0, &v, project)?,
                            None => m0.clone(),
                        };
                        w = (w + b.broadcast_mul(&m.unsqueeze(2)?)?)?;
                    }
                    Ok(w.reshape((q.rows, q.cols))?)
                }
            })
            .collect()
    }

    /// The norms and biases at the current parameters (trained ones as variables).
    pub fn aux(&self) -> Vec<Tensor> {
        self.aux
            .iter()
            .enumerate()
            .map(|(j, t)| match self.var_of(Slot::Aux(j)) {
                Some(v) => v.as_tensor().clone(),
                None => t.clone(),
            })
            .collect()
    }

    /// The block bytes at the current parameters: the plan's codes with the trained
    /// scales written in (rounded to f16, the value training used).
    pub fn finish(&self) -> Result<Vec<Vec<u8>>> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let Some((d0, m0)) = q.stored() else {
                    return Ok(q.bytes.clone());
                };
                let value = |s0: &Tensor, slot| -> Result<Vec<f32>> {
                    let s = match self.var_of(slot) {
                        Some(v) => s0.mul(&(v.as_tensor() + 1.0)?)?,
                        None => s0.clone(),
                    };
                    Ok(s.flatten_all()?.to_vec1::<f32>()?)
                };
                let d = value(d0, Slot::Scale(i))?;
                let m = match m0 {
                    Some(m0) => value(m0, Slot::Min(i))?,
                    None => Vec::new(),
                };
                let mut bytes = q.bytes.clone();
                set_scales(q.ty, &mut bytes, q.rows * q.cols, &d, &m)?;
                Ok(bytes)
            })
            .collect()
    }
}

/// Decodes finished block bytes into the weight set the file holds, through the
/// standard dequantizer (what scoring and llama.cpp see).
pub(crate) fn decode(params: &Params, bytes: &[Vec<u8>]) -> Result<Vec<Tensor>> {
    params
        .tensors
        .iter()
        .zip(bytes)
        .map(|(q, b)| {
            let v = ggml::dequantize(q.ty, b, q.rows * q.cols)?;
            Ok(Tensor::from_vec(v, (q.rows, q.cols), &Device::Cpu)?)
        })
        .collect()
}
