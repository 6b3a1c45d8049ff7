//! `qevo gguf --compare`: llama.cpp judges. llama-quantize makes its own file of the
//! size's type name from the same f16 model and the same importance matrix, and one
//! llama-perplexity `--kl-divergence` protocol (base logits of the f16 file, `-c 512`,
//! 8 chunks of a held-out text) scores both files. The tools are llama.cpp's, built by
//! `scripts/build_llama_tools.sh`; nothing here imitates them.

use super::GgufOutcome;
use crate::error::{Error, Result};
use crate::export::export_gguf;
use crate::model::Model;
use crate::plan::{LlamaFtype, TensorPlan};
use crate::quant::{GgmlType, RoundingInputs, WeightFormat};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// llama-perplexity's chunk length and count for the comparison.
pub const CTX: usize = 512;
pub const CHUNKS: usize = 8;

/// One file as llama.cpp measured it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileScore {
    pub path: PathBuf,
    pub bytes: u64,
    /// Mean KL divergence to the f16 base's logits.
    pub kld: f64,
    /// "Same top p": percentage of positions whose top token equals the base's.
    pub same_top_p: f64,
}

/// Both files, scored in one protocol.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub llama_type: String,
    pub eval_text: String,
    pub ctx: usize,
    pub chunks: usize,
    pub llama: FileScore,
    pub qevo: FileScore,
}

impl Comparison {
    /// qevo's KLD over llama.cpp's.
    pub fn ratio(&self) -> f64 {
        self.qevo.kld / self.llama.kld.max(1e-12)
    }
}

/// Where the tools are: `$QEVO_LLAMA_TOOLS/bin`, else `~/.cache/qevo/llama-tools/bin`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("QEVO_LLAMA_TOOLS") {
        Some(d) => PathBuf::from(d).join("bin"),
        None => crate::assets::cache_root().join("llama-tools").join("bin"),
    }
}

const TOOLS: [&str; 2] = ["llama-quantize", "llama-perplexity"];

/// An error saying how to build the tools, when one is missing from `dir`.
pub fn check_tools(dir: &Path) -> Result<()> {
    match TOOLS.iter().find(|t| !dir.join(t).is_file()) {
        None => Ok(()),
        Some(t) => Err(Error::Invalid(format!(
            "{} not found: build llama.cpp's tools with scripts/build_llama_tools.sh \
             (or set QEVO_LLAMA_TOOLS to a directory holding bin/{t})",
            dir.join(t).display()
        ))),
    }
}

