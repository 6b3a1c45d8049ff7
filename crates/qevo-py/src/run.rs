//! `search`, `quantize` and `export`: the library calls behind `qevo.search`,
//! `qevo.quantize` and `Plan.export`, with the GIL released while they run. A search's
//! outcome stays in Rust (`Outcome`), so its files are written by the library's own
//! writers and match the CLI's byte for byte.

use crate::settings::{keyword_names, Settings};
use crate::{py_err, to_json, Model, QevoError};
use pyo3::prelude::*;
use qevo::search::optuna::{iso_utc, study_info, write_journal};
use qevo::search::output::{
    prepare_out_dir, scored_plan_file, write_front, write_history, write_plan, PlanFile,
    PlanMetrics,
};
use qevo::search::problem::Scored;
use qevo::search::{Executor, FrontEntry, Hooks, Job, Progress, SearchOutcome};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The first Python error raised inside a search (a callback's, Ctrl-C's, an executor's):
/// the search stops and this error, not a wrapped copy, reaches the caller.
#[derive(Default)]
struct Failure(Mutex<Option<PyErr>>);

impl Failure {
    fn set(&self, e: PyErr) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }
    fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A Python object with `start(fingerprint)` and `score(jobs_json) -> list[str]` (each
/// string a JSON array of scores, the arrays in job order), e.g. `qevo.RayExecutor`.
struct PyExecutor<'f> {
    obj: Py<PyAny>,
    failure: &'f Failure,
}

impl PyExecutor<'_> {
    fn call(&self, method: &str, arg: String) -> qevo::Result<Vec<String>> {
        Python::attach(|py| {
            let out = self.obj.call_method1(py, method, (arg,))?;
            match out.is_none(py) {
                true => Ok(Vec::new()),
                false => out.extract::<Vec<String>>(py),
            }
        })
        .map_err(|e: PyErr| {
            let msg = e.to_string();
            self.failure.set(e);
            qevo::Error::Executor(msg)
        })
    }
}

impl Executor for PyExecutor<'_> {
    fn start(&self, fingerprint: &str) -> qevo::Result<()> {
        self.call("start", fingerprint.to_string()).map(|_| ())
    }
    fn score(&self, jobs: &[Job]) -> qevo::Result<Vec<Scored>> {
        let json = serde_json::to_string(jobs).map_err(|e| qevo::Error::Executor(e.to_string()))?;
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in self.call("score", json)? {
            let part: Vec<Scored> = serde_json::from_str(&chunk)
                .map_err(|e| qevo::Error::Executor(format!("a worker's answer: {e}")))?;
            out.extend(part);
        }
        Ok(out)
    }
}

/// Between generations: Ctrl-C (or any pending signal) and the user's callback, which
/// stops the search by returning False or raising.
fn between_generations(
    r: &evo::GenerationRecord,
    progress: Option<&Py<PyAny>>,
    failure: &Failure,
) -> ControlFlow<()> {
    let step = Python::attach(|py| -> PyResult<bool> {
        py.check_signals()?;
        let Some(cb) = progress else { return Ok(true) };
        let json = to_json(r)?;
        let answer = cb.call1(py, (json,))?;
        Ok(!answer.bind(py).is(pyo3::types::PyBool::new(py, false)))
    });
    match step {
        Ok(true) => ControlFlow::Continue(()),
        Ok(false) => ControlFlow::Break(()),
        Err(e) => {
            failure.set(e);
            ControlFlow::Break(())
        }
    }
}

