//! `search`, `quantize` and `export`: the library calls behind `qevo.search`,
//! `qevo.quantize` and `Plan.export`, with the GIL released while they run. A search's
//! outcome stays in Rust (`Outcome`), so its files are written by the library's own
//! `report::write_all`, the function the CLI calls, and match the CLI's byte for byte.
//! Options arrive as JSON in the library's own settings types (`search::Settings`,
//! `eval::ScoreOptions`), whose fields are the keywords.

use crate::settings::Request;
use crate::{py_err, search_err, to_json, Model, QevoError};
use pyo3::prelude::*;
use qevo::search::optuna::{iso_utc, study_info, write_journal};
use qevo::search::output::{scored_plan_file, PlanFile, PlanMetrics};
use qevo::search::problem::Scored;
use qevo::search::{Executor, FrontEntry, Hooks, Job, Progress, SearchConfig, SearchOutcome};
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

/// Runs `qevo::search::run_with` on `model` with the request JSON (settings and texts);
/// `executor` scores the evolution's batches, `progress(record_json)` is called after
/// every generation.
#[pyfunction]
#[pyo3(signature = (model, settings, executor=None, progress=None))]
pub fn search(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    settings: &str,
    executor: Option<Py<PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Outcome> {
    let r = Request::parse(settings).map_err(search_err)?;
    let m = model.inner.clone();
    let cfg = r.config(&m).map_err(search_err)?;
    let failure = Failure::default();
    let px = executor.map(|obj| PyExecutor {
        obj,
        failure: &failure,
    });
    let result = py.detach(|| {
        let progress: Progress =
            Box::new(|rec| between_generations(rec, progress.as_ref(), &failure));
        let hooks = Hooks {
            progress: Some(progress),
            executor: px.as_ref().map(|x| x as &dyn Executor),
        };
        qevo::search::run_with(&m, &r.calib, &r.heldout, &cfg, hooks)
    });
    if let Some(e) = failure.take() {
        return Err(e);
    }
    let outcome = result.map_err(search_err)?;
    Ok(Outcome {
        model: m,
        outcome,
        cfg,
    })
}

/// A finished search: front, recommendation, history and the files they are saved as.
#[pyclass(module = "qevo._qevo", frozen)]
pub struct Outcome {
    pub(crate) model: Arc<qevo::Model>,
    pub(crate) outcome: SearchOutcome,
    cfg: SearchConfig,
}

impl Outcome {
    fn plan_file(&self, f: &FrontEntry) -> PlanFile {
        let unit = self.outcome.space.mode.as_str();
        scored_plan_file(&self.model, &self.outcome, f, &self.cfg.target.name, unit)
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
    /// The tuned front plans (`tune_front`): the report's rows, untuned against tuned,
    /// each with the wall seconds it took (which `report.json` leaves to `run.json`).
    fn tuned_json(&self) -> PyResult<String> {
        let rows: Vec<_> = self
            .outcome
            .tuned
            .iter()
            .map(|e| {
                let mut row = serde_json::json!(qevo::report::TunedRow::of(e));
                row["seconds"] = serde_json::json!(e.seconds);
                row
            })
            .collect();
        to_json(&rows)
    }
    /// Seed, FP cost, timings, the refine stage at the size limit and cache counters.
    fn summary_json(&self) -> PyResult<String> {
        let o = &self.outcome;
        to_json(&serde_json::json!({
            "seed": o.seed,
            "target": self.cfg.target.name,
            "unit": o.space.mode.as_str(),
            "fp": o.fp,
            "search_seconds": o.search_seconds,
            "total_seconds": o.total_seconds,
            "stage_seconds": o.stage_seconds,
            "refine": o.refine,
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
        let info = study_info(&self.model, o, &self.cfg.target.name, iso_utc(secs));
        py.detach(|| write_journal(&path, &o.space, &o.evaluations, &info))
            .map_err(py_err)
    }
    /// Writes every output file into `dir`, as `qevo search --out DIR` does
    /// (`qevo::report::write_all`).
    fn save(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        py.detach(|| qevo::report::write_all(&dir, &self.model, &self.cfg, &self.outcome))
            .map(|_| ())
            .map_err(|e| QevoError::new_err(e.to_string()))
    }
}

/// A uniform plan (every tensor in `format`, activations at `act_bits`) scored against
/// the FP model with `options` (`eval::ScoreOptions` as JSON, the keywords of
/// `qevo.quantize`) and priced on `target`, as a JSON plan file.
#[pyfunction]
#[pyo3(signature = (model, format, act_bits=16, target="arm-neon", options="{}"))]
pub fn quantize(
    py: Python<'_>,
    model: PyRef<'_, Model>,
    format: &str,
    act_bits: u8,
    target: &str,
    options: &str,
) -> PyResult<String> {
    let opts: qevo::eval::ScoreOptions =
        serde_json::from_str(options).map_err(|e| QevoError::new_err(e.to_string()))?;
    let m = model.inner.clone();
    let pf = py
        .detach(|| score_uniform(&m, format, act_bits, target, &opts))
        .map_err(py_err)?;
    to_json(&pf)
}

fn score_uniform(
    m: &qevo::Model,
    format: &str,
    act_bits: u8,
    target: &str,
    opts: &qevo::eval::ScoreOptions,
) -> qevo::Result<PlanFile> {
    use qevo::calib::ScoredWith;
    use qevo::plan::TensorPlan;
    use qevo::quant::WeightFormat;
    let profile = qevo::hw::resolve_profile(target)?;
    let plan = TensorPlan::uniform(m, WeightFormat::parse(format)?, act_bits)?;
    let s = qevo::eval::score_plan(m, &plan, &ScoredWith::default(), opts)?;
    let choices = plan.per_tensor(m)?;
    let p = qevo::plan::price(
        m,
        &choices,
        &profile,
        &profile.workload,
        &qevo::plan::UserLimits::default(),
        Some(s.metrics.kl),
    )?;
    let pm = PlanMetrics {
        kl: s.metrics.kl,
        top1: s.metrics.top1,
        ppl: s.metrics.ppl,
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
/// "tensor-types" (llama-quantize overrides), "safetensors" (packed integer formats) or
/// "compressed-tensors", with the library's `export::export_plan`. `outcome`: the search
/// the plan came from, whose importance matrix a GGUF export uses. Returns its report.
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
    use qevo::export::{export_plan, ExportFormat, ExportOptions};
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
    let opts = ExportOptions {
        format: ExportFormat::parse(format).map_err(py_err)?,
        fallback,
        imatrix: outcome.as_ref().and_then(|o| o.outcome.imatrix.clone()),
    };
    let scored = qevo::calib::ScoredWith {
        imatrix_fingerprint: pf.imatrix_fingerprint.clone(),
        rounding: pf.rounding.clone(),
    };
    let report = py
        .detach(|| export_plan(&m, &pf.plan(), &scored, &opts, &path))
        .map_err(py_err)?;
    to_json(&report)
}
