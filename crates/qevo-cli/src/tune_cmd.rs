//! `qevo tune`: trains a saved plan's block scales and norms toward the FP model, writes
//! the tuned GGUF, `tune.json` and a checkpoint, and prints before/after scores.

use crate::commands::{load_model, read_plan_for, read_text};
use crate::table::Table;
use anyhow::Result;
use qevo::calib::TokenWindows;
use qevo::eval::{auto_topk, Reference};
use qevo::model::Model;
use qevo::quant::RoundingInputs;
use qevo::tune::{tune, StepRecord, TuneConfig, TuneHooks, TuneOutcome, TuneSetup};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(clap::Args, Clone)]
pub struct TuneArgs {
    /// Plan file (plan.json / plan.yaml from `qevo search`); its GGML types are kept.
    #[arg(long)]
    pub plan: PathBuf,
    /// Hugging Face model directory or .gguf file (default: the embedded model).
    pub model: Option<PathBuf>,
    /// Calibration text to train on (default: the embedded calibration split).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Held-out text the result is scored on (default: the embedded held-out split).
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    #[arg(long, default_value_t = TuneConfig::default().steps)]
    pub steps: usize,
    /// Adam rate of the block-scale corrections (relative to each scale; at most 0.01,
    /// the trust radius).
    #[arg(long, default_value_t = TuneConfig::default().lr)]
    pub lr: f32,
    /// Adam rate of the norms and biases, relative to each element's size (at most 0.01).
    #[arg(long, default_value_t = TuneConfig::default().lr_aux)]
    pub lr_norm: f32,
    /// Train the integer sub-scales (and sub-mins) of the K-quants, iq4_xs and iq3_s too,
    /// in each type's own packing.
    #[arg(long)]
    pub sub_scales: bool,
    /// Adam rate of the sub-scales, in steps of the stored integer (at most 0.25).
    #[arg(long, default_value_t = TuneConfig::default().lr_sub)]
    pub lr_sub: f32,
    /// Tokens per window [default: 128, or the model's positions if fewer].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Calibration windows: the first train, the last `--validation` share choose the
    /// step kept.
    #[arg(long, default_value_t = qevo::tune::DEFAULT_WINDOWS)]
    pub windows: usize,
    /// Share of the calibration windows kept out of training to choose the step that is
    /// returned (at least 2 windows).
    #[arg(long, default_value_t = TuneConfig::default().validation)]
    pub validation: f32,
    /// Held-out windows to score on.
    #[arg(long, default_value_t = 8)]
    pub heldout_windows: usize,
    /// Training windows per step.
    #[arg(long, default_value_t = TuneConfig::default().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train only the block scales, not the norms and biases.
    #[arg(long)]
    pub no_norms: bool,
    /// `fixed`: keep the plan's codes; `rederive`: round the legacy types (q4_0, q4_1,
    /// q5_0, q5_1, q8_0) again at the trained scales every step.
    #[arg(long, value_enum, default_value_t = qevo::tune::Codes::Fixed)]
    pub codes: qevo::tune::Codes,
    /// Validation KL every N steps (0: only at the end); the best step measured is kept.
    #[arg(long, default_value_t = TuneConfig::default().eval_every)]
    pub eval_every: usize,
    /// Write `checkpoint.safetensors` every N steps (0: never).
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// The importance matrix the plan was scored with (the search's imatrix.gguf), so the
    /// starting bytes are the scored ones.
    #[arg(long, value_name = "FILE")]
    pub imatrix_file: Option<PathBuf>,
    /// Output directory: model.gguf, tune.json, checkpoint.safetensors.
    #[arg(long)]
    pub out: PathBuf,
}

fn windows(
    m: &Model,
    file: Option<&Path>,
    default: &str,
    seq: usize,
    n: usize,
) -> Result<TokenWindows> {
    let text = read_text(file, default)?;
    qevo::calib::TokenWindows::from_text(m, &text, seq, n).map_err(|e| match (e, file) {
        (qevo::Error::TextTooShort { tokens, needed, .. }, Some(f)) => {
            anyhow::anyhow!("{}: text has {tokens} tokens; {needed}", f.display())
        }
        (e, _) => tune_flags(e),
    })
}

fn reference(m: &Model, w: TokenWindows) -> Result<Reference> {
    let k = auto_topk(m.arch.vocab(), w.tokens(), 64);
    Ok(Reference::build(m, w, k)?)
}

/// The files `tune` writes into its output directory.
const OUTPUTS: [&str; 4] = [
    "model.gguf",
    "tune.json",
    "checkpoint.safetensors",
    ".qevo.lock",
];

