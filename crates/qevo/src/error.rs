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
    Hw(#[from] crate::hw::HwError),
    /// The evolutionary engine (configuration, checkpoint, problem failures).
    #[error(transparent)]
    Evo(#[from] evo::EvoError),
    /// Invalid arguments or combinations that are not tied to one file.
    #[error("{0}")]
    Invalid(String),
    /// A run whose estimated memory does not fit its budget, refused before it loads.
    #[error(
        "{what} needs an estimated {} ({parts}), more than the memory budget of {}; \
         the smallest budget that works is {}",
        crate::mem::gb(*needed),
        crate::mem::gb(*budget),
        crate::mem::gb(*needed)
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
    pub(crate) fn tensor(path: impl Into<PathBuf>, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
}
