//! The `qevo` binary: parses arguments into validated options, calls the library, prints.
//! All printing and exit codes live here; the library returns typed errors.

mod commands;
mod table;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "qevo", version, about = "Evolve hardware-aware mixed-precision quantization plans for transformer models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Model + text arguments shared by the commands that run a model.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory or .gguf file (default: the embedded model).
    pub model: Option<PathBuf>,
    /// Text to evaluate on (default: the embedded held-out text).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Most windows to evaluate.
    #[arg(long, default_value_t = 64)]
    pub max_windows: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show a model's architecture and quantizable tensors.
    Inspect {
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
    },
    /// Perplexity and throughput of the FP model on a text.
    Eval {
        #[command(flatten)]
        args: ModelArgs,
    },
    /// Write a plan as a quantized GGUF, or as llama-quantize --tensor-type overrides.
    Export {
        /// Plan file (JSON, the TensorPlan form `qevo search` writes).
        #[arg(long)]
        plan: PathBuf,
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
        /// gguf | tensor-types
        #[arg(long, default_value = "gguf")]
        format: String,
        /// Output file (never the source model).
        #[arg(long)]
        out: PathBuf,
        /// Export non-GGML formats as the nearest GGML type (reported) instead of failing.
        #[arg(long)]
        fallback: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Inspect { model } => commands::inspect(model),
        Cmd::Eval { args } => commands::eval(&args),
        Cmd::Export { plan, model, format, out, fallback } => {
            commands::export(&plan, model.as_deref(), &format, &out, fallback)
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
