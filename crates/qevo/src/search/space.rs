//! The search space: which tensors share a gene (`--unit role|block|tensor`, `--tie-qkv`,
//! `--tie-fused`),
//! and, per gene, the ordered list of (weight format, activation bits) choices that apply
//! to every tensor of the unit and that the target can execute.

use super::config::SpaceConfig;
use crate::error::{Error, Result};
use crate::hw::Profile;
use crate::model::{Model, Role, TensorInfo};
use crate::plan::{fp_choices, TensorChoice, TensorPlan, ACT_BITS};
use crate::quant::WeightFormat;

/// How tensors are grouped into genes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum UnitMode {
    /// One gene per tensor role, shared by every block (the product brief's table).
    Role,
    /// One gene per block (all of a block's tensors), plus embedding and output.
    Block,
    /// One gene per weight matrix.
    Tensor,
}

impl UnitMode {
    /// The name a setting, a plan file and a report use: `role`, `block` or `tensor`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitMode::Role => "role",
            UnitMode::Block => "block",
            UnitMode::Tensor => "tensor",
        }
    }

    pub fn parse(s: &str) -> Result<UnitMode> {
        match s {
            "role" => Ok(UnitMode::Role),
            "block" => Ok(UnitMode::Block),
            "tensor" => Ok(UnitMode::Tensor),
            _ => Err(Error::setting(
                "unit",
                format!("unknown unit `{s}` (role, block, tensor)"),
            )),
        }
    }
}

/// One gene: a name for reports and the tensors (indices into `Model::tensors`) it sets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unit {
    pub name: String,
    pub tensors: Vec<usize>,
}

/// Named format sets for `--formats`.
pub const FORMAT_PRESETS: &[(&str, &[&str])] = &[
    // Every type llama.cpp loads and qevo quantizes, so the recommended plan exports to
    // GGUF as-is (q4_1 / q5_0 / q5_1 / iq4_nl are what llama.cpp uses where rows are not a
    // multiple of 256). Types that need an importance matrix to quantize at all (iq2_xxs,
    // iq2_xs, iq1_s: only with data.imatrix, and never for token_embd) are in no preset.
    (
        "ggml",
        &[
            "q2_k", "q3_k", "q4_0", "q4_1", "q4_k", "q5_0", "q5_1", "q5_k", "q6_k", "q8_0",
            "iq4_nl", "iq4_xs", "iq3_s", "iq3_xxs", "iq2_s", "iq1_m", "f16",
        ],
    ),
    // The product brief's genome: integer widths × schemes at a common group size.
    (
        "int",
        &[
            "int2-asym-g32",
            "int3-asym-g64",
            "int4-sym-g128",
            "int4-asym-g128",
            "int4-pow2-g128",
            "int5-asym-g128",
            "int6-sym-g128",
            "int6-pow2-g128",
            "int8-sym-channel",
            "int8-asym-channel",
            "int8-pow2-channel",
            "f16",
        ],
    ),
];

/// Expands `--formats` (presets and/or format names, comma separated).
pub fn parse_formats(spec: &str) -> Result<Vec<WeightFormat>> {
    let mut out: Vec<WeightFormat> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let names: Vec<&str> = match FORMAT_PRESETS.iter().find(|(n, _)| *n == part) {
            Some((_, list)) => list.to_vec(),
            None => vec![part],
        };
        for n in names {
            let f = WeightFormat::parse(n)?;
            if !f.can_quantize() {
                return Err(Error::setting(
                    "formats",
                    format!("qevo can read {f} but not quantize to it yet"),
                ));
            }
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::setting("formats", "lists no format"));
    }
    Ok(out)
}

/// Parses `--act-bits 8,16`.
pub fn parse_act_bits(spec: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    for p in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match p.parse::<u8>() {
            Ok(b @ (4 | 8 | 16)) => {
                if !v.contains(&b) {
                    v.push(b)
                }
            }
            _ => {
                return Err(Error::setting(
                    "act_bits",
                    format!("`{p}`: choose from {ACT_BITS:?}"),
                ))
            }
        }
    }
    if v.is_empty() {
        return Err(Error::setting("act_bits", "lists no width"));
    }
    Ok(v)
}

