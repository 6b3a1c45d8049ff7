//! The one-command recipe (`qevo gguf MODEL --size Q4_K_M --out FILE`): the best GGUF of
//! a size, the whole way, as library code both front ends call. Stages, in order:
//!
//! 1. **size** (`size`): the planned tensors' byte budget, from a llama.cpp type name, a
//!    file size or bits per weight; refused before any work when no plan can meet it;
//! 2. **imatrix**: llama-imatrix's statistics on the calibration text (or a given file),
//!    written beside the work so llama-quantize can use the very same one;
//! 3. **search**: weights only (a GGUF runs no quantized activations), one gene per
//!    tensor, KL alone at the size limit, with that importance matrix;
//! 4. **choose**: the evolved plan and llama.cpp's own mix (quantized by qevo), both
//!    scored on a validation slice of the calibration text that nothing was fitted on,
//!    as long as llama.cpp's chunks; the better one goes on;
//! 5. **tune**: its scales, sub-scales and norms distilled toward the FP model, kept
//!    only if validation says so;
//! 6. **export** and **check**: the GGUF written, read back and re-scored; a file that
//!    does not re-score to the reported KL is an error;
//! 7. beside it: the plan, the outcome (JSON) and a model card (`card`). A comparison with
//!    llama-quantize's own file is `compare`.

pub mod card;
pub mod compare;
pub mod size;

use crate::calib::Imatrix;
use crate::calib::TokenWindows;
use crate::error::{Error, Result};
use crate::eval::WeightCache;
use crate::eval::{auto_topk, Metrics, Reference};
use crate::export::{export_gguf, export_tuned_gguf};
use crate::model::{Model, NoHook};
use crate::plan::TensorPlan;
use crate::plan::{resolve_ggml, ResolvedPlan};
use crate::quant::{RoundingInputs, RoundingMode};
use crate::search::output::PlanFile;
use crate::search::{split_texts, SearchConfig, SearchOutcome, Settings};
use crate::tune::{tune, TuneConfig, TuneHooks, TuneSetup, Tuned};
pub use size::{Budget, SizeTarget};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest relative gap between the reported KL and the exported file's re-score.
pub const CHECK_TOLERANCE: f64 = 1e-3;

/// Training windows tuning scores before and after (its choice is made on validation).
const TRAINING_SCORE_WINDOWS: usize = 4;

/// What `qevo gguf` can be told; a field left out takes its default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct GgufSettings {
    /// Target size: a llama.cpp type name (Q4_K_M: the size llama-quantize's mix of that
    /// name has for this model), a file size (105MB, 1.5G, 2GiB), or bits per weight of
    /// the quantized tensors (4.5bpw).
    #[cfg_attr(feature = "clap", arg(long))]
    pub size: String,
    /// Importance matrix to use (llama-imatrix's GGUF or .dat) instead of collecting one
    /// on the calibration text.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub imatrix_file: Option<PathBuf>,
    /// Wall-time limit of the whole command (90s, 20m, 1h): the search ends by 65% of
    /// it, tuning by 92% (`--compare`'s llama.cpp runs come after, outside it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub time_budget: Option<String>,
    /// How GGML blocks choose scales and codes: `block` (llama.cpp's rule, weighted by
    /// the importance matrix) or `output` (qevo's: each tensor's output error on the
    /// calibration text); the file holds the bytes the choice was scored with.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = defaults::ROUNDING))]
    pub rounding: RoundingMode,
    /// Tokens per window of the validation slice, of tuning and of the self-check
    /// [default: llama.cpp's 512-token chunks, or the model's positions if fewer].
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::SEQ_LEN))]
    pub seq_len: usize,
    /// Validation windows every choice is made on.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::VALIDATION_WINDOWS))]
    pub validation_windows: usize,
    /// Calibration windows tuning trains on.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::TUNE_WINDOWS))]
    pub tune_windows: usize,
    /// Tokens per window of the search's own scoring.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::SEARCH_SEQ_LEN))]
    pub search_seq_len: usize,
    /// Calibration windows the search scores every plan on.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::CALIB_WINDOWS))]
    pub calib_windows: usize,
    /// Tuning steps after the search (0: no tuning).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::TUNE_STEPS))]
    pub tune_steps: usize,
    /// Search generations (a time budget may stop it sooner).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::GENERATIONS))]
    pub generations: u64,
    /// Search population.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = defaults::POPULATION))]
    pub population: usize,
    /// Seed of every random choice.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Continue an interrupted run from its checkpoints (in the work directory).
    #[cfg_attr(feature = "clap", arg(long))]
    pub resume: bool,
}

