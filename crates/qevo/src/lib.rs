//! qevo: hardware-aware evolutionary mixed-precision quantization of transformer models.
//!
//! The pipeline (see DESIGN.md): `model` loads a network, `eval` computes the reference
//! distributions and scores quantized variants, `quant` holds the weight formats, `hw`
//! prices a plan on a target device, `search` evolves plans with the `evo` engine, and
//! `report` / `export` write the results. The library never prints and never exits.

pub mod assets;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod hw;
pub mod model;
pub mod quant;
pub mod report;
pub mod search;

pub use error::{Error, Result};
pub use model::{Model, Role, TensorInfo};
