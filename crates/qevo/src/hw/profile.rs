//! Hardware profiles: the TOML format (units in key names, unknown keys
//! rejected), validation with file/key/line errors, the built-in profiles
//! embedded in the binary, and user overrides of constraints.
//!
//! A profile is data only: how fast and how costly a device is per MAC and per
//! byte. The cost model in `cost.rs` multiplies it with counts.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::HwError;

/// Weight widths a compute mode or a count may name: integer 2..8, 16 (f16/bf16), 32 (f32).
pub const WEIGHT_WIDTHS: &[u8] = &[2, 3, 4, 5, 6, 7, 8, 16, 32];
/// Activation widths: integer 4 or 8, 16 = float at the target's `float_bits`, 32 = f32.
pub const ACT_WIDTHS: &[u8] = &[4, 8, 16, 32];
/// Widths a target may keep float activations and the KV cache in.
pub const FLOAT_WIDTHS: &[u8] = &[16, 32];

/// One way the target computes natively: weights of `weight_bits` times
/// activations of `act_bits`, at a peak rate and an energy per MAC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeMode {
    pub weight_bits: u8,
    pub act_bits: u8,
    /// Restricts the mode to one named weight format (e.g. `q4_k`), for targets
    /// whose kernels differ in speed between formats of the same width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Peak rate for batched work (prefill: many tokens per weight read).
    pub peak_macs_per_s: f64,
    /// Rate for one-token matrix-vector work, where kernels are often less
    /// efficient than the batched peak; the batched peak when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_macs_per_s: Option<f64>,
    pub energy_pj_per_mac: f64,
}

impl ComputeMode {
    pub fn decode_rate(&self) -> f64 {
        self.decode_macs_per_s.unwrap_or(self.peak_macs_per_s)
    }
}

/// Limits a plan must meet on this target; absent means unconstrained.
/// MB is 10^6 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Whole workload (prefill + all decoded tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    /// Per decoded token (per inference when the workload decodes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_per_token_ms: Option<f64>,
    /// Time to first token: the prompt's prefill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_ms: Option<f64>,
    /// Peak memory: weights, the KV cache at the workload's context, the largest activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<f64>,
    /// Whole workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_energy_mj: Option<f64>,
    /// Per decoded token (per inference when the workload decodes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_energy_per_token_mj: Option<f64>,
}

/// What one inference does: an LLM reads `prefill_tokens` of prompt in one
/// pass then generates `decode_tokens` one at a time; an encoder has only a
/// prefill of its sequence length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
}

impl Workload {
    /// An encoder's workload: one pass over `seq_len` tokens.
    pub fn encoder(seq_len: u64) -> Self {
        Self {
            prefill_tokens: seq_len,
            decode_tokens: 0,
        }
    }
}

/// A hardware target. See `profiles/*.toml` for the format with sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub mem_bandwidth_gb_per_s: f64,
    pub memory_capacity_mb: f64,
    pub energy_pj_per_dram_byte: f64,
    /// Fixed cost per layer per pass (dispatch, synchronisation).
    pub layer_overhead_us: f64,
    /// Element-wise work of one block (norms, rotary embedding, softmax, activation
    /// functions, copies) per token, in ns. It scales with tokens, not with weight
    /// formats, and is not a matmul, so the roofline does not see it; `qevo profile-host`
    /// calibrates it on the f32 forward pass. Optional, 0 when absent.
    #[serde(default)]
    pub block_other_ns_per_token: f64,
    /// Width of float activations and of the KV cache on this target.
    pub float_bits: u8,
    /// Weight widths the target can load and execute (natively or by
    /// unpacking to a wider compute mode); the search offers only these.
    pub weight_bits: Vec<u8>,
    /// Named weight formats the target's runtime executes; empty = any format
    /// whose width is in `weight_bits`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_formats: Vec<String>,
    #[serde(default)]
    pub constraints: Constraints,
    pub workload: Workload,
    pub compute: Vec<ComputeMode>,
}

/// The built-in profiles, embedded so the binary needs no data files.
const BUILTINS: &[(&str, &str)] = &[
    (
        "arm-neon",
        include_str!("../../../../profiles/arm-neon.toml"),
    ),
    ("hexagon", include_str!("../../../../profiles/hexagon.toml")),
    (
        "apple-ane",
        include_str!("../../../../profiles/apple-ane.toml"),
    ),
    (
        "jetson-orin",
        include_str!("../../../../profiles/jetson-orin.toml"),
    ),
];

