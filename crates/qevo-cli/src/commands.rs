//! One function per subcommand: load what it needs, call the library, print the result.

use crate::table::Table;
use crate::{ModelArgs, QuantizeArgs, ScoreArgs};
use anyhow::{Context, Result};
use qevo::calib::ScoredWith;
use qevo::eval::embedding::Labelled;
use qevo::eval::{Reference, ScoreOptions};
use qevo::model::Model;
use qevo::plan::TensorPlan;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn load_model(path: Option<&Path>) -> Result<Model> {
    Ok(Model::load(&model_path(path)?)?)
}

/// The model to read: `path`, or the embedded model (unpacked on first use).
pub(crate) fn model_path(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => qevo::assets::default_model_dir(&qevo::assets::cache_root())
            .context("unpacking the embedded model"),
    }
}

/// A plan file for model `m`: one made for another model is refused unless `force`,
/// which warns on stderr. With it, what the plan was scored with.
pub fn read_plan_for(path: &Path, m: &Model, force: bool) -> Result<(TensorPlan, ScoredWith)> {
    let read = qevo::search::output::read_plan(path)?;
    let scored = read.scored_with();
    let (plan, warning) = read.for_model(path, m, force).map_err(with_force_hint)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    // Name the plan file in what does not fit the model (a tensor it lacks, bad bits).
    plan.validate(m)
        .with_context(|| format!("plan {}", path.display()))?;
    Ok((plan, scored))
}

/// A plan refused for another model's fingerprint: the flag that applies it anyway.
fn with_force_hint(e: qevo::Error) -> anyhow::Error {
    match &e {
        qevo::Error::Config { key, .. } if key == "model_fingerprint" => {
            anyhow::anyhow!("{e}; pass --force to apply it anyway")
        }
        _ => e.into(),
    }
}

/// The text to evaluate on: a file, or the embedded held-out split.
pub fn read_text(path: Option<&Path>, default: &str) -> Result<String> {
    match path {
        Some(p) => {
            let t = qevo::fsutil::read_text_file(p)?;
            if t.trim().is_empty() {
                anyhow::bail!("{}: the text file is empty", p.display());
            }
            Ok(t)
        }
        None => Ok(default.to_string()),
    }
}

fn human_bytes(b: usize) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// The model's headers as a table; with `fingerprint`, every weight is read too.
pub fn inspect(model: Option<PathBuf>, fingerprint: bool) -> Result<()> {
    let path = model_path(model.as_deref())?;
    let m = Model::inspect(&path)?;
    println!("model:        {}", m.source.display());
    println!(
        "architecture: {} ({} blocks, hidden {}, vocab {})",
        m.arch.kind().as_str(),
        m.arch.n_blocks(),
        m.arch.hidden(),
        m.arch.vocab()
    );
    if fingerprint {
        println!("fingerprint:  {}", Model::load(&path)?.fingerprint);
    }
    let mut t = Table::new(&[
        "tensor",
        "role",
        "shape",
        "params",
        "MACs/token",
        "stored",
        "bytes",
    ]);
    for (info, s) in m.tensors.iter().zip(&m.stored) {
        t.row(vec![
            info.name.clone(),
            info.role.to_string(),
            format!("{}x{}", info.rows, info.cols),
            info.params().to_string(),
            info.macs_per_token().to_string(),
            s.dtype.to_string(),
            s.bytes.to_string(),
        ]);
    }
    print!("{}", t.render());
    let q: usize = m.tensors.iter().map(|t| t.params()).sum();
    println!(
        "quantizable params: {q} (FP size at f32: {}, as stored: {}); other params: {}",
        human_bytes(qevo::plan::tensors_fp_bytes(&m.tensors) as usize),
        human_bytes(m.stored_bytes()),
        m.aux_params
    );
    Ok(())
}

