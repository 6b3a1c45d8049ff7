//! The `qevo` binary: parses arguments into validated options, calls the library, prints.
//! All printing and exit codes live here; the library returns typed errors.

mod commands;
mod gguf_cmd;
mod hw_cmd;
mod report_cmd;
mod search_cmd;
mod table;
mod tune_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "qevo",
    version,
    about = "Evolve hardware-aware mixed-precision quantization plans for transformer models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Apply a plan made for another model (a different weight fingerprint) to MODEL,
    /// with a warning, instead of refusing it (eval --plan, cost, export).
    #[arg(long, global = true)]
    force: bool,
}

/// Model + text arguments shared by the commands that run a model.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory or .gguf file (default: the embedded model).
    pub model: Option<PathBuf>,
    /// Text to evaluate on (default: the embedded held-out text).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Tokens per evaluation window [default: 256, or the model's positions if fewer].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Most windows to evaluate.
    #[arg(long, default_value_t = qevo::eval::score::DEFAULT_MAX_WINDOWS)]
    pub max_windows: usize,
    /// Memory budget (6G, 1500M, 2GiB); a run that cannot fit is refused before it loads
    /// [default: what it needs plus a 2 GiB weight cache, at most the available memory].
    #[arg(long)]
    pub max_memory: Option<String>,
}

/// Tokens per window when `--seq-len` is not given (capped by the model's positions).
const DEFAULT_SEQ_LEN: usize = qevo::eval::score::DEFAULT_SEQ_LEN;

impl ModelArgs {
    /// `--seq-len`, or the default capped by the model's positions; a given length longer
    /// than the model handles is refused when the windows are cut.
    pub fn seq_len(&self, m: &qevo::model::Model) -> usize {
        self.seq_len
            .unwrap_or_else(|| DEFAULT_SEQ_LEN.min(m.arch.max_positions()))
    }

    /// `text` (read from `file`, or an embedded text) cut into at most `--max-windows`
    /// windows of `seq` tokens; a text too short names its file.
    pub fn windows(
        &self,
        m: &qevo::model::Model,
        text: &str,
        seq: usize,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<qevo::calib::TokenWindows> {
        cut_windows(m, text, seq, self.max_windows, file)
    }
}

/// `text` (read from `file`, or an embedded text) cut into at most `n` windows of `seq`
/// tokens; a text too short names its file, other errors name their flag.
pub fn cut_windows(
    m: &qevo::model::Model,
    text: &str,
    seq: usize,
    n: usize,
    file: Option<&std::path::Path>,
) -> anyhow::Result<qevo::calib::TokenWindows> {
    qevo::calib::TokenWindows::from_text(m, text, seq, n).map_err(|e| match (e, file) {
        (qevo::Error::TextTooShort { tokens, needed, .. }, Some(f)) => {
            anyhow::anyhow!("{}: text has {tokens} tokens; {needed}", f.display())
        }
        (e, _) => flag_names(e),
    })
}

/// Renames a setting error's field (a `Settings` field, or a window setting of `eval`)
/// to the flag of `qevo search` that sets it; other errors pass unchanged.
pub fn flag_names(e: qevo::Error) -> anyhow::Error {
    names_flags(e, &|f| flag_in::<search_cmd::SearchArgs>(f, &[]))
}

/// Renames the fields a library error names (a setting, the settings a checkpoint was
/// made with) by `flag`.
pub fn names_flags(e: qevo::Error, flag: &dyn Fn(&str) -> String) -> anyhow::Error {
    match e {
        qevo::Error::Setting { field, msg } => anyhow::anyhow!("{}: {msg}", flag(&field)),
        qevo::Error::ResumeMismatch { path, differences } => {
            let ds: Vec<qevo::error::Difference> = differences
                .into_iter()
                .map(|d| qevo::error::Difference {
                    field: flag(&d.field),
                    ..d
                })
                .collect();
            anyhow::anyhow!(
                "{}: checkpoint of another run ({}); rerun with the settings it was started \
                 with, or without --resume to start afresh",
                path.display(),
                qevo::error::describe(&ds)
            )
        }
        other => other.into(),
    }
}

/// The flag of a field in `A`'s arguments: `renames` first, else the long name clap
/// gives the field (`--constraint` for `constraints`, `--no-cache` for `cache`), the
/// value name of a positional argument (`MODEL`), else the field with dashes. A dotted
/// field (a key inside a file) is not a flag and stays as it is.
pub fn flag_in<A: clap::Args>(field: &str, renames: &[(&str, &str)]) -> String {
    if let Some((_, f)) = renames.iter().find(|(k, _)| *k == field) {
        return f.to_string();
    }
    if !field
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return field.to_string();
    }
    let cmd = A::augment_args(clap::Command::new("qevo"));
    let flag = match cmd.get_arguments().find(|a| a.get_id() == field) {
        Some(a) => match (a.get_long(), a.is_positional()) {
            (Some(l), _) => format!("--{l}"),
            (None, true) => field.to_uppercase(),
            (None, false) => format!("--{}", field.replace('_', "-")),
        },
        None if field == "model" => "MODEL".to_string(),
        None => format!("--{}", field.replace('_', "-")),
    };
    flag
}

