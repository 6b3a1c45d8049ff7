//! The cost model: pure functions from counts (what a quantized model does per
//! token, declared here as plain structs) and a profile (how fast and costly
//! the target is) to size, roofline latency, energy, peak memory and the
//! constraint check. No I/O, no knowledge of the model loader or formats.
//!
//! Model, per layer and per pass:
//! - linear, `t` tokens: MACs = t·in·out; bytes = weight_bytes + t·(in+out)·act_bytes.
//!   Prefill is one pass of `prefill_tokens`; decode is one pass per token, so
//!   weights are read once per prefill and once per decoded token.
//! - embedding lookup, `t` tokens: no MACs; bytes = t·(row_bytes + out·float_bytes).
//! - attention per block (fused: Q, K, V read once, O written once):
//!   MACs = 2·n_heads·head_dim·context per query token; decode also reads the
//!   KV cache of its context, 2·n_kv_heads·head_dim·context·float_bytes.
//! - time = max(MACs / rate, bytes / bandwidth) + layer overhead (roofline).
//! - energy = MACs·pJ/MAC of the mode used + bytes·pJ/DRAM byte (every counted
//!   byte is priced as DRAM traffic; on-chip reuse is not credited).
//! - peak memory = weights + other + full KV cache + the largest activation set
//!   of one layer in the prefill pass.

use super::profile::{ComputeMode, Profile, Workload, ACT_WIDTHS, WEIGHT_WIDTHS};
use crate::error::HwError;

/// One weight matrix (or embedding table) as the cost model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearCounts {
    pub name: String,
    /// For an embedding lookup: the number of rows (vocabulary).
    pub in_features: u64,
    /// For an embedding lookup: the row length (hidden size).
    pub out_features: u64,
    /// Exact stored bytes of the weights in their format, scales included.
    pub weight_bytes: u64,
    /// Compute width of the weight format: 2..8, 16 or 32.
    pub weight_bits: u8,
    /// Activation width feeding this layer: 4, 8, or 16 (= float at the target's float_bits).
    pub act_bits: u8,
    /// An embedding: one row gathered per token, no MACs.
    pub is_embedding_lookup: bool,
    /// Its weights are stored by another entry (tied embedding/output): bytes
    /// are read when it runs, but model size counts them once.
    pub tied: bool,
    /// Weight format name (e.g. `q4_k`), used only to pick a format-specific
    /// compute mode when the profile declares one.
    pub format: Option<String>,
    /// Stacked experts: each token multiplies by (and, decoding, reads) only the `used`
    /// of `total` experts' rows.
    pub experts: Option<crate::model::Experts>,
}

/// Everything the cost model needs to know about a quantized model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCounts {
    pub linears: Vec<LinearCounts>,
    pub n_blocks: u64,
    pub n_heads: u64,
    pub n_kv_heads: u64,
    pub head_dim: u64,
    pub hidden: u64,
    pub vocab: u64,
    /// Norm weights and other tensors kept in f32, read once per pass.
    pub other_bytes: u64,
    /// Causal attention (decoder); false for a bidirectional encoder.
    pub causal: bool,
}

/// Which roof limited a layer in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Compute,
    Memory,
    /// The phase does not run (zero tokens) or the layer does no work in it.
    Idle,
}

/// Cost of one layer over the whole workload.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    pub name: String,
    /// (weight_bits, act_bits) of the compute mode it ran in; (0, 0) for pure data movement.
    pub mode: (u8, u8),
    pub macs: f64,
    pub bytes: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_bound: Bound,
    pub decode_bound: Bound,
    /// Whole workload.
    pub energy_mj: f64,
    /// The decode phase's share of `energy_mj`.
    pub decode_energy_mj: f64,
}

/// Predicted cost of a model on a target for a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Stored model: weights (tied ones once) + other tensors.
    pub size_bytes: u64,
    /// Whole workload.
    pub latency_ms: f64,
    /// Per decoded token; the whole workload when nothing is decoded.
    pub latency_per_token_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Whole workload.
    pub energy_mj: f64,
    /// Per decoded token; the whole workload when nothing is decoded.
    pub energy_per_token_mj: f64,
    pub peak_memory_bytes: u64,
    pub per_layer: Vec<LayerCost>,
}

/// Roofline time and energy of one pass of one layer.
#[derive(Debug, Clone, Copy, Default)]
struct Pass {
    compute_s: f64,
    memory_s: f64,
    overhead_s: f64,
    macs: f64,
    bytes: f64,
    energy_pj: f64,
}

