//! Search outputs on disk: `plan.json` / `plan.yaml` (schema-versioned, with seed, target,
//! model fingerprint and qevo version), `front.json`, `history.jsonl`. Every file is
//! written atomically. `read_plan_file` reads a plan back (JSON or YAML, a full plan file
//! or a bare `TensorPlan`).

use super::{FrontEntry, SearchOutcome};
use crate::calib::OutputRounding;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Model;
use crate::plan::LimitCheck;
use crate::plan::TensorPlan;
use std::path::Path;

pub const PLAN_SCHEMA_VERSION: u32 = 1;

/// One tensor's line in a plan file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanTensor {
    pub name: String,
    pub format: crate::quant::WeightFormat,
    pub act_bits: u8,
    /// What is written instead, where `format` is a GGML type whose block does not
    /// divide this tensor's rows (llama.cpp's fallback: q4_k → q5_0 on 576-wide rows).
    /// Informational: reading a plan back takes `format` and resolves it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<crate::quant::WeightFormat>,
}

/// Scores recorded with a plan.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PlanMetrics {
    pub kl: f64,
    pub heldout_kl: f64,
    /// KL on the validation slice, for the plans the recommendation was chosen among.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_kl: Option<f64>,
    pub top1: f64,
    pub heldout_top1: f64,
    pub ppl: f64,
    pub heldout_ppl: f64,
    pub size_bytes: u64,
    pub bits_per_weight: f64,
    pub latency_ms: f64,
    pub energy_mj: f64,
    pub peak_memory_bytes: u64,
}

/// `plan.json` / `plan.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanFile {
    pub schema_version: u32,
    pub qevo_version: String,
    pub model: String,
    pub model_fingerprint: String,
    pub target: String,
    pub seed: u64,
    pub unit: String,
    pub metrics: Option<PlanMetrics>,
    /// The limits this plan fails: empty for a feasible plan; set when no plan met the
    /// constraints and this is the least-violating one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<LimitCheck>,
    /// `Imatrix::fingerprint` of the importance matrix the plan was scored with (written
    /// next to it as imatrix.gguf); an export needs the same one for the scored bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix_fingerprint: Option<String>,
    /// Set when the plan was scored with output rounding: the calibration tokens and
    /// damping that reproduce its input moments, so an export writes the scored bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<OutputRounding>,
    pub tensors: Vec<PlanTensor>,
}

