//! One function per subcommand: load what it needs, call the library, print the result.

use crate::table::Table;
use crate::ModelArgs;
use anyhow::{Context, Result};
use qevo::eval::{Reference, TokenWindows};
use qevo::model::{Model, NoHook};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the embedded model is unpacked.
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("QEVO_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("qevo");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("qevo");
    }
    std::env::temp_dir().join("qevo")
}

pub fn load_model(path: Option<&Path>) -> Result<Model> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => qevo::assets::default_model_dir(&cache_root()).context("unpacking the embedded model")?,
    };
    Ok(Model::load(&path)?)
}

/// The text to evaluate on: a file, or the embedded held-out split.
pub fn read_text(path: Option<&Path>, default: &str) -> Result<String> {
    match path {
        Some(p) => {
            let t = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
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

pub fn inspect(model: Option<PathBuf>) -> Result<()> {
    let m = load_model(model.as_deref())?;
    println!("model:        {}", m.source.display());
    println!("architecture: {} ({} blocks, hidden {}, vocab {})", m.arch.kind().as_str(), m.n_blocks(), m.arch.hidden(), m.arch.vocab());
    println!("fingerprint:  {}", m.fingerprint);
    let mut t = Table::new(&["tensor", "role", "shape", "params", "MACs/token"]);
    for info in &m.tensors {
        t.row(vec![
            info.name.clone(),
            info.role.to_string(),
            format!("{}x{}", info.rows, info.cols),
            info.params().to_string(),
            info.macs_per_token().to_string(),
        ]);
    }
    print!("{}", t.render());
    let q: usize = m.tensors.iter().map(|t| t.params()).sum();
    println!(
        "quantizable params: {q}; other params: {}; FP32 size: {}",
        m.aux_params(),
        human_bytes(m.fp32_bytes())
    );
    Ok(())
}

pub fn eval(args: &ModelArgs) -> Result<()> {
    let m = load_model(args.model.as_deref())?;
    let text = read_text(args.text.as_deref(), qevo::assets::HELDOUT_TEXT)?;
    let seq = args.seq_len.min(m.arch.max_positions());
    let windows = TokenWindows::from_text(&m, &text, seq, args.max_windows)?;
    let start = Instant::now();
    let reference = Reference::build(&m, windows, 1)?;
    let secs = start.elapsed().as_secs_f64();
    let _ = NoHook;
    println!("model:       {}", m.source.display());
    println!("tokens:      {} ({} windows of {})", reference.windows.tokens(), reference.windows.len(), seq);
    println!("perplexity:  {:.3}", reference.fp.ppl);
    println!("throughput:  {:.0} tokens/s ({:.2} s)", reference.windows.tokens() as f64 / secs, secs);
    Ok(())
}

pub fn export(plan_path: &Path, model: Option<&Path>, format: &str, out: &Path, fallback: bool) -> Result<()> {
    use qevo::export::{export_gguf, resolve_ggml, write_tensor_types, ExportFormat};
    let format = ExportFormat::parse(format)?;
    let text = std::fs::read_to_string(plan_path).with_context(|| format!("reading {}", plan_path.display()))?;
    let plan: qevo::quant::TensorPlan =
        serde_json::from_str(&text).with_context(|| format!("{}: not a JSON plan", plan_path.display()))?;
    let m = load_model(model)?;
    let resolved = resolve_ggml(&m, &plan, fallback)?;
    for f in &resolved.fallbacks {
        println!("fallback: {} planned {} -> exported {}", f.tensor, f.planned, f.exported);
    }
    match format {
        ExportFormat::Gguf => {
            let s = export_gguf(&m, &resolved, None, out)?;
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
            let r = write_tensor_types(&m, &resolved, out)?;
            println!("wrote {} ({} overrides)", out.display(), r.lines.len());
            println!("apply to an f16/bf16 GGUF of this model or a sibling with:");
            println!("  {}", r.command(&out.display().to_string()));
        }
    }
    Ok(())
}