/// What `eval` / `quantize` on `path` will hold, from its headers; refused (before
/// loading) when it cannot fit `--max-memory`.
fn eval_memory(args: &ModelArgs, path: &Path) -> Result<qevo::search::memory::MemoryEstimate> {
    use qevo::search::memory::{eval_memory, MemoryShape};
    let budget = args
        .max_memory
        .as_deref()
        .map(|s| qevo::mem::parse_size("max_memory", s))
        .transpose()
        .map_err(crate::flag_names)?;
    let seq = args.seq_len.unwrap_or(crate::DEFAULT_SEQ_LEN);
    let shape = MemoryShape::read(path)?;
    let available = qevo::mem::available_bytes();
    Ok(eval_memory(
        &shape,
        args.max_windows,
        seq,
        budget,
        available,
    )?)
}

/// The model of `args`, loaded once its estimated memory fits the budget.
fn load_checked(args: &ModelArgs) -> Result<Model> {
    let path = model_path(args.model.as_deref())?;
    eval_memory(args, &path)?;
    Ok(Model::load(&path)?)
}

/// How `qevo eval` measures perplexity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Every position of each window of `--seq-len` tokens.
    Windows,
    /// llama.cpp's `llama-perplexity -c <seq-len>` (BOS-led chunks, second half scored).
    LlamaCpp,
}

/// `llama-perplexity -c`'s default context in qevo's comparisons.
const LLAMA_CPP_CTX: usize = 512;

pub fn eval(args: &ModelArgs, protocol: Protocol) -> Result<()> {
    if protocol == Protocol::LlamaCpp {
        return eval_llama_cpp(args);
    }
    let m = load_checked(args)?;
    let text = read_text(args.text.as_deref(), qevo::assets::HELDOUT_TEXT)?;
    let seq = args.seq_len(&m);
    let windows = args.windows(&m, &text, seq, args.text.as_deref())?;
    let start = Instant::now();
    let reference = Reference::build(&m, windows, 1)?;
    let secs = start.elapsed().as_secs_f64();
    println!("model:       {}", m.source.display());
    println!(
        "tokens:      {} ({} windows of {})",
        reference.windows.tokens(),
        reference.windows.len(),
        seq
    );
    if m.arch.is_decoder() {
        println!("perplexity:  {:.3}", reference.fp.ppl);
    } else {
        println!(
            "embeddings:  {} (mean-pooled, width {})",
            reference.windows.len(),
            m.arch.hidden()
        );
    }
    println!(
        "throughput:  {:.0} tokens/s ({:.2} s)",
        reference.windows.tokens() as f64 / secs,
        secs
    );
    Ok(())
}

/// `qevo eval --protocol llama-cpp`: perplexity as `llama-perplexity -c <seq-len>
/// --chunks <max-windows>` measures it on the same text.
fn eval_llama_cpp(args: &ModelArgs) -> Result<()> {
    let m = load_model(args.model.as_deref())?;
    if !m.arch.is_decoder() {
        anyhow::bail!("--protocol llama-cpp measures decoders; this model is an encoder");
    }
    let text = read_text(args.text.as_deref(), qevo::assets::HELDOUT_TEXT)?;
    let ctx = args
        .seq_len
        .unwrap_or_else(|| LLAMA_CPP_CTX.min(m.arch.max_positions()));
    let start = Instant::now();
    let r =
        qevo::eval::llama_ppl::llama_cpp_perplexity_of_text(&m, &text, ctx, Some(args.max_windows))
            .with_context(|| {
                format!(
                    "--seq-len {ctx} (llama-perplexity -c), --max-windows {} (--chunks)",
                    args.max_windows
                )
            })?;
    let secs = start.elapsed().as_secs_f64();
    println!("model:       {}", m.source.display());
    println!(
        "protocol:    llama-perplexity -c {ctx} --chunks {} ({} tokens scored, second half of each chunk)",
        r.chunks, r.scored_tokens
    );
    println!("perplexity:  {:.4}", r.perplexity);
    println!(
        "throughput:  {:.0} tokens/s ({:.2} s)",
        (r.chunks * ctx) as f64 / secs,
        secs
    );
    Ok(())
}