/// The recipe's defaults (see `docs/gguf.md` for how they were chosen).
pub mod defaults {
    use crate::quant::RoundingMode;
    pub const ROUNDING: RoundingMode = RoundingMode::Block;
    /// llama-perplexity's `-c 512`: validation windows as long as the judge's chunks.
    pub const SEQ_LEN: usize = 512;
    pub const VALIDATION_WINDOWS: usize = 8;
    pub const TUNE_WINDOWS: usize = 32;
    pub const SEARCH_SEQ_LEN: usize = crate::search::defaults::SEQ_LEN;
    pub const CALIB_WINDOWS: usize = crate::search::defaults::CALIB_WINDOWS;
    pub const TUNE_STEPS: usize = 100;
    pub const GENERATIONS: u64 = 24;
    pub const POPULATION: usize = 24;
}

impl Default for GgufSettings {
    fn default() -> Self {
        GgufSettings {
            size: "Q4_K_M".into(),
            imatrix_file: None,
            time_budget: None,
            rounding: defaults::ROUNDING,
            seq_len: defaults::SEQ_LEN,
            validation_windows: defaults::VALIDATION_WINDOWS,
            tune_windows: defaults::TUNE_WINDOWS,
            search_seq_len: defaults::SEARCH_SEQ_LEN,
            calib_windows: defaults::CALIB_WINDOWS,
            tune_steps: defaults::TUNE_STEPS,
            generations: defaults::GENERATIONS,
            population: defaults::POPULATION,
            seed: 0,
            resume: false,
        }
    }
}

/// A stage of the recipe, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Imatrix,
    Search,
    Choose,
    Tune,
    Export,
    Check,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Imatrix => "imatrix",
            Stage::Search => "search",
            Stage::Choose => "choose",
            Stage::Tune => "tune",
            Stage::Export => "export",
            Stage::Check => "check",
        }
    }
}

/// What the front end hears as the recipe runs.
#[derive(Debug, Clone, Copy)]
pub enum StageEvent {
    /// A stage starts; `limit`: the share of the time budget it may take.
    Start {
        limit: Option<Duration>,
    },
    Done {
        seconds: f64,
    },
}

#[derive(Default)]
pub struct RecipeHooks<'a> {
    pub on_stage: Option<&'a mut dyn FnMut(Stage, StageEvent)>,
    /// The search's per-generation hook (progress bars).
    pub search_progress: Option<crate::search::Progress<'a>>,
}

/// Where a recipe writes, all derived from the GGUF's path `FILE.gguf`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutPaths {
    pub gguf: PathBuf,
    /// `FILE.plan.json`: the plan, loadable by `qevo export --plan`.
    pub plan: PathBuf,
    /// `FILE.json`: this outcome.
    pub outcome: PathBuf,
    /// `FILE.md`: the model card.
    pub card: PathBuf,
    /// `FILE.qevo/`: the search's outputs, checkpoints, the importance matrix, and a
    /// comparison's files.
    pub work: PathBuf,
}

impl OutPaths {
    pub fn of(gguf: &Path) -> OutPaths {
        let stem = gguf.with_extension("");
        let beside = |ext: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(ext);
            PathBuf::from(s)
        };
        OutPaths {
            gguf: gguf.to_path_buf(),
            plan: beside(".plan.json"),
            outcome: beside(".json"),
            card: beside(".md"),
            work: beside(".qevo"),
        }
    }
}

