//! The trainable view of a quantized plan: every GGML tensor becomes a function of its
//! block scales (`decode_op`) with one multiplicative correction per scale, and the
//! norms and biases become variables. `weights` builds the forward pass's weight set
//! from the current parameters; `finish` writes them back into standard block bytes.
//!
//! Scales are stored as f16, so the forward pass always uses the f16-rounded scale (the
//! value the file will hold), with the rounding passed straight through to the latent
//! f32 correction (a straight-through estimator): the model trained on is, after every
//! step, exactly representable. Codes stay as the plan's rounding chose them
//! (`Codes::Fixed`), or, for the 32-value legacy types, are re-derived from the FP
//! weights at the trained scales every step, rounding passed straight through
//! (`Codes::Rederive`).
//!
//! The integer sub-scales (and sub-mins) of the K-quants, iq4_xs and iq3_s are trained
//! too when asked (`sub_scales`): one latent f32 offset per sub-scale level, the forward
//! pass using the stored level plus the offset, rounded and clamped to the field's range
//! (the level the file will hold), the rounding and clamp passed straight through. The
//! op then decodes bytes whose sub-scale multipliers are all 1 and multiplies each
//! sub-block by `d · μ(s_j)` (and `dmin · t_j`), the products the type's decoder forms
//! (`quant::sub_scales`), so the trained model is still exactly the decoded file.

use super::decode_op::Dequant;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::plan::ResolvedPlan;
use crate::quant::scale_fields::{scale_fields, set_scales, stored_scales};
use crate::quant::sub_scales::{
    set_sub_scales, sub_scale_layout, sub_scales, with_unit_sub_scales, SubScaleLayout,
};
use crate::quant::{ggml, levels_of, write_levels, GgmlType, Levels, RoundingInputs};
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

/// What training does with the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Codes {
    /// Keep the codes (and sub-scales) the plan's rounding chose.
    #[default]
    Fixed,
    /// Legacy types (q4_0, q4_1, q5_0, q5_1, q8_0): round the FP weights at the trained
    /// scales every step; other types keep theirs.
    Rederive,
}

#[derive(Debug)]
enum Kind {
    /// A float type, or one without an f16 block scale: used as decoded.
    Frozen(Tensor),
    /// The blocks, decoded at the current scales, and the stored scales `[rows, blocks]`
    /// (and sub-scales, when they are trained).
    Scaled {
        op: Dequant,
        d0: Tensor,
        m0: Option<Tensor>,
        subs: Option<Subs>,
    },
    /// FP weights `[rows, blocks, 32]`, rounded at the current scales every step.
    Rederive {
        w: Tensor,
        levels: Levels,
        d0: Tensor,
        m0: Option<Tensor>,
    },
}

/// A tensor's stored sub-scale and sub-min levels `[rows, blocks, count]`.
#[derive(Debug)]
struct Subs {
    layout: SubScaleLayout,
    s0: Tensor,
    t0: Option<Tensor>,
}

impl Subs {
    fn new(
        t: GgmlType,
        bytes: &[u8],
        rows: usize,
        nb: usize,
        layout: SubScaleLayout,
    ) -> Result<Self> {
        let (s, m) = sub_scales(t, bytes, rows * nb * t.block_len())?;
        let shape = (rows, nb, layout.count);
        let f = |v: Vec<i32>| -> Result<Tensor> {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
        };
        Ok(Subs {
            layout,
            s0: f(s)?,
            t0: layout.min.map(|_| f(m)).transpose()?,
        })
    }
}

/// The levels `clamp(round(s0 + x))` with the rounding and the clamp passed
/// straight through to `x` (so a latent pushed past the range still feels its gradient
/// and can come back), or `s0 + x` unrounded, for gradient checks.
fn levels_at(s0: &Tensor, x: &Tensor, (lo, hi): (i32, i32), project: bool) -> Result<Tensor> {
    let u = (s0 + x)?;
    if !project {
        return Ok(u);
    }
    let r = u.round()?.clamp(lo as f32, hi as f32)?.detach();
    Ok((r + (&u - u.detach())?)?)
}