/// Runs `qevo::search::run_with` on `model` with the settings JSON; `executor` scores
/// the evolution's batches, `progress(record_json)` is called after every generation.
#[pyfunction]
#[pyo3(signature = (model, settings, executor=None, progress=None))]
pub fn search(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    settings: &str,
    executor: Option<Py<PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Outcome> {
    let s = Settings::parse(settings).map_err(py_err)?;
    let m = model.inner.clone();
    let cfg = s.config(&m).map_err(py_err)?;
    let (calib, heldout) = s.texts().map_err(py_err)?;
    let failure = Failure::default();
    let px = executor.map(|obj| PyExecutor {
        obj,
        failure: &failure,
    });
    let result = py.detach(|| {
        let progress: Progress = Box::new(|r| between_generations(r, progress.as_ref(), &failure));
        let hooks = Hooks {
            progress: Some(progress),
            executor: px.as_ref().map(|x| x as &dyn Executor),
        };
        qevo::search::run_with(&m, &calib, &heldout, &cfg, hooks)
    });
    if let Some(e) = failure.take() {
        return Err(e);
    }
    let outcome = result.map_err(|e| py_err(keyword_names(e)))?;
    Ok(Outcome {
        target: cfg.target.name.clone(),
        unit: s.unit.clone(),
        model: m,
        outcome,
    })
}

/// A finished search: front, recommendation, history and the files they are saved as.
#[pyclass(module = "qevo._qevo", frozen)]
pub struct Outcome {
    pub(crate) model: Arc<qevo::Model>,
    pub(crate) outcome: SearchOutcome,
    target: String,
    unit: String,
}

impl Outcome {
    fn plan_file(&self, f: &FrontEntry) -> PlanFile {
        scored_plan_file(&self.model, &self.outcome, f, &self.target, &self.unit)
    }

    /// The recommended plan, or, when nothing is feasible, the least-violating one.
    fn chosen(&self) -> Option<&FrontEntry> {
        self.outcome.chosen()
    }
}

#[pymethods]
impl Outcome {
    /// The front's plans as JSON plan files (the entries of front.json), smallest first.
    fn front_json(&self) -> PyResult<String> {
        let v: Vec<PlanFile> = self
            .outcome
            .front
            .iter()
            .map(|f| self.plan_file(f))
            .collect();
        to_json(&v)
    }
    /// Index of the recommended plan in the front (None when nothing is feasible).
    #[getter]
    fn recommended(&self) -> Option<usize> {
        self.outcome.recommended
    }
    /// The least-violating plan when nothing met the limits (its `failing` checks say why).
    fn infeasible_json(&self) -> PyResult<Option<String>> {
        let o = &self.outcome;
        o.infeasible_closest
            .as_ref()
            .map(|f| to_json(&self.plan_file(f)))
            .transpose()
    }
    /// One record per generation (history.jsonl's lines) as a JSON array.
    fn history_json(&self) -> PyResult<String> {
        to_json(&self.outcome.history)
    }
    /// Every plan the evolution scored, in order: generation, genome, scores.
    fn evaluations_json(&self) -> PyResult<String> {
        to_json(&self.outcome.evaluations)
    }
    /// Seed, FP cost, timings and cache counters.
    fn summary_json(&self) -> PyResult<String> {
        let o = &self.outcome;
        to_json(&serde_json::json!({
            "seed": o.seed,
            "target": self.target,
            "unit": self.unit,
            "fp": o.fp,
            "search_seconds": o.search_seconds,
            "total_seconds": o.total_seconds,
            "stage_seconds": o.stage_seconds,
            "fitness_cache": o.fitness_stats,
            "evaluations": o.evaluations.len(),
        }))
    }
    /// Writes every plan the evolution scored as an Optuna journal file.
    fn write_optuna_journal(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let o = &self.outcome;
        let info = study_info(&self.model, o, &self.target, iso_utc(secs));
        py.detach(|| write_journal(&path, &o.space, &o.evaluations, &info))
            .map_err(py_err)
    }
    /// Writes plan.json / plan.yaml (the recommended or least-violating plan),
    /// front.json, history.jsonl and, when the search used one, imatrix.gguf, as
    /// `qevo search --out DIR` does.
    fn save(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        py.detach(|| -> qevo::Result<()> {
            prepare_out_dir(&dir)?;
            if let Some(f) = self.chosen() {
                write_plan(&dir, &self.plan_file(f))?;
            }
            if let Some(im) = &self.outcome.imatrix {
                im.write_gguf(&dir.join("imatrix.gguf"))?;
            }
            write_front(&dir, &self.model, &self.outcome, &self.target)?;
            write_history(&dir, &self.outcome)
        })
        .map_err(py_err)
    }
}

/// A uniform plan (every tensor in `format`, activations at `act_bits`) scored against
/// the FP model on `text` (default: the embedded held-out split), as a JSON plan file.
// The arguments are Python keywords with defaults, not a Rust call site.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (model, format, act_bits=16, text=None, target="arm-neon", seq_len=128, max_windows=8))]
pub fn quantize(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    format: &str,
    act_bits: u8,
    text: Option<String>,
    target: &str,
    seq_len: usize,
    max_windows: usize,
) -> PyResult<String> {
    let m = model.inner.clone();
    let pf = py
        .detach(|| {
            score_uniform(
                &m,
                format,
                act_bits,
                text.as_deref(),
                target,
                seq_len,
                max_windows,
            )
        })
        .map_err(py_err)?;
    to_json(&pf)
}

fn score_uniform(
    m: &qevo::Model,
    format: &str,
    act_bits: u8,
    text: Option<&str>,
    target: &str,
    seq_len: usize,
    max_windows: usize,
) -> qevo::Result<PlanFile> {
    use qevo::eval::{auto_topk, Reference, TokenWindows};
    use qevo::quant::{
        calibrate_act_ranges, ActQuantHook, ActScheme, TensorPlan, WeightCache, WeightFormat,
    };
    let profile = qevo::hw::resolve_profile(target)?;
    let plan = TensorPlan::uniform(m, WeightFormat::parse(format)?, act_bits)?;
    let seq = seq_len.min(m.arch.max_positions());
    let text = text.unwrap_or(qevo::assets::HELDOUT_TEXT);
    let windows = TokenWindows::from_text(m, text, seq, max_windows)?;
    let k = auto_topk(m.arch.vocab(), windows.tokens(), 64);
    let reference = Reference::build(m, windows, k)?;
    let weights = WeightCache::new(usize::MAX).weights_for(m, &plan)?;
    let metrics = match act_bits < 16 {
        true => {
            let calib = TokenWindows::from_text(m, qevo::assets::CALIB_TEXT, seq, max_windows)?;
            let ranges = calibrate_act_ranges(m, &calib, None)?;
            let hook = ActQuantHook::new(&ranges, plan.act_bits(m)?, ActScheme::Asym);
            reference.score(m, &weights, &hook)?
        }
        false => reference.score(m, &weights, &qevo::model::NoHook)?,
    };
    let choices = plan.per_tensor(m)?;
    let p = qevo::plan::price(
        m,
        &choices,
        &profile,
        &profile.workload,
        &qevo::plan::UserLimits::default(),
        Some(metrics.kl),
    )?;
    let pm = PlanMetrics {
        kl: metrics.kl,
        top1: metrics.top1,
        ppl: metrics.ppl,
        size_bytes: p.tensor_bytes,
        bits_per_weight: plan.bits_per_weight(m),
        latency_ms: p.cost.latency_ms,
        energy_mj: p.cost.energy_mj,
        peak_memory_bytes: p.cost.peak_memory_bytes,
        ..PlanMetrics::default()
    };
    let unit = format!("uniform {format}");
    Ok(PlanFile::from_plan(
        m,
        &plan,
        &profile.name,
        0,
        &unit,
        Some(pm),
    ))
}

/// Exports a plan (JSON plan file) of `model` as `format`: "gguf" (llama.cpp),
/// "tensor-types" (llama-quantize overrides) or "safetensors" (packed integer formats).
/// `outcome`: the search the plan came from, whose importance matrix a GGUF export uses.
#[pyfunction]
#[pyo3(signature = (model, plan, path, format="gguf", outcome=None, fallback=false))]
pub fn export(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    plan: &str,
    path: PathBuf,
    format: &str,
    outcome: Option<PyRef<'_, Outcome>>,
    fallback: bool,
) -> PyResult<String> {
    use qevo::export::{
        export_gguf, export_safetensors, resolve_ggml, write_tensor_types, ExportFormat,
    };
    let pf: PlanFile = serde_json::from_str(plan)
        .map_err(|e| QevoError::new_err(format!("not a qevo plan: {e}")))?;
    let m = model.inner.clone();
    if pf.model_fingerprint != m.fingerprint {
        return Err(QevoError::new_err(format!(
            "the plan was made for {} (fingerprint {}), not {} (fingerprint {})",
            pf.model,
            pf.model_fingerprint,
            m.source.display(),
            m.fingerprint
        )));
    }
    let imatrix = outcome.as_ref().and_then(|o| o.outcome.imatrix.clone());
    let format = ExportFormat::parse(format).map_err(py_err)?;
    let summary = py.detach(|| -> qevo::Result<serde_json::Value> {
        let plan = pf.plan();
        plan.validate(&m)?;
        Ok(match format {
            ExportFormat::Gguf => {
                let resolved = resolve_ggml(&m, &plan, fallback)?;
                // What the plan was scored with: its importance matrix and, for output
                // rounding, the moments its recorded calibration tokens rebuild.
                let rounding = qevo::quant::RoundingInputs {
                    imatrix: imatrix.map(|im| im.for_model(&m)).transpose()?.unwrap_or_default(),
                    moments: match &pf.rounding {
                        Some(r) => r.moments(&m)?,
                        None => Vec::new(),
                    },
                };
                let s = export_gguf(&m, &resolved, &rounding, &path)?;
                serde_json::json!({"file_bytes": s.layout.file_bytes, "planned_tensor_bytes": s.planned_tensor_bytes})
            }
            ExportFormat::TensorTypes => {
                let r = write_tensor_types(&m, &resolve_ggml(&m, &plan, fallback)?, &path)?;
                serde_json::json!({"overrides": r.lines.len()})
            }
            ExportFormat::Safetensors => {
                let s = export_safetensors(&m, &plan, &path)?;
                serde_json::json!({"file_bytes": s.file_bytes, "packed_tensors": s.packed_tensors})
            }
            ExportFormat::CompressedTensors => {
                let s = qevo::export::export_compressed_tensors(&m, &plan, &path)?;
                serde_json::json!({"file_bytes": s.file_bytes, "packed_tensors": s.packed_tensors, "config_groups": s.config_groups})
            }
        })
    });
    to_json(&summary.map_err(py_err)?)
}
