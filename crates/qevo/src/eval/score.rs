//! `score_plan`: one plan scored against the FP model on a text, the one way every front
//! end does it (`qevo quantize`, `qevo eval --plan`, `qevo.quantize`), so they report the
//! same KL for the same options. The options are a serde record whose fields are the
//! CLI's flags and the Python keywords.
//!
//! Weights go through the weight cache as in a search. Activations are quantized with
//! ranges calibrated on the calibration text. GGML types round with the importance
//! matrix asked for, and with output rounding when asked for or when a saved plan was
//! scored with it (its own record then rebuilds the input moments, so the re-score sees
//! the scored bytes).

use super::{auto_topk, Metrics, Reference, TokenWindows};
use crate::calib::{
    calibrate_act_ranges, collect_hessians, collect_imatrix, ActQuantHook, ActScheme, Imatrix,
    ScoredWith,
};
use crate::error::{Error, Result};
use crate::eval::{block_working_set, PlanWeights, WeightCache};
use crate::model::{Model, NoHook};
use crate::plan::TensorPlan;
use crate::quant::gptq::DEFAULT_DAMP;
use crate::quant::{RoundingInputs, RoundingMode, WeightFormat};
use std::path::PathBuf;

/// Tokens per window when `seq_len` is not given (capped by the model's positions).
pub const DEFAULT_SEQ_LEN: usize = 256;
/// Most windows scored when `max_windows` is not given.
pub const DEFAULT_MAX_WINDOWS: usize = 64;
/// Distribution entries kept per position at most (`auto_topk`'s cap).
const MAX_TOPK: usize = 64;

/// How a plan is scored; a field left out takes its default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreOptions {
    /// The text scored on (None: the embedded held-out split).
    pub text: Option<String>,
    /// The calibration text of activation ranges, a collected importance matrix and
    /// output rounding (None: the embedded calibration split).
    pub calib: Option<String>,
    /// Tokens per window (None: `DEFAULT_SEQ_LEN`, or the model's positions if fewer).
    pub seq_len: Option<usize>,
    /// Most windows of each text.
    pub max_windows: usize,
    /// Symmetric activation quantization (default asymmetric, as the search uses).
    pub act_sym: bool,
    /// Calibrate activation ranges at this percentile instead of min/max.
    pub act_percentile: Option<f64>,
    /// Round GGML types with an importance matrix collected on the calibration text.
    pub imatrix: bool,
    /// Round them with this importance matrix (a llama-imatrix or qevo file) instead.
    pub imatrix_file: Option<PathBuf>,
    /// How GGML block types round (a plan scored with output rounding always uses its own).
    pub rounding: RoundingMode,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            text: None,
            calib: None,
            seq_len: None,
            max_windows: DEFAULT_MAX_WINDOWS,
            act_sym: false,
            act_percentile: None,
            imatrix: false,
            imatrix_file: None,
            rounding: RoundingMode::Block,
        }
    }
}

impl ScoreOptions {
    /// The window length on `model`.
    pub fn seq_len(&self, model: &Model) -> usize {
        self.seq_len
            .unwrap_or_else(|| DEFAULT_SEQ_LEN.min(model.arch.max_positions()))
    }

    /// The activation scheme.
    pub fn act_scheme(&self) -> ActScheme {
        match self.act_sym {
            true => ActScheme::Sym,
            false => ActScheme::Asym,
        }
    }
}

/// A scored plan, with what it was scored with.
pub struct PlanScore {
    pub metrics: Metrics,
    /// The FP model's own scores on the same windows (its perplexity).
    pub fp: Metrics,
    pub seq_len: usize,
    pub windows: usize,
    /// Whether any activation was quantized (and with which scheme).
    pub quantized_acts: bool,
    pub act_scheme: ActScheme,
    /// Whether GGML types rounded with output rounding.
    pub output_rounding: bool,
    /// The importance matrix GGML types rounded with.
    pub imatrix: Option<Imatrix>,
    /// The plan's weights as the score drew them (see `weights`).
    cache: WeightCache,
    formats: Vec<WeightFormat>,
}

impl PlanScore {
    /// The plan's dequantized weights (for an encoder's k-NN check), made block by block
    /// as a forward pass uses them, with the rounding the score used.
    pub fn weights<'a>(&'a self, model: &'a Model) -> Result<PlanWeights<'a>> {
        PlanWeights::new(&self.cache, model, self.formats.clone())
    }
}

