//! `qevo search`: arguments → SearchConfig, a progress bar per generation, the product
//! brief's tables at the end, and the output files.

use crate::commands::{load_model, read_text};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qevo::hw::{parse_constraint_override, resolve_profile, Workload};
use qevo::plan::UserLimits;
use qevo::search::config::{parse_epsilon, CrossoverChoice};
use qevo::search::optuna::{iso_utc, study_info, write_journal};
use qevo::search::output::{
    prepare_out_dir, scored_plan_file, write_front, write_history, write_plan,
};
use qevo::search::space::{parse_act_bits, parse_formats, UnitMode};
use qevo::search::{defaults, FitnessWeights, Importance, SearchConfig, SearchOutcome};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SearchArgs {
    /// Hugging Face model directory or .gguf file (default: the embedded model).
    pub model: Option<PathBuf>,
    /// Calibration text (default: the embedded calibration split). Without --heldout,
    /// its last fifth is held out.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Held-out text for the overfitting check.
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Score GGML types quantized with an importance matrix collected on the calibration
    /// windows (written to --out/imatrix.gguf for `qevo export --imatrix-file`).
    #[arg(long, conflicts_with = "imatrix_file")]
    pub imatrix: bool,
    /// Score with this importance matrix (llama-imatrix's imatrix.gguf / .dat, or qevo's);
    /// copied to --out/imatrix.gguf.
    #[arg(long, value_name = "FILE")]
    pub imatrix_file: Option<PathBuf>,
    /// How GGML block types round while scoring: `block` (llama.cpp's) or `output` (qevo's
    /// output-error rounding on the calibration windows; plan files record its tokens so
    /// `qevo export` writes the scored bytes).
    #[arg(long, default_value = "block", value_parser = ["block", "output"])]
    pub rounding: String,
    /// How the per-unit sensitivity table is filled: `measured` (one forward per unit and
    /// choice), `scaled` (two measured probes per unit, the other weight-only choices
    /// scaled by their importance-weighted weight error), or `auto` (scaled when the
    /// measured table would be large: a 135M model with tensor units).
    #[arg(long, default_value = "auto", value_parser = ["auto", "measured", "scaled"])]
    pub sensitivity: String,
    /// Built-in target (arm-neon, hexagon, apple-ane, jetson-orin) or a profile TOML file.
    #[arg(long, default_value = defaults::TARGET)]
    pub target: String,
    /// One gene per tensor role, per block, or per tensor.
    #[arg(long, default_value = defaults::UNIT)]
    pub unit: String,
    /// Tie attn_q/attn_k/attn_v into one gene (runtimes fuse them).
    #[arg(long)]
    pub tie_qkv: bool,
    /// Tie q/k/v and gate/up into one gene each, as vLLM fuses them (it refuses different
    /// schemes inside qkv_proj or gate_up_proj of a compressed-tensors model).
    #[arg(long)]
    pub tie_fused: bool,
    /// Allowed weight formats: presets `ggml`, `int`, and/or names (q4_k, int4-asym-g128, ...)
    /// [default: ggml; int for an encoder, which exports to packed safetensors].
    #[arg(long)]
    pub formats: Option<String>,
    /// Allowed activation widths (4, 8, 16 = float).
    #[arg(long, default_value = defaults::ACT_BITS)]
    pub act_bits: String,
    #[arg(long, default_value_t = defaults::GENERATIONS)]
    pub generations: u64,
    #[arg(long, default_value_t = defaults::POPULATION)]
    pub population: usize,
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
    /// Wall-time limit, e.g. 90s, 10m, 1h.
    #[arg(long)]
    pub time_budget: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "qevo-out")]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// After the search, tune the K front plans nearest the recommended size (`qevo
    /// tune`: block scales and norms distilled toward the FP model), re-score them on the
    /// held-out windows and write them to --out/tuned/.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub tune_front: usize,
    /// Training steps per tuned front plan.
    #[arg(long, default_value_t = 50)]
    pub tune_steps: usize,
    /// Train the tuned front plans' integer sub-scales too (`qevo tune --sub-scales`).
    #[arg(long)]
    pub tune_sub_scales: bool,
    /// Tensor data limit in MB (10^6 bytes).
    #[arg(long)]
    pub max_size_mb: Option<f64>,
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
    #[arg(long)]
    pub max_energy_mj: Option<f64>,
    /// Quality limit: mean KL to FP in nats/token.
    #[arg(long)]
    pub max_kl: Option<f64>,
    /// Override a target constraint, e.g. max_memory_mb=100 or max_latency_ms=none.
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Workload: prompt tokens and generated tokens (default: the target's).
    #[arg(long)]
    pub prefill_tokens: Option<u64>,
    #[arg(long)]
    pub decode_tokens: Option<u64>,
    /// Weights of accuracy, compression, latency, energy in the recommendation fitness.
    #[arg(long, default_value = defaults::WEIGHTS)]
    pub weights: String,
    /// Turn off the fitness, prefix and multi-fidelity caches and the surrogate.
    #[arg(long)]
    pub no_cache: bool,
    /// Memory budget (6G, 1500M, 2GiB): the dequantized-weight cache gets what the model,
    /// references and prefix cache leave; a search that cannot fit is refused before it
    /// loads [default: those plus a 2 GiB cache, at most the available memory].
    #[arg(long)]
    pub max_memory: Option<String>,
    /// Turn off only the surrogate screen (offspring are all scored on the screening windows).
    #[arg(long)]
    pub no_surrogate: bool,
    /// How parents exchange genes: auto (one-point for tensor and block units, so
    /// children share a parent's early blocks; uniform for role units), uniform,
    /// one-point, two-point.
    #[arg(long, default_value = "auto")]
    pub crossover: String,
    /// Screening tolerance: skip scoring an offspring when an archive plan is within a
    /// factor 1 + epsilon of it in every objective (one value, or KL,bytes,ms,mJ).
    /// 0 skips only plans the archive dominates.
    #[arg(long, default_value = "0")]
    pub epsilon: String,
    /// Encoders: labelled texts (`label<TAB>text` per line); prints the k-NN accuracy
    /// of the FP model's and the chosen plan's embeddings.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Skip the Lagrangian baseline (and, unless --random-search, the matched-size table).
    #[arg(long)]
    pub no_baselines: bool,
    /// Also run random search with the evolution's evaluation budget (doubles run time).
    #[arg(long)]
    pub random_search: bool,
    #[arg(long, default_value_t = defaults::SEQ_LEN)]
    pub seq_len: usize,
    /// Calibration windows for full evaluations.
    #[arg(long, default_value_t = defaults::CALIB_WINDOWS)]
    pub calib_windows: usize,
    /// Calibration windows for screening (multi-fidelity).
    #[arg(long, default_value_t = defaults::SCREEN_WINDOWS)]
    pub screen_windows: usize,
    #[arg(long, default_value_t = defaults::HELDOUT_WINDOWS)]
    pub heldout_windows: usize,
    /// Also write every evaluated plan as an Optuna journal file (`optuna-dashboard FILE`,
    /// `optuna.load_study(storage=JournalStorage(JournalFileBackend(FILE)))`).
    #[arg(long, value_name = "FILE")]
    pub optuna_journal: Option<PathBuf>,
}