/// Name and one-line description of a built-in profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileInfo {
    pub name: &'static str,
    pub description: String,
}

/// The built-in profiles, in a fixed order.
pub fn list_builtins() -> Vec<ProfileInfo> {
    BUILTINS
        .iter()
        .map(|(name, text)| ProfileInfo {
            name,
            description: match parse_profile(text, name) {
                Ok(p) => p.description,
                Err(e) => format!("(invalid built-in: {e})"),
            },
        })
        .collect()
}

/// The TOML text of a built-in profile, comments and sources included.
pub fn builtin_source(name: &str) -> Result<&'static str, HwError> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| HwError::UnknownProfile {
            name: name.to_string(),
            known: BUILTINS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A parsed built-in profile.
pub fn builtin(name: &str) -> Result<Profile, HwError> {
    let text = builtin_source(name)?;
    parse_profile(text, &format!("<built-in {name}>"))
}

/// Reads and parses a user's profile file.
pub fn load_profile(path: &Path) -> Result<Profile, HwError> {
    let text = std::fs::read_to_string(path).map_err(|source| HwError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_profile(&text, &path.display().to_string())
}

/// A built-in name, or else a path to a TOML file.
pub fn resolve_profile(name_or_path: &str) -> Result<Profile, HwError> {
    if BUILTINS.iter().any(|(n, _)| *n == name_or_path) {
        builtin(name_or_path)
    } else if Path::new(name_or_path).exists() {
        load_profile(Path::new(name_or_path))
    } else {
        builtin(name_or_path)
    }
}

/// Parses and validates profile text; `file` only labels errors.
pub fn parse_profile(text: &str, file: &str) -> Result<Profile, HwError> {
    let profile: Profile = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
    if let Err((path, message)) = validate(&profile) {
        let line = locate(text, &path);
        return Err(HwError::Profile {
            file: file.to_string(),
            line,
            key: render_path(&path),
            message,
        });
    }
    Ok(profile)
}

/// Serialises a profile in the same format `parse_profile` reads.
pub fn profile_to_toml(profile: &Profile) -> Result<String, HwError> {
    toml::to_string(profile).map_err(|e| HwError::Serialise {
        name: profile.name.clone(),
        message: e.to_string(),
    })
}

/// Writes profile text atomically (`evo::checkpoint::write_atomic_with`: temp file in
/// the same folder, fsync, rename), so a reader never sees half a profile.
pub fn save_profile_text(path: &Path, text: &str) -> Result<(), HwError> {
    evo::checkpoint::write_atomic_with(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())
    })
    .map_err(|source| HwError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// One step of a key path in a TOML document.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

type Invalid = (Vec<Seg>, String);

/// Bounds on any profile number. Every real device, from a microcontroller to a GPU
/// cluster, sits far inside them, and within them the cost model's products and sums
/// stay finite and readable (1e308 pJ/byte gave "inf mJ" with every constraint passing;
/// 1e-300 GB/s a 300-digit latency).
const RATE_RANGE: (f64, f64) = (1e-9, 1e18);
const COST_MAX: f64 = 1e12;

fn check_rate(path: Vec<Seg>, v: f64) -> Result<(), Invalid> {
    let (lo, hi) = RATE_RANGE;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err((
            path,
            format!("must be a positive number between {lo:e} and {hi:e}, got {v}"),
        ))
    }
}

fn check_nonneg(path: Vec<Seg>, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && (0.0..=COST_MAX).contains(&v) {
        Ok(())
    } else {
        Err((
            path,
            format!("must be a number between 0 and {COST_MAX:e}, got {v}"),
        ))
    }
}

fn check_width(path: Vec<Seg>, v: u8, allowed: &[u8], what: &str) -> Result<(), Invalid> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err((
            path,
            format!("unsupported {what} width {v} (supported: {allowed:?})"),
        ))
    }
}