impl PlanFile {
    pub fn plan(&self) -> TensorPlan {
        TensorPlan {
            entries: self
                .tensors
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        crate::plan::TensorChoice {
                            format: t.format,
                            act_bits: t.act_bits,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn from_plan(
        model: &Model,
        plan: &TensorPlan,
        target: &str,
        seed: u64,
        unit: &str,
        metrics: Option<PlanMetrics>,
    ) -> PlanFile {
        PlanFile {
            schema_version: PLAN_SCHEMA_VERSION,
            qevo_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.source.display().to_string(),
            model_fingerprint: model.fingerprint.clone(),
            target: target.to_string(),
            seed,
            unit: unit.to_string(),
            metrics,
            failing: Vec::new(),
            imatrix_fingerprint: None,
            rounding: None,
            tensors: plan
                .entries
                .iter()
                .map(|(n, c)| PlanTensor {
                    name: n.clone(),
                    format: c.format,
                    act_bits: c.act_bits,
                    written: written_instead(model, n, c.format),
                })
                .collect(),
        }
    }
}

/// The fallback format a tensor is written in, where it differs from the planned one.
fn written_instead(
    model: &Model,
    name: &str,
    format: crate::quant::WeightFormat,
) -> Option<crate::quant::WeightFormat> {
    let t = &model.tensors[model.tensor_index(name)?];
    let r = format.resolve(t.rows, t.cols).ok()?;
    r.fell_back().then_some(r.written)
}

/// Reads a plan written by `qevo search` (JSON or YAML by extension or content).
pub fn read_plan_file(path: &Path) -> Result<TensorPlan> {
    Ok(read_plan(path)?.plan)
}

/// A plan read back, with the fingerprint of the model it was made for (a bare
/// `TensorPlan` file has none).
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub plan: TensorPlan,
    pub fingerprint: Option<String>,
    pub made_for: Option<String>,
    /// `PlanFile::imatrix_fingerprint` (None for a bare plan or one scored without).
    pub imatrix_fingerprint: Option<String>,
    /// `PlanFile::rounding` (None: llama.cpp's block rounding).
    pub rounding: Option<OutputRounding>,
}

impl ReadPlan {
    /// What the plan was scored with.
    pub fn scored_with(&self) -> crate::calib::ScoredWith {
        crate::calib::ScoredWith {
            imatrix_fingerprint: self.imatrix_fingerprint.clone(),
            rounding: self.rounding.clone(),
        }
    }

    /// Refuses a rounding record whose tokens `model`'s vocabulary lacks, naming the
    /// plan file and the key.
    fn check_rounding_tokens(&self, path: &Path, model: &Model) -> Result<()> {
        let vocab = model.arch.vocab();
        match self.rounding.as_ref().and_then(|r| r.token_outside(vocab)) {
            Some(t) => Err(Error::config(
                path,
                "rounding.tokens",
                format!("token {t} is outside the model's vocabulary of {vocab}"),
            )),
            None => Ok(()),
        }
    }

    /// The plan, if it was made for `model` (same weight fingerprint). A plan made for
    /// another model is refused (`Error::Config` on key `model_fingerprint`), or with
    /// `force` accepted with the warning returned, so scores, costs and exports are never
    /// silently of a different model's plan.
    pub fn for_model(
        self,
        path: &Path,
        model: &Model,
        force: bool,
    ) -> Result<(TensorPlan, Option<String>)> {
        let mismatch = match &self.fingerprint {
            Some(fp) if *fp != model.fingerprint => format!(
                "made for {} (fingerprint {fp}), but {} has fingerprint {}",
                self.made_for.as_deref().unwrap_or("another model"),
                model.source.display(),
                model.fingerprint
            ),
            _ => {
                self.check_rounding_tokens(path, model)?;
                return Ok((self.plan, None));
            }
        };
        self.check_rounding_tokens(path, model)?;
        if force {
            return Ok((self.plan, Some(format!("{}: {mismatch}", path.display()))));
        }
        Err(Error::config(path, "model_fingerprint", mismatch))
    }
}

/// `read_plan_file`, keeping what the file says about its model.
pub fn read_plan(path: &Path) -> Result<ReadPlan> {
    let text = crate::fsutil::read_text_file(path)?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let parsed: std::result::Result<PlanFile, String> = if yaml {
        serde_saphyr::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(pf) => {
            if pf.schema_version != PLAN_SCHEMA_VERSION {
                return Err(Error::config(
                    path,
                    "schema_version",
                    format!(
                        "version {} is not supported (expected {PLAN_SCHEMA_VERSION})",
                        pf.schema_version
                    ),
                ));
            }
            if let Some(Err((key, msg))) = pf.rounding.as_ref().map(OutputRounding::check) {
                return Err(Error::config(path, &format!("rounding.{key}"), msg));
            }
            Ok(ReadPlan {
                plan: pf.plan(),
                fingerprint: Some(pf.model_fingerprint.clone()),
                made_for: Some(pf.model.clone()),
                imatrix_fingerprint: pf.imatrix_fingerprint.clone(),
                rounding: pf.rounding.clone(),
            })
        }
        Err(e) => {
            // A bare TensorPlan (as the library serialises it) is accepted too.
            let bare: std::result::Result<TensorPlan, String> = if yaml {
                serde_saphyr::from_str(&text).map_err(|e| e.to_string())
            } else {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            };
            bare.map(|plan| ReadPlan {
                plan,
                fingerprint: None,
                made_for: None,
                imatrix_fingerprint: None,
                rounding: None,
            })
            .map_err(|_| Error::format(path, format!("not a qevo plan: {e}")))
        }
    }
}

pub fn plan_metrics(model: &Model, outcome: &SearchOutcome, f: &FrontEntry) -> PlanMetrics {
    let plan = outcome.plan(model, &f.genome);
    PlanMetrics {
        kl: f.scored.metrics.kl,
        heldout_kl: f.heldout.kl,
        validation_kl: f.validation.map(|v| v.kl),
        top1: f.scored.metrics.top1,
        heldout_top1: f.heldout.top1,
        ppl: f.scored.metrics.ppl,
        heldout_ppl: f.heldout.ppl,
        size_bytes: f.scored.size_bytes,
        bits_per_weight: plan.bits_per_weight(model),
        latency_ms: f.scored.latency_ms,
        energy_mj: f.scored.energy_mj,
        peak_memory_bytes: f.scored.peak_memory_bytes,
    }
}

/// `v` as pretty JSON written to `path`.
fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::serialize(path, e))?;
    write_atomic(path, text.as_bytes())
}