/// The genes and their allowed choices.
#[derive(Debug, Clone)]
pub struct SearchSpace {
    pub mode: UnitMode,
    pub units: Vec<Unit>,
    /// Per unit, choices ordered from the fewest bits to the most (neighbours are similar).
    pub choices: Vec<Vec<TensorChoice>>,
}

/// The gene name of a role: its own, or the fused module's when tied.
fn tied_role(cfg: &SpaceConfig, role: Role) -> &'static str {
    match role {
        Role::AttnQ | Role::AttnK | Role::AttnV if cfg.tie_qkv => "attn_qkv",
        Role::FfnGate | Role::FfnUp if cfg.tie_gate_up => "ffn_gate_up",
        r => r.as_str(),
    }
}

fn unit_key(tensors: &[TensorInfo], t: usize, cfg: &SpaceConfig) -> String {
    let info = &tensors[t];
    let (mode, role) = (cfg.unit, tied_role(cfg, info.role));
    match (mode, info.block) {
        (UnitMode::Role, _) | (_, None) => role.to_string(),
        (UnitMode::Block, Some(b)) => format!("blk.{b}"),
        (UnitMode::Tensor, Some(b)) => format!("blk.{b}.{role}"),
    }
}

impl SearchSpace {
    /// The units and, per unit, the choices of `cfg` that fit all its tensors and that
    /// `target` executes. `has_importance[t]`: tensor `t` has an importance vector, without
    /// which the types that require one (iq2_xs, iq2_xxs, iq1_s) cannot be chosen for it.
    pub fn new(
        model: &Model,
        cfg: &SpaceConfig,
        target: &Profile,
        has_importance: &[bool],
    ) -> Result<SearchSpace> {
        Self::for_tensors(&model.tensors, cfg, target, has_importance)
    }

