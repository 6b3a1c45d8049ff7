//! The library's one error type: every variant names the file, tensor or key at fault,
//! so the CLI can print it as-is and choose an exit code.

use std::path::PathBuf;

/// Errors returned by every fallible function in the `qevo` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose bytes do not follow its format (truncated, lying offsets, bad magic).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A configuration key that is missing, mistyped or out of range.
    #[error("{path}: key `{key}`: {msg}")]
    Config {
        path: PathBuf,
        key: String,
        msg: String,
    },
    /// A tensor whose shape, dtype or values are unusable.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    #[error("{path}: key `{key}`: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArch {
        path: PathBuf,
        key: String,
        arch: String,
        supported: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A search, command or plan setting out of range: `field` is the config field (the
    /// CLI maps it to its flag).
    #[error("{field}: {msg}")]
    Setting { field: String, msg: String },
    /// A checkpoint of another run: each setting that differs between the checkpoint and
    /// this run, by its field (the CLI maps fields to its flags).
    #[error("{path}: checkpoint of another run ({}); resume with the settings it was \
             started with, or start afresh", describe(.differences))]
    ResumeMismatch {
        path: PathBuf,
        differences: Vec<Difference>,
    },
    /// A text too short for what was asked of it.
    #[error("{what}: text has {tokens} tokens; {needed}")]
    TextTooShort {
        what: String,
        tokens: usize,
        needed: String,
    },
    /// A plan that does not fit the model it is applied to.
    #[error("plan: tensor `{tensor}`: {msg}")]
    Plan { tensor: String, msg: String },
    /// The hardware cost model or a profile.
    #[error(transparent)]
    Hw(#[from] HwError),
    /// The evolutionary engine (configuration, checkpoint, problem failures).
    #[error(transparent)]
    Evo(#[from] evo::EvoError),
    /// A tensor (or a weight set's entry) whose shape differs from the one it is used as.
    #[error("{what} has shape {got:?}, expected {expected:?}")]
    Shape {
        what: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A plan or weight set with another number of tensors than the model it is applied to.
    #[error("{what} has {got} tensors, model has {expected}")]
    TensorCount {
        what: String,
        got: usize,
        expected: usize,
    },
    /// An index past the end of what it indexes (`what` names both, e.g. "tensor index").
    #[error("{what} {index} out of range ({len})")]
    OutOfRange {
        what: String,
        index: usize,
        len: usize,
    },
    /// Something qevo does not do (yet) for this model, format or file: `what` names it,
    /// `why` says what is supported instead.
    #[error("{what}: {why}")]
    Unsupported { what: String, why: String },
    /// An output path that would write over (or into) an input: `what` names the input
    /// ("input", "source model").
    #[error("output {} would overwrite the {what} {}", out.display(), input.display())]
    Overwrite {
        out: PathBuf,
        what: &'static str,
        input: PathBuf,
    },
    /// An output directory another live qevo run holds.
    #[error(
        "{} is in use by another qevo run (process {pid}); wait for it or choose another output",
        dir.display()
    )]
    Locked { dir: PathBuf, pid: u32 },
    /// A value that could not be serialised for the file `path`.
    #[error("{}: serialising: {source}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Invalid arguments or combinations that are not tied to one file.
    #[error("{0}")]
    Invalid(String),
    /// A run whose estimated memory does not fit its budget, refused before it loads.
    #[error(
        "{what} needs an estimated {} ({parts}), more than the memory budget of {}; \
         the smallest budget that works is {}",
        size(*needed),
        size(*budget),
        whole_mb_up(*needed)
    )]
    Memory {
        what: String,
        needed: u64,
        budget: u64,
        /// The estimate by part.
        parts: String,
    },
    /// An evaluation executor (e.g. Ray workers) that failed or answered wrongly.
    #[error("executor: {0}")]
    Executor(String),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One setting a checkpoint was made with that this run changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub checkpoint: String,
    pub now: String,
}

/// `field: X in the checkpoint, Y now; ...`.
pub fn describe(ds: &[Difference]) -> String {
    ds.iter()
        .map(|d| {
            format!(
                "{}: {} in the checkpoint, {} now",
                d.field, d.checkpoint, d.now
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The settings of `now` that differ from `then` (both lists of field and value; a field
/// only one of them has differs too, shown as `none`).
pub fn differences(then: &[(String, String)], now: &[(String, String)]) -> Vec<Difference> {
    let find = |list: &[(String, String)], k: &str| {
        list.iter()
            .find(|(f, _)| f == k)
            .map_or_else(|| "none".to_string(), |(_, v)| v.clone())
    };
    let mut fields: Vec<&String> = now.iter().map(|(f, _)| f).collect();
    fields.extend(
        then.iter()
            .map(|(f, _)| f)
            .filter(|f| !now.iter().any(|(g, _)| g == *f)),
    );
    fields
        .into_iter()
        .filter_map(|f| {
            let (a, b) = (find(then, f), find(now, f));
            (a != b).then(|| Difference {
                field: f.clone(),
                checkpoint: a,
                now: b,
            })
        })
        .collect()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A byte count as every message writes it: GB with two decimals.
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Bytes as GB with two decimals, or below a gigabyte as MB with one, so a small model's
/// estimate and budget do not both read `0.00 GB`.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => gb(b),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// Bytes rounded up to whole megabytes: a smallest budget given back as printed must
/// still work (`0.0149 GB` printed as `0.01 GB` would not).
fn whole_mb_up(bytes: u64) -> String {
    format!("{} MB", bytes.div_ceil(1_000_000))
}

/// Typed errors of the hardware module (`hw`): every profile error names the file, the
/// key and the line, so a user can fix a hand-written profile at once. Defined here, with
/// the crate's `Error` that wraps it, so the error types sit below every module.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    /// A profile that does not parse or does not validate.
    #[error("{file}:{line}: key `{key}`: {message}")]
    Profile {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("cannot read profile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown profile `{name}`: not a built-in ({known}) nor a readable file path")]
    UnknownProfile { name: String, known: String },
    /// A user's constraint override (`key=value`) that names no constraint or has a bad value.
    #[error("constraint override `{input}`: {message}")]
    Override { input: String, message: String },
    /// Counts handed to the cost model that it cannot price.
    #[error("layer `{layer}`: {message}")]
    Counts { layer: String, message: String },
    #[error("cannot write profile {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host measurement: {0}")]
    Measure(String),
    #[error("host measurement: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("serialising profile `{name}`: {message}")]
    Serialise { name: String, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, key: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn setting(field: &str, msg: impl Into<String>) -> Self {
        Error::Setting {
            field: field.to_string(),
            msg: msg.into(),
        }
    }
    /// Names `file` in a tensor error raised where the file was not known (an empty path).
    pub(crate) fn in_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Tensor { path, tensor, msg } if path.as_os_str().is_empty() => Error::Tensor {
                path: file.to_path_buf(),
                tensor,
                msg,
            },
            e => e,
        }
    }
    pub(crate) fn unsupported(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            why: why.into(),
        }
    }
    pub(crate) fn serialize(
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Serialize {
            path: path.into(),
            source: Box::new(source),
        }
    }
    pub(crate) fn tensor_count(what: &str, got: usize, expected: usize) -> Self {
        Error::TensorCount {
            what: what.to_string(),
            got,
            expected,
        }
    }
    pub(crate) fn out_of_range(what: &str, index: usize, len: usize) -> Self {
        Error::OutOfRange {
            what: what.to_string(),
            index,
            len,
        }
    }
    pub(crate) fn tensor(path: impl Into<PathBuf>, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
}