#[derive(Subcommand)]
enum Cmd {
    /// The best GGUF at a size, in one command: importance matrix, a weights-only search
    /// at the size, tuning, export and a self-check (`--compare`: against llama-quantize's
    /// own file of that type, as llama-perplexity measures both).
    Gguf(Box<gguf_cmd::GgufArgs>),
    /// Show a model's architecture and quantizable tensors (from the headers alone).
    Inspect {
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
        /// Also read every weight to print the model's fingerprint (what plans record).
        #[arg(long)]
        fingerprint: bool,
    },
    /// Evolve quantization plans for a target device (the main job).
    Search(Box<search_cmd::SearchArgs>),
    /// Perplexity and throughput of the FP model on a text.
    Eval {
        #[command(flatten)]
        args: ModelArgs,
        /// Re-score a saved plan (plan.json / plan.yaml) instead of the FP model.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// How perplexity is measured: `windows` scores every position of each window;
        /// `llama-cpp` is `llama-perplexity -c <seq-len>`'s protocol (BOS-led chunks, only
        /// the second half of each scored), the number to put beside llama.cpp's.
        #[arg(long, value_enum, default_value_t = commands::Protocol::Windows)]
        protocol: commands::Protocol,
        #[command(flatten)]
        score: ScoreArgs,
    },
    /// Quantize every tensor to one format and score it against the FP model.
    Quantize {
        #[command(flatten)]
        args: ModelArgs,
        #[command(flatten)]
        q: QuantizeArgs,
    },
    /// List the built-in hardware profiles, or show one with its sources.
    Profiles {
        #[command(subcommand)]
        cmd: Option<ProfilesCmd>,
    },
    /// Size, latency, energy and memory of a plan on a target, and which constraints pass.
    Cost {
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
        /// Plan file (plan.json / plan.yaml).
        #[arg(long)]
        plan: PathBuf,
        /// Built-in profile name or a profile TOML file.
        #[arg(long, default_value = "arm-neon")]
        target: String,
        #[arg(long)]
        prefill_tokens: Option<u64>,
        #[arg(long)]
        decode_tokens: Option<u64>,
    },
    /// What a search would cost, from a model's config.json alone (no weights): the
    /// evaluations its stages make and the seconds per evaluation on each machine.
    PlanCost {
        /// config.json, or the directory holding it.
        config: PathBuf,
        /// Machine that evaluates: `host` (measure this one now), a built-in profile, or a
        /// profile TOML (`qevo profile-host` writes one). Repeat for several.
        #[arg(long = "machine", default_value = "host")]
        machines: Vec<String>,
        /// Target the plans are for (its formats shape the search space).
        #[arg(long, default_value = qevo::search::defaults::TARGET)]
        target: String,
        /// One gene per tensor role, per block, or per tensor.
        #[arg(long, value_enum, default_value_t = qevo::search::space::UnitMode::Role)]
        unit: qevo::search::space::UnitMode,
        #[arg(long, default_value_t = qevo::search::defaults::POPULATION)]
        population: usize,
        #[arg(long, default_value_t = qevo::search::defaults::GENERATIONS)]
        generations: u64,
        #[arg(long, default_value_t = qevo::search::defaults::SEQ_LEN)]
        seq_len: usize,
        #[arg(long, default_value_t = qevo::search::defaults::CALIB_WINDOWS)]
        calib_windows: usize,
    },
    /// Redraw report.html, pareto.svg and convergence.svg of a search's output directory
    /// from its report.json and run.json, and print the summary.
    Report {
        /// The directory `qevo search --out` wrote.
        dir: PathBuf,
    },
    /// Measure this machine and write it as a profile TOML (usable as --target).
    ProfileHost {
        #[arg(long, default_value = "host.toml")]
        out: PathBuf,
    },
    /// Write a plan as a quantized GGUF, as llama-quantize --tensor-type overrides, as a
    /// compressed-tensors directory (generic integer formats; transformers and vLLM load
    /// it), or as qevo-int packed safetensors (`qevo` loads the directory back).
    Export {
        /// Plan file (plan.json / plan.yaml from `qevo search`).
        #[arg(long)]
        plan: PathBuf,
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
        /// gguf | tensor-types | compressed-tensors (generic integer formats, a directory) |
        /// safetensors (qevo-int: also pow2 scales and ragged groups, a directory)
        #[arg(long, value_enum, default_value_t = qevo::export::ExportFormat::Gguf)]
        format: qevo::export::ExportFormat,
        /// Output file, or directory for compressed-tensors / safetensors (never the source
        /// model).
        #[arg(long)]
        out: PathBuf,
        /// Export non-GGML formats as the nearest GGML type (reported) instead of failing.
        #[arg(long)]
        fallback: bool,
        /// Quantize with this importance matrix (the search's --out/imatrix.gguf, so the
        /// file holds the bytes the search scored; or any llama-imatrix file).
        #[arg(long, value_name = "FILE")]
        imatrix_file: Option<PathBuf>,
    },
    /// Train a plan's block scales and norms toward the FP model (KL distillation on
    /// calibration text), keeping its formats and size; writes the tuned GGUF.
    Tune(Box<tune_cmd::TuneArgs>),
    /// Collect an importance matrix as llama-imatrix does (--process-output) and write it
    /// in llama.cpp's GGUF format, for `--imatrix-file` or `llama-quantize --imatrix`.
    Imatrix {
        /// Hugging Face model directory or .gguf file (default: the embedded model).
        model: Option<PathBuf>,
        /// Calibration text (default: the embedded calibration split).
        #[arg(long)]
        text: Option<PathBuf>,
        /// Tokens per chunk (llama-imatrix -c) [default: 512, or the model's positions if
        /// fewer].
        #[arg(long)]
        ctx: Option<usize>,
        /// Most chunks (llama-imatrix --chunks) [default: every whole chunk of the text].
        #[arg(long)]
        chunks: Option<usize>,
        /// Output file (GGUF).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// Print a profile (built-in name or TOML path) with the sources of its numbers.
    Show { name: String },
}

/// Options of `qevo quantize`.
#[derive(clap::Args, Clone)]
pub struct QuantizeArgs {
    /// Weight format of every tensor: q8_0, q6_k, q5_k, q5_0, q5_1, q4_k, q4_0, q4_1, q3_k,
    /// q2_k, iq4_nl, iq4_xs, iq3_s, iq3_xxs, iq2_s, iq1_m, iq2_xs, iq2_xxs, iq1_s (the last
    /// three with --imatrix), f16,
    /// bf16, f32, or
    /// int{2..8}-{sym|asym|pow2}-{tensor|channel|g32|g64|g128}.
    #[arg(long)]
    pub format: String,
    /// Activation bits of every linear input: 4, 8 or 16 (= not quantized).
    #[arg(long, default_value_t = 16)]
    pub act_bits: u8,
    #[command(flatten)]
    pub score: ScoreArgs,
}

/// How a plan is scored (shared by `quantize` and `eval --plan`).
#[derive(clap::Args, Clone)]
pub struct ScoreArgs {
    /// Symmetric activation quantization (default asymmetric, as the search uses).
    #[arg(long)]
    pub act_sym: bool,
    /// Calibrate activation ranges at this percentile (e.g. 99.99) instead of min/max.
    #[arg(long)]
    pub act_percentile: Option<f64>,
    /// Weight the rounding of the GGML types llama.cpp weights (every block type but q8_0)
    /// by an importance matrix collected on the calibration text (iq2_xs, iq2_xxs, iq1_s need one).
    #[arg(long, conflicts_with = "imatrix_file")]
    pub imatrix: bool,
    /// Weight it by this importance matrix instead: a llama-imatrix file (imatrix.gguf or
    /// legacy .dat) or one qevo wrote (`qevo imatrix`, a search's imatrix.gguf).
    #[arg(long, value_name = "FILE")]
    pub imatrix_file: Option<PathBuf>,
    /// Calibration text (default: the embedded calibration split).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// How GGML block types choose scales and codes: `block` (llama.cpp's: each block's own
    /// error, weighted by the imatrix if given) or `output` (qevo's: error carried across
    /// blocks to minimise each tensor's output error on the calibration text).
    #[arg(long, value_enum, default_value_t = qevo::quant::RoundingMode::Block)]
    pub rounding: qevo::quant::RoundingMode,
    /// Encoders: labelled texts (`label<TAB>text` per line); prints k-NN accuracy of the
    /// FP and quantized embeddings.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Neighbours for the k-NN accuracy of --labels.
    #[arg(long, default_value_t = 5)]
    pub knn_k: usize,
}

fn main() {
    // qevo parallelises across plans (rayon); candle's own element-wise thread pool then
    // only spins against it (measured: the default search took 2x longer with it on).
    // Matrix products still use every core through gemm. Must be set before any tensor op.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Inspect { model, fingerprint } => commands::inspect(model, fingerprint),
        Cmd::Eval {
            args,
            plan: None,
            protocol,
            ..
        } => commands::eval(&args, protocol),
        Cmd::Eval {
            args,
            plan: Some(p),
            score,
            ..
        } => commands::eval_plan(&args, &p, &score, cli.force),
        Cmd::Search(a) => search_cmd::search(&a),
        Cmd::Gguf(a) => gguf_cmd::run(&a),
        Cmd::Tune(a) => tune_cmd::run(&a, cli.force),
        Cmd::Profiles { cmd: None } => hw_cmd::list(),
        Cmd::Profiles {
            cmd: Some(ProfilesCmd::Show { name }),
        } => hw_cmd::show(&name),
        Cmd::Cost {
            model,
            plan,
            target,
            prefill_tokens,
            decode_tokens,
        } => hw_cmd::cost(
            model.as_deref(),
            &plan,
            cli.force,
            &target,
            prefill_tokens,
            decode_tokens,
        ),
        Cmd::ProfileHost { out } => hw_cmd::profile_host(&out),
        Cmd::PlanCost {
            config,
            machines,
            target,
            unit,
            population,
            generations,
            seq_len,
            calib_windows,
        } => hw_cmd::plan_cost(
            &config,
            &machines,
            &hw_cmd::PlanCostSearch {
                target,
                unit,
                population,
                generations,
                seq_len,
                calib_windows,
            },
        ),
        Cmd::Report { dir } => report_cmd::rebuild(&dir),
        Cmd::Quantize { args, q } => commands::quantize(&args, &q),
        Cmd::Export {
            plan,
            model,
            format,
            out,
            fallback,
            imatrix_file,
        } => commands::export(
            &plan,
            model.as_deref(),
            format,
            &out,
            fallback,
            imatrix_file.as_deref(),
            cli.force,
        ),
        Cmd::Imatrix {
            model,
            text,
            ctx,
            chunks,
            out,
        } => commands::imatrix(model.as_deref(), text.as_deref(), ctx, chunks, &out),
    };
    if let Err(e) = result {
        let code = match e.downcast_ref::<Exit>() {
            Some(x) => x.code,
            None => EXIT_ERROR,
        };
        eprintln!("error: {}", message(&e));
        std::process::exit(code);
    }
}