pub fn quantize(args: &ModelArgs, q: &QuantizeArgs) -> Result<()> {
    use qevo::quant::WeightFormat;
    let format = WeightFormat::parse(&q.format)?;
    let m = load_checked(args)?;
    let plan = TensorPlan::uniform(&m, format, q.act_bits)?;
    let label = format!(
        "{format} weights, {} activations",
        if q.act_bits >= 16 {
            "fp".to_string()
        } else {
            format!("{}-bit", q.act_bits)
        }
    );
    score_plan(&m, &plan, args, &q.score, &label, &ScoredWith::default())
}

/// `qevo eval --plan FILE`: re-scores a saved plan against the FP model.
pub fn eval_plan(args: &ModelArgs, plan_path: &Path, opts: &ScoreArgs, force: bool) -> Result<()> {
    let m = load_checked(args)?;
    let (plan, scored) = read_plan_for(plan_path, &m, force)?;
    score_plan(
        &m,
        &plan,
        args,
        opts,
        &format!("plan {}", plan_path.display()),
        &scored,
    )
}

/// The library's score options from the flags: texts read from their files.
pub fn score_options(args: &ModelArgs, q: &ScoreArgs) -> Result<ScoreOptions> {
    let read = |p: &Option<PathBuf>| p.as_deref().map(|p| read_text(Some(p), "")).transpose();
    Ok(ScoreOptions {
        text: read(&args.text)?,
        calib: read(&q.calib)?,
        seq_len: args.seq_len,
        max_windows: args.max_windows,
        act_sym: q.act_sym,
        act_percentile: q.act_percentile,
        imatrix: q.imatrix,
        imatrix_file: q.imatrix_file.clone(),
        rounding: q.rounding,
    })
}

/// Scores a plan with the library's `score_plan` and prints it. `scored`: what a saved
/// plan was scored with.
fn score_plan(
    m: &Model,
    plan: &TensorPlan,
    args: &ModelArgs,
    q: &ScoreArgs,
    label: &str,
    scored: &ScoredWith,
) -> Result<()> {
    let opts = score_options(args, q)?;
    let start = Instant::now();
    let s = qevo::eval::score_plan(m, plan, scored, &opts).map_err(|e| name_text(e, args, q))?;
    warn_imatrix_mismatch(scored, s.imatrix.as_ref());
    let knn = match &q.labels {
        Some(path) => Some(Labelled::read(m, path)?.compare(m, &s.weights(m)?, q.knn_k)?),
        None => None,
    };
    let secs = start.elapsed().as_secs_f64();
    println!("model:           {}", m.source.display());
    println!(
        "plan:            {label}{}{}{}",
        if s.quantized_acts {
            format!(" ({:?} activation ranges)", s.act_scheme)
        } else {
            String::new()
        },
        match (&q.imatrix_file, q.imatrix) {
            (Some(p), _) => format!(", imatrix {}", p.display()),
            (None, true) => ", imatrix of the calibration text".to_string(),
            _ => String::new(),
        },
        if s.output_rounding {
            ", output rounding"
        } else {
            ""
        }
    );
    println!(
        "tokens:          {} ({} windows of {})",
        s.metrics.tokens, s.windows, s.seq_len
    );
    print_plan_scores(m, plan, &s.metrics, &s.fp)?;
    if let Some(line) = knn {
        println!("k-NN accuracy:   {line}");
    }
    println!("time:            {secs:.2} s");
    Ok(())
}

/// A library error with the file of a text too short, and setting fields as flags.
fn name_text(e: qevo::Error, args: &ModelArgs, q: &ScoreArgs) -> anyhow::Error {
    let file = |what: &str| match what {
        "calibration text" => q.calib.as_deref(),
        _ => args.text.as_deref(),
    };
    match e {
        qevo::Error::TextTooShort {
            what,
            tokens,
            needed,
        } if file(&what).is_some() => {
            let f = file(&what)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            anyhow::anyhow!("{f}: text has {tokens} tokens; {needed}")
        }
        e => crate::flag_names(e),
    }
}

