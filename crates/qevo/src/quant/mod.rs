//! Weight formats the search can choose, and what turns a plan into a runnable model:
//! generic integer formats (`int`) and GGML block formats (`ggml`) behind one closed enum
//! (`format::WeightFormat`), the dequantized-weight cache
//! (`cache`), activation fake-quant with calibrated ranges and the importance matrix
//! (`act`), and llama.cpp's importance-matrix files (`imatrix`).
//!
//! A quantized model for evaluation is `model.forward(&cache.weights_for(model, plan)?,
//! &ActQuantHook::new(&ranges, plan.act_bits(model)?, scheme), ids)`.

pub mod act;
pub mod cache;
pub mod format;
pub mod ggml;
mod ggml_quants;
/// Legacy block levels, for `tune`'s re-derived codes.
pub(crate) use ggml_quants::{levels_of, write_levels, Levels};
pub mod gptq;
pub mod imatrix;
pub mod int;
mod iq;
mod iq_tables;
pub mod packed_layout;
pub mod scale_fields;
pub mod sub_scales;

pub use act::{
    calibrate_act_ranges, collect_imatrix, collect_imatrix_llama_cpp, ActQuantHook, ActRanges,
    ActScheme,
};
pub use cache::{
    block_working_set, CacheStats, PlanWeights, RoundingInputs, ScoredWith, WeightCache,
};
pub use format::{Packed, Resolved, Rounding, WeightFormat};
pub use ggml::{Capability, GgmlType};
pub use gptq::{collect_hessians, Hessian, OutputRounding, RoundingMode};
pub use imatrix::{Imatrix, ImatrixEntry};
pub use int::{Granularity, IntFormat, Scheme};
// The plan's home is `crate::plan`; kept here so existing imports resolve.
pub use crate::plan::{TensorChoice, TensorPlan, ACT_BITS};