// One piece: a linear list of checks, one per profile key, in file order.
fn validate(p: &Profile) -> Result<(), Invalid> {
    use Seg::Key;
    if p.name.trim().is_empty() {
        return Err((vec![Key("name")], "must not be empty".into()));
    }
    check_rate(
        vec![Key("mem_bandwidth_gb_per_s")],
        p.mem_bandwidth_gb_per_s,
    )?;
    check_rate(vec![Key("memory_capacity_mb")], p.memory_capacity_mb)?;
    check_nonneg(
        vec![Key("energy_pj_per_dram_byte")],
        p.energy_pj_per_dram_byte,
    )?;
    check_nonneg(vec![Key("layer_overhead_us")], p.layer_overhead_us)?;
    check_nonneg(
        vec![Key("block_other_ns_per_token")],
        p.block_other_ns_per_token,
    )?;
    check_width(vec![Key("float_bits")], p.float_bits, FLOAT_WIDTHS, "float")?;
    if p.weight_bits.is_empty() {
        return Err((
            vec![Key("weight_bits")],
            "must list at least one width".into(),
        ));
    }
    for (i, &w) in p.weight_bits.iter().enumerate() {
        check_width(
            vec![Key("weight_bits"), Seg::Index(i)],
            w,
            WEIGHT_WIDTHS,
            "weight",
        )?;
        if p.weight_bits[..i].contains(&w) {
            return Err((
                vec![Key("weight_bits"), Seg::Index(i)],
                format!("width {w} listed twice"),
            ));
        }
    }
    if p.compute.is_empty() {
        return Err((
            vec![Key("compute")],
            "needs at least one [[compute]] mode".into(),
        ));
    }
    for (i, m) in p.compute.iter().enumerate() {
        let at = |k: &'static str| vec![Key("compute"), Seg::Index(i), Key(k)];
        check_width(at("weight_bits"), m.weight_bits, WEIGHT_WIDTHS, "weight")?;
        check_width(at("act_bits"), m.act_bits, ACT_WIDTHS, "activation")?;
        if !p.weight_bits.contains(&m.weight_bits) {
            return Err((
                at("weight_bits"),
                format!(
                    "unsupported mode: weight width {} is not in the profile's weight_bits {:?}",
                    m.weight_bits, p.weight_bits
                ),
            ));
        }
        check_rate(at("peak_macs_per_s"), m.peak_macs_per_s)?;
        if let Some(d) = m.decode_macs_per_s {
            check_rate(at("decode_macs_per_s"), d)?;
        }
        check_nonneg(at("energy_pj_per_mac"), m.energy_pj_per_mac)?;
        let dup = p.compute[..i].iter().any(|o| {
            o.weight_bits == m.weight_bits && o.act_bits == m.act_bits && o.format == m.format
        });
        if dup {
            return Err((
                vec![Key("compute"), Seg::Index(i)],
                format!(
                    "mode (weight_bits {}, act_bits {}, format {:?}) listed twice",
                    m.weight_bits, m.act_bits, m.format
                ),
            ));
        }
    }
    // Attention and unquantized layers multiply floats; without a float mode
    // they would have no defined speed.
    if !p
        .compute
        .iter()
        .any(|m| m.format.is_none() && m.weight_bits >= 16 && m.act_bits >= 16)
    {
        return Err((
            vec![Key("compute")],
            "unsupported mode set: needs a float mode without `format` (weight_bits >= 16 and \
             act_bits >= 16) for attention and unquantized layers"
                .into(),
        ));
    }
    let c = &p.constraints;
    for (key, v) in constraint_values(c) {
        if let Some(v) = v {
            check_rate(vec![Key("constraints"), Key(key)], v)?;
        }
    }
    if p.workload.prefill_tokens == 0 && p.workload.decode_tokens == 0 {
        return Err((
            vec![Key("workload")],
            "prefill_tokens + decode_tokens must be > 0".into(),
        ));
    }
    Ok(())
}

/// The constraint keys, in report order: the one table both overrides and
/// validation read.
pub const CONSTRAINT_KEYS: &[&str] = &[
    "max_latency_ms",
    "max_latency_per_token_ms",
    "max_ttft_ms",
    "max_memory_mb",
    "max_energy_mj",
    "max_energy_per_token_mj",
];

fn constraint_slot<'a>(c: &'a mut Constraints, key: &str) -> Option<&'a mut Option<f64>> {
    match key {
        "max_latency_ms" => Some(&mut c.max_latency_ms),
        "max_latency_per_token_ms" => Some(&mut c.max_latency_per_token_ms),
        "max_ttft_ms" => Some(&mut c.max_ttft_ms),
        "max_memory_mb" => Some(&mut c.max_memory_mb),
        "max_energy_mj" => Some(&mut c.max_energy_mj),
        "max_energy_per_token_mj" => Some(&mut c.max_energy_per_token_mj),
        _ => None,
    }
}