impl Pass {
    fn new(
        profile: &Profile,
        mode: Option<&ComputeMode>,
        rate: f64,
        macs: f64,
        bytes: f64,
    ) -> Pass {
        Pass {
            compute_s: if macs > 0.0 { macs / rate } else { 0.0 },
            memory_s: bytes / (profile.mem_bandwidth_gb_per_s * 1e9),
            overhead_s: profile.layer_overhead_us * 1e-6,
            macs,
            bytes,
            energy_pj: macs * mode.map_or(0.0, |m| m.energy_pj_per_mac)
                + bytes * profile.energy_pj_per_dram_byte,
        }
    }

    fn time_s(&self) -> f64 {
        self.compute_s.max(self.memory_s) + self.overhead_s
    }
}

/// Sum of passes of one phase, keeping the roof split for the bound label.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    time_s: f64,
    compute_s: f64,
    memory_s: f64,
    macs: f64,
    bytes: f64,
    energy_pj: f64,
}

impl Phase {
    fn add(&mut self, p: &Pass, times: f64) {
        self.time_s += p.time_s() * times;
        self.compute_s += p.compute_s * times;
        self.memory_s += p.memory_s * times;
        self.macs += p.macs * times;
        self.bytes += p.bytes * times;
        self.energy_pj += p.energy_pj * times;
    }

    fn bound(&self) -> Bound {
        if self.time_s == 0.0 || (self.compute_s == 0.0 && self.memory_s == 0.0) {
            Bound::Idle
        } else if self.compute_s >= self.memory_s {
            Bound::Compute
        } else {
            Bound::Memory
        }
    }
}

fn layer_cost(name: String, mode: (u8, u8), prefill: Phase, decode: Phase) -> LayerCost {
    LayerCost {
        name,
        mode,
        macs: prefill.macs + decode.macs,
        bytes: prefill.bytes + decode.bytes,
        prefill_ms: prefill.time_s * 1e3,
        decode_ms: decode.time_s * 1e3,
        prefill_bound: prefill.bound(),
        decode_bound: decode.bound(),
        energy_mj: (prefill.energy_pj + decode.energy_pj) * 1e-9,
        decode_energy_mj: decode.energy_pj * 1e-9,
    }
}

/// The compute mode a layer of these widths runs in. Modes declared for a
/// named format serve only layers of that format; when the layer's format has
/// none, the generic modes (no format) serve it. Among the modes at least as
/// wide in both weights and activations (a width the target lacks runs at a
/// wider one) the fastest wins, the narrower on ties. If none is that wide,
/// the widest mode runs it (the runtime converts down, as the ANE does with
/// f32 weights).
pub fn select_mode<'p>(
    profile: &'p Profile,
    weight_bits: u8,
    act_bits: u8,
    format: Option<&str>,
) -> &'p ComputeMode {
    let covers = |m: &&ComputeMode| m.weight_bits >= weight_bits && m.act_bits >= act_bits;
    let of_format = |m: &&ComputeMode| match (&m.format, format) {
        (Some(mf), Some(f)) => mf.eq_ignore_ascii_case(f),
        _ => false,
    };
    let faster = |a: &&ComputeMode, b: &&ComputeMode| {
        a.peak_macs_per_s
            .total_cmp(&b.peak_macs_per_s)
            .then((b.weight_bits, b.act_bits).cmp(&(a.weight_bits, a.act_bits)))
            .then(b.energy_pj_per_mac.total_cmp(&a.energy_pj_per_mac))
    };
    let widest = |a: &&ComputeMode, b: &&ComputeMode| {
        (a.weight_bits, a.act_bits)
            .cmp(&(b.weight_bits, b.act_bits))
            .then(faster(a, b))
    };
    let modes = &profile.compute;
    modes
        .iter()
        .filter(of_format)
        .filter(covers)
        .max_by(faster)
        .or_else(|| {
            modes
                .iter()
                .filter(|m| m.format.is_none())
                .filter(covers)
                .max_by(faster)
        })
        .or_else(|| modes.iter().filter(|m| m.format.is_none()).max_by(widest))
        // Validation guarantees a generic mode; this keeps the function total.
        .or_else(|| modes.iter().max_by(widest))
        .unwrap_or(&GENERIC_F32)
}

/// Only reached for a profile that skipped validation and has no modes.
static GENERIC_F32: ComputeMode = ComputeMode {
    weight_bits: 32,
    act_bits: 32,
    format: None,
    peak_macs_per_s: 1e9,
    decode_macs_per_s: None,
    energy_pj_per_mac: 0.0,
};

