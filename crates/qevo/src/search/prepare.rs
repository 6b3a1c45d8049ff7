//! Stage 1, `prepare`: everything a search scores against, built once. Calibration and
//! held-out token windows, activation ranges on the calibration text, the FP model's
//! reference distributions on both, the evaluator with its caches, the search space, and
//! the FP model's cost on the target.

use super::config::Importance;
use super::memory::{search_memory, MemoryShape};
use super::space::SearchSpace;
use super::{FpCost, SearchConfig};
use crate::calib::TokenWindows;
use crate::calib::{calibrate_act_ranges, collect_imatrix, ActRanges, Imatrix, OutputRounding};
use crate::error::{Error, Result};
use crate::eval::head::SAMPLE_ROWS;
use crate::eval::WeightCache;
use crate::eval::{auto_topk, prefix_stride, Evaluator, Reference};
use crate::model::Model;
use crate::plan::{fp_bytes, fp_choices, price, UserLimits};
use crate::quant::gptq::DEFAULT_DAMP;
use crate::quant::{RoundingInputs, RoundingMode};

/// What every later stage scores against.
pub struct Prepared<'m> {
    pub model: &'m Model,
    pub evaluator: Evaluator<'m>,
    /// The FP distributions on the held-out windows.
    pub heldout: Reference,
    /// The FP distributions on the validation slice (calibration text after the
    /// calibration windows; None when `data.validation_windows` is 0).
    pub validation: Option<Reference>,
    pub space: SearchSpace,
    pub fp: FpCost,
    /// Calibration windows of a screening score (a prefix of the full set).
    pub screen_windows: usize,
    /// Calibration windows of a full score.
    pub full_windows: usize,
    /// The importance matrix GGML types are quantized with (`data.imatrix`).
    pub imatrix: Option<Imatrix>,
    /// The record of output rounding (`data.rounding`), for the plan files.
    pub rounding: Option<OutputRounding>,
}

/// The machine's available memory before `model` was loaded (what a default budget is
/// capped by): available now plus what its held weights took (mapped ones take none).
fn loaded_available(model: &Model) -> Option<u64> {
    crate::mem::available_bytes().map(|a| a + model.held_weight_bytes() as u64)
}

/// Cuts the calibration text's windows into the calibration windows and the validation
/// slice after them. A text too short for both keeps at least one window for each
/// (calibration first); a text of one window cannot hold a validation slice.
fn split_validation(
    text: TokenWindows,
    calib: usize,
    validation: usize,
) -> Result<(TokenWindows, Option<TokenWindows>)> {
    if validation == 0 {
        return Ok((text, None));
    }
    if text.len() < 2 {
        return Err(Error::TextTooShort {
            what: "calibration text".into(),
            tokens: text.tokens(),
            needed: format!(
                "2 windows of {} tokens: calibration and a validation slice (or no validation windows)",
                text.seq_len
            ),
        });
    }
    let n_calib = calib.min(text.len() - 1);
    Ok((text.take(n_calib), Some(text.skip(n_calib))))
}