/// A plan scored on the validation slice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub plan_bytes: u64,
    pub validation: Metrics,
}

/// Which plan went on to tuning and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chosen {
    Evolved,
    /// llama.cpp's mix of the size's name scored better on validation.
    LlamaMix,
}

/// What tuning did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneSummary {
    pub steps: usize,
    pub before: Metrics,
    pub after: Metrics,
    /// The tuned bytes went into the file (validation improved).
    pub kept: bool,
    pub seconds: f64,
}

/// Tuning left out because its smallest run would pass the time budget: the seconds
/// it would need (`least_tuning_windows` forwards at the validation reference's pace)
/// and the seconds left.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TuneSkip {
    pub needed_seconds: f64,
    pub left_seconds: f64,
}

/// Window forwards the smallest tuning run takes: the training reference, the scores
/// before and after (validation and training windows), and one step of `batch` windows
/// forward and backward (three forwards' work each). On SmolLM2 a step and its scores
/// took 404 s against a 168 s end, which is how the whole command overran its budget.
fn least_tuning_windows(s: &GgufSettings) -> usize {
    let scores = s.validation_windows + TRAINING_SCORE_WINDOWS;
    s.tune_windows + 2 * scores + 3 * TuneConfig::default().batch
}

/// The recipe's result (also written as `FILE.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GgufOutcome {
    /// The command line that made the file (for the card).
    pub command: String,
    pub size: String,
    pub budget_bytes: u64,
    pub budget_bpw: f64,
    /// Tokens per validation window.
    pub seq_len: usize,
    pub paths: OutPaths,
    pub evolved: Candidate,
    /// The evolved plan's KL on the search's calibration windows.
    pub evolved_calibration: Metrics,
    /// The search at its size limit: the refined plan against the Lagrangian plan at
    /// the limit, on its calibration and validation windows.
    pub at_limit: Option<crate::search::refine::RefineSummary>,
    pub llama_mix: Option<Candidate>,
    pub chosen: Chosen,
    pub plan: TensorPlan,
    pub tune: Option<TuneSummary>,
    /// Why tuning did not run within the time budget (None: it ran, or was off).
    pub tune_skipped: Option<TuneSkip>,
    pub file_bytes: u64,
    /// KL on the validation slice the run reported for its result, and the exported
    /// file's re-score of it.
    pub reported: Metrics,
    pub file_check: Metrics,
    pub stage_seconds: Vec<(Stage, f64)>,
    pub seconds: f64,
}

impl GgufOutcome {
    /// Bits per weight of the file's planned tensors.
    pub fn bpw(&self, model: &Model) -> f64 {
        self.plan.bits_per_weight(model)
    }
}

/// The run's shared state: the clock, the time budget and the hooks.
struct Run<'h, 'a> {
    t0: Instant,
    budget: Option<Duration>,
    hooks: &'h mut RecipeHooks<'a>,
    stages: Vec<(Stage, f64)>,
}

/// Where in the time budget each bounded stage must end, as a fraction of it counted
/// from the command's start: a stage that overruns shortens the next, so the command
/// ends near its budget. The unbounded stages are short: the importance matrix (one
/// forward pass over the calibration text) before the search, the choice (two
/// validation scores) before tuning, export and the self-check (one more) after it.
pub mod ends {
    pub const SEARCH: f64 = 0.65;
    pub const TUNE: f64 = 0.92;
}

impl Run<'_, '_> {
    /// Runs `f` as `stage`, which must end by `end` of the time budget (None: a short
    /// stage, not bounded).
    fn stage<T>(
        &mut self,
        stage: Stage,
        end: Option<f64>,
        f: impl FnOnce(Option<Duration>) -> Result<T>,
    ) -> Result<T> {
        let limit = match (self.budget, end) {
            (Some(b), Some(e)) => {
                Some((self.t0 + b.mul_f64(e)).saturating_duration_since(Instant::now()))
            }
            _ => None,
        };
        if let Some(cb) = self.hooks.on_stage.as_mut() {
            cb(stage, StageEvent::Start { limit });
        }
        let t = Instant::now();
        let out = f(limit)?;
        let seconds = t.elapsed().as_secs_f64();
        self.stages.push((stage, seconds));
        if let Some(cb) = self.hooks.on_stage.as_mut() {
            cb(stage, StageEvent::Done { seconds });
        }
        Ok(out)
    }
}