/// What training may change, and where each variable sits in `Params::vars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Tensor `i`'s block-scale correction (`1 + δ` multiplies `d`).
    Scale(usize),
    /// Tensor `i`'s min-scale correction.
    Min(usize),
    /// Tensor `i`'s sub-scale offsets (integer units).
    Sub(usize),
    /// Tensor `i`'s sub-min offsets (integer units).
    SubMin(usize),
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
    let data = model.weight_values(i)?;
    rounding.quantize_ggml(i, &model.tensors[i], &data, t)
}

/// A tensor trained through its block scales, and its sub-scales when `train_subs` and
/// the type has them.
fn scaled(t: GgmlType, bytes: &[u8], rows: usize, cols: usize, train_subs: bool) -> Result<Kind> {
    let (d, m) = stored_scales(t, bytes, rows * cols)?;
    let nb = cols / t.block_len();
    let dev = &Device::Cpu;
    let has_min = scale_fields(t).is_some_and(|f| f.min.is_some());
    let subs = match sub_scale_layout(t).filter(|_| train_subs) {
        Some(lay) => Some(Subs::new(t, bytes, rows, nb, lay)?),
        None => None,
    };
    let (op_bytes, sub_len) = match &subs {
        Some(sb) => (with_unit_sub_scales(t, bytes, rows * cols)?, sb.layout.len),
        None => (bytes.to_vec(), t.block_len()),
    };
    Ok(Kind::Scaled {
        op: Dequant {
            ty: t,
            rows,
            cols,
            bytes: std::sync::Arc::new(op_bytes),
            sub_len,
        },
        d0: Tensor::from_vec(d, (rows, nb), dev)?,
        m0: has_min
            .then(|| Tensor::from_vec(m, (rows, nb), dev))
            .transpose()?,
        subs,
    })
}

/// A legacy tensor whose codes follow its scales: the stored scales and the FP weights.
fn rederived(t: GgmlType, bytes: &[u8], w: &Tensor, levels: Levels) -> Result<Kind> {
    let (rows, cols) = w.dims2()?;
    let nb = cols / t.block_len();
    match scaled(t, bytes, rows, cols, false)? {
        Kind::Scaled { d0, m0, .. } => Ok(Kind::Rederive {
            w: w.reshape((rows, nb, t.block_len()))?,
            levels,
            d0,
            m0,
        }),
        other => Ok(other),
    }
}

/// Levels `clamp(round((w − m) / d + offset))`, and the same with the rounding passed
/// straight through (`d` of 0 divides as 1: such a block is all zeros).
fn levels(w: &Tensor, d: &Tensor, m: Option<&Tensor>, lv: Levels) -> Result<(Tensor, Tensor)> {
    let d_div = (d + d.eq(0f32)?.to_dtype(DType::F32)?)?;
    let shifted = match m {
        Some(m) => w.broadcast_sub(&m.unsqueeze(2)?)?,
        None => w.clone(),
    };
    let u = (shifted.broadcast_div(&d_div.unsqueeze(2)?)? + lv.offset as f64)?;
    let u = u.clamp(0f32, lv.top as f32)?;
    let r = u.round()?.detach();
    let ste = (&r + (&u - u.detach())?)?;
    Ok((r, ste))
}