pub(crate) fn constraint_values(c: &Constraints) -> [(&'static str, Option<f64>); 6] {
    [
        ("max_latency_ms", c.max_latency_ms),
        ("max_latency_per_token_ms", c.max_latency_per_token_ms),
        ("max_ttft_ms", c.max_ttft_ms),
        ("max_memory_mb", c.max_memory_mb),
        ("max_energy_mj", c.max_energy_mj),
        ("max_energy_per_token_mj", c.max_energy_per_token_mj),
    ]
}

/// A user's change to one constraint: `Some(limit)` sets it, `None` removes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintOverride {
    pub key: String,
    pub value: Option<f64>,
}

/// Parses `key=value` or `key=none` (e.g. `max_latency_ms=50`).
pub fn parse_constraint_override(input: &str) -> Result<ConstraintOverride, HwError> {
    let bad = |message: String| HwError::Override {
        input: input.to_string(),
        message,
    };
    let (key, value) = input
        .split_once('=')
        .ok_or_else(|| bad("expected key=value or key=none".into()))?;
    let key = key.trim();
    let value = value.trim();
    let value = if value.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(
            value
                .parse::<f64>()
                .map_err(|e| bad(format!("value `{value}`: {e}")))?,
        )
    };
    Ok(ConstraintOverride {
        key: key.to_string(),
        value,
    })
}

impl Profile {
    /// This profile with the given constraints set or removed.
    pub fn with_overrides(mut self, overrides: &[ConstraintOverride]) -> Result<Self, HwError> {
        for o in overrides {
            let input = format!(
                "{}={}",
                o.key,
                o.value.map_or("none".to_string(), |v| v.to_string())
            );
            if let Some(v) = o.value {
                if !(v.is_finite() && v > 0.0) {
                    return Err(HwError::Override {
                        input,
                        message: "limit must be a positive finite number".into(),
                    });
                }
            }
            let slot = constraint_slot(&mut self.constraints, &o.key).ok_or_else(|| {
                HwError::Override {
                    input,
                    message: format!("unknown constraint (known: {})", CONSTRAINT_KEYS.join(", ")),
                }
            })?;
            *slot = o.value;
        }
        Ok(self)
    }

    /// This profile with another default workload.
    pub fn with_workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// Whether the target can execute weights of this width.
    pub fn supports_weight_bits(&self, bits: u8) -> bool {
        self.weight_bits.contains(&bits)
    }

    /// Whether the target can execute this named weight format of this width.
    pub fn supports_format(&self, format: &str, bits: u8) -> bool {
        self.supports_weight_bits(bits)
            && (self.weight_formats.is_empty()
                || self
                    .weight_formats
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(format)))
    }
}

fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of the value at `path`, or of the deepest ancestor present.
fn locate(text: &str, path: &[Seg]) -> usize {
    use toml::de::{DeTable, DeValue};
    let Ok(doc) = DeTable::parse(text) else {
        return 1;
    };
    let mut offset = doc.span().start;
    let mut cur: Option<&DeValue> = None;
    let mut table: Option<&DeTable> = Some(doc.get_ref());
    for seg in path {
        let next = match (seg, table, cur) {
            (Seg::Key(k), Some(t), _) => t.get(*k),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(v) = next else { break };
        offset = v.span().start;
        cur = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    line_of(text, offset)
}

/// Dotted path of the deepest entry whose key or value spans `offset`; with
/// `tables_only`, the deepest table (a missing-field error points at the table
/// that lacks it). Searches the whole tree, because a `[table]`'s span covers
/// only its header, not its body.
fn path_at(text: &str, offset: usize, tables_only: bool) -> String {
    use toml::de::{DeTable, DeValue};
    fn visit(
        v: &DeValue,
        path: String,
        offset: usize,
        tables_only: bool,
        best: &mut Option<String>,
    ) {
        match v {
            DeValue::Table(t) => {
                for (k, e) in t.iter() {
                    let p = if path.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{path}.{}", k.get_ref())
                    };
                    let is_table = matches!(e.get_ref(), DeValue::Table(_));
                    let hit = if tables_only {
                        is_table && e.span().contains(&offset)
                    } else {
                        k.span().contains(&offset) || e.span().contains(&offset)
                    };
                    if hit && best.as_ref().is_none_or(|b| p.len() >= b.len()) {
                        *best = Some(p.clone());
                    }
                    visit(e.get_ref(), p, offset, tables_only, best);
                }
            }
            DeValue::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let is_table = matches!(e.get_ref(), DeValue::Table(_));
                    let hit = e.span().contains(&offset) && (is_table || !tables_only);
                    if hit && best.as_ref().is_none_or(|b| p.len() >= b.len()) {
                        *best = Some(p.clone());
                    }
                    visit(e.get_ref(), p, offset, tables_only, best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    if let Ok(doc) = DeTable::parse(text) {
        let root = DeValue::Table(doc.into_inner());
        visit(&root, String::new(), offset, tables_only, &mut best);
    }
    best.unwrap_or_default()
}

/// The name inside the first pair of backticks of a serde message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> HwError {
    let offset = e.span().map_or(0, |s| s.start);
    let message = e.message().trim().to_string();
    let missing = message.starts_with("missing field");
    let mut key = path_at(text, offset, missing);
    if missing {
        if let Some(field) = backticked(&message) {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(field);
        }
    } else if message.starts_with("unknown field") {
        if let Some(field) = backticked(&message) {
            if !key.ends_with(field) {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(field);
            }
        }
    }
    if key.is_empty() {
        key = "<document>".into();
    }
    HwError::Profile {
        file: file.to_string(),
        line: line_of(text, offset),
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid profile; tests edit one line and check the error points at it.
    pub(super) const BASE: &str = r#"name = "toy"
description = "toy target"
mem_bandwidth_gb_per_s = 10.0
memory_capacity_mb = 100.0
energy_pj_per_dram_byte = 1.0
layer_overhead_us = 0.0
float_bits = 16
weight_bits = [4, 8, 16]

[workload]
prefill_tokens = 8
decode_tokens = 4

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
"#;

    fn profile_err(text: &str) -> (String, usize, String, String) {
        match parse_profile(text, "toy.toml") {
            Err(HwError::Profile {
                file,
                line,
                key,
                message,
            }) => (file, line, key, message),
            other => panic!("expected a profile error, got {other:?}"),
        }
    }

    fn line_containing(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn implausible_extremes_are_refused_naming_the_key() {
        for (from, to, key) in [
            (
                "energy_pj_per_dram_byte = 1.0",
                "energy_pj_per_dram_byte = 1e308",
                "energy_pj_per_dram_byte",
            ),
            (
                "mem_bandwidth_gb_per_s = 10.0",
                "mem_bandwidth_gb_per_s = 1e-300",
                "mem_bandwidth_gb_per_s",
            ),
            (
                "peak_macs_per_s = 1e9",
                "peak_macs_per_s = 1e300",
                "compute[0].peak_macs_per_s",
            ),
        ] {
            let text = BASE.replace(from, to);
            let (_, line, k, msg) = profile_err(&text);
            assert_eq!(k, key, "{msg}");
            assert_eq!(line, line_containing(&text, to), "{msg}");
            assert!(msg.contains("between"), "{msg}");
        }
    }

    #[test]
    fn base_profile_parses() {
        let p = parse_profile(BASE, "toy.toml").unwrap();
        assert_eq!(p.name, "toy");
        assert_eq!(p.compute.len(), 2);
        assert_eq!(p.constraints, Constraints::default());
        assert_eq!(p.workload.prefill_tokens, 8);
    }

    #[test]
    fn builtins_parse_and_carry_their_sources() {
        let list = list_builtins();
        let names: Vec<&str> = list.iter().map(|i| i.name).collect();
        assert_eq!(names, ["arm-neon", "hexagon", "apple-ane", "jetson-orin"]);
        for info in &list {
            let p = builtin(info.name).unwrap();
            assert_eq!(p.name, info.name);
            assert_eq!(p.description, info.description);
            assert!(!info.description.starts_with("(invalid"));
            let src = builtin_source(info.name).unwrap();
            assert!(
                src.lines()
                    .filter(|l| l.trim_start().starts_with('#'))
                    .count()
                    > 10
            );
        }
    }

    #[test]
    fn builtin_constraints_follow_the_brief() {
        let arm = builtin("arm-neon").unwrap().constraints;
        assert_eq!(arm.max_latency_per_token_ms, Some(100.0));
        assert_eq!(arm.max_latency_ms, None);
        assert_eq!(arm.max_memory_mb, Some(200.0));
        let hex = builtin("hexagon").unwrap().constraints;
        assert_eq!(hex.max_memory_mb, Some(50.0));
        assert_eq!(hex.max_energy_per_token_mj, Some(0.3));
        let ane = builtin("apple-ane").unwrap().constraints;
        assert_eq!(ane.max_latency_per_token_ms, Some(30.0));
        assert_eq!(ane.max_memory_mb, Some(500.0));
    }

    #[test]
    fn profiles_round_trip_through_toml() {
        let mut all: Vec<Profile> = list_builtins()
            .iter()
            .map(|i| builtin(i.name).unwrap())
            .collect();
        all.push(parse_profile(BASE, "toy.toml").unwrap());
        for p in all {
            let text = profile_to_toml(&p).unwrap();
            assert_eq!(parse_profile(&text, "rt.toml").unwrap(), p, "{text}");
        }
    }

    #[test]
    fn unknown_builtin_names_the_known_ones() {
        let e = builtin("tpu").unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("arm-neon"), "{e}");
    }

    #[test]
    fn missing_field_names_file_key_and_line() {
        let text = BASE.replace("mem_bandwidth_gb_per_s = 10.0\n", "");
        let (file, line, key, message) = profile_err(&text);
        assert_eq!(file, "toy.toml");
        assert_eq!(key, "mem_bandwidth_gb_per_s");
        assert!(message.contains("missing field"), "{message}");
        assert!(line >= 1);
        // Missing inside a [[compute]] table: the key path names the table.
        let text = BASE.replacen("energy_pj_per_mac = 2.0\n", "", 1);
        let (_, line, key, _) = profile_err(&text);
        assert!(key.ends_with("energy_pj_per_mac"), "{key}");
        assert!(key.starts_with("compute"), "{key}");
        assert!(line >= line_containing(BASE, "[[compute]]"), "{line}");
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let text = BASE.replace("float_bits = 16\n", "float_bits = 16\nturbo = true\n");
        let (file, line, key, message) = profile_err(&text);
        assert_eq!(file, "toy.toml");
        assert_eq!(key, "turbo");
        assert_eq!(line, line_containing(&text, "turbo"));
        assert!(message.contains("unknown field"), "{message}");
        // Inside an array-of-tables entry.
        let text = BASE.replace(
            "peak_macs_per_s = 5e8\n",
            "peak_macs_per_s = 5e8\npeak_tops = 3\n",
        );
        let (_, line, key, _) = profile_err(&text);
        assert_eq!(line, line_containing(&text, "peak_tops"));
        assert!(key.ends_with("peak_tops"), "{key}");
    }

    #[test]
    fn zero_rate_names_file_key_and_line() {
        let text = BASE.replace("peak_macs_per_s = 5e8", "peak_macs_per_s = 0.0");
        let (file, line, key, message) = profile_err(&text);
        assert_eq!(file, "toy.toml");
        assert_eq!(key, "compute[1].peak_macs_per_s");
        assert_eq!(line, line_containing(&text, "peak_macs_per_s = 0.0"));
        assert!(message.contains("positive"), "{message}");
    }

    #[test]
    fn negative_rate_names_file_key_and_line() {
        let text = BASE.replace(
            "mem_bandwidth_gb_per_s = 10.0",
            "mem_bandwidth_gb_per_s = -10.0",
        );
        let (_, line, key, _) = profile_err(&text);
        assert_eq!(key, "mem_bandwidth_gb_per_s");
        assert_eq!(line, 3);
        let text = BASE.replace("energy_pj_per_mac = 1.0", "energy_pj_per_mac = -1.0");
        let (_, line, key, _) = profile_err(&text);
        assert_eq!(key, "compute[0].energy_pj_per_mac");
        assert_eq!(line, line_containing(&text, "-1.0"));
        // A negative integer where an unsigned one is expected fails in serde, still located.
        let text = BASE.replace("decode_tokens = 4", "decode_tokens = -4");
        let (_, line, key, _) = profile_err(&text);
        assert_eq!(key, "workload.decode_tokens");
        assert_eq!(line, line_containing(&text, "decode_tokens = -4"));
    }

    #[test]
    fn unsupported_mode_names_file_key_and_line() {
        let text = BASE.replacen("act_bits = 8", "act_bits = 12", 1);
        let (_, line, key, message) = profile_err(&text);
        assert_eq!(key, "compute[0].act_bits");
        assert_eq!(line, line_containing(&text, "act_bits = 12"));
        assert!(message.contains("unsupported"), "{message}");
        // A mode whose weight width the profile says it cannot execute.
        let text = BASE.replacen("weight_bits = 8\n", "weight_bits = 6\n", 1);
        let (_, line, key, message) = profile_err(&text);
        assert_eq!(key, "compute[0].weight_bits");
        assert_eq!(line, line_containing(&text, "weight_bits = 6"));
        assert!(message.contains("unsupported mode"), "{message}");
        // No float mode at all.
        let text = BASE.replace(
            "weight_bits = 16\nact_bits = 16",
            "weight_bits = 4\nact_bits = 8",
        );
        let (_, _, key, message) = profile_err(&text);
        assert_eq!(key, "compute");
        assert!(message.contains("float mode"), "{message}");
    }

    #[test]
    fn zero_constraint_is_rejected_with_its_line() {
        let text = format!("{BASE}\n[constraints]\nmax_latency_ms = 0\n");
        let (_, line, key, _) = profile_err(&text);
        assert_eq!(key, "constraints.max_latency_ms");
        assert_eq!(line, line_containing(&text, "max_latency_ms"));
    }

    #[test]
    fn overrides_set_and_remove_constraints() {
        let p = builtin("arm-neon").unwrap();
        let o = [
            parse_constraint_override("max_latency_ms=50").unwrap(),
            parse_constraint_override("max_memory_mb = none").unwrap(),
            parse_constraint_override("max_energy_mj=2.5").unwrap(),
        ];
        let p = p.with_overrides(&o).unwrap();
        assert_eq!(p.constraints.max_latency_ms, Some(50.0));
        assert_eq!(p.constraints.max_memory_mb, None);
        assert_eq!(p.constraints.max_energy_mj, Some(2.5));
    }

    #[test]
    fn bad_overrides_are_errors() {
        assert!(parse_constraint_override("max_latency_ms").is_err());
        assert!(parse_constraint_override("max_latency_ms=fast").is_err());
        let p = builtin("hexagon").unwrap();
        let unknown = ConstraintOverride {
            key: "max_speed".into(),
            value: Some(1.0),
        };
        let e = p
            .clone()
            .with_overrides(&[unknown])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_speed") && e.contains("max_latency_ms"),
            "{e}"
        );
        let negative = ConstraintOverride {
            key: "max_latency_ms".into(),
            value: Some(-1.0),
        };
        assert!(p.with_overrides(&[negative]).is_err());
    }

    #[test]
    fn load_profile_reads_a_user_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.toml");
        std::fs::write(&path, BASE).unwrap();
        let p = load_profile(&path).unwrap();
        assert_eq!(p.name, "toy");
        assert_eq!(resolve_profile(path.to_str().unwrap()).unwrap(), p);
        assert_eq!(resolve_profile("hexagon").unwrap().name, "hexagon");
        std::fs::write(&path, BASE.replace("float_bits = 16", "float_bits = 8")).unwrap();
        let e = load_profile(&path).unwrap_err().to_string();
        assert!(
            e.contains("mine.toml:7:") && e.contains("float_bits"),
            "{e}"
        );
        let e = load_profile(&dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(e, HwError::Read { .. }));
        let e = resolve_profile("no/such/profile.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no/such/profile.toml") && e.contains("hexagon"),
            "{e}"
        );
    }

    #[test]
    fn saved_profile_text_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved.toml");
        let p = builtin("jetson-orin").unwrap();
        save_profile_text(&path, &profile_to_toml(&p).unwrap()).unwrap();
        assert_eq!(load_profile(&path).unwrap(), p);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn supported_formats_follow_the_profile() {
        let hex = builtin("hexagon").unwrap();
        assert!(hex.supports_weight_bits(4) && !hex.supports_weight_bits(3));
        assert!(hex.supports_format("q4_0", 4) && !hex.supports_format("q3_k", 3));
    }
}