/// Runs the recipe on `model` with calibration text `text` (None: the embedded one),
/// writing `out` (a `.gguf` path) and the files beside it (`OutPaths`); `command` is
/// the command line the card quotes.
pub fn run(
    model: &Model,
    text: Option<String>,
    s: &GgufSettings,
    out: &Path,
    command: &str,
    mut hooks: RecipeHooks,
) -> Result<GgufOutcome> {
    let paths = OutPaths::of(out);
    let mut inputs: Vec<&Path> = vec![&model.source];
    inputs.extend(s.imatrix_file.as_deref());
    for p in [
        &paths.gguf,
        &paths.plan,
        &paths.outcome,
        &paths.card,
        &paths.work,
    ] {
        crate::fsutil::refuse_overwriting_inputs(p, &inputs)?;
    }
    let started = ["search-checkpoint.json", "tune-checkpoint.safetensors"]
        .iter()
        .any(|f| paths.work.join(f).is_file());
    if s.resume && !started {
        return Err(Error::setting(
            "resume",
            format!(
                "no checkpoint in {} to resume from (nothing was started at this output)",
                paths.work.display()
            ),
        ));
    }
    let cfg = search_settings(s, 0).resolve(model)?;
    let budget = Budget::resolve(model, &SizeTarget::parse(&s.size)?, &cfg.space.formats)?;
    let _lock = crate::fsutil::OutLock::acquire(&paths.work)?;
    let (calib, validation) = split_texts(
        text.or_else(|| Some(crate::assets::CALIB_TEXT.into())),
        None,
    )?;
    let time_budget = s
        .time_budget
        .as_deref()
        .map(crate::search::settings::parse_duration)
        .transpose()?;
    let mut run = Run {
        t0: Instant::now(),
        budget: time_budget,
        hooks: &mut hooks,
        stages: Vec::new(),
    };
    let imatrix = run.stage(Stage::Imatrix, None, |_| {
        importance(model, &calib, s, &paths.work)
    })?;
    let im_path = paths.work.join("imatrix.gguf");
    let progress = run.hooks.search_progress.take();
    let (cfg, outcome) = run.stage(Stage::Search, Some(ends::SEARCH), |limit| {
        let cfg = search_config(model, s, &budget, &im_path, &paths.work, limit)?;
        let o = crate::search::run(model, &calib, &validation, &cfg, progress)?;
        crate::report::write_all(&paths.work.join("search"), model, &cfg, &o)
            .map_err(|e| Error::Invalid(format!("the search's outputs: {e}")))?;
        Ok((cfg, o))
    })?;
    let seq = s.seq_len.min(model.arch.max_positions());
    let rounding = RoundingInputs::for_model(model, Some(&imatrix), outcome.rounding.as_ref())?;
    let t_val = Instant::now();
    let val = reference(model, &validation, seq, s.validation_windows)?;
    let window_seconds = t_val.elapsed().as_secs_f64() / s.validation_windows.max(1) as f64;
    let (chosen, plan, evolved, mix) = run.stage(Stage::Choose, None, |_| {
        choose(model, &outcome, &budget, &rounding, &val)
    })?;
    let reported_untuned = match chosen {
        Chosen::Evolved => evolved.validation,
        Chosen::LlamaMix => mix.as_ref().map_or(evolved.validation, |m| m.validation),
    };
    // One resolution serves tuning and the export of the untuned bytes.
    let resolved = resolve_ggml(model, &plan, false)?;
    let mut tune_skipped = None;
    let tuned = run.stage(Stage::Tune, Some(ends::TUNE), |limit| {
        let needed = window_seconds * least_tuning_windows(s) as f64;
        if let Some(left) = limit.filter(|l| s.tune_steps > 0 && l.as_secs_f64() < needed) {
            tune_skipped = Some(TuneSkip {
                needed_seconds: needed,
                left_seconds: left.as_secs_f64(),
            });
            return Ok(None);
        }
        tune_plan(
            model,
            &resolved,
            &rounding,
            &calib,
            &val,
            s,
            limit,
            &paths.work,
        )
    })?;
    let summary = run.stage(Stage::Export, None, |_| match &tuned {
        // The tuned bytes are there only when tuning was kept.
        Some((_, Some(bytes))) => export_tuned_gguf(model, bytes, out),
        _ => export_gguf(model, &resolved, &rounding, out),
    })?;
    let reported = match &tuned {
        Some((t, _)) if t.kept => t.after,
        _ => reported_untuned,
    };
    let file_check = run.stage(Stage::Check, None, |_| {
        self_check(model, out, &val, &reported)
    })?;
    let evolved_calibration = outcome
        .chosen()
        .map(|e| e.scored.metrics)
        .unwrap_or(evolved.validation);
    let o = GgufOutcome {
        command: command.to_string(),
        size: s.size.clone(),
        budget_bytes: budget.planned_bytes,
        budget_bpw: budget.bpw(model),
        seq_len: seq,
        paths,
        evolved,
        evolved_calibration,
        at_limit: outcome.refine.clone(),
        llama_mix: mix,
        chosen,
        plan,
        tune: tuned.map(|(t, _)| t),
        tune_skipped,
        file_bytes: summary.layout.file_bytes,
        reported,
        file_check,
        stage_seconds: run.stages,
        seconds: run.t0.elapsed().as_secs_f64(),
    };
    write_beside(model, &cfg, &o, &imatrix, outcome.rounding.clone())?;
    Ok(o)
}