/// Bits, fallbacks, size and quality of a scored plan: KL, perplexity and top-1 for a
/// decoder; 1 − cos and retrieval top-1 for an encoder.
fn print_plan_scores(
    m: &Model,
    plan: &TensorPlan,
    metrics: &qevo::eval::Metrics,
    fp: &qevo::eval::Metrics,
) -> Result<()> {
    let size = plan.size_bytes(m);
    println!("bits per weight: {:.4}", plan.bits_per_weight(m));
    for line in fallback_lines(&plan.fallbacks(m)?) {
        println!("fallback:        {line}");
    }
    println!(
        "size:            {size} bytes ({}; f32 {})",
        human_bytes(size as usize),
        human_bytes(qevo::plan::fp_bytes(m) as usize)
    );
    if m.arch.is_decoder() {
        println!("KL to FP:        {:.5} nats/token", metrics.kl);
        println!("perplexity:      {:.3} (FP {:.3})", metrics.ppl, fp.ppl);
        println!("top-1 agreement: {:.2}%", metrics.top1 * 100.0);
    } else {
        println!("1 - cos to FP:   {:.5} (mean over windows)", metrics.kl);
        println!(
            "retrieval top-1: {:.2}% (own FP embedding is the nearest)",
            metrics.top1 * 100.0
        );
    }
    Ok(())
}

/// Warns when `im` is not the importance matrix a saved plan was scored with: the bytes
/// written or re-scored then differ from those the search scored.
fn warn_imatrix_mismatch(scored: &ScoredWith, im: Option<&qevo::calib::Imatrix>) {
    let Some(want) = scored.imatrix_fingerprint.as_deref() else {
        return;
    };
    match im {
        None => eprintln!(
            "warning: the plan was scored with an importance matrix (fingerprint {want}, the \
             search's imatrix.gguf); pass it with --imatrix-file to reproduce the scored bytes"
        ),
        Some(im) if scored.imatrix_mismatch(Some(im)) => eprintln!(
            "warning: {} (fingerprint {}) is not the importance matrix the plan was scored \
             with (fingerprint {want})",
            im.source.display(),
            im.fingerprint()
        ),
        Some(_) => {}
    }
}

/// One line per (planned, written) pair of GGML fallbacks, with its count and an
/// example tensor, so a 30-layer model's 60 fallbacks read in two lines.
fn fallback_lines(f: &[(String, qevo::quant::Resolved)]) -> Vec<String> {
    let mut groups: Vec<(qevo::quant::Resolved, usize, &str)> = Vec::new();
    for (name, r) in f {
        match groups.iter_mut().find(|g| g.0 == *r) {
            Some(g) => g.1 += 1,
            None => groups.push((*r, 1, name)),
        }
    }
    groups
        .iter()
        .map(|(r, n, first)| {
            format!(
                "{} -> {} on {n} tensor(s) whose rows its blocks do not divide (e.g. {first})",
                r.requested, r.written
            )
        })
        .collect()
}

pub fn export(
    plan_path: &Path,
    model: Option<&Path>,
    format: qevo::export::ExportFormat,
    out: &Path,
    fallback: bool,
    imatrix_file: Option<&Path>,
    force: bool,
) -> Result<()> {
    use qevo::export::{export_plan, ExportOptions};
    // The plan and the importance matrix are inputs too (the model is checked by the
    // library's export).
    let inputs: Vec<&Path> = std::iter::once(plan_path).chain(imatrix_file).collect();
    qevo::fsutil::refuse_overwriting_inputs(out, &inputs)?;
    let m = load_model(model)?;
    let (plan, scored) = read_plan_for(plan_path, &m, force)?;
    let opts = ExportOptions {
        format,
        fallback,
        imatrix: imatrix_file.map(qevo::calib::Imatrix::read).transpose()?,
    };
    let r = export_plan(&m, &plan, &scored, &opts, out).map_err(|e| match e {
        qevo::Error::Plan { tensor, msg } if msg.contains("not a GGML type") => anyhow::anyhow!(
            "plan: tensor `{tensor}`: {msg} (--fallback exports the nearest GGML type)"
        ),
        e => crate::flag_names(e),
    })?;
    if r.imatrix_mismatch {
        warn_imatrix_mismatch(&scored, opts.imatrix.as_ref());
    }
    if r.rounding_not_reproduced {
        eprintln!(
            "warning: {} was scored with qevo's output rounding, which only a GGUF export \
             reproduces; this export rounds per block",
            plan_path.display()
        );
    }
    for f in &r.fallbacks {
        println!(
            "fallback: {} planned {} -> exported {}",
            f.tensor, f.planned, f.exported
        );
    }
    print_export(&r, out);
    Ok(())
}