fn act_bytes(profile: &Profile, act_bits: u8) -> f64 {
    if act_bits >= 16 {
        f64::from(profile.float_bits) / 8.0
    } else {
        f64::from(act_bits) / 8.0
    }
}

fn check_counts(model: &ModelCounts) -> Result<(), HwError> {
    let bad = |layer: &str, message: String| HwError::Counts {
        layer: layer.to_string(),
        message,
    };
    for l in &model.linears {
        if !WEIGHT_WIDTHS.contains(&l.weight_bits) {
            return Err(bad(
                &l.name,
                format!("unsupported weight_bits {}", l.weight_bits),
            ));
        }
        if !ACT_WIDTHS.contains(&l.act_bits) {
            return Err(bad(&l.name, format!("unsupported act_bits {}", l.act_bits)));
        }
        if l.in_features == 0 || l.out_features == 0 {
            return Err(bad(&l.name, "zero in_features or out_features".into()));
        }
    }
    if model.n_blocks > 0 && (model.n_heads == 0 || model.n_kv_heads == 0 || model.head_dim == 0) {
        return Err(bad(
            "attention",
            "n_heads, n_kv_heads and head_dim must be > 0 when n_blocks > 0".into(),
        ));
    }
    Ok(())
}

/// Predicts the cost of running `model` on `profile` for `workload`: one entry per
/// linear layer, one per block's attention, one for the small tensors, then the totals.
pub fn cost(model: &ModelCounts, profile: &Profile, workload: &Workload) -> Result<Cost, HwError> {
    check_counts(model)?;
    let fb = f64::from(profile.float_bits) / 8.0;
    let mut per_layer = Vec::with_capacity(model.linears.len() + model.n_blocks as usize + 1);
    let mut largest_activation = 0.0f64;
    for l in &model.linears {
        let (layer, activation) = linear_cost(l, profile, workload);
        per_layer.push(layer);
        largest_activation = largest_activation.max(activation);
    }
    if model.n_blocks > 0 {
        let (layers, activation) = attention_cost(model, profile, workload);
        per_layer.extend(layers);
        largest_activation = largest_activation.max(activation);
    }
    if model.other_bytes > 0 {
        per_layer.push(other_cost(model, profile, workload));
    }
    Ok(totals(model, workload, fb, largest_activation, per_layer))
}

/// A linear layer (or an embedding row gather) over the workload, and the largest
/// activation it holds at once.
fn linear_cost(l: &LinearCounts, profile: &Profile, workload: &Workload) -> (LayerCost, f64) {
    let p = workload.prefill_tokens as f64;
    let d = workload.decode_tokens as f64;
    let fb = f64::from(profile.float_bits) / 8.0;
    let (inf, outf) = (l.in_features as f64, l.out_features as f64);
    let (mode, macs_per_token, act_per_token, weight_read) = if l.is_embedding_lookup {
        let row_bytes = l.weight_bytes as f64 / inf;
        (None, 0.0, row_bytes + outf * fb, 0.0)
    } else {
        let m = select_mode(profile, l.weight_bits, l.act_bits, l.format.as_deref());
        let ab = act_bytes(profile, l.act_bits);
        let active = l.experts.map_or(1.0, |e| e.used as f64 / e.total as f64);
        (
            Some(m),
            inf * outf * active,
            (inf + outf * active) * ab,
            l.weight_bytes as f64,
        )
    };
    // A decoded token reads only its experts' weights; a prompt reads them all.
    let decode_read = weight_read * l.experts.map_or(1.0, |e| e.used as f64 / e.total as f64);
    let mut prefill = Phase::default();
    if p > 0.0 {
        let rate = mode.map_or(1.0, |m| m.peak_macs_per_s);
        let pass = Pass::new(
            profile,
            mode,
            rate,
            macs_per_token * p,
            weight_read + act_per_token * p,
        );
        prefill.add(&pass, 1.0);
    }
    let mut decode = Phase::default();
    if d > 0.0 {
        let rate = mode.map_or(1.0, |m| m.decode_rate());
        let pass = Pass::new(
            profile,
            mode,
            rate,
            macs_per_token,
            decode_read + act_per_token,
        );
        decode.add(&pass, d);
    }
    let mode_bits = mode.map_or((0, 0), |m| (m.weight_bits, m.act_bits));
    let layer = layer_cost(l.name.clone(), mode_bits, prefill, decode);
    (layer, act_per_token * p.max(1.0))
}