fn parse_duration(s: &str) -> qevo::Result<Duration> {
    let bad = |why: &str| qevo::Error::Setting {
        field: "--time-budget".into(),
        msg: format!("`{s}`: {why}"),
    };
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let v: f64 = num.parse().map_err(|_| bad("expected e.g. 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad("unit must be s, m or h")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad("must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn config_from_args(a: &SearchArgs) -> Result<SearchConfig> {
    let cfg = build_config(a).map_err(flag_names)?;
    cfg.validate().map_err(flag_names)?;
    Ok(cfg)
}

/// Config field → the flag that sets it, so a library error names what the user typed.
const FLAG_OF: &[(&str, &str)] = &[
    ("evolution.population", "--population"),
    ("evolution.generations", "--generations"),
    ("evolution.weights", "--weights"),
    ("evolution.crossover", "--crossover"),
    ("caches.epsilon", "--epsilon"),
    ("caches.max_memory", "--max-memory"),
    ("data.seq_len", "--seq-len"),
    ("data.calib_windows", "--calib-windows"),
    ("data.screen_windows", "--screen-windows"),
    ("data.heldout_windows", "--heldout-windows"),
    ("space.unit", "--unit"),
    ("space.formats", "--formats"),
    ("space.act_bits", "--act-bits"),
    ("limits.max_size_mb", "--max-size-mb"),
    ("limits.max_latency_ms", "--max-latency-ms"),
    ("limits.max_energy_mj", "--max-energy-mj"),
    ("limits.max_kl", "--max-kl"),
    ("checkpoint.resume", "--resume"),
    // `qevo eval` / `quantize` window settings (`TokenWindows::from_text`).
    ("seq_len", "--seq-len"),
    ("windows", "--max-windows"),
    ("max_memory", "--max-memory"),
];

/// Renames a setting error's config field to its flag; other errors pass unchanged.
pub fn flag_names(e: qevo::Error) -> anyhow::Error {
    match e {
        qevo::Error::Setting { field, msg } => {
            let flag = FLAG_OF
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(field.as_str(), |(_, flag)| flag);
            anyhow::anyhow!("{flag}: {msg}")
        }
        other => other.into(),
    }
}

fn build_config(a: &SearchArgs) -> qevo::Result<SearchConfig> {
    let overrides = a
        .constraints
        .iter()
        .map(|c| parse_constraint_override(c))
        .collect::<Result<Vec<_>, _>>()?;
    let target = resolve_profile(&a.target)?.with_overrides(&overrides)?;
    let mut cfg = SearchConfig::for_target(target)?;
    cfg.workload = Workload {
        prefill_tokens: a.prefill_tokens.unwrap_or(cfg.workload.prefill_tokens),
        decode_tokens: a.decode_tokens.unwrap_or(cfg.workload.decode_tokens),
    };
    cfg.limits = UserLimits {
        max_size_mb: a.max_size_mb,
        max_latency_ms: a.max_latency_ms,
        max_energy_mj: a.max_energy_mj,
        max_kl: a.max_kl,
    };
    cfg.space.unit = UnitMode::parse(&a.unit)?;
    cfg.space.tie_qkv = a.tie_qkv || a.tie_fused;
    cfg.space.tie_gate_up = a.tie_fused;
    cfg.space.formats = parse_formats(a.formats.as_deref().unwrap_or(defaults::FORMATS))?;
    cfg.space.act_bits = parse_act_bits(&a.act_bits)?;
    cfg.evolution.generations = a.generations;
    cfg.evolution.population = a.population;
    cfg.evolution.seed = a.seed;
    cfg.evolution.time_budget = a.time_budget.as_deref().map(parse_duration).transpose()?;
    cfg.evolution.weights = FitnessWeights::parse(&a.weights)?;
    cfg.caches.enabled = !a.no_cache;
    cfg.caches.surrogate = !a.no_surrogate;
    cfg.caches.max_memory = a
        .max_memory
        .as_deref()
        .map(|s| qevo::mem::parse_size("caches.max_memory", s))
        .transpose()?;
    cfg.evolution.crossover = CrossoverChoice::parse(&a.crossover)?;
    cfg.caches.epsilon = parse_epsilon(&a.epsilon)?;
    cfg.baselines.lagrangian = !a.no_baselines;
    cfg.baselines.random_search = a.random_search;
    cfg.data.seq_len = a.seq_len;
    cfg.data.calib_windows = a.calib_windows;
    cfg.data.screen_windows = a.screen_windows;
    cfg.data.heldout_windows = a.heldout_windows;
    cfg.data.imatrix = match (&a.imatrix_file, a.imatrix) {
        (Some(p), _) => Importance::File(p.clone()),
        (None, true) => Importance::Collect,
        (None, false) => Importance::None,
    };
    cfg.data.rounding = qevo::quant::RoundingMode::parse(&a.rounding)?;
    cfg.data.sensitivity = qevo::search::sensitivity::SensitivityMode::parse(&a.sensitivity)?;
    cfg.checkpoint.path = Some(a.out.join("checkpoint.json"));
    cfg.checkpoint.resume = a.resume;
    Ok(cfg)
}

/// Calibration and held-out texts: embedded splits, or a user file (last fifth held out).
fn texts(a: &SearchArgs) -> Result<(String, String)> {
    match (&a.text, &a.heldout) {
        (None, None) => Ok((
            qevo::assets::CALIB_TEXT.to_string(),
            qevo::assets::HELDOUT_TEXT.to_string(),
        )),
        (Some(t), Some(h)) => Ok((read_text(Some(t), "")?, read_text(Some(h), "")?)),
        (Some(t), None) => {
            let text = read_text(Some(t), "")?;
            let mut cut = text.len() * 4 / 5;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            Ok((text[..cut].to_string(), text[cut..].to_string()))
        }
        (None, Some(h)) => Ok((
            qevo::assets::CALIB_TEXT.to_string(),
            read_text(Some(h), "")?,
        )),
    }
}

pub fn search(a: &SearchArgs) -> Result<()> {
    let mut cfg = config_from_args(a)?;
    prepare_out_dir(&a.out).with_context(|| format!("output directory {}", a.out.display()))?;
    let path = crate::commands::model_path(a.model.as_deref())?;
    let mem = qevo::search::memory::search_memory(
        &qevo::search::memory::MemoryShape::read(&path)?,
        &cfg,
        cfg.caches.max_memory,
        qevo::mem::available_bytes(),
    )?;
    eprintln!(
        "memory: at most {} of a {} budget ({})",
        qevo::mem::gb(mem.total()),
        qevo::mem::gb(mem.budget),
        mem.parts()
    );
    // The budget settled before loading is the one the search runs under.
    cfg.caches.max_memory = Some(mem.budget);
    let model = load_model(Some(&path))?;
    if !model.arch.is_decoder() {
        encoder_settings(a, &mut cfg)?;
    }
    let (calib, heldout) = texts(a)?;
    let stop = stop_on_ctrl_c();
    let (bar, progress) = progress_bar(&cfg, &model, stop.clone());
    eprintln!(
        "searching {} on {} ({} units, {} generations x {})",
        model.source.display(),
        cfg.target.name,
        a.unit,
        cfg.evolution.generations,
        cfg.evolution.population
    );
    let outcome =
        qevo::search::run(&model, &calib, &heldout, &cfg, Some(progress)).map_err(flag_names)?;
    bar.finish();
    write_outputs(a, &cfg, &model, &outcome)?;
    eprintln!("outputs written to {}", a.out.display());
    if a.tune_front > 0 && !stop.load(Ordering::SeqCst) {
        crate::tune_cmd::front(a, &cfg, &model, &outcome, (&calib, &heldout))?;
    }
    if let Some(path) = &a.labels {
        print_knn(&model, &outcome, path)?;
    }
    if stop.load(Ordering::SeqCst) {
        return Err(crate::Exit::interrupted().into());
    }
    match (outcome.recommended, &outcome.infeasible_closest) {
        (Some(_), _) => Ok(()),
        (None, Some(c)) => Err(crate::Exit::infeasible(&c.scored.checks).into()),
        (None, None) => Err(crate::Exit::infeasible(&[]).into()),
    }
}

/// An encoder generates nothing: it embeds one window per pass, and its default formats
/// are the integer ones its export holds.
fn encoder_settings(a: &SearchArgs, cfg: &mut SearchConfig) -> Result<()> {
    let w = Workload::encoder(cfg.data.seq_len as u64);
    if a.formats.is_none() {
        cfg.space.formats = parse_formats(defaults::ENCODER_FORMATS)?;
    }
    cfg.workload = Workload {
        prefill_tokens: a.prefill_tokens.unwrap_or(w.prefill_tokens),
        decode_tokens: a.decode_tokens.unwrap_or(w.decode_tokens),
    };
    Ok(())
}

/// A flag the first Ctrl-C sets (the search finishes its generation and checkpoints); a
/// second Ctrl-C exits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    stop
}

/// The terminal progress bar and the per-generation hook that drives it and stops the
/// search once `stop` is set.
fn progress_bar<'a>(
    cfg: &SearchConfig,
    model: &qevo::Model,
    stop: Arc<AtomicBool>,
) -> (ProgressBar, qevo::search::Progress<'a>) {
    let bar = ProgressBar::new(cfg.evolution.generations + 1);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] gen {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("search");
    let started = Instant::now();
    let shown = bar.clone();
    let best_label = qevo::eval::Quality::of(model).relabel("Best KL");
    let progress: qevo::search::Progress = Box::new(move |r| {
        let hit = qevo::report::hit_rate(r.problem.cache_hits, r.problem.cache_lookups);
        let best_kl = r.best.as_ref().map(|b| b[0]).unwrap_or(f64::NAN);
        shown.set_position(r.generation + 1);
        shown.set_message(format!(
            "{best_label} {best_kl:.4} front {} HV {:.4e} hits {:.0}% {:.1} eval/s",
            r.front_size,
            r.hypervolume.unwrap_or(0.0),
            hit * 100.0,
            r.problem.full_evaluations as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
        match stop.load(Ordering::SeqCst) {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    });
    (bar, progress)
}

/// k-NN accuracy of the FP model's and the recommended (or least-violating) plan's
/// embeddings on labelled texts: an encoder's task quality next to its 1 − cos.
fn print_knn(model: &qevo::Model, o: &SearchOutcome, path: &std::path::Path) -> Result<()> {
    let Some(f) = o.chosen() else {
        return Ok(());
    };
    let plan = o.plan(model, &f.genome);
    let w = qevo::quant::WeightCache::new(usize::MAX).weights_for(model, &plan)?;
    let knn = qevo::eval::embedding::Labelled::read(model, path)?.compare(model, &w, 5)?;
    println!("k-NN accuracy of the chosen plan: {knn}");
    Ok(())
}

fn write_outputs(
    a: &SearchArgs,
    cfg: &SearchConfig,
    model: &qevo::Model,
    o: &SearchOutcome,
) -> Result<()> {
    // The recommended plan, or, when nothing is feasible, the least-violating one with
    // the limits it fails: every output is written either way.
    if let Some(f) = o.chosen() {
        let pf = scored_plan_file(model, o, f, &cfg.target.name, &a.unit);
        write_plan(&a.out, &pf)?;
    }
    if let Some(im) = &o.imatrix {
        // The scored bytes are reproducible only with this matrix: keep it with the plans.
        im.write_gguf(&a.out.join("imatrix.gguf"))?;
    }
    write_front(&a.out, model, o, &cfg.target.name)?;
    write_history(&a.out, o)?;
    if let Some(path) = &a.optuna_journal {
        let info = study_info(model, o, &cfg.target.name, now_iso());
        write_journal(path, &o.space, &o.evaluations, &info)?;
    }
    crate::report_cmd::write_and_print(&a.out, model, cfg, o)?;
    Ok(())
}

/// Now, as the ISO 8601 UTC time Optuna records.
pub fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso_utc(secs)
}
