//! A plan's price on a target: the cost model's latency, energy and memory for the
//! plan's declared counts, the target's own limits and the user's, each checked, and the
//! summed relative excess (the constraint violation the search minimises; 0 = feasible).

use super::{choice_bytes, model_counts, TensorChoice};
use crate::error::Result;
use crate::hw::{check_constraints, cost, Cost, Profile, Workload};
use crate::model::Model;

/// Limits the user adds on top of the target's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserLimits {
    /// 10^6 bytes of tensor data.
    pub max_size_mb: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub max_energy_mj: Option<f64>,
    pub max_kl: Option<f64>,
}

impl UserLimits {
    /// Whether the user set any limit (the recommendation then minimises KL within them).
    pub fn any(&self) -> bool {
        [
            self.max_size_mb,
            self.max_latency_ms,
            self.max_energy_mj,
            self.max_kl,
        ]
        .iter()
        .any(Option::is_some)
    }

    /// The size limit in bytes (rounded down, so a plan within it passes the check).
    pub fn max_size_bytes(&self) -> Option<u64> {
        self.max_size_mb.map(|mb| (mb * 1e6) as u64)
    }

    /// (check name, limit, the plan's value) for each user limit.
    fn named(&self, mb: f64, c: &Cost, kl: Option<f64>) -> [(&'static str, Option<f64>, f64); 4] {
        [
            ("max_size_mb (user)", self.max_size_mb, mb),
            ("max_latency_ms (user)", self.max_latency_ms, c.latency_ms),
            ("max_energy_mj (user)", self.max_energy_mj, c.energy_mj),
            ("max_kl (user)", self.max_kl, kl.unwrap_or(0.0)),
        ]
    }
}

/// One constraint's outcome for a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitCheck {
    pub name: String,
    pub limit: f64,
    pub value: f64,
    pub pass: bool,
}

impl LimitCheck {
    /// Relative excess over the limit (0 when it passes).
    pub fn excess(&self) -> f64 {
        if self.pass {
            0.0
        } else {
            (self.value - self.limit) / self.limit.max(1e-12)
        }
    }
}

/// A plan's price: the cost model's figures, every limit check, and the violation.
#[derive(Debug, Clone)]
pub struct Priced {
    pub cost: Cost,
    /// Bytes of the quantizable tensors (`choice_bytes`).
    pub tensor_bytes: u64,
    /// Sum of the failing checks' relative excesses; 0 = feasible.
    pub violation: f64,
    pub checks: Vec<LimitCheck>,
}

/// Prices per-tensor `choices` on a target (pure, no model run). `kl` feeds the user's
/// quality limit when the plan has been scored.
pub fn price(
    model: &Model,
    choices: &[TensorChoice],
    target: &Profile,
    workload: &Workload,
    limits: &UserLimits,
    kl: Option<f64>,
) -> Result<Priced> {
    let c = cost(&model_counts(model, choices), target, workload)?;
    let tensor_bytes = choice_bytes(model, choices);
    let target_checks = check_constraints(&c, target)
        .checks
        .into_iter()
        .map(|k| LimitCheck {
            name: k.name.to_string(),
            limit: k.limit,
            value: k.value,
            pass: k.pass,
        });
    let user_checks = limits
        .named(tensor_bytes as f64 / 1e6, &c, kl)
        .into_iter()
        .filter_map(|(name, limit, value)| {
            limit.map(|limit| LimitCheck {
                name: name.into(),
                limit,
                value,
                pass: value <= limit,
            })
        });
    let checks: Vec<LimitCheck> = target_checks.chain(user_checks).collect();
    // fold from +0.0: an empty f64 `sum()` is -0.0, which would print as "-0".
    let violation = checks
        .iter()
        .map(LimitCheck::excess)
        .fold(0.0, |a, x| a + x);
    Ok(Priced {
        cost: c,
        tensor_bytes,
        violation,
        checks,
    })
}
