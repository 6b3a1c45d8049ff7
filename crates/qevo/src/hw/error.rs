//! Typed errors of the hardware module: every profile error names the file,
//! the key and the line, so a user can fix a hand-written profile at once.

use std::path::PathBuf;

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
