//! Evolution with training (the `tune_front` setting, K plans): after the search, the K
//! front plans nearest the recommended size are tuned (`tune`) on the search's calibration
//! windows, with the importance matrix and rounding they were scored with, and re-scored
//! on its held-out windows, so tuned and untuned stand side by side at each size. The
//! search's last stage (`run`); its entries are `SearchOutcome::tuned`.

use super::{SearchConfig, SearchOutcome, TuneFrontConfig};
use crate::calib::TokenWindows;
use crate::error::Result;
use crate::eval::{auto_topk, Reference};
use crate::model::Model;
use crate::plan::resolve_ggml;
use crate::quant::RoundingInputs;
use crate::tune::{tune, Scores, TuneConfig, TuneHooks, TuneSetup, Tuned};

/// Most calibration windows a tuned plan trains on.
pub const TUNE_WINDOWS: usize = 256;

/// One tuned front plan.
#[derive(Debug, Clone)]
pub struct TunedEntry {
    /// Index into `SearchOutcome::front`.
    pub front_index: usize,
    pub size_bytes: u64,
    pub before: Scores,
    pub after: Scores,
    pub seconds: f64,
    pub tuned: Tuned,
}

impl TuneFrontConfig {
    /// The training settings of each tuned plan (the search's seed drives it too).
    pub fn tune_config(&self, seed: u64) -> TuneConfig {
        TuneConfig {
            steps: self.steps,
            seed,
            sub_scales: self.sub_scales,
            ..TuneConfig::default()
        }
    }
}

/// The stage: tunes the `cfg.tune_front.plans` front plans `front_to_tune` picks (none
/// when no front plan is all GGML types).
pub fn run(
    model: &Model,
    outcome: &SearchOutcome,
    texts: (&str, &str),
    cfg: &SearchConfig,
) -> Result<Vec<TunedEntry>> {
    let indices = front_to_tune(model, outcome, cfg.tune_front.plans);
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let tune_cfg = cfg.tune_front.tune_config(cfg.evolution.seed);
    tune_front(model, outcome, texts, cfg, &indices, &tune_cfg)
}

/// The front entries to tune: those whose formats are all GGML types, nearest the
/// recommended plan's size first (the smallest first when none is recommended).
pub fn front_to_tune(model: &Model, outcome: &SearchOutcome, k: usize) -> Vec<usize> {
    let target = outcome.chosen().map_or(0, |e| e.scored.size_bytes);
    let mut idx: Vec<usize> = (0..outcome.front.len())
        .filter(|&i| {
            let plan = outcome.plan(model, &outcome.front[i].genome);
            resolve_ggml(model, &plan, false).is_ok()
        })
        .collect();
    idx.sort_by_key(|&i| (outcome.front[i].scored.size_bytes.abs_diff(target), i));
    idx.truncate(k);
    idx
}

/// What the search scored with, rebuilt: windows, references and rounding inputs.
struct Data {
    calibration: Reference,
    heldout: Reference,
    rounding: RoundingInputs,
}

fn data(
    model: &Model,
    outcome: &SearchOutcome,
    texts: (&str, &str),
    cfg: &SearchConfig,
) -> Result<Data> {
    let seq = cfg.data.seq_len;
    let reference = |text: &str, n: usize| -> Result<Reference> {
        let w = TokenWindows::from_text(model, text, seq, n)?;
        let k = match cfg.data.topk {
            0 => auto_topk(model.arch.vocab(), w.tokens(), 64),
            k => k,
        };
        Reference::build(model, w, k)
    };
    let rounding =
        RoundingInputs::for_model(model, outcome.imatrix.as_ref(), outcome.rounding.as_ref())?;
    Ok(Data {
        // Every window of the calibration text: the few the search scores on are far too
        // little to train on without overfitting.
        calibration: reference(texts.0, TUNE_WINDOWS)?,
        heldout: reference(texts.1, cfg.data.heldout_windows)?,
        rounding,
    })
}

/// Tunes `indices` of the front (see `front_to_tune`) with `tune_cfg`, in order.
pub fn tune_front(
    model: &Model,
    outcome: &SearchOutcome,
    texts: (&str, &str),
    cfg: &SearchConfig,
    indices: &[usize],
    tune_cfg: &TuneConfig,
) -> Result<Vec<TunedEntry>> {
    let d = data(model, outcome, texts, cfg)?;
    indices
        .iter()
        .map(|&i| {
            let t0 = std::time::Instant::now();
            let entry = &outcome.front[i];
            let plan = resolve_ggml(model, &outcome.plan(model, &entry.genome), false)?;
            let setup = TuneSetup {
                model,
                plan: &plan,
                rounding: &d.rounding,
                calibration: &d.calibration,
                heldout: &d.heldout,
            };
            let out = tune(&setup, tune_cfg, TuneHooks::default())?;
            Ok(TunedEntry {
                front_index: i,
                size_bytes: entry.scored.size_bytes,
                before: out.before,
                after: out.after,
                seconds: t0.elapsed().as_secs_f64(),
                tuned: out.tuned,
            })
        })
        .collect()
}
