//! `qevo search`: arguments → the library's `Settings` (its fields are the flags) →
//! `SearchConfig`, a progress bar per generation, the library's output files, and the
//! product brief's tables at the end.

use crate::commands::{load_model, read_text};
use crate::flag_names;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qevo::search::optuna::{iso_utc, study_info, write_journal};
use qevo::search::output::prepare_out_dir;
use qevo::search::{split_texts, SearchConfig, SearchOutcome, Settings};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    /// Output directory.
    #[arg(long, default_value = "qevo-out")]
    pub out: PathBuf,
    /// Encoders: labelled texts (`label<TAB>text` per line); prints the k-NN accuracy
    /// of the FP model's and the chosen plan's embeddings.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Also write every evaluated plan as an Optuna journal file (`optuna-dashboard FILE`,
    /// `optuna.load_study(storage=JournalStorage(JournalFileBackend(FILE)))`).
    #[arg(long, value_name = "FILE")]
    pub optuna_journal: Option<PathBuf>,
    /// The search's settings: the library's own type, one flag per field.
    #[command(flatten)]
    pub settings: Settings,
}

/// The validated config for `model`; the checkpoint defaults to --out/checkpoint.json.
pub fn config(a: &SearchArgs, model: &qevo::Model) -> Result<SearchConfig> {
    config_for(a, model.arch.is_decoder())
}

/// The validated config for a decoder or an encoder, before any weights are loaded.
fn config_for(a: &SearchArgs, decoder: bool) -> Result<SearchConfig> {
    let mut s = a.settings.clone();
    s.checkpoint
        .get_or_insert_with(|| a.out.join("checkpoint.json"));
    s.resolve_for(decoder).map_err(flag_names)
}

/// Calibration and held-out texts: the files given, split by the library's rule.
fn texts(a: &SearchArgs) -> Result<(String, String)> {
    let read = |p: &Option<PathBuf>| p.as_deref().map(|p| read_text(Some(p), "")).transpose();
    split_texts(read(&a.text)?, read(&a.heldout)?).map_err(flag_names)
}

/// The files `search` writes into its output directory (the tuned front's in `tuned/`).
const OUTPUTS: [&str; 13] = [
    "plan.json",
    "plan.yaml",
    "front.json",
    "history.jsonl",
    "checkpoint.json",
    "report.json",
    "run.json",
    "report.html",
    "pareto.svg",
    "convergence.svg",
    "imatrix.gguf",
    "tuned",
    ".qevo.lock",
];

pub fn search(a: &SearchArgs) -> Result<()> {
    let source = crate::commands::model_path(a.model.as_deref())?;
    let inputs: Vec<&Path> = std::iter::once(Some(source.as_path()))
        .chain([&a.text, &a.heldout, &a.settings.imatrix_file, &a.labels].map(Option::as_deref))
        .flatten()
        .collect();
    qevo::fsutil::refuse_dir_over_inputs(&a.out, &OUTPUTS, &inputs)?;
    prepare_out_dir(&a.out).with_context(|| format!("output directory {}", a.out.display()))?;
    let _lock = qevo::fsutil::OutLock::acquire(&a.out)?;
    let path = source;
    let shape = qevo::search::memory::MemoryShape::read(&path)?;
    let decoder = qevo::model::Model::inspect(&path)?.arch.is_decoder();
    let pre = config_for(a, decoder)?;
    let mem = qevo::search::memory::search_memory(
        &shape,
        &pre,
        pre.caches.max_memory,
        qevo::mem::available_bytes(),
    )
    .map_err(flag_names)?;
    eprintln!(
        "memory: at most {} of a {} budget ({})",
        qevo::mem::gb(mem.total()),
        qevo::mem::gb(mem.budget),
        mem.parts()
    );
    let model = load_model(Some(&path))?;
    let mut cfg = config(a, &model)?;
    // The budget settled before loading is the one the search runs under.
    cfg.caches.max_memory = Some(mem.budget);
    let (calib, heldout) = texts(a)?;
    let stop = stop_on_ctrl_c();
    let (bar, progress) = progress_bar(&cfg, &model, stop.clone());
    eprintln!(
        "searching {} on {} ({} units, {} generations x {})",
        model.source.display(),
        cfg.target.name,
        cfg.space.unit.as_str(),
        cfg.evolution.generations,
        cfg.evolution.population
    );
    if cfg.tune_front.plans > 0 {
        eprintln!(
            "then tuning up to {} front plans ({} steps each)",
            cfg.tune_front.plans, cfg.tune_front.steps
        );
    }
    let outcome =
        qevo::search::run(&model, &calib, &heldout, &cfg, Some(progress)).map_err(flag_names)?;
    bar.finish();
    write_outputs(a, &cfg, &model, &outcome)?;
    eprintln!("outputs written to {}", a.out.display());
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
    let w = qevo::eval::WeightCache::new(usize::MAX).weights_for(model, &plan)?;
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
    let report = qevo::report::write_all(&a.out, model, cfg, o)
        .with_context(|| format!("writing the outputs into {}", a.out.display()))?;
    if let Some(path) = &a.optuna_journal {
        let info = study_info(model, o, &cfg.target.name, now_iso());
        write_journal(path, &o.space, &o.evaluations, &info)?;
    }
    crate::report_cmd::print_summary(&report);
    if cfg.tune_front.plans > 0 {
        crate::tune_cmd::print_tuned_front(&a.out, o);
    }
    Ok(())
}

/// Now, as the ISO 8601 UTC time Optuna records.
pub fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso_utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        search: SearchArgs,
    }

    #[test]
    fn every_setting_is_a_flag_with_the_library_default() {
        let cmd = Wrap::command();
        for name in Settings::names() {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == name.as_str()),
                "qevo search has no flag for the setting {name}"
            );
        }
        let m = cmd.try_get_matches_from(["qevo"]).unwrap();
        let parsed = Wrap::from_arg_matches(&m).unwrap();
        assert_eq!(parsed.search.settings, Settings::default());
    }

    /// The Python package's own tests need a built wheel; this one reads its source, so
    /// `cargo test` catches a setting `qevo.search` does not take as a keyword.
    #[test]
    fn every_setting_is_a_python_keyword() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../qevo-py/python/qevo/__init__.py"
        );
        let src = std::fs::read_to_string(path).unwrap();
        let start = src.find("\ndef search(").expect("def search(");
        let end = start
            + src[start..]
                .find(") -> SearchResult:")
                .expect("its signature");
        let params: Vec<&str> = src[start..end]
            .lines()
            .filter_map(|l| l.trim().split(':').next())
            .collect();
        for name in Settings::names() {
            assert!(
                params.contains(&name.as_str()),
                "qevo.search has no keyword for the setting {name}"
            );
        }
    }

    #[test]
    fn setting_errors_name_the_flag() {
        let e = |field: &str| {
            flag_names(qevo::Error::Setting {
                field: field.into(),
                msg: "bad".into(),
            })
            .to_string()
        };
        assert_eq!(e("calib_windows"), "--calib-windows: bad");
        assert_eq!(e("constraints"), "--constraint: bad");
        assert_eq!(e("cache"), "--no-cache: bad");
        assert_eq!(e("max_windows"), "--max-windows: bad");
        assert_eq!(e("rounding.tokens"), "rounding.tokens: bad");
    }
}