/// The sum of `n` passes at contexts `first, first + 1, …` in closed form (a loop over
/// 10^15 decoded tokens ran for minutes). Every field of a pass is linear in the context,
/// and so is its time on either side of the one context where compute and memory time
/// cross: each side sums as its token count times the pass at its mean context.
fn linear_passes(pass_at: &dyn Fn(f64) -> Pass, first: f64, n: u64) -> Phase {
    let mut phase = Phase::default();
    if n == 0 {
        return phase;
    }
    let last = first + (n - 1) as f64;
    let gap = |c: f64| {
        let q = pass_at(c);
        q.compute_s - q.memory_s
    };
    let (g0, g1) = (gap(first), gap(last));
    // Tokens before the crossover (all of them when the bound does not change).
    let before = match n > 1 && (g0 > 0.0) != (g1 > 0.0) && g0 != g1 {
        true => {
            let root = first + g0 / (g0 - g1) * (last - first);
            ((root - first).floor() as u64 + 1).min(n)
        }
        false => n,
    };
    let mut add = |from: f64, count: u64| {
        if count > 0 {
            let mean = from + (count - 1) as f64 / 2.0;
            phase.add(&pass_at(mean), count as f64);
        }
    };
    add(first, before);
    add(first + before as f64, n - before);
    phase
}

/// Attention is identical in every block, so one block is priced and repeated; the
/// second value is the largest activation (the prompt's q/k/v/o).
fn attention_cost(
    model: &ModelCounts,
    profile: &Profile,
    workload: &Workload,
) -> (Vec<LayerCost>, f64) {
    let p = workload.prefill_tokens as f64;
    let fb = f64::from(profile.float_bits) / 8.0;
    let mode = select_mode(profile, 16, 16, None);
    let (nh, nkv, hd) = (
        model.n_heads as f64,
        model.n_kv_heads as f64,
        model.head_dim as f64,
    );
    let mut largest_activation = 0.0f64;
    let mut prefill = Phase::default();
    if p > 0.0 {
        let ctx_sum = if model.causal {
            p * (p + 1.0) / 2.0
        } else {
            p * p
        };
        let bytes = p * hd * (2.0 * nh + 2.0 * nkv) * fb;
        let mut pass = Pass::new(
            profile,
            Some(mode),
            mode.peak_macs_per_s,
            2.0 * nh * hd * ctx_sum,
            bytes,
        );
        pass.overhead_s += p * profile.block_other_ns_per_token * 1e-9;
        prefill.add(&pass, 1.0);
        largest_activation = bytes;
    }
    // Decoded token j attends over p + j + 1 positions.
    let pass_at = |ctx: f64| {
        let bytes = 2.0 * nh * hd * fb + 2.0 * nkv * hd * ctx * fb;
        let mut pass = Pass::new(
            profile,
            Some(mode),
            mode.decode_rate(),
            2.0 * nh * hd * ctx,
            bytes,
        );
        pass.overhead_s += profile.block_other_ns_per_token * 1e-9;
        pass
    };
    let decode = linear_passes(&pass_at, p + 1.0, workload.decode_tokens);
    let layers = (0..model.n_blocks)
        .map(|b| {
            layer_cost(
                format!("blk.{b}.attention"),
                (mode.weight_bits, mode.act_bits),
                prefill,
                decode,
            )
        })
        .collect();
    (layers, largest_activation)
}

/// Norms and other small tensors: read once per pass, no dispatch of their own
/// (runtimes fuse them into neighbours).
fn other_cost(model: &ModelCounts, profile: &Profile, workload: &Workload) -> LayerCost {
    let p = workload.prefill_tokens as f64;
    let d = workload.decode_tokens as f64;
    let bytes = model.other_bytes as f64;
    let mut pass = Pass::new(profile, None, 1.0, 0.0, bytes);
    pass.overhead_s = 0.0;
    let mut prefill = Phase::default();
    if p > 0.0 {
        prefill.add(&pass, 1.0);
    }
    let mut decode = Phase::default();
    decode.add(&pass, d);
    layer_cost("other".into(), (0, 0), prefill, decode)
}

