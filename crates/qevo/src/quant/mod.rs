//! Weight formats the search can choose, as codecs that know nothing of models: generic
//! integer formats (`int`) and GGML block formats (`ggml`) behind one closed enum
//! (`format::WeightFormat`), output rounding (`gptq`) and what each tensor rounds with
//! (`rounding`). The model loaders decode stored weights with them; calibration data
//! (importances, input moments) comes in from `calib` as plain vectors.

pub mod format;
pub mod ggml;
mod ggml_quants;
/// Legacy block levels, for `tune`'s re-derived codes.
pub(crate) use ggml_quants::{levels_of, write_levels, Levels};
pub mod gptq;
pub mod int;
mod iq;
mod iq_tables;
pub mod packed_layout;
mod rounding;
pub mod scale_fields;
pub mod sub_scales;

pub use format::{Packed, Resolved, Rounding, WeightFormat};
pub use ggml::{Capability, GgmlType};
pub use gptq::{Hessian, RoundingMode};
pub use int::{Granularity, IntFormat, Scheme};
pub use rounding::RoundingInputs;