/// The search settings of the recipe: weights only, a gene per tensor, KL alone.
fn search_settings(s: &GgufSettings, tune_front: usize) -> Settings {
    Settings {
        unit: crate::search::space::UnitMode::Tensor,
        act_bits: "16".into(),
        weights: "1,0,0,0".into(),
        rounding: s.rounding,
        seq_len: s.search_seq_len,
        calib_windows: s.calib_windows,
        generations: s.generations,
        population: s.population,
        seed: s.seed,
        // Set with its checkpoint path by `search_config`: resuming needs one.
        resume: false,
        tune_front,
        ..Settings::default()
    }
}

fn search_config(
    model: &Model,
    s: &GgufSettings,
    budget: &Budget,
    imatrix: &Path,
    work: &Path,
    limit: Option<Duration>,
) -> Result<SearchConfig> {
    let mut settings = search_settings(s, 0);
    settings.max_size_mb = Some(budget.max_size_mb());
    settings.imatrix_file = Some(imatrix.to_path_buf());
    settings.checkpoint = Some(work.join("search-checkpoint.json"));
    settings.resume = s.resume && work.join("search-checkpoint.json").is_file();
    settings.time_budget = limit.map(|d| format!("{}s", d.as_secs().max(1)));
    let mut cfg = settings.resolve(model)?;
    // A GGUF for llama.cpp is made for no device: only the size binds, not the default
    // target's latency, memory or capacity limits (Gemma-3-270M's 228 MB peak failed
    // arm-neon's 200 MB and left no feasible plan).
    cfg.target.constraints = crate::hw::Constraints::default();
    cfg.target.memory_capacity_mb = f64::MAX;
    // llama.cpp's own mix at this size is a plan the search must beat: it starts there.
    cfg.evolution.seed_plans = budget.mix.iter().cloned().collect();
    Ok(cfg)
}