    /// The space over a tensor list (a model's, or shapes read from a config alone).
    pub fn for_tensors(
        tensors: &[TensorInfo],
        cfg: &SpaceConfig,
        target: &Profile,
        has_importance: &[bool],
    ) -> Result<SearchSpace> {
        let mode = cfg.unit;
        let (formats, act_bits) = (&cfg.formats, &cfg.act_bits);
        let mut units: Vec<Unit> = Vec::new();
        for t in 0..tensors.len() {
            let key = unit_key(tensors, t, cfg);
            match units.iter_mut().find(|u| u.name == key) {
                Some(u) => u.tensors.push(t),
                None => units.push(Unit {
                    name: key,
                    tensors: vec![t],
                }),
            }
        }
        let mut choices = Vec::with_capacity(units.len());
        for u in &units {
            let embedding_only = u
                .tensors
                .iter()
                .all(|&t| tensors[t].role == Role::Embedding);
            let mut list: Vec<TensorChoice> = Vec::new();
            for f in formats {
                let fits = u.tensors.iter().all(|&t| {
                    let i = &tensors[t];
                    let weighted = !f.requires_imatrix() || has_importance.get(t) == Some(&true);
                    f.applies_to(i.rows, i.cols) && weighted
                });
                if !fits || !target.supports_format(&f.name(), f.compute_bits()) {
                    continue;
                }
                // An embedding is a row gather: it has no input to quantize.
                let acts: &[u8] = if embedding_only { &[16] } else { act_bits };
                for &a in acts {
                    list.push(TensorChoice {
                        format: *f,
                        act_bits: a,
                    });
                }
            }
            if list.is_empty() {
                return Err(Error::setting(
                    "formats",
                    format!(
                        "no allowed format applies to unit `{}` on target `{}` (tensor shapes {}); allow more formats",
                        u.name,
                        target.name,
                        u.tensors
                            .iter()
                            .map(|&t| format!("{}x{}", tensors[t].rows, tensors[t].cols))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let cols = tensors[u.tensors[0]].cols;
            list.sort_by(|a, b| {
                a.format
                    .bits_per_weight(cols)
                    .total_cmp(&b.format.bits_per_weight(cols))
                    .then(a.act_bits.cmp(&b.act_bits))
                    .then(a.format.name().cmp(&b.format.name()))
            });
            choices.push(list);
        }
        Ok(SearchSpace {
            mode,
            units,
            choices,
        })
    }

    pub fn n_genes(&self) -> usize {
        self.units.len()
    }

    /// Per tensor, the choice a genome gives it.
    pub fn tensor_choices(&self, model: &Model, genome: &[u16]) -> Vec<TensorChoice> {
        let mut out = fp_choices(model);
        for (u, unit) in self.units.iter().enumerate() {
            let c = self.choices[u][genome[u] as usize];
            for &t in &unit.tensors {
                out[t] = c;
            }
        }
        out
    }

    /// The plan a genome encodes.
    pub fn plan(&self, model: &Model, genome: &[u16]) -> TensorPlan {
        let tc = self.tensor_choices(model, genome);
        TensorPlan {
            entries: model
                .tensors
                .iter()
                .zip(tc)
                .map(|(i, c)| (i.name.clone(), c))
                .collect(),
        }
    }

    /// The genome for "every unit at the same choice", where every unit has it.
    pub fn uniform_genome(&self, choice: &TensorChoice) -> Option<Vec<u16>> {
        self.choices
            .iter()
            .map(|list| list.iter().position(|c| c == choice).map(|p| p as u16))
            .collect()
    }

    /// The genome that encodes `plan`, when every unit's tensors share one choice the
    /// unit allows (a tensor the plan does not name stays FP, which no unit encodes).
    pub fn genome_of(&self, model: &Model, plan: &TensorPlan) -> Option<Vec<u16>> {
        let by_name: std::collections::HashMap<&str, &TensorChoice> =
            plan.entries.iter().map(|(n, c)| (n.as_str(), c)).collect();
        self.units
            .iter()
            .zip(&self.choices)
            .map(|(u, list)| {
                let first = *by_name.get(model.tensors[u.tensors[0]].name.as_str())?;
                let shared = u
                    .tensors
                    .iter()
                    .all(|&t| by_name.get(model.tensors[t].name.as_str()) == Some(&first));
                let at = list.iter().position(|c| c == first)?;
                shared.then_some(at as u16)
            })
            .collect()
    }

    /// Parameter count per unit (the level-switch mutation's gene weights).
    pub fn unit_params(&self, model: &Model) -> Vec<u64> {
        self.units
            .iter()
            .map(|u| {
                u.tensors
                    .iter()
                    .map(|&t| model.tensors[t].params() as u64)
                    .sum()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Settings;

    fn embedded() -> Model {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets"));
        Model::load(dir).unwrap()
    }

    #[test]
    fn genome_of_inverts_plan_and_refuses_what_a_unit_cannot_encode() {
        let m = embedded();
        let cfg = Settings {
            unit: UnitMode::Role,
            act_bits: "16".into(),
            ..Settings::default()
        }
        .resolve(&m)
        .unwrap();
        let space =
            SearchSpace::new(&m, &cfg.space, &cfg.target, &vec![false; m.tensors.len()]).unwrap();
        let g: Vec<u16> = space
            .choices
            .iter()
            .enumerate()
            .map(|(u, list)| (u % list.len()) as u16)
            .collect();
        let plan = space.plan(&m, &g);
        assert_eq!(space.genome_of(&m, &plan), Some(g));
        // Two tensors of one role gene at different choices: no genome encodes that.
        let u = space
            .units
            .iter()
            .position(|u| u.tensors.len() > 1)
            .unwrap();
        let mut split = plan.clone();
        let t = space.units[u].tensors[1];
        let other = space.choices[u]
            .iter()
            .find(|c| **c != split.entries[t].1)
            .copied()
            .unwrap();
        split.entries[t].1 = other;
        assert_eq!(space.genome_of(&m, &split), None);
    }
}
