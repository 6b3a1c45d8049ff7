//! One function per subcommand: load what it needs, call the library, print the result.

use crate::table::Table;
use crate::{ModelArgs, QuantizeArgs, ScoreArgs};
use anyhow::{Context, Result};
use qevo::eval::embedding::Labelled;
use qevo::eval::Reference;
use qevo::model::{Model, NoHook};
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

/// What a saved plan was scored with: the fingerprint of its importance matrix
/// (`PlanFile::imatrix_fingerprint`) and its output-rounding record (`PlanFile::rounding`).
#[derive(Default)]
pub struct ScoredWith {
    pub imatrix_fingerprint: Option<String>,
    pub rounding: Option<qevo::quant::OutputRounding>,
}

/// A plan file for model `m`: one made for another model is refused unless `force`,
/// which warns on stderr. With it, what the plan was scored with.
pub fn read_plan_for(
    path: &Path,
    m: &Model,
    force: bool,
) -> Result<(qevo::quant::TensorPlan, ScoredWith)> {
    let read = qevo::search::output::read_plan(path)?;
    let scored = ScoredWith {
        imatrix_fingerprint: read.imatrix_fingerprint.clone(),
        rounding: read.rounding.clone(),
    };
    let (plan, warning) = read.for_model(path, m, force)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    // Name the plan file in what does not fit the model (a tensor it lacks, bad bits).
    plan.validate(m)
        .with_context(|| format!("plan {}", path.display()))?;
    Ok((plan, scored))
}