/// Set by Ctrl-C: training stops after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(a: &TuneArgs, force: bool) -> Result<()> {
    let checkpoint = a.out.join("checkpoint.safetensors");
    if a.resume && !checkpoint.is_file() {
        anyhow::bail!(
            "--resume: no checkpoint at {} (start without --resume)",
            checkpoint.display()
        );
    }
    let source = crate::commands::model_path(a.model.as_deref())?;
    let inputs: Vec<&Path> = [Some(source.as_path()), Some(a.plan.as_path())]
        .into_iter()
        .chain([&a.text, &a.heldout, &a.imatrix_file].map(Option::as_deref))
        .flatten()
        .collect();
    qevo::fsutil::refuse_dir_over_inputs(&a.out, &OUTPUTS, &inputs)?;
    let m = load_model(Some(&source))?;
    let (plan, scored) = read_plan_for(&a.plan, &m, force)?;
    let resolved = qevo::plan::resolve_ggml(&m, &plan, false).map_err(|e| match e {
        qevo::Error::Plan { tensor, msg } => anyhow::anyhow!(
            "{}: tensor `{tensor}`: {msg}; tune trains plans of GGML types only",
            a.plan.display()
        ),
        e => e.into(),
    })?;
    let imatrix = a
        .imatrix_file
        .as_deref()
        .map(qevo::calib::Imatrix::read)
        .transpose()?;
    let rounding = RoundingInputs::for_model(&m, imatrix.as_ref(), scored.rounding.as_ref())?;
    let seq = a
        .seq_len
        .unwrap_or(qevo::tune::DEFAULT_SEQ_LEN.min(m.arch.max_positions()));
    let cut = |file: &Option<PathBuf>, default, n| windows(&m, file.as_deref(), default, seq, n);
    let calib = cut(&a.text, qevo::assets::CALIB_TEXT, a.windows)?;
    let held = cut(&a.heldout, qevo::assets::HELDOUT_TEXT, a.heldout_windows)?;
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    let _lock = qevo::fsutil::OutLock::acquire(&a.out)?;
    let setup = TuneSetup {
        model: &m,
        plan: &resolved,
        rounding: &rounding,
        calibration: &reference(&m, calib)?,
        heldout: &reference(&m, held)?,
    };
    let cfg = TuneConfig {
        steps: a.steps,
        lr: a.lr,
        lr_aux: a.lr_norm,
        sub_scales: a.sub_scales,
        lr_sub: a.lr_sub,
        batch: a.batch,
        seed: a.seed,
        train_aux: !a.no_norms,
        codes: a.codes,
        validation: a.validation,
        eval_every: a.eval_every,
        score_training_windows: None,
        checkpoint_every: a.checkpoint_every,
        checkpoint: Some(checkpoint),
        resume: a.resume,
    };
    let started = std::time::Instant::now();
    let out = train(&setup, &cfg).map_err(tune_flags)?;
    let secs = started.elapsed().as_secs_f64();
    let gguf = a.out.join("model.gguf");
    let summary = qevo::export::export_tuned_gguf(&m, &out.tuned, &gguf)?;
    write_report(&a.out.join("tune.json"), &cfg, &out, secs)?;
    print_outcome(&out, secs);
    println!(
        "wrote {} ({} bytes)",
        gguf.display(),
        summary.layout.file_bytes
    );
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(crate::Exit {
            code: crate::EXIT_INTERRUPTED,
            msg: format!(
                "interrupted after {} of {} steps: the files above hold the result so far; \
                 rerun with --resume to continue from the checkpoint",
                out.history
                    .last()
                    .map_or(out.resumed_from.unwrap_or(0), |r| r.step),
                cfg.steps
            ),
        }
        .into());
    }
    Ok(())
}

/// Names `tune`'s own flags in a library error about a setting or a checkpoint.
pub fn tune_flags(e: qevo::Error) -> anyhow::Error {
    const RENAMES: &[(&str, &str)] = &[
        ("lr_aux", "--lr-norm"),
        ("train_aux", "--no-norms"),
        ("checkpoint", "--out"),
        ("max_windows", "--windows/--heldout-windows"),
        ("text", "--text/--windows/--seq-len"),
        ("heldout", "--heldout/--heldout-windows"),
        (
            "rounding",
            "--imatrix-file (and the plan's rounding record)",
        ),
    ];
    crate::names_flags(e, &|f| crate::flag_in::<TuneArgs>(f, RENAMES))
}

/// Runs the training with a progress bar of loss and held-out KL; Ctrl-C stops after
/// the current step (the result so far is still written).
fn train(setup: &TuneSetup, cfg: &TuneConfig) -> qevo::Result<TuneOutcome> {
    let _ = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::Relaxed));
    let bar = indicatif::ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "tune {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut val = None;
    let mut on_step = |r: &StepRecord| {
        val = r.validation_kl.or(val);
        bar.set_position(r.step as u64);
        let undone = if r.kept { "" } else { " (undone)" };
        bar.set_message(match val {
            Some(v) => format!("loss {:.5}{undone} validation KL {v:.5}", r.loss),
            None => format!("loss {:.5}{undone}", r.loss),
        });
    };
    let hooks = TuneHooks {
        on_step: Some(&mut on_step),
        stop: Some(&STOP),
    };
    let out = tune(setup, cfg, hooks);
    bar.finish_and_clear();
    out
}