impl QuantTensor {
    fn new(t: GgmlType, bytes: Vec<u8>, w: &Tensor, codes: Codes, subs: bool) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        let kind = match (scale_fields(t), codes, levels_of(t)) {
            (Some(_), Codes::Rederive, Some(lv)) => rederived(t, &bytes, w, lv)?,
            (Some(_), _, _) => scaled(t, &bytes, rows, cols, subs)?,
            (None, _, _) => Kind::Frozen(Tensor::from_vec(
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
            Kind::Scaled { d0, m0, .. } | Kind::Rederive { d0, m0, .. } => Some((d0, m0.as_ref())),
            Kind::Frozen(_) => None,
        }
    }

    /// The stored sub-scales, when they are trained.
    fn subs(&self) -> Option<&Subs> {
        match &self.kind {
            Kind::Scaled { subs, .. } => subs.as_ref(),
            _ => None,
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
    // `stored + (s − s)`: exactly the stored value, with the gradient of `s`.
    let stored = s.to_dtype(DType::F16)?.to_dtype(DType::F32)?.detach();
    Ok((stored + (&s - s.detach())?)?)
}

impl Params {
    /// The plan's tensors quantized with `rounding` (the bytes export would write) and
    /// the model's norms and biases, all as variables at their stored values; the
    /// sub-scales of the K-quants, iq4_xs and iq3_s too when `sub_scales`.
    pub fn new(
        model: &Model,
        plan: &ResolvedPlan,
        rounding: &RoundingInputs,
        train_aux: bool,
        codes: Codes,
        sub_scales: bool,
    ) -> Result<Params> {
        let aux = model.llama_aux_tensors().ok_or_else(|| {
            Error::unsupported(
                format!("{}: tune", model.source.display()),
                "supports the Llama family (llama, mistral, qwen2/3, gemma2/3, phi3)",
            )
        })?;
        let mut tensors = Vec::with_capacity(model.tensors.len());
        for (i, &t) in plan.types.iter().enumerate() {
            let bytes = quantize(model, i, t, rounding)?;
            tensors.push(QuantTensor::new(
                t,
                bytes,
                &model.weight_f32(i)?,
                codes,
                sub_scales,
            )?);
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
                self.vars
                    .push(Var::zeros(d0.dims(), DType::F32, &Device::Cpu)?);
                self.slots.push(Slot::Scale(i));
                if let Some(m0) = m0 {
                    self.vars
                        .push(Var::zeros(m0.dims(), DType::F32, &Device::Cpu)?);
                    self.slots.push(Slot::Min(i));
                }
            }
            if let Some(sb) = q.subs() {
                self.vars
                    .push(Var::zeros(sb.s0.dims(), DType::F32, &Device::Cpu)?);
                self.slots.push(Slot::Sub(i));
                if let Some(t0) = &sb.t0 {
                    self.vars
                        .push(Var::zeros(t0.dims(), DType::F32, &Device::Cpu)?);
                    self.slots.push(Slot::SubMin(i));
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

    /// Tensor `i`'s block and min scales `[rows, blocks]` at the current corrections:
    /// f16-rounded with the rounding passed straight through (`project`), or exact.
    fn scales(&self, i: usize, project: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let Some((d0, m0)) = self.tensors[i].stored() else {
            return Ok(None);
        };
        let at = |s0: &Tensor, slot| -> Result<Tensor> {
            match self.var_of(slot) {
                Some(v) => corrected(s0, v.as_tensor(), project),
                None => Ok(s0.clone()),
            }
        };
        let m = m0.map(|m0| at(m0, Slot::Min(i))).transpose()?;
        Ok(Some((at(d0, Slot::Scale(i))?, m)))
    }

    /// Tensor `i`'s sub-scale and sub-min levels `[rows, blocks, count]` at the current
    /// offsets (see `levels_at`), when they are trained.
    fn sub_levels(&self, i: usize, project: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let Some(sb) = self.tensors[i].subs() else {
            return Ok(None);
        };
        let at = |s0: &Tensor, slot, range| -> Result<Tensor> {
            match self.var_of(slot) {
                Some(v) => levels_at(s0, v.as_tensor(), range, project),
                None => Ok(s0.clone()),
            }
        };
        let s = at(&sb.s0, Slot::Sub(i), sb.layout.scale)?;
        let t = match (&sb.t0, sb.layout.min) {
            (Some(t0), Some(range)) => Some(at(t0, Slot::SubMin(i), range)?),
            _ => None,
        };
        Ok(Some((s, t)))
    }

    /// The op's scale pairs for tensor `i`: the block scales `d`, `m`, or, with trained
    /// sub-scales, the per-sub-block products `d · μ(s_j)`, `m · t_j`.
    fn run_scales(&self, i: usize, d: Tensor, m: Tensor, project: bool) -> Result<Tensor> {
        let (e, f) = match (self.sub_levels(i, project)?, self.tensors[i].subs()) {
            (Some((s, t)), Some(sb)) => {
                let mu = s.affine(sb.layout.step as f64, sb.layout.offset as f64)?;
                let e = d.unsqueeze(2)?.broadcast_mul(&mu)?;
                let f = match t {
                    Some(t) => m.unsqueeze(2)?.broadcast_mul(&t)?,
                    None => e.zeros_like()?,
                };
                (e, f)
            }
            _ => (d, m),
        };
        Ok(Tensor::stack(&[&e, &f], e.rank())?.reshape(((), 2))?)
    }

    /// The weight set for a forward pass at the current parameters.
    pub fn weights(&self, project: bool) -> Result<Vec<Tensor>> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let scales = self.scales(i, project)?;
                let w = match (&q.kind, scales) {
                    (Kind::Scaled { op, .. }, Some((d, m))) => {
                        let m = match m {
                            Some(m) => m,
                            None => d.zeros_like()?,
                        };
                        self.run_scales(i, d, m, project)?.apply_op1(op.clone())?
                    }
                    (Kind::Rederive { w, levels: lv, .. }, Some((d, m))) => {
                        let (_, ste) = levels(w, &d, m.as_ref(), *lv)?;
                        let v = (ste - lv.offset as f64)?.broadcast_mul(&d.unsqueeze(2)?)?;
                        match m {
                            Some(m) => v.broadcast_add(&m.unsqueeze(2)?)?,
                            None => v,
                        }
                    }
                    (Kind::Frozen(w), _) => return Ok(w.clone()),
                    _ => return Err(Error::Invalid(format!("tensor #{i} has no scales"))),
                };
                Ok(w.reshape((q.rows, q.cols))?)
            })
            .collect()
    }

    /// The block bytes at the current parameters: the scales rounded to f16 (the values
    /// training used) written into the plan's blocks, with re-derived codes rounded at
    /// exactly those scales.
    pub fn finish(&self) -> Result<Vec<Vec<u8>>> {
        let f16 =
            |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?) };
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let Some((d, m)) = self.scales(i, false)? else {
                    return Ok(q.bytes.clone());
                };
                let (d, m) = (f16(&d.detach())?, m.map(|m| f16(&m.detach())).transpose()?);
                let mut bytes = q.bytes.clone();
                let n = q.rows * q.cols;
                let mv = m.as_ref().map(flat).transpose()?.unwrap_or_default();
                set_scales(q.ty, &mut bytes, n, &flat(&d)?, &mv)?;
                if let Some((s, t)) = self.sub_levels(i, true)? {
                    let ints = |t: &Tensor| -> Result<Vec<i32>> {
                        Ok(flat(&t.detach())?.iter().map(|&v| v as i32).collect())
                    };
                    let tv = t.as_ref().map(ints).transpose()?.unwrap_or_default();
                    set_sub_scales(q.ty, &mut bytes, n, &ints(&s)?, &tv)?;
                }
                if let Kind::Rederive { w, levels: lv, .. } = &q.kind {
                    let (r, _) = levels(w, &d, m.as_ref(), *lv)?;
                    let r = flat(&r)?;
                    let (bl, bb) = (q.ty.block_len(), q.ty.block_bytes());
                    for (k, block) in bytes.chunks_exact_mut(bb).enumerate() {
                        let mut l = [0u8; 32];
                        for (x, &v) in l.iter_mut().zip(&r[k * bl..(k + 1) * bl]) {
                            *x = v as u8;
                        }
                        write_levels(q.ty, &l, block);
                    }
                }
                Ok(bytes)
            })
            .collect()
    }

    /// Per element of variable `k`, the size one unit of its rate moves it by: 1 for the
    /// scale corrections and sub-scale offsets (already relative, or in integer steps),
    /// and for a norm or bias its own magnitude, floored at a tenth of the tensor's RMS
    /// (so its near-zero elements can move too). A norm trained at an absolute rate moves
    /// a small-valued norm by far more than a large one: SmolLM2's first attention norm
    /// has median |w| 0.022, which an absolute 1e-3 per step moves by 4.5% a step.
    pub fn units(&self, k: usize) -> Result<Option<Vec<f32>>> {
        let Slot::Aux(j) = self.slots[k] else {
            return Ok(None);
        };
        let w0 = self.aux[j]
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let ms = w0.iter().map(|x| (x * x) as f64).sum::<f64>() / w0.len().max(1) as f64;
        let floor = (ms.sqrt() / 10.0) as f32;
        Ok(Some(w0.iter().map(|x| x.abs().max(floor)).collect()))
    }

    /// The norms and biases at the current parameters (trained ones as variables).
    pub fn aux(&self) -> Result<Vec<Tensor>> {
        Ok(self
            .aux
            .iter()
            .enumerate()
            .map(|(j, t)| match self.var_of(Slot::Aux(j)) {
                Some(v) => v.as_tensor().clone(),
                None => t.clone(),
            })
            .collect())
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