/// The importance matrix: read from the given file, or collected as llama-imatrix does
/// (chunks of `seq_len` tokens of the calibration text); written to `work/imatrix.gguf`
/// either way.
fn importance(model: &Model, calib: &str, s: &GgufSettings, work: &Path) -> Result<Imatrix> {
    let mut im = match &s.imatrix_file {
        Some(f) => Imatrix::read(f)?,
        None => {
            let n_ctx = s.seq_len.min(model.arch.max_positions());
            let mut im = crate::calib::collect_imatrix_llama_cpp(model, calib, n_ctx, None)?;
            im.datasets = vec!["qevo gguf calibration text".into()];
            im
        }
    };
    im.for_model(model)?;
    im.write_gguf(&work.join("imatrix.gguf"))?;
    im.source = work.join("imatrix.gguf");
    Ok(im)
}

fn reference(model: &Model, text: &str, seq: usize, n: usize) -> Result<Reference> {
    let w = TokenWindows::from_text(model, text, seq, n)?;
    let k = auto_topk(model.arch.vocab(), w.tokens(), 64);
    Reference::build(model, w, k)
}

/// `plan` scored on the validation windows with the recipe's rounding.
fn score(
    model: &Model,
    plan: &TensorPlan,
    r: &RoundingInputs,
    val: &Reference,
) -> Result<Candidate> {
    let w = WeightCache::new(usize::MAX)
        .with_rounding(r.clone())
        .weights_for(model, plan)?;
    Ok(Candidate {
        plan_bytes: plan.size_bytes(model),
        validation: val.score(model, &w, &NoHook)?,
    })
}

type Choice = (Chosen, TensorPlan, Candidate, Option<Candidate>);

/// The evolved plan, or llama.cpp's mix when it scores better on validation.
fn choose(
    model: &Model,
    outcome: &SearchOutcome,
    budget: &Budget,
    r: &RoundingInputs,
    val: &Reference,
) -> Result<Choice> {
    let Some(e) = outcome.recommended.map(|i| &outcome.front[i]) else {
        return Err(Error::Invalid(format!(
            "the search found no plan within {} bytes",
            budget.planned_bytes
        )));
    };
    let plan = outcome.plan(model, &e.genome);
    let evolved = score(model, &plan, r, val)?;
    let mix = budget
        .mix
        .as_ref()
        .map(|m| score(model, m, r, val))
        .transpose()?;
    Ok(match (&mix, &budget.mix) {
        (Some(m), Some(mp)) if m.validation.kl < evolved.validation.kl => {
            (Chosen::LlamaMix, mp.clone(), evolved, mix)
        }
        _ => (Chosen::Evolved, plan, evolved, mix),
    })
}

