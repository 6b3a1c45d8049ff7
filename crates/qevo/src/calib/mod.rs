//! Calibration: everything that runs the model over calibration windows and hands back
//! plain data for the stages above. Token windows (`windows`, also as llama.cpp's tools
//! cut them); activation ranges and the fake-quant hook that applies them, and the
//! importance matrix collected as llama-imatrix does (`act`); llama.cpp's importance-matrix
//! files (`imatrix`); the input moments of output rounding and their record
//! (`hessian`); what a plan was scored with, rebuilt for a model (`rounding`); and host
//! calibration, which times real forward passes against `plan::price` (`host`).
//!
//! quant's quantizers take these as inputs (importances, factorised moments); eval,
//! search, tune and export collect them here.

pub mod act;
pub mod hessian;
pub mod host;
pub mod imatrix;
pub mod rounding;
pub mod windows;

pub use act::{
    calibrate_act_ranges, collect_imatrix, collect_imatrix_llama_cpp, ActQuantHook, ActRanges,
    ActScheme,
};
pub use hessian::{collect_hessians, OutputRounding};
pub use imatrix::{Imatrix, ImatrixEntry};
pub use rounding::ScoredWith;
pub use windows::{default_batch, llama_cpp_bos, llama_cpp_windows, TokenWindows};