/// What a plan's GGML tensors round with: the importance matrix (per tensor), and for
/// output rounding the input moments, rebuilt from a saved plan's `record` (so the bytes
/// are the ones it was scored with) or else collected on `fresh` calibration windows.
pub(crate) fn rounding_inputs(
    m: &Model,
    imatrix: Option<Vec<Option<Vec<f32>>>>,
    record: Option<&qevo::quant::OutputRounding>,
    fresh: Option<&qevo::eval::TokenWindows>,
) -> Result<qevo::quant::RoundingInputs> {
    let moments = match (record, fresh) {
        (Some(r), _) => r.moments(m)?,
        (None, Some(w)) => qevo::quant::collect_hessians(m, w, qevo::quant::gptq::DEFAULT_DAMP)?,
        (None, None) => Vec::new(),
    };
    Ok(qevo::quant::RoundingInputs {
        imatrix: imatrix.unwrap_or_default(),
        moments,
    })
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
        .map_err(crate::search_cmd::flag_names)?;
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

pub fn eval(args: &ModelArgs) -> Result<()> {
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

pub fn quantize(args: &ModelArgs, q: &QuantizeArgs) -> Result<()> {
    use qevo::quant::{TensorPlan, WeightFormat};
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

/// Scores a plan: weights through the cache (as the search does), activations through
/// ranges calibrated on the calibration text. `scored`: what a saved plan was scored
/// with (its output rounding is reproduced from the plan's own record).
fn score_plan(
    m: &Model,
    plan: &qevo::quant::TensorPlan,
    args: &ModelArgs,
    q: &ScoreArgs,
    label: &str,
    scored: &ScoredWith,
) -> Result<()> {
    use qevo::quant::{calibrate_act_ranges, ActQuantHook, ActScheme, WeightCache};
    // A given imatrix file is read (and checked against the model) before any forward
    // pass, so a bad file fails at once.
    let file_imatrix = match &q.imatrix_file {
        Some(path) => {
            let im = qevo::quant::Imatrix::read(path)?;
            let per_tensor = im.for_model(m)?;
            Some((im, per_tensor))
        }
        None => None,
    };
    let seq = args.seq_len(m);
    let text = read_text(args.text.as_deref(), qevo::assets::HELDOUT_TEXT)?;
    let windows = args.windows(m, &text, seq, args.text.as_deref())?;
    let start = Instant::now();
    let k = qevo::eval::auto_topk(m.arch.vocab(), windows.tokens(), 64);
    let reference = Reference::build(m, windows, k)?;
    let act_bits = plan.act_bits(m)?;
    let quantized_acts = act_bits.iter().any(|&b| b < 16);
    // A plan scored with output rounding rebuilds its moments from its own record; only
    // `--rounding output` on a plan without one collects them on the calibration text.
    let output_rounding = q.rounding == "output" || scored.rounding.is_some();
    let fresh_moments = output_rounding && scored.rounding.is_none();
    let calib = if q.imatrix || quantized_acts || fresh_moments {
        let t = read_text(q.calib.as_deref(), qevo::assets::CALIB_TEXT)?;
        Some(args.windows(m, &t, seq, q.calib.as_deref())?)
    } else {
        None
    };
    let imatrix = match (file_imatrix, &calib) {
        (Some(loaded), _) => Some(loaded),
        (None, Some(c)) if q.imatrix => {
            let im = qevo::quant::collect_imatrix(m, c)?;
            let per_tensor = im.for_model(m)?;
            Some((im, per_tensor))
        }
        _ => None,
    };
    warn_imatrix_mismatch(
        scored.imatrix_fingerprint.as_deref(),
        imatrix.as_ref().map(|(im, _)| im),
    );
    let fresh = calib.as_ref().filter(|_| fresh_moments);
    let per_tensor = imatrix.map(|(_, per_tensor)| per_tensor);
    let rounding = rounding_inputs(m, per_tensor, scored.rounding.as_ref(), fresh)?;
    // The plan's weights are drawn from a cache block by block, so the budget bounds them.
    let budget = eval_memory(args, &m.source)?.weight_cache as usize;
    let cache = WeightCache::new(budget).with_rounding(rounding);
    let formats = plan.per_tensor(m)?.iter().map(|c| c.format).collect();
    let weights = qevo::quant::PlanWeights::new(&cache, m, formats)?;
    let scheme = if q.act_sym {
        ActScheme::Sym
    } else {
        ActScheme::Asym
    };
    let metrics = match &calib {
        Some(c) if quantized_acts => {
            let ranges = calibrate_act_ranges(m, c, q.act_percentile)?;
            let hook = ActQuantHook::new(&ranges, act_bits, scheme);
            reference.score_weights(m, &weights, &hook)?
        }
        _ => reference.score_weights(m, &weights, &NoHook)?,
    };
    let knn = match &q.labels {
        Some(path) => {
            let all = cache.weights_for(m, plan)?;
            Some(Labelled::read(m, path)?.compare(m, &all, q.knn_k)?)
        }
        None => None,
    };
    let secs = start.elapsed().as_secs_f64();
    println!("model:           {}", m.source.display());
    println!(
        "plan:            {label}{}{}{}",
        if quantized_acts {
            format!(" ({scheme:?} activation ranges)")
        } else {
            String::new()
        },
        match (&q.imatrix_file, q.imatrix) {
            (Some(p), _) => format!(", imatrix {}", p.display()),
            (None, true) => ", imatrix of the calibration text".to_string(),
            _ => String::new(),
        },
        if output_rounding {
            ", output rounding"
        } else {
            ""
        }
    );
    println!(
        "tokens:          {} ({} windows of {seq})",
        reference.windows.tokens(),
        reference.windows.len()
    );
    print_plan_scores(m, plan, &metrics, &reference)?;
    if let Some(line) = knn {
        println!("k-NN accuracy:   {line}");
    }
    println!("time:            {secs:.2} s");
    Ok(())
}

/// Bits, fallbacks, size and quality of a scored plan: KL, perplexity and top-1 for a
/// decoder; 1 − cos and retrieval top-1 for an encoder.
fn print_plan_scores(
    m: &Model,
    plan: &qevo::quant::TensorPlan,
    metrics: &qevo::eval::Metrics,
    reference: &Reference,
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
        println!(
            "perplexity:      {:.3} (FP {:.3})",
            metrics.ppl, reference.fp.ppl
        );
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

/// Warns when `im` is not the importance matrix a saved plan was scored with (fingerprint
/// `scored_with`): the bytes written or re-scored then differ from those the search scored.
fn warn_imatrix_mismatch(scored_with: Option<&str>, im: Option<&qevo::quant::Imatrix>) {
    match (scored_with, im) {
        (Some(want), None) => eprintln!(
            "warning: the plan was scored with an importance matrix (fingerprint {want}, the \
             search's imatrix.gguf); pass it with --imatrix-file to reproduce the scored bytes"
        ),
        (Some(want), Some(im)) if im.fingerprint() != want => eprintln!(
            "warning: {} (fingerprint {}) is not the importance matrix the plan was scored \
             with (fingerprint {want})",
            im.source.display(),
            im.fingerprint()
        ),
        _ => {}
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
    format: &str,
    out: &Path,
    fallback: bool,
    imatrix_file: Option<&Path>,
    force: bool,
) -> Result<()> {
    use qevo::export::{
        export_compressed_tensors, export_gguf, export_safetensors, resolve_ggml,
        write_tensor_types, ExportFormat,
    };
    let format = ExportFormat::parse(format)?;
    let m = load_model(model)?;
    let (plan, scored) = read_plan_for(plan_path, &m, force)?;
    let imatrix = match imatrix_file {
        Some(p) if format == ExportFormat::Gguf => Some(qevo::quant::Imatrix::read(p)?),
        Some(_) => anyhow::bail!(
            "--imatrix-file applies to GGUF exports (pass it to llama-quantize --imatrix for tensor-types)"
        ),
        None => None,
    };
    if format == ExportFormat::Gguf {
        warn_imatrix_mismatch(scored.imatrix_fingerprint.as_deref(), imatrix.as_ref());
    }
    if scored.rounding.is_some() && format != ExportFormat::Gguf {
        eprintln!(
            "warning: {} was scored with qevo's output rounding, which only a GGUF export \
             reproduces; this export rounds per block",
            plan_path.display()
        );
    }
    let per_tensor = imatrix.map(|im| im.for_model(&m)).transpose()?;
    let record = scored
        .rounding
        .as_ref()
        .filter(|_| format == ExportFormat::Gguf);
    let rounding = rounding_inputs(&m, per_tensor, record, None)?;
    // GGUF and tensor-type overrides need one GGML type per tensor.
    let resolve = || -> Result<qevo::export::ResolvedPlan> {
        let resolved = resolve_ggml(&m, &plan, fallback)?;
        for f in &resolved.fallbacks {
            println!(
                "fallback: {} planned {} -> exported {}",
                f.tensor, f.planned, f.exported
            );
        }
        Ok(resolved)
    };
    match format {
        ExportFormat::Gguf => {
            let s = export_gguf(&m, &resolve()?, &rounding, out)?;
            println!("wrote {} ({} bytes)", out.display(), s.layout.file_bytes);
            println!(
                "planned tensors: {} bytes (plan size {} bytes); other tensors {} bytes; header {} bytes; padding {} bytes",
                s.planned_tensor_bytes,
                plan.size_bytes(&m),
                s.other_tensor_bytes,
                s.layout.header_bytes,
                s.layout.padding_bytes
            );
        }
        ExportFormat::TensorTypes => {
            let r = write_tensor_types(&m, &resolve()?, out)?;
            println!("wrote {} ({} overrides)", out.display(), r.lines.len());
            println!("apply to an f16/bf16 GGUF of this model or a sibling with:");
            println!("  {}", r.command(&out.display().to_string()));
        }
        ExportFormat::Safetensors => {
            if fallback {
                anyhow::bail!("--fallback applies to GGUF exports only");
            }
            let s = export_safetensors(&m, &plan, out)?;
            println!(
                "wrote {} (model.safetensors {} bytes, {} packed tensors)",
                out.display(),
                s.file_bytes,
                s.packed_tensors
            );
            println!(
                "planned tensors: {} bytes (plan size {} bytes; {} of them packed integer); other tensors {} bytes",
                s.planned_tensor_bytes,
                plan.size_bytes(&m),
                s.packed_bytes,
                s.other_tensor_bytes
            );
            println!("layout: {}", out.join("quantization_config.json").display());
        }
        ExportFormat::CompressedTensors => {
            if fallback {
                anyhow::bail!("--fallback applies to GGUF exports only");
            }
            let s = export_compressed_tensors(&m, &plan, out)?;
            println!(
                "wrote {} (model.safetensors {} bytes, {} packed tensors in {} config group(s))",
                out.display(),
                s.file_bytes,
                s.packed_tensors,
                s.config_groups
            );
            println!(
                "planned tensors: {} bytes as stored (plan size {} bytes; the difference is int32 row padding and weight_shape); other tensors {} bytes",
                s.planned_tensor_bytes,
                plan.size_bytes(&m),
                s.other_tensor_bytes
            );
            for n in &s.loader_notes {
                println!("note: {n}");
            }
        }
    }
    Ok(())
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
    let m = load_model(model)?;
    let body = read_text(text, qevo::assets::CALIB_TEXT)?;
    let n_ctx = ctx.unwrap_or_else(|| IMATRIX_CTX.min(m.arch.max_positions()));
    let mut im = qevo::quant::collect_imatrix_llama_cpp(&m, &body, n_ctx, chunks)?;
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