/// Sums the layers into the workload's latency, energy, size and peak memory.
fn totals(
    model: &ModelCounts,
    workload: &Workload,
    fb: f64,
    largest_activation: f64,
    per_layer: Vec<LayerCost>,
) -> Cost {
    let p = workload.prefill_tokens as f64;
    let d = workload.decode_tokens as f64;
    let prefill_ms: f64 = per_layer.iter().map(|l| l.prefill_ms).sum();
    let decode_ms: f64 = per_layer.iter().map(|l| l.decode_ms).sum();
    let energy_mj: f64 = per_layer.iter().map(|l| l.energy_mj).sum();
    let latency_ms = prefill_ms + decode_ms;
    let decode_energy_mj: f64 = per_layer.iter().map(|l| l.decode_energy_mj).sum();
    let size_bytes = model
        .linears
        .iter()
        .filter(|l| !l.tied)
        .map(|l| l.weight_bytes)
        .sum::<u64>()
        + model.other_bytes;
    let kv_cache = model.n_blocks as f64
        * 2.0
        * model.n_kv_heads as f64
        * model.head_dim as f64
        * (p + d)
        * fb;
    let peak_memory_bytes = (size_bytes as f64 + kv_cache + largest_activation).ceil() as u64;
    Cost {
        size_bytes,
        latency_ms,
        latency_per_token_ms: if d > 0.0 { decode_ms / d } else { latency_ms },
        prefill_ms,
        decode_ms,
        energy_mj,
        energy_per_token_mj: if d > 0.0 {
            decode_energy_mj / d
        } else {
            energy_mj
        },
        peak_memory_bytes,
        per_layer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::profile::parse_profile;

    /// 1 GB/s, 1 pJ per byte, no overhead; int8 1 GMAC/s at 1 pJ, fp16 0.5 GMAC/s
    /// at 2 pJ, fp32 0.25 GMAC/s at 4 pJ: numbers that make hand sums easy.
    const TOY: &str = r#"name = "toy"
description = "toy"
mem_bandwidth_gb_per_s = 1.0
memory_capacity_mb = 1.0
energy_pj_per_dram_byte = 1.0
layer_overhead_us = 0.0
float_bits = 16
weight_bits = [4, 8, 16, 32]
[workload]
prefill_tokens = 1
decode_tokens = 1
[[compute]]
weight_bits = 8
act_bits = 8
peak_macs_per_s = 1e9
energy_pj_per_mac = 1.0
[[compute]]
weight_bits = 16
act_bits = 16
peak_macs_per_s = 5e8
energy_pj_per_mac = 2.0
[[compute]]
weight_bits = 32
act_bits = 32
peak_macs_per_s = 2.5e8
energy_pj_per_mac = 4.0
"#;

    fn toy() -> Profile {
        parse_profile(TOY, "toy.toml").unwrap()
    }

    fn linear(name: &str, inf: u64, outf: u64, bytes: u64, wb: u8, ab: u8) -> LinearCounts {
        LinearCounts {
            name: name.into(),
            in_features: inf,
            out_features: outf,
            weight_bytes: bytes,
            weight_bits: wb,
            act_bits: ab,
            is_embedding_lookup: false,
            tied: false,
            format: None,
            experts: None,
        }
    }

    fn model(linears: Vec<LinearCounts>) -> ModelCounts {
        ModelCounts {
            linears,
            n_blocks: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            hidden: 0,
            vocab: 0,
            other_bytes: 0,
            causal: true,
        }
    }

    fn wl(p: u64, d: u64) -> Workload {
        Workload {
            prefill_tokens: p,
            decode_tokens: d,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn decode_token_of_int8_linear_is_memory_bound() {
        // 100x10 int8: 1000 MACs (1 us at 1 GMAC/s); bytes 1000 + 110 acts
        // = 1110 (1.11 us at 1 GB/s): memory-bound.
        let m = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        let c = cost(&m, &toy(), &wl(0, 1)).unwrap();
        let l = &c.per_layer[0];
        assert_eq!(l.mode, (8, 8));
        assert_eq!(l.decode_bound, Bound::Memory);
        assert_eq!(l.prefill_bound, Bound::Idle);
        assert!(close(c.decode_ms, 1.11e-3), "{}", c.decode_ms);
        assert!(close(c.latency_ms, 1.11e-3));
        assert!(close(c.latency_per_token_ms, 1.11e-3));
        // 1000 MACs x 1 pJ + 1110 bytes x 1 pJ = 2110 pJ.
        assert!(close(c.energy_mj, 2110e-9), "{}", c.energy_mj);
        assert!(close(c.energy_per_token_mj, 2110e-9));
        assert_eq!(c.size_bytes, 1000);
    }

    /// 2 of 8 stacked experts per token: a decoded token multiplies by and reads a quarter
    /// of the weights; the model's size still counts all of them.
    #[test]
    fn an_expert_tensor_costs_only_its_active_experts_per_token() {
        let dense = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        let moe = model(vec![LinearCounts {
            experts: Some(crate::model::Experts { total: 8, used: 2 }),
            ..linear("fc", 100, 80, 8000, 8, 8)
        }]);
        let (d, m) = (
            cost(&dense, &toy(), &wl(0, 1)).unwrap(),
            cost(&moe, &toy(), &wl(0, 1)).unwrap(),
        );
        // Dense 100x10: 1000 bytes + 110 acts. MoE: 8000 / 4 bytes + (100 + 80 / 4) acts.
        assert!(
            close(m.decode_ms, 1.11e-3 * (2000.0 + 120.0) / 1110.0),
            "{}",
            m.decode_ms
        );
        assert!(d.decode_ms < m.decode_ms);
        assert_eq!(m.size_bytes, 8000);
    }

    /// The closed form sums what a loop over every decoded token sums, across the
    /// compute/memory crossover, and 10^15 tokens take no time.
    #[test]
    fn decode_passes_sum_in_closed_form_as_a_loop_does() {
        let p = toy();
        let pass_at = |ctx: f64| Pass::new(&p, None, 1e9, 300.0 * ctx, 50_000.0 + 100.0 * ctx);
        for (first, n) in [(1.0, 1), (1.0, 7), (100.0, 1000), (400.0, 333)] {
            let mut looped = Phase::default();
            for j in 0..n {
                looped.add(&pass_at(first + j as f64), 1.0);
            }
            let closed = linear_passes(&pass_at, first, n);
            for (a, b) in [
                (closed.time_s, looped.time_s),
                (closed.compute_s, looped.compute_s),
                (closed.memory_s, looped.memory_s),
                (closed.bytes, looped.bytes),
                (closed.energy_pj, looped.energy_pj),
            ] {
                assert!((a - b).abs() <= 1e-9 * b.abs(), "{first} {n}: {a} vs {b}");
            }
        }
        let start = std::time::Instant::now();
        let big = linear_passes(&pass_at, 1.0, 1_000_000_000_000_000);
        assert!(big.time_s.is_finite() && start.elapsed().as_secs() < 1);
    }

    #[test]
    fn prefill_reads_weights_once_and_is_compute_bound() {
        // 100 tokens: 1e5 MACs = 100 us; bytes 1000 + 100 x 110 = 12000 = 12 us.
        let m = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        let c = cost(&m, &toy(), &wl(100, 0)).unwrap();
        assert_eq!(c.per_layer[0].prefill_bound, Bound::Compute);
        assert!(close(c.prefill_ms, 0.1), "{}", c.prefill_ms);
        assert_eq!(c.decode_ms, 0.0);
        // No decode: per-token figures are the whole inference (encoder).
        assert!(close(c.latency_per_token_ms, 0.1));
        assert!(close(c.energy_mj, (1e5 + 12000.0) * 1e-9));
        assert!(close(c.energy_per_token_mj, c.energy_mj));
        // Peak: weights 1000 + largest activation 100 x 110 = 11000.
        assert_eq!(c.peak_memory_bytes, 12000);
    }

    #[test]
    fn decode_reads_weights_once_per_token() {
        let m = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        let one = cost(&m, &toy(), &wl(0, 1)).unwrap();
        let five = cost(&m, &toy(), &wl(0, 5)).unwrap();
        assert!(close(five.decode_ms, 5.0 * one.decode_ms));
        assert!(close(five.per_layer[0].bytes, 5.0 * 1110.0));
        assert!(close(five.latency_per_token_ms, one.latency_per_token_ms));
    }

    #[test]
    fn narrower_width_shrinks_memory_but_not_compute() {
        // int4 weights on a target without int4 compute run in the int8 mode.
        let p = toy();
        let m8 = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        let m4 = model(vec![linear("fc", 100, 10, 500, 4, 8)]);
        let c8 = cost(&m8, &p, &wl(100, 1)).unwrap();
        let c4 = cost(&m4, &p, &wl(100, 1)).unwrap();
        assert_eq!(c4.per_layer[0].mode, (8, 8));
        assert_eq!(c4.size_bytes, 500);
        // Compute-bound prefill: identical time.
        assert!(close(c4.prefill_ms, c8.prefill_ms));
        // Decode: 610 bytes (0.61 us) instead of 1110 (1.11 us), so the int8
        // layer was memory-bound and the int4 one hits the compute roof
        // (1000 MACs = 1 us) it cannot go below; DRAM energy still drops.
        assert!(close(c8.decode_ms, 1.11e-3), "{}", c8.decode_ms);
        assert!(close(c4.decode_ms, 1.0e-3), "{}", c4.decode_ms);
        assert_eq!(c4.per_layer[0].decode_bound, Bound::Compute);
        assert!(close(c8.energy_mj - c4.energy_mj, 2.0 * 500.0 * 1e-9));
        // Float activations need a float mode: int4 weights x f16 acts run in fp16.
        assert_eq!(select_mode(&p, 4, 16, None).weight_bits, 16);
        assert_eq!(select_mode(&p, 16, 32, None).weight_bits, 32);
    }

    #[test]
    fn fastest_covering_mode_wins_and_formats_get_their_own_modes() {
        let text = TOY.to_string()
            + "[[compute]]\nweight_bits = 4\nact_bits = 32\nformat = \"q4_0\"\n\
               peak_macs_per_s = 4e9\ndecode_macs_per_s = 2e9\nenergy_pj_per_mac = 0.5\n";
        let p = parse_profile(&text, "fmt.toml").unwrap();
        let q40 = select_mode(&p, 4, 16, Some("q4_0"));
        assert_eq!(q40.format.as_deref(), Some("q4_0"));
        assert_eq!(q40.decode_rate(), 2e9);
        // Another format of the same width has no mode of its own: generic modes.
        assert_eq!(select_mode(&p, 4, 16, Some("q4_k")).weight_bits, 16);
        assert_eq!(select_mode(&p, 4, 16, None).weight_bits, 16);
        // Decode uses decode_macs_per_s: 1000 MACs at 2 GMAC/s = 0.5 us, bytes
        // 500 + 110 x 2 (float acts at 16 bits) = 720 = 0.72 us: memory-bound.
        let mut l = linear("fc", 100, 10, 500, 4, 16);
        l.format = Some("q4_0".into());
        let c = cost(&model(vec![l]), &p, &wl(0, 1)).unwrap();
        assert!(close(c.decode_ms, 0.72e-3), "{}", c.decode_ms);
    }

    #[test]
    fn widths_wider_than_every_mode_run_in_the_widest() {
        let text = TOY.replace(
            "[[compute]]\nweight_bits = 32\nact_bits = 32\npeak_macs_per_s = 2.5e8\nenergy_pj_per_mac = 4.0\n",
            "",
        );
        let p = parse_profile(&text, "no32.toml").unwrap();
        assert_eq!(select_mode(&p, 32, 16, None).weight_bits, 16);
    }

    #[test]
    fn attention_counts_scores_values_and_kv_cache() {
        let mut m = model(vec![]);
        m.n_blocks = 1;
        m.n_heads = 2;
        m.n_kv_heads = 1;
        m.head_dim = 4;
        let c = cost(&m, &toy(), &wl(3, 2)).unwrap();
        let a = &c.per_layer[0];
        assert_eq!(a.name, "blk.0.attention");
        assert_eq!(a.mode, (16, 16));
        // Prefill: causal context sum 1+2+3 = 6; MACs 2·2·4·6 = 96 (0.192 us at
        // 0.5 GMAC/s); bytes 3·4·(2·2+2·1)·2 = 144 (0.144 us): compute-bound.
        assert_eq!(a.prefill_bound, Bound::Compute);
        assert!(close(a.prefill_ms, 0.192e-3), "{}", a.prefill_ms);
        // Decode contexts 4 and 5: MACs 64 and 80; bytes Q,O 2·2·4·2 = 32 plus
        // KV 2·1·4·ctx·2 = 64 and 80. Times max(0.128, 0.096) + max(0.16, 0.112) us.
        assert!(close(a.decode_ms, 0.288e-3), "{}", a.decode_ms);
        assert!(close(a.macs, 96.0 + 64.0 + 80.0));
        assert!(close(a.bytes, 144.0 + 96.0 + 112.0));
        // Energy: (96+64+80)·2 pJ + (144+96+112)·1 pJ = 832 pJ.
        assert!(close(c.energy_mj, 832e-9), "{}", c.energy_mj);
        // Peak: KV cache 1·2·1·4·(3+2)·2 = 80 + prefill working set 144.
        assert_eq!(c.peak_memory_bytes, 224);
        // Encoder attention is bidirectional: context sum 3·3 = 9, MACs 144.
        m.causal = false;
        let e = cost(&m, &toy(), &wl(3, 0)).unwrap();
        assert!(close(e.per_layer[0].macs, 144.0));
    }

    #[test]
    fn attention_is_priced_in_every_block() {
        let mut m = model(vec![]);
        m.n_blocks = 3;
        m.n_heads = 2;
        m.n_kv_heads = 1;
        m.head_dim = 4;
        let c = cost(&m, &toy(), &wl(3, 2)).unwrap();
        assert_eq!(c.per_layer.len(), 3);
        assert!(close(c.decode_ms, 3.0 * 0.288e-3));
    }

    #[test]
    fn embedding_gathers_rows_and_tied_weights_count_once() {
        // 1000 rows of 8 int8 values (8000 bytes); 4 tokens gather 4 rows of
        // 8 bytes and write 4 x 8 f16 values: 4·(8 + 16) = 96 bytes, no MACs.
        let mut emb = linear("embed", 1000, 8, 8000, 8, 16);
        emb.is_embedding_lookup = true;
        let mut out = linear("output", 8, 1000, 8000, 8, 8);
        out.tied = true;
        let c = cost(&model(vec![emb, out]), &toy(), &wl(4, 0)).unwrap();
        let e = &c.per_layer[0];
        assert_eq!(e.macs, 0.0);
        assert!(close(e.bytes, 96.0));
        assert_eq!(e.mode, (0, 0));
        assert_eq!(e.prefill_bound, Bound::Memory);
        assert!(close(e.prefill_ms, 96e-6));
        // The tied output is still read and computed, but stored once.
        assert_eq!(c.size_bytes, 8000);
        assert!(c.per_layer[1].macs > 0.0);
    }

    #[test]
    fn block_element_wise_work_scales_with_tokens_and_blocks() {
        let p = TOY.replace(
            "layer_overhead_us = 0.0",
            "layer_overhead_us = 0.0\nblock_other_ns_per_token = 1000.0",
        );
        let p = parse_profile(&p, "ew.toml").unwrap();
        let mut m = model(vec![linear("a", 100, 10, 1000, 8, 8)]);
        m.n_blocks = 2;
        m.n_heads = 1;
        m.n_kv_heads = 1;
        m.head_dim = 4;
        let base = cost(&m, &toy(), &wl(5, 3)).unwrap();
        let with = cost(&m, &p, &wl(5, 3)).unwrap();
        // 2 blocks x 5 prompt tokens x 1 us = 10 us; decode 2 blocks x 3 tokens x 1 us = 6 us.
        assert!(
            close(with.prefill_ms - base.prefill_ms, 0.010),
            "{} {}",
            with.prefill_ms,
            base.prefill_ms
        );
        assert!(
            close(with.decode_ms - base.decode_ms, 0.006),
            "{} {}",
            with.decode_ms,
            base.decode_ms
        );
    }

    #[test]
    fn layer_overhead_is_paid_per_layer_per_pass() {
        let p = TOY.replace("layer_overhead_us = 0.0", "layer_overhead_us = 10.0");
        let p = parse_profile(&p, "ovh.toml").unwrap();
        let m = model(vec![
            linear("a", 100, 10, 1000, 8, 8),
            linear("b", 100, 10, 1000, 8, 8),
        ]);
        let base = cost(&m, &toy(), &wl(5, 3)).unwrap();
        let with = cost(&m, &p, &wl(5, 3)).unwrap();
        // 2 layers x (1 prefill pass + 3 decode passes) x 10 us = 80 us.
        assert!(close(with.prefill_ms - base.prefill_ms, 0.02));
        assert!(close(with.decode_ms - base.decode_ms, 0.06));
    }

    #[test]
    fn other_bytes_count_in_size_and_are_read_each_pass() {
        let mut m = model(vec![linear("fc", 100, 10, 1000, 8, 8)]);
        m.other_bytes = 400;
        let c = cost(&m, &toy(), &wl(1, 2)).unwrap();
        assert_eq!(c.size_bytes, 1400);
        let o = c.per_layer.last().unwrap();
        assert_eq!(o.name, "other");
        assert!(close(o.bytes, 3.0 * 400.0));
        assert!(close(o.decode_ms, 2.0 * 400e-6));
    }

    #[test]
    fn bad_counts_are_errors_naming_the_layer() {
        let m = model(vec![linear("blk.0.ffn_up", 100, 10, 1000, 8, 5)]);
        let e = cost(&m, &toy(), &wl(1, 1)).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_up") && e.contains("act_bits"), "{e}");
        let m = model(vec![linear("w", 100, 10, 1000, 9, 8)]);
        assert!(cost(&m, &toy(), &wl(1, 1)).is_err());
        let m = model(vec![linear("w", 0, 10, 1000, 8, 8)]);
        assert!(cost(&m, &toy(), &wl(1, 1)).is_err());
        let mut m = model(vec![]);
        m.n_blocks = 2;
        assert!(cost(&m, &toy(), &wl(1, 1)).is_err());
    }
}
