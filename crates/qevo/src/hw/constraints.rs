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
        "max_ttft_ms" => Some(cost.prefill_ms),
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
        // fold from +0.0: an empty f64 `sum()` is -0.0, which would print as "-0".
        .fold(0.0, |a, x| a + x);
    ConstraintReport { checks, violation }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::cost::{cost, LinearCounts, ModelCounts};
    use crate::hw::profile::{builtin, ConstraintOverride};

    fn cost_of(latency_ms: f64, memory_bytes: u64, energy_mj: f64) -> Cost {
        Cost {
            size_bytes: memory_bytes,
            latency_ms,
            latency_per_token_ms: latency_ms / 10.0,
            prefill_ms: 0.0,
            decode_ms: latency_ms,
            energy_mj,
            energy_per_token_mj: energy_mj / 10.0,
            peak_memory_bytes: memory_bytes,
            per_layer: vec![],
        }
    }

    #[test]
    fn feasible_cost_has_zero_violation() {
        // arm-neon: <= 100 ms per token, first token <= 2 s, memory <= 200 MB, capacity 8000 MB.
        let p = builtin("arm-neon").unwrap();
        let r = check_constraints(&cost_of(50.0, 100_000_000, 1.0), &p);
        let names: Vec<&str> = r.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "max_latency_per_token_ms",
                "max_ttft_ms",
                "max_memory_mb",
                "memory_capacity_mb"
            ]
        );
        assert!(r.checks.iter().all(|c| c.pass));
        assert_eq!(r.violation.to_bits(), 0.0f64.to_bits(), "positive zero");
        assert!(r.feasible());
        assert_eq!(r.checks[0].value, 5.0);
        assert_eq!(r.checks[2].value, 100.0);
    }

    #[test]
    fn violation_sums_relative_excesses() {
        // 150 ms per token vs 100 ms: 0.5; 300 MB vs 200 MB: 0.5; capacity passes.
        let p = builtin("arm-neon").unwrap();
        let r = check_constraints(&cost_of(1500.0, 300_000_000, 1.0), &p);
        assert!(!r.feasible());
        assert!((r.violation - 1.0).abs() < 1e-12, "{}", r.violation);
        assert_eq!(r.checks.iter().filter(|c| !c.pass).count(), 2);
    }

    #[test]
    fn per_token_energy_constraint_reads_per_token_energy() {
        // hexagon: 0.3 mJ per decoded token; 5 mJ over 10 tokens = 0.5 mJ/token.
        let p = builtin("hexagon").unwrap();
        let r = check_constraints(&cost_of(1.0, 1_000_000, 5.0), &p);
        let e = r
            .checks
            .iter()
            .find(|c| c.name == "max_energy_per_token_mj")
            .unwrap();
        assert!(!e.pass);
        assert!((r.violation - (0.5 - 0.3) / 0.3).abs() < 1e-12);
        // Removing the constraint by override makes it feasible.
        let p = p
            .with_overrides(&[ConstraintOverride {
                key: "max_energy_per_token_mj".into(),
                value: None,
            }])
            .unwrap();
        assert!(check_constraints(&cost_of(1.0, 1_000_000, 5.0), &p).feasible());
    }

    /// The shipped model class: a Llama with hidden 256, FFN 768, 6 blocks,
    /// 8 heads of 32, vocab 4096 (≈7M parameters) at `bits` per weight.
    fn small_llama(bits: u8) -> ModelCounts {
        let bytes = |n: u64| n * u64::from(bits) / 8;
        let mut linears = Vec::new();
        let (h, f, v) = (256u64, 768u64, 4096u64);
        linears.push(LinearCounts {
            name: "embed".into(),
            in_features: v,
            out_features: h,
            weight_bytes: bytes(v * h),
            weight_bits: bits,
            act_bits: 16,
            is_embedding_lookup: true,
            tied: false,
            format: None,
            experts: None,
        });
        for b in 0..6 {
            for (role, i, o) in [
                ("attn_q", h, h),
                ("attn_k", h, h),
                ("attn_v", h, h),
                ("attn_out", h, h),
                ("ffn_gate", h, f),
                ("ffn_up", h, f),
                ("ffn_down", f, h),
            ] {
                linears.push(LinearCounts {
                    name: format!("blk.{b}.{role}"),
                    in_features: i,
                    out_features: o,
                    weight_bytes: bytes(i * o),
                    weight_bits: bits,
                    act_bits: if bits <= 8 { 8 } else { 16 },
                    is_embedding_lookup: false,
                    tied: false,
                    format: None,
                    experts: None,
                });
            }
        }
        linears.push(LinearCounts {
            name: "output".into(),
            in_features: h,
            out_features: v,
            weight_bytes: bytes(v * h),
            weight_bits: bits,
            act_bits: if bits <= 8 { 8 } else { 16 },
            is_embedding_lookup: false,
            tied: false,
            format: None,
            experts: None,
        });
        ModelCounts {
            linears,
            n_blocks: 6,
            n_heads: 8,
            n_kv_heads: 8,
            head_dim: 32,
            hidden: h,
            vocab: v,
            other_bytes: 13 * h * 4,
            causal: true,
        }
    }

    #[test]
    fn hexagon_energy_budget_separates_int8_from_f32() {
        // The documented reading of the brief's 0.3 mJ: per decoded token, met by
        // int4/int8 models of this size and failed by f32.
        let p = builtin("hexagon").unwrap();
        let w = p.workload;
        for (bits, feasible) in [(4, true), (8, true), (32, false)] {
            let c = cost(&small_llama(bits), &p, &w).unwrap();
            let r = check_constraints(&c, &p);
            assert_eq!(r.feasible(), feasible, "{bits} bits: {:?}", r.checks);
        }
    }

    #[test]
    fn apple_ane_latency_budget_is_per_generated_token() {
        // The brief's 30 ms read for a language model: per decoded token, checked against
        // the cost model's decode latency per token, not the whole 128 + 64 workload. A
        // 7M-parameter model meets it even in f32; the whole workload would not.
        let p = builtin("apple-ane").unwrap();
        let w = p.workload;
        for bits in [8, 32] {
            let c = cost(&small_llama(bits), &p, &w).unwrap();
            let r = check_constraints(&c, &p);
            let k = r
                .checks
                .iter()
                .find(|k| k.name == "max_latency_per_token_ms")
                .unwrap();
            assert_eq!(k.value, c.latency_per_token_ms);
            assert!(r.feasible(), "{bits} bits: {:?}", r.checks);
            let ttft = r.checks.iter().find(|k| k.name == "max_ttft_ms").unwrap();
            assert_eq!(ttft.value, c.prefill_ms);
        }
    }

    #[test]
    fn arm_neon_int8_meets_the_brief_and_beats_f32() {
        let p = builtin("arm-neon").unwrap();
        let w = p.workload;
        let int8 = cost(&small_llama(8), &p, &w).unwrap();
        let f32 = cost(&small_llama(32), &p, &w).unwrap();
        assert!(check_constraints(&int8, &p).feasible());
        assert!(int8.latency_ms < f32.latency_ms);
        assert!(int8.energy_mj < f32.energy_mj);
        let other = 13 * 256 * 4;
        assert_eq!(f32.size_bytes - other, 4 * (int8.size_bytes - other));
    }
}
