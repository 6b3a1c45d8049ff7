//! `Worker`: the scoring end of a remote executor (one per Ray actor). It loads the model
//! and builds the search's setup (windows, FP references, evaluator, space) once, from
//! the same settings JSON as the driver, then scores the jobs it is sent with
//! `QuantProblem::score_job`: the function the driver's own threads run.

use crate::settings::Request;
use crate::{load_model, py_err, search_err, QevoError};
use pyo3::prelude::*;
use qevo::search::problem::{QuantProblem, Scored};
use qevo::search::{prepare, Job, Prepared};
use rayon::prelude::*;
use std::path::PathBuf;

/// A worker's setup. `QuantProblem` borrows the prepared references, which borrow the
/// model; a worker lives as long as the process that holds it (a Ray actor), so the
/// three are allocated once and never freed rather than tied into a self-referential
/// struct.
#[pyclass(module = "qevo._qevo", frozen)]
pub struct Worker {
    problem: QuantProblem<'static>,
    fingerprint: String,
}

#[pymethods]
impl Worker {
    /// Loads the model (`model_path`; None: the embedded model) and prepares the setup the
    /// settings JSON describes.
    #[new]
    #[pyo3(signature = (model_path, settings))]
    fn new(py: Python<'_>, model_path: Option<PathBuf>, settings: &str) -> PyResult<Worker> {
        let r = Request::parse(settings).map_err(search_err)?;
        py.detach(|| -> qevo::Result<Worker> {
            let model: &'static qevo::Model =
                Box::leak(Box::new(load_model(model_path.as_deref())?));
            let cfg = r.config(model)?;
            let prepared: &'static Prepared<'static> =
                Box::leak(Box::new(prepare(model, &r.calib, &r.heldout, &cfg)?));
            let problem = QuantProblem::new(prepared, &cfg)?;
            let fingerprint = problem.fingerprint();
            Ok(Worker {
                problem,
                fingerprint,
            })
        })
        .map_err(search_err)
    }

    /// `QuantProblem::fingerprint` of this worker's setup; the driver refuses a worker
    /// whose fingerprint differs from its own.
    #[getter]
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Scores a JSON array of jobs; returns a JSON array of scores in job order.
    fn score(&self, py: Python<'_>, jobs: &str) -> PyResult<String> {
        let jobs: Vec<Job> = serde_json::from_str(jobs)
            .map_err(|e| QevoError::new_err(format!("not a list of jobs: {e}")))?;
        let scored = py
            .detach(|| {
                jobs.par_iter()
                    .map(|j| self.problem.score_job(j))
                    .collect::<qevo::Result<Vec<Scored>>>()
            })
            .map_err(py_err)?;
        crate::to_json(&scored)
    }
}
