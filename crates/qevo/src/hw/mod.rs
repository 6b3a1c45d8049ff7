//! Hardware cost model: target profiles (TOML data, built-ins embedded),
//! workloads, the roofline cost model over declared counts, constraint
//! checks, and measurement of this host as a profile.
//!
//! Costs are counts, hardware speed is data: nothing here depends on the model
//! loader or the quantization formats (only `model::Experts`, the counts of a MoE
//! layer); the caller describes the model as [`ModelCounts`]. Fitting the host profile's
//! two overhead terms on real forward passes is `calib::host`, above `plan`.

mod constraints;
mod cost;
pub mod host;
mod profile;

pub use crate::error::HwError;
pub use constraints::{check_constraints, ConstraintCheck, ConstraintReport};
pub use cost::{cost, select_mode, Bound, Cost, LayerCost, LinearCounts, ModelCounts};
pub use profile::{
    builtin, builtin_source, list_builtins, load_profile, parse_constraint_override, parse_profile,
    profile_to_toml, resolve_profile, save_profile_text, ComputeMode, ConstraintOverride,
    Constraints, Profile, ProfileInfo, Workload, ACT_WIDTHS, CONSTRAINT_KEYS, FLOAT_WIDTHS,
    WEIGHT_WIDTHS,
};