/// Scores `plan` against the FP model: see the module doc. `scored`: what a saved plan
/// says it was scored with (`ScoredWith::default()` for a new plan).
pub fn score_plan(
    model: &Model,
    plan: &TensorPlan,
    scored: &ScoredWith,
    opts: &ScoreOptions,
) -> Result<PlanScore> {
    // A given file is read (and checked against the model) before any forward pass, so
    // a bad file fails at once.
    let file_imatrix = opts
        .imatrix_file
        .as_deref()
        .map(Imatrix::read)
        .transpose()?;
    if let Some(im) = &file_imatrix {
        im.for_model(model)?;
    }
    let seq = opts.seq_len(model);
    let text = opts.text.as_deref().unwrap_or(crate::assets::HELDOUT_TEXT);
    let windows = cut(model, text, seq, opts.max_windows, "evaluation text")?;
    let k = auto_topk(model.arch.vocab(), windows.tokens(), MAX_TOPK);
    let reference = Reference::build(model, windows, k)?;
    let act_bits = plan.act_bits(model)?;
    let quantized_acts = act_bits.iter().any(|&b| b < 16);
    let output_rounding = opts.rounding == RoundingMode::Output || scored.rounding.is_some();
    // Only output rounding asked of a plan without its own record collects moments.
    let fresh_moments = output_rounding && scored.rounding.is_none();
    let calib = match opts.imatrix || quantized_acts || fresh_moments {
        true => {
            let t = opts.calib.as_deref().unwrap_or(crate::assets::CALIB_TEXT);
            Some(cut(model, t, seq, opts.max_windows, "calibration text")?)
        }
        false => None,
    };
    let imatrix = match (file_imatrix, &calib) {
        (Some(im), _) => Some(im),
        (None, Some(c)) if opts.imatrix => Some(collect_imatrix(model, c)?),
        _ => None,
    };
    let fresh = calib.as_ref().filter(|_| fresh_moments);
    let rounding = rounding_inputs(model, imatrix.as_ref(), scored, fresh)?;
    // A decoder's plan weights are made block by block as the forward pass reaches them,
    // in a cache that holds one block's (or the embedding's or output's) at a time: never
    // the whole model dequantized; the same sums as scoring the whole weight set. An
    // encoder (small) keeps them all: its k-NN check runs one forward per text.
    let formats: Vec<WeightFormat> = plan.per_tensor(model)?.iter().map(|c| c.format).collect();
    let budget = match model.arch.is_decoder() {
        true => block_working_set(model),
        false => usize::MAX,
    };
    let cache = WeightCache::new(budget).with_rounding(rounding);
    let weights = PlanWeights::new(&cache, model, formats.clone())?;
    let scheme = opts.act_scheme();
    let metrics = match &calib {
        Some(c) if quantized_acts => {
            let ranges = calibrate_act_ranges(model, c, opts.act_percentile)?;
            let hook = ActQuantHook::new(&ranges, act_bits, scheme);
            reference.score_weights(model, &weights, &hook)?
        }
        _ => reference.score_weights(model, &weights, &NoHook)?,
    };
    Ok(PlanScore {
        metrics,
        fp: reference.fp,
        seq_len: seq,
        windows: reference.windows.len(),
        quantized_acts,
        act_scheme: scheme,
        output_rounding,
        imatrix,
        cache,
        formats,
    })
}

/// `text` cut into windows; a text too short is named by `what`.
fn cut(model: &Model, text: &str, seq: usize, n: usize, what: &str) -> Result<TokenWindows> {
    TokenWindows::from_text(model, text, seq, n).map_err(|e| match e {
        Error::TextTooShort { tokens, needed, .. } => Error::TextTooShort {
            what: what.to_string(),
            tokens,
            needed,
        },
        e => e,
    })
}

/// The plan's rounding: its recorded moments, or moments collected on `fresh` windows.
fn rounding_inputs(
    model: &Model,
    imatrix: Option<&Imatrix>,
    scored: &ScoredWith,
    fresh: Option<&TokenWindows>,
) -> Result<RoundingInputs> {
    let mut inputs = RoundingInputs::for_model(model, imatrix, scored.rounding.as_ref())?;
    if let Some(w) = fresh {
        inputs.moments = collect_hessians(model, w, DEFAULT_DAMP)?;
    }
    Ok(inputs)
}
