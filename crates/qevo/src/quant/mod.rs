//! Weight formats the search can choose: GGML block formats (`ggml`) and generic
//! integer formats; activation fake-quant; the per-tensor plan and the weight cache.

pub mod ggml;
pub use ggml::GgmlType;