/// Tunes `plan` within `limit` (None when tuning is off); the tuned bytes come back only
/// when the validation KL fell.
#[allow(clippy::too_many_arguments)]
fn tune_plan(
    model: &Model,
    plan: &ResolvedPlan,
    rounding: &RoundingInputs,
    calib: &str,
    val: &Reference,
    s: &GgufSettings,
    limit: Option<Duration>,
    work: &Path,
) -> Result<Option<(TuneSummary, Option<Tuned>)>> {
    if s.tune_steps == 0 {
        return Ok(None);
    }
    let seq = s.seq_len.min(model.arch.max_positions());
    let train = reference(model, calib, seq, s.tune_windows)?;
    let setup = TuneSetup {
        model,
        plan,
        rounding,
        calibration: &train,
        heldout: val,
    };
    let checkpoint = work.join("tune-checkpoint.safetensors");
    let cfg = TuneConfig {
        steps: s.tune_steps,
        seed: s.seed,
        sub_scales: true,
        checkpoint_every: 10,
        resume: s.resume && checkpoint.is_file(),
        checkpoint: Some(checkpoint),
        // The choice is made on validation alone: a few training windows report the fit.
        score_training_windows: Some(TRAINING_SCORE_WINDOWS),
        ..TuneConfig::default()
    };
    let t0 = Instant::now();
    let stop = AtomicBool::new(false);
    let mut first: Option<f64> = None;
    let mut on_step = |r: &crate::tune::StepRecord| {
        // The scores before the first step take as long as those after the last.
        let scoring = *first.get_or_insert(t0.elapsed().as_secs_f64() - r.seconds);
        let next = t0.elapsed().as_secs_f64() + r.seconds + scoring;
        if limit.is_some_and(|l| next >= l.as_secs_f64()) {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let out = tune(
        &setup,
        &cfg,
        TuneHooks {
            on_step: Some(&mut on_step),
            stop: Some(&stop),
        },
    )?;
    let kept = !out.kept_initial && out.after.heldout.kl < out.before.heldout.kl;
    let summary = TuneSummary {
        steps: out.history.len(),
        before: out.before.heldout,
        after: out.after.heldout,
        kept,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(Some((summary, kept.then_some(out.tuned))))
}

/// The written file, loaded and scored on the validation windows: it must give the
/// reported KL.
fn self_check(model: &Model, file: &Path, val: &Reference, reported: &Metrics) -> Result<Metrics> {
    let back = Model::load(file)?;
    if back.tensors.len() != model.tensors.len() {
        return Err(Error::Invalid(format!(
            "{}: read back with {} tensors, the model has {}",
            file.display(),
            back.tensors.len(),
            model.tensors.len()
        )));
    }
    let m = val.score(&back, &back.weights, &NoHook)?;
    let gap = (m.kl - reported.kl).abs();
    if gap > CHECK_TOLERANCE * reported.kl.max(1e-9) {
        return Err(Error::Invalid(format!(
            "{}: self-check failed: the file re-scores to KL {:.6} on the validation \
             windows, the run reported {:.6}",
            file.display(),
            m.kl,
            reported.kl
        )));
    }
    Ok(m)
}

/// The plan, the outcome and the model card beside the GGUF.
fn write_beside(
    model: &Model,
    cfg: &SearchConfig,
    o: &GgufOutcome,
    imatrix: &Imatrix,
    rounding: Option<crate::calib::OutputRounding>,
) -> Result<()> {
    let mut pf = PlanFile::from_plan(
        model,
        &o.plan,
        &cfg.target.name,
        cfg.evolution.seed,
        "tensor",
        None,
    );
    pf.imatrix_fingerprint = Some(imatrix.fingerprint());
    pf.rounding = rounding;
    write_json(&o.paths.plan, &pf)?;
    write_card(model, o, None)
}

/// The outcome (`FILE.json`) and the model card (`FILE.md`), with a comparison when one
/// was made.
pub fn write_card(model: &Model, o: &GgufOutcome, cmp: Option<&compare::Comparison>) -> Result<()> {
    let v = serde_json::json!({ "outcome": o, "comparison": cmp });
    write_json(&o.paths.outcome, &v)?;
    crate::fsutil::write_atomic(&o.paths.card, card::card(model, o, cmp).as_bytes())
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::serialize(path, e))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma-3-270M's search once found no feasible plan: the default target's 200 MB
    /// memory limit bound a file made for llama.cpp, which has no device.
    #[test]
    fn a_gguf_search_is_bound_by_its_size_alone_and_starts_from_llamas_mix() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        let m = Model::load(dir).unwrap();
        let s = GgufSettings::default();
        let menu = search_settings(&s, 0).resolve(&m).unwrap().space.formats;
        let budget = Budget::resolve(&m, &SizeTarget::parse("Q4_K_M").unwrap(), &menu).unwrap();
        let work = tempfile::tempdir().unwrap();
        let cfg = search_config(
            &m,
            &s,
            &budget,
            &work.path().join("im.gguf"),
            work.path(),
            None,
        )
        .unwrap();
        assert_eq!(cfg.target.constraints, crate::hw::Constraints::default());
        assert_eq!(cfg.target.memory_capacity_mb, f64::MAX);
        assert_eq!(cfg.limits.max_size_bytes(), Some(budget.planned_bytes));
        assert_eq!(cfg.evolution.seed_plans, vec![budget.mix.clone().unwrap()]);
    }
}