/// The error and its causes, each said once: library errors already quote their cause
/// in their own message ("path: No such file or directory"), so a cause whose text is
/// already there is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Exit codes (the README lists them): 0 done; 1 an error (the message names the file,
/// key or flag); 2 a usage error (clap); 3 a search finished and wrote every output, but
/// no plan meets the constraints (`plan.json` holds the least-violating plan); 130
/// interrupted by Ctrl-C (the last generation is checkpointed; rerun with `--resume`).
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_INFEASIBLE: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

/// An outcome that is not a plain error but has its own exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub msg: String,
}

impl Exit {
    /// No plan met the constraints; `checks` are the least-violating plan's.
    pub fn infeasible(checks: &[qevo::plan::LimitCheck]) -> Exit {
        let failing: Vec<String> = checks
            .iter()
            .filter(|k| !k.pass)
            .map(|k| {
                format!(
                    "{} (limit {}, least-violating plan {:.4}, {:+.1}%)",
                    k.name,
                    k.limit,
                    k.value,
                    k.excess() * 100.0
                )
            })
            .collect();
        let msg = match failing.is_empty() {
            true => "no plan satisfies the constraints".to_string(),
            false => format!(
                "no plan satisfies the constraints; plan.json holds the least-violating plan; failing: {}",
                failing.join(", ")
            ),
        };
        Exit {
            code: EXIT_INFEASIBLE,
            msg,
        }
    }

    pub fn interrupted() -> Exit {
        Exit {
            code: EXIT_INTERRUPTED,
            msg: "interrupted: the last completed generation is checkpointed; rerun with --resume"
                .into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Exit {}