/// Builds windows, references, evaluator, space and FP cost for `cfg`; a memory budget
/// (`cfg.caches.max_memory`) the run cannot fit is refused before any forward pass.
pub fn prepare<'m>(
    model: &'m Model,
    calib_text: &str,
    heldout_text: &str,
    cfg: &SearchConfig,
) -> Result<Prepared<'m>> {
    let memory = search_memory(
        &MemoryShape::of_model(model),
        cfg,
        cfg.caches.max_memory,
        loaded_available(model),
    )?;
    let seq = cfg.data.seq_len;
    let windows = |text: &str, n: usize, what: &str| {
        TokenWindows::from_text(model, text, seq, n).map_err(|e| match e {
            Error::TextTooShort { tokens, needed, .. } => Error::TextTooShort {
                what: format!("{what} text"),
                tokens,
                needed,
            },
            e => e,
        })
    };
    let d = &cfg.data;
    let text = windows(
        calib_text,
        d.calib_windows + d.validation_windows,
        "calibration",
    )?;
    let (calib, validation) = split_validation(text, d.calib_windows, d.validation_windows)?;
    let heldout = windows(heldout_text, cfg.data.heldout_windows, "held-out")?;
    let full_windows = calib.len();
    let screen_windows = cfg.data.screen_windows.clamp(1, full_windows);
    // A weights-only space never reads activation ranges: no forward pass for them.
    let ranges = match cfg.space.weights_only() {
        true => ActRanges {
            ranges: vec![None; model.tensors.len()],
            percentile: cfg.space.act_percentile,
        },
        false => calibrate_act_ranges(model, &calib, cfg.space.act_percentile)?,
    };
    let imatrix = match &cfg.data.imatrix {
        Importance::None => None,
        Importance::Collect => Some(collect_imatrix(model, &calib)?),
        Importance::File(path) => Some(Imatrix::read(path)?),
    };
    let rounding = match cfg.data.rounding {
        RoundingMode::Block => None,
        RoundingMode::Output => Some(OutputRounding::new(&calib, DEFAULT_DAMP)),
    };
    let inputs = RoundingInputs::for_model(model, imatrix.as_ref(), rounding.as_ref())?;
    // A tensor with input moments weights its blocks by them, importance matrix or not.
    let has_importance: Vec<bool> = (0..model.tensors.len())
        .map(|i| {
            inputs.for_tensor(i).imatrix().is_some()
                || inputs.moments.get(i).is_some_and(Option::is_some)
        })
        .collect();
    // Each worker's plan holds its current block dequantized (`PlanWeights`): the smallest
    // cache that works is those working sets; the cache of block bytes gets the rest.
    let bytes_budget = memory.weight_cache.saturating_sub(memory.min_weight_cache);
    let weights = WeightCache::new(bytes_budget as usize).with_rounding(inputs);
    let k_for = |w: &TokenWindows| match cfg.data.topk {
        0 => auto_topk(model.arch.vocab(), w.tokens(), 64),
        k => k,
    };
    let (k_calib, k_heldout) = (k_for(&calib), k_for(&heldout));
    let reference = match cfg.data.head.sampled(model, k_calib) {
        true => Reference::build_sampled(model, calib, k_calib, SAMPLE_ROWS)?,
        false => Reference::build(model, calib, k_calib)?,
    };
    let heldout = Reference::build(model, heldout, k_heldout)?;
    // The calibration windows' k, so a validation score is the same kind of KL.
    let validation = validation
        .map(|v| Reference::build(model, v, k_calib))
        .transpose()?;
    let prefix_bytes = match cfg.caches.enabled {
        true => cfg.caches.prefix_cache_bytes,
        false => 0,
    };
    // Room for the states of two populations: the parents the next offspring share
    // prefixes with, and the offspring that replace them.
    let stride = prefix_stride(
        model,
        full_windows,
        seq,
        2 * cfg.evolution.population,
        prefix_bytes,
    );
    let evaluator = Evaluator::new(
        model,
        reference,
        weights,
        ranges,
        cfg.space.act_scheme,
        prefix_bytes,
    )
    .with_screen(screen_windows)
    .with_prefix_stride(stride);
    let space = SearchSpace::new(model, &cfg.space, &cfg.target, &has_importance)?;
    let fp_price = price(
        model,
        &fp_choices(model),
        &cfg.target,
        &cfg.workload,
        &UserLimits::default(),
        None,
    )?;
    let fp = FpCost {
        size_bytes: fp_bytes(model),
        latency_ms: fp_price.cost.latency_ms,
        energy_mj: fp_price.cost.energy_mj,
        peak_memory_bytes: fp_price.cost.peak_memory_bytes,
        ppl: evaluator.reference.fp.ppl,
        heldout_ppl: heldout.fp.ppl,
    };
    Ok(Prepared {
        model,
        evaluator,
        heldout,
        validation,
        space,
        fp,
        screen_windows,
        full_windows,
        imatrix,
        rounding,
    })
}
