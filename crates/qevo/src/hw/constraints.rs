//! Constraint check: compares a predicted cost with a profile's limits and
//! its memory capacity, and sums the relative excesses into one violation
//! number that a GA's constraint-domination can rank (0 = feasible).

use super::cost::Cost;
use super::profile::{constraint_values, Profile};

/// One limit checked against one predicted value, in the limit's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintCheck {
    pub name: &'static str,
    pub limit: f64,
    pub value: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintReport {
    pub checks: Vec<ConstraintCheck>,
    /// Sum over failed checks of (value − limit) / limit; 0 when all pass.
    pub violation: f64,
}

impl ConstraintReport {
    pub fn feasible(&self) -> bool {
        self.violation == 0.0
    }
}

/// The predicted value each constraint key limits, in that key's unit.
fn measured(key: &str, cost: &Cost) -> Option<f64> {
    match key {
        "max_latency_ms" => Some(cost.latency_ms),
        "max_latency_per_token_ms" => Some(cost.latency_per_token_ms),
        "max_memory_mb" | "memory_capacity_mb" => Some(cost.peak_memory_bytes as f64 / 1e6),
        "max_energy_mj" => Some(cost.energy_mj),
        "max_energy_per_token_mj" => Some(cost.energy_per_token_mj),
        _ => None,
    }
}

/// Checks the profile's constraints (those set) and its memory capacity.
pub fn check_constraints(cost: &Cost, profile: &Profile) -> ConstraintReport {
    let limits = constraint_values(&profile.constraints)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .chain(std::iter::once((
            "memory_capacity_mb",
            profile.memory_capacity_mb,
        )));
    let checks: Vec<ConstraintCheck> = limits
        .filter_map(|(name, limit)| {
            measured(name, cost).map(|value| ConstraintCheck {
                name,
                limit,
                value,
                pass: value <= limit,
            })
        })
        .collect();
    let violation = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| (c.value - c.limit) / c.limit)
        .sum();
    ConstraintReport { checks, violation }
}