/// Compares the recipe's file with llama-quantize's `ftype` on `eval_text` (`name` names
/// the text in the report); the work files go to `o.paths.work/compare`.
pub fn compare(
    model: &Model,
    o: &GgufOutcome,
    ftype: LlamaFtype,
    eval_text: &str,
    name: &str,
    tools: &Path,
) -> Result<Comparison> {
    check_tools(tools)?;
    let dir = o.paths.work.join("compare");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let base = dir.join("base-f16.gguf");
    let f16 = TensorPlan::uniform(model, WeightFormat::Ggml(GgmlType::F16), 16)?;
    export_gguf(
        model,
        &crate::plan::resolve_ggml(model, &f16, false)?,
        &RoundingInputs::default(),
        &base,
    )?;
    let text = dir.join("eval.txt");
    crate::fsutil::write_atomic(&text, eval_text.as_bytes())?;
    let llama = dir.join(format!("llama-{ftype}.gguf"));
    let imatrix = o.paths.work.join("imatrix.gguf");
    let threads = threads();
    let quantize = [
        "--imatrix".into(),
        imatrix.into_os_string(),
        base.clone().into_os_string(),
        llama.clone().into_os_string(),
        ftype.name().into(),
        threads.clone().into(),
    ];
    run(
        &tools.join("llama-quantize"),
        &quantize,
        &dir.join("llama-quantize.log"),
    )?;
    let kld = dir.join("base.kld");
    let ppl = tools.join("llama-perplexity");
    let common: Vec<OsString> = [
        "-c",
        &CTX.to_string(),
        "--chunks",
        &CHUNKS.to_string(),
        "-t",
        &threads,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut args: Vec<OsString> = vec!["-m".into(), base.into_os_string(), "-f".into()];
    args.extend([
        text.into_os_string(),
        "--kl-divergence-base".into(),
        kld.clone().into_os_string(),
    ]);
    args.extend(common.iter().cloned());
    run(&ppl, &args, &dir.join("base.log"))?;
    let score = |file: &Path, tag: &str| {
        score_file(
            &ppl,
            file,
            &kld,
            &common,
            &dir.join(format!("{tag}.kld.log")),
        )
    };
    Ok(Comparison {
        llama_type: ftype.name().to_string(),
        eval_text: name.to_string(),
        ctx: CTX,
        chunks: CHUNKS,
        llama: score(&llama, "llama")?,
        qevo: score(&o.paths.gguf, "qevo")?,
    })
}

fn threads() -> String {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string()
}

fn score_file(
    ppl: &Path,
    file: &Path,
    kld: &Path,
    common: &[OsString],
    log: &Path,
) -> Result<FileScore> {
    let mut args: Vec<OsString> = vec!["-m".into(), file.into(), "--kl-divergence-base".into()];
    args.extend([kld.into(), "--kl-divergence".into()]);
    args.extend(common.iter().cloned());
    // llama.cpp logs from a worker thread; on a loaded machine the summary lines have
    // been seen missing from a successful run's output, so a run without them is redone.
    let mut parsed = None;
    for _ in 0..3 {
        parsed = parse_kld(&run(ppl, &args, log)?);
        if parsed.is_some() {
            break;
        }
    }
    let (kld, same) = parsed.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no `Mean KLD` / `Same top p` lines in llama-perplexity's output (3 runs)",
            file.display()
        ))
    })?;
    let bytes = std::fs::metadata(file)
        .map_err(|e| Error::io(file, e))?
        .len();
    Ok(FileScore {
        path: file.to_path_buf(),
        bytes,
        kld,
        same_top_p: same,
    })
}

/// Runs a tool with its output going to a file beside its inputs (`LOG`), returned as
/// text, or an error holding its tail. A file, not a pipe: llama.cpp's tools log from a
/// worker thread, and piped runs were seen to lose their last lines.
fn run(tool: &Path, args: &[OsString], log: &Path) -> Result<String> {
    let file = std::fs::File::create(log).map_err(|e| Error::io(log, e))?;
    let err = file.try_clone().map_err(|e| Error::io(log, e))?;
    let status = Command::new(tool)
        .args(args)
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| Error::io(tool, e))?;
    let text = std::fs::read_to_string(log).map_err(|e| Error::io(log, e))?;
    if !status.success() {
        let start = text.len().saturating_sub(1500);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        return Err(Error::Invalid(format!(
            "{} failed ({status}); the end of {}:\n{}",
            tool.display(),
            log.display(),
            &text[start..]
        )));
    }
    Ok(text)
}

/// `Mean    KLD:   0.0625 ±   0.0012` and `Same top p:  91.2 ±  0.3 %` from
/// llama-perplexity's `--kl-divergence` summary.
fn parse_kld(out: &str) -> Option<(f64, f64)> {
    let value = |prefix: &str| {
        out.lines().find_map(|l| {
            let rest = l.trim_start().strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    Some((
        value("Mean    KLD:").or_else(|| value("Mean KLD:"))?,
        value("Same top p:")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_perplexity_summary_lines_parse() {
        let out = "====== KL divergence statistics ======\nMean    KLD:   0.062517 ±   0.001234\n\
                   Maximum KLD:   3.1\nSame top p:  91.234 ±  0.123 %\n";
        assert_eq!(parse_kld(out), Some((0.062517, 91.234)));
        assert_eq!(parse_kld("nothing"), None);
    }

    #[test]
    fn missing_tools_say_how_to_build_them() {
        let e = check_tools(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("build_llama_tools.sh"), "{e}");
    }
}
