//! The training loss: mean KL(FP ‖ quantized) over a batch of calibration windows, with
//! the FP side taken from the evaluator's `Reference` (top-k log-probabilities plus the
//! tail's mass), so it is the same quantity the search scores, as a differentiable
//! candle expression.

use crate::error::Result;
use crate::eval::Reference;
use crate::model::{Dense, Model, NoHook};
use candle_core::{Device, Tensor, D};

/// `log_softmax` over the last axis with the max shift outside the graph (it cancels
/// exactly, so its gradient would be noise).
fn log_softmax(z: &Tensor) -> Result<Tensor> {
    let shifted = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// The FP targets of the given windows, stacked: ids `[n, k]`, log-probs `[n, k]`, tail
/// log-mass `[n]`.
fn targets(reference: &Reference, windows: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
    let (mut ids, mut lps, mut tails) = (Vec::new(), Vec::new(), Vec::new());
    for &w in windows {
        let (i, l, t) = reference.targets(w)?;
        ids.extend_from_slice(i);
        lps.extend_from_slice(l);
        tails.extend_from_slice(t);
    }
    let (n, k) = (tails.len(), reference.k);
    let dev = &Device::Cpu;
    Ok((
        Tensor::from_vec(ids, (n, k), dev)?,
        Tensor::from_vec(lps, (n, k), dev)?,
        Tensor::from_vec(tails, n, dev)?,
    ))
}

/// Mean KL(P ‖ Q) per position between the reference and `logits` (`[n, vocab]`); the
/// tail term applies when the reference keeps fewer than all tokens.
pub(crate) fn kl_to_reference(
    reference: &Reference,
    windows: &[usize],
    logits: &Tensor,
) -> Result<Tensor> {
    let (ids, lp, tail) = targets(reference, windows)?;
    let lq_all = log_softmax(logits)?;
    let lq = lq_all.gather(&ids, 1)?;
    let p = lp.exp()?;
    let mut kl = (&p * (&lp - &lq)?)?.sum(1)?;
    if reference.k < logits.dim(1)? {
        let q_tail = (1.0 - lq.exp()?.sum(1)?)?.maximum(1e-30)?;
        kl = (kl + (tail.exp()? * (tail - q_tail.log()?)?)?)?;
    }
    Ok(kl.mean_all()?)
}

/// The loss of `model` (with its own norms) under weights `w` on `windows` of the
/// reference.
pub(crate) fn batch_loss(
    model: &Model,
    w: &[Tensor],
    reference: &Reference,
    windows: &[usize],
) -> Result<Tensor> {
    let t = reference.windows.seq_len;
    let ids: Vec<u32> = windows
        .iter()
        .flat_map(|&i| reference.windows.ids[i * t..(i + 1) * t].iter().copied())
        .collect();
    let ids = Tensor::from_vec(ids, (windows.len(), t), &Device::Cpu)?;
    let logits = model.forward_with(&Dense(w), &NoHook, &ids)?;
    let vocab = logits.dim(2)?;
    kl_to_reference(reference, windows, &logits.reshape(((), vocab))?)
}