/// Writes the plan files (`plan.json`, `plan.yaml`) for the recommended plan.
pub fn write_plan(dir: &Path, pf: &PlanFile) -> Result<()> {
    write_json(&dir.join("plan.json"), pf)?;
    let path = dir.join("plan.yaml");
    let yaml = serde_saphyr::to_string(pf).map_err(|e| Error::serialize(&path, e))?;
    write_atomic(&path, yaml.as_bytes())
}

/// `front.json`: every front plan with its scores and per-tensor choices.
pub fn write_front(dir: &Path, model: &Model, outcome: &SearchOutcome, target: &str) -> Result<()> {
    let entries: Vec<PlanFile> = outcome
        .front
        .iter()
        .map(|f| {
            let unit = format!("{:?}", outcome.space.mode).to_lowercase();
            scored_plan_file(model, outcome, f, target, &unit)
        })
        .collect();
    write_json(&dir.join("front.json"), &entries)
}

/// The plan file of a scored plan: its metrics, the limits it fails (none for a feasible
/// plan), and what it was scored with (importance matrix fingerprint, output-rounding
/// record), so `qevo export` writes the scored bytes.
pub fn scored_plan_file(
    model: &Model,
    outcome: &SearchOutcome,
    f: &FrontEntry,
    target: &str,
    unit: &str,
) -> PlanFile {
    let plan = outcome.plan(model, &f.genome);
    let mut pf = PlanFile::from_plan(
        model,
        &plan,
        target,
        outcome.seed,
        unit,
        Some(plan_metrics(model, outcome, f)),
    );
    pf.imatrix_fingerprint = outcome.imatrix.as_ref().map(|im| im.fingerprint());
    pf.rounding = outcome.rounding.clone();
    pf.failing = f
        .scored
        .checks
        .iter()
        .filter(|k| !k.pass)
        .cloned()
        .collect();
    pf
}

/// `history.jsonl`: one line per generation.
pub fn write_history(dir: &Path, outcome: &SearchOutcome) -> Result<()> {
    let path = dir.join("history.jsonl");
    let mut s = String::new();
    for r in &outcome.history {
        s.push_str(&serde_json::to_string(r).map_err(|e| Error::serialize(&path, e))?);
        s.push('\n');
    }
    write_atomic(&path, s.as_bytes())
}

/// Checks an output directory can be written before hours of search go into it.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(".qevo-write-test");
    write_atomic(&probe, b"ok")?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{write_llama_dir, LlamaShape};
    use crate::quant::{GgmlType, WeightFormat};

    #[test]
    fn plan_file_shows_the_fallback_each_tensor_is_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let shape = LlamaShape {
            hidden: 64,
            inter: 256,
            ..LlamaShape::default()
        };
        write_llama_dir(dir.path(), &shape, 7).unwrap();
        let m = Model::load(dir.path()).unwrap();
        let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::Q4K), 16).unwrap();
        let pf = PlanFile::from_plan(&m, &plan, "cpu", 0, "tensor", None);
        for t in &pf.tensors {
            let info = &m.tensors[m.tensor_index(&t.name).unwrap()];
            // q4_k fits 256-wide rows as itself; the 64-wide ones are written as q5_0.
            let want =
                (!info.cols.is_multiple_of(256)).then_some(WeightFormat::Ggml(GgmlType::Q5_0));
            assert_eq!(t.written, want, "{}", t.name);
        }
        assert!(pf.tensors.iter().any(|t| t.written.is_some()));
        let json = serde_json::to_string(&pf).unwrap();
        assert!(json.contains("\"written\":\"q5_0\""), "{json}");
    }
}