fn print_outcome(out: &TuneOutcome, secs: f64) {
    if let Some(s) = out.resumed_from {
        println!("resumed from step {s}");
    }
    let mut t = Table::new(&[
        "",
        "training KL",
        "validation KL",
        "held-out KL",
        "held-out ppl",
        "held-out top-1",
    ]);
    for (name, s) in [("before", &out.before), ("after", &out.after)] {
        t.row(vec![
            name.to_string(),
            format!("{:.5}", s.calibration.kl),
            format!("{:.5}", s.validation.kl),
            format!("{:.5}", s.heldout.kl),
            format!("{:.3}", s.heldout.ppl),
            format!("{:.4}", s.heldout.top1),
        ]);
    }
    print!("{}", t.render());
    match out.kept_initial {
        true => println!("no step lowered the validation KL: the plan's own bytes were kept"),
        false => println!("kept step {} (lowest validation KL)", out.kept_step),
    }
    let undone = out.history.iter().filter(|r| !r.kept).count();
    if undone > 0 {
        println!("{undone} steps raised their batch's loss and were undone");
    }
    println!(
        "KL change: training {}, validation {}, held-out {}",
        kl_change(out.before.calibration.kl, out.after.calibration.kl),
        kl_change(out.before.validation.kl, out.after.validation.kl),
        kl_change(out.before.heldout.kl, out.after.heldout.kl)
    );
    let steps = out.history.len().max(1);
    let train_secs: f64 = out.history.iter().map(|r| r.seconds).sum();
    println!(
        "trained {} variables ({} values) for {} steps: {:.2} s/step, {secs:.1} s in all",
        out.variables,
        out.parameters,
        out.history.len(),
        train_secs / steps as f64
    );
}

/// `tune.json`: settings, before/after scores and the step history.
fn write_report(path: &Path, cfg: &TuneConfig, out: &TuneOutcome, secs: f64) -> Result<()> {
    let v = serde_json::json!({
        "config": cfg,
        "before": out.before,
        "after": out.after,
        "resumed_from": out.resumed_from,
        "kept_initial": out.kept_initial,
        "kept_step": out.kept_step,
        "variables": out.variables,
        "parameters": out.parameters,
        "seconds": secs,
        "history": out.history,
    });
    let text = serde_json::to_string_pretty(&v)?;
    qevo::fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `qevo search --tune-front K`: the tuned front plans (the library's last search stage),
/// tuned against untuned at each size, and where their GGUFs were written.
pub fn print_tuned_front(out: &Path, o: &qevo::search::SearchOutcome) {
    if o.tuned.is_empty() {
        eprintln!("tune: no front plan is all GGML types; nothing was tuned");
        return;
    }
    let mut t = Table::new(&[
        "front #",
        "size MB",
        "KL",
        "tuned KL",
        "held-out KL",
        "tuned held-out KL",
        "change",
        "s",
    ]);
    for e in &o.tuned {
        let (b, af) = (&e.before, &e.after);
        t.row(vec![
            e.front_index.to_string(),
            format!("{:.3}", e.size_bytes as f64 / 1e6),
            format!("{:.5}", b.calibration.kl),
            format!("{:.5}", af.calibration.kl),
            format!("{:.5}", b.heldout.kl),
            format!("{:.5}", af.heldout.kl),
            format!(
                "{:+.1}%",
                100.0 * (af.heldout.kl - b.heldout.kl) / b.heldout.kl.max(1e-30)
            ),
            format!("{:.1}", e.seconds),
        ]);
    }
    println!("\nTuned front plans (weights only, as a GGUF runs them)");
    print!("{}", t.render());
    println!("tuned GGUFs in {}", out.join("tuned").display());
}

/// A KL change as a signed percentage of the KL before (`-6.7%` lower, `+6.7%` higher);
/// a rise printed `--6.7%` when the sign was written by hand.
fn kl_change(before: f64, after: f64) -> String {
    match before > 0.0 {
        true => format!("{:+.1}%", 100.0 * (after - before) / before),
        false => "n/a (no KL before)".into(),
    }
}

#[cfg(test)]
mod kl_change_tests {
    use super::kl_change;

    #[test]
    fn a_rise_in_held_out_kl_prints_a_plus_sign() {
        assert_eq!(kl_change(0.01217, 0.01298), "+6.7%");
        assert_eq!(kl_change(0.01298, 0.01217), "-6.2%");
        assert_eq!(kl_change(0.0, 0.1), "n/a (no KL before)");
    }
}
