//! `qevo gguf MODEL --size Q4_K_M --out FILE`: the library's recipe (`qevo::recipe`) with
//! a line per stage, the search's progress bar, and, with `--compare`, llama.cpp's
//! verdict on both files printed as a table.

use crate::commands::{load_model, model_path, read_text};
use crate::flag_names;
use crate::table::Table;
use anyhow::Result;
use qevo::recipe::{compare, GgufOutcome, GgufSettings, RecipeHooks, Stage, StageEvent};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GgufArgs {
    /// Hugging Face model directory or .gguf file (default: the embedded model).
    pub model: Option<PathBuf>,
    /// Calibration text (default: the embedded calibration split); its last fifth is the
    /// validation slice every choice is made on.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// The GGUF to write; the plan (FILE.plan.json), the outcome (FILE.json), the model
    /// card (FILE.md) and the work directory (FILE.qevo/) go beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Also make llama-quantize's file of the size's type name (same imatrix) and score
    /// both with llama-perplexity --kl-divergence on --eval-text.
    #[arg(long)]
    pub compare: bool,
    /// Held-out text of the comparison (default: the embedded held-out text).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    #[command(flatten)]
    pub settings: GgufSettings,
}

pub fn run(a: &GgufArgs) -> Result<()> {
    let path = model_path(a.model.as_deref())?;
    let model = load_model(Some(&path))?;
    let text = a
        .text
        .as_deref()
        .map(|p| read_text(Some(p), ""))
        .transpose()?;
    let command: Vec<String> = std::env::args().collect();
    let mut on_stage = |stage: Stage, e: StageEvent| match e {
        StageEvent::Start { limit: Some(l) } => {
            eprintln!(
                "[{}] started (at most {:.0} s)",
                stage.name(),
                l.as_secs_f64()
            )
        }
        StageEvent::Start { limit: None } => eprintln!("[{}] started", stage.name()),
        StageEvent::Done { seconds } => eprintln!("[{}] done in {seconds:.1} s", stage.name()),
    };
    let hooks = RecipeHooks {
        on_stage: Some(&mut on_stage),
        search_progress: None,
    };
    let o = qevo::recipe::run(&model, text, &a.settings, &a.out, &command.join(" "), hooks)
        .map_err(flag_names)?;
    print_outcome(&model, &o);
    if a.compare {
        compare_files(a, &model, &o)?;
    }
    Ok(())
}

fn print_outcome(model: &qevo::Model, o: &GgufOutcome) {
    let mut t = Table::new(&["plan", "bytes", "validation KL", "top-1"]);
    let mut row = |what: String, bytes: u64, m: &qevo::eval::Metrics| {
        t.row(vec![
            what,
            bytes.to_string(),
            format!("{:.5}", m.kl),
            format!("{:.2}%", m.top1 * 100.0),
        ]);
    };
    row(
        "evolved".into(),
        o.evolved.plan_bytes,
        &o.evolved.validation,
    );
    if let Some(m) = &o.llama_mix {
        row(
            format!("llama.cpp {} mix", o.size),
            m.plan_bytes,
            &m.validation,
        );
    }
    if let Some(tu) = &o.tune {
        let what = if tu.kept { "tuned" } else { "tuned (not kept)" };
        row(what.into(), o.plan.size_bytes(model), &tu.after);
    }
    print!("{}", t.render());
    if let Some(k) = &o.tune_skipped {
        println!(
            "tuning skipped: its smallest run needs about {:.0} s, {:.0} s of --time-budget left",
            k.needed_seconds, k.left_seconds
        );
    }
    println!(
        "wrote {} ({} bytes, {:.3} bpw; budget {} bytes for {}); re-scored from the file: KL {:.5}",
        o.paths.gguf.display(),
        o.file_bytes,
        o.bpw(model),
        o.budget_bytes,
        o.size,
        o.file_check.kl
    );
    let stages: Vec<String> = o
        .stage_seconds
        .iter()
        .map(|(s, t)| format!("{} {t:.0} s", s.name()))
        .collect();
    println!("stages: {} ({:.0} s in all)", stages.join(", "), o.seconds);
    println!(
        "plan {}, card {}",
        o.paths.plan.display(),
        o.paths.card.display()
    );
}

/// llama.cpp's verdict; without the tools (or a type-name size) a warning, the file stays.
fn compare_files(a: &GgufArgs, model: &qevo::Model, o: &GgufOutcome) -> Result<()> {
    let qevo::recipe::SizeTarget::Llama(ftype) = qevo::recipe::SizeTarget::parse(&o.size)? else {
        eprintln!("--compare: needs a llama.cpp type name as --size; nothing compared");
        return Ok(());
    };
    let tools = compare::tools_dir();
    if let Err(e) = compare::check_tools(&tools) {
        eprintln!(
            "--compare: {e}; {} was still written",
            o.paths.gguf.display()
        );
        return Ok(());
    }
    let (text, name) = match &a.eval_text {
        Some(p) => (read_text(Some(p), "")?, p.display().to_string()),
        None => (
            qevo::assets::HELDOUT_TEXT.to_string(),
            "qevo's embedded held-out text".to_string(),
        ),
    };
    eprintln!("[compare] llama-quantize {ftype} and llama-perplexity --kl-divergence");
    let c = compare::compare(model, o, ftype, &text, &name, &tools)?;
    qevo::recipe::write_card(model, o, Some(&c))?;
    let mut t = Table::new(&["file", "bytes", "KLD", "same top-p"]);
    for (what, f) in [
        (format!("llama-quantize {ftype}"), &c.llama),
        ("qevo".into(), &c.qevo),
    ] {
        t.row(vec![
            what,
            f.bytes.to_string(),
            format!("{:.6}", f.kld),
            format!("{:.3}%", f.same_top_p),
        ]);
    }
    print!("{}", t.render());
    println!("qevo / llama.cpp KLD: {:.3}x", c.ratio());
    Ok(())
}