/// What an export wrote, per format.
fn print_export(r: &qevo::export::ExportReport, out: &Path) {
    use qevo::export::Written;
    match &r.written {
        Written::Gguf(s) => {
            println!("wrote {} ({} bytes)", out.display(), s.layout.file_bytes);
            println!(
                "planned tensors: {} bytes (plan size {} bytes); other tensors {} bytes; header {} bytes; padding {} bytes",
                s.planned_tensor_bytes,
                r.plan_bytes,
                s.other_tensor_bytes,
                s.layout.header_bytes,
                s.layout.padding_bytes
            );
        }
        Written::TensorTypes { overrides, command } => {
            println!("wrote {} ({overrides} overrides)", out.display());
            println!("apply to an f16/bf16 GGUF of this model or a sibling with:");
            println!("  {command}");
        }
        Written::Safetensors(s) => {
            println!(
                "wrote {} (model.safetensors {} bytes, {} packed tensors)",
                out.display(),
                s.file_bytes,
                s.packed_tensors
            );
            println!(
                "planned tensors: {} bytes (plan size {} bytes; {} of them packed integer); other tensors {} bytes",
                s.planned_tensor_bytes, r.plan_bytes, s.packed_bytes, s.other_tensor_bytes
            );
            println!("layout: {}", out.join("quantization_config.json").display());
        }
        Written::CompressedTensors(s) => {
            println!(
                "wrote {} (model.safetensors {} bytes, {} packed tensors in {} config group(s))",
                out.display(),
                s.file_bytes,
                s.packed_tensors,
                s.config_groups
            );
            println!(
                "planned tensors: {} bytes as stored (plan size {} bytes; the difference is int32 row padding and weight_shape); other tensors {} bytes",
                s.planned_tensor_bytes, r.plan_bytes, s.other_tensor_bytes
            );
            for n in &s.loader_notes {
                println!("note: {n}");
            }
        }
    }
}

/// Default tokens per chunk of `qevo imatrix` (llama-imatrix's `-c` default).
const IMATRIX_CTX: usize = 512;

/// `qevo imatrix`: llama-imatrix's collection on a text, written as llama.cpp's GGUF.
pub fn imatrix(
    model: Option<&Path>,
    text: Option<&Path>,
    ctx: Option<usize>,
    chunks: Option<usize>,
    out: &Path,
) -> Result<()> {
    let source = model_path(model)?;
    let inputs: Vec<&Path> = std::iter::once(source.as_path()).chain(text).collect();
    qevo::fsutil::refuse_overwriting_inputs(out, &inputs)?;
    let m = load_model(Some(&source))?;
    let body = read_text(text, qevo::assets::CALIB_TEXT)?;
    let n_ctx = ctx.unwrap_or_else(|| IMATRIX_CTX.min(m.arch.max_positions()));
    let mut im = qevo::calib::collect_imatrix_llama_cpp(&m, &body, n_ctx, chunks)?;
    im.datasets = vec![match text {
        Some(p) => p.display().to_string(),
        None => "qevo embedded calibration text".to_string(),
    }];
    im.write_gguf(out)?;
    println!(
        "wrote {} ({} tensors, {} chunks of {} tokens)",
        out.display(),
        im.entries.len(),
        im.chunk_count,
        im.chunk_size
    );
    Ok(())
}
