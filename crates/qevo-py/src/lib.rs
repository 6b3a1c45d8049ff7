//! `qevo._qevo`: the native half of the Python package. Like the CLI it only parses, calls
//! the library and hands back what it returns; the Python half (`python/qevo`) shapes that
//! into the API users see (`qevo.search`, `SearchResult`, `Plan`, `RayExecutor`).
//!
//! Values cross the boundary as JSON text in the library's own serde shapes (plan files,
//! history records, scores), so the two halves share one definition of every record, and
//! f64s come back bit-exact (serde_json's float_roundtrip, which `qevo` turns on).
//!
//! Every call that does real work releases the GIL (`Python::detach`); a search takes it
//! back only between generations, to run the progress callback and check for Ctrl-C, and
//! when a Python executor scores a batch.

mod keywords;
mod run;
mod settings;
mod worker;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

create_exception!(
    _qevo,
    QevoError,
    PyException,
    "An error from the qevo library; the message names the file, tensor or setting at fault."
);

/// The library's error as a Python exception, message unchanged.
pub(crate) fn py_err(e: qevo::Error) -> PyErr {
    QevoError::new_err(e.to_string())
}

/// An error of `qevo.search` (or a Ray worker's setup) as a Python exception, its fields
/// renamed to the keywords `qevo.search` takes.
pub(crate) fn search_err(e: qevo::Error) -> PyErr {
    py_err(keywords::in_keywords(e, keywords::SEARCH_KEYWORD_OF))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| QevoError::new_err(format!("serialising: {e}")))
}

/// A loaded model (f32 weights, architecture, tokenizer).
#[pyclass(module = "qevo._qevo", frozen)]
pub struct Model {
    pub(crate) inner: Arc<qevo::Model>,
    /// What it was loaded from (None: the embedded default), for workers to load it too.
    pub(crate) path: Option<PathBuf>,
}

#[pymethods]
impl Model {
    /// Loads a Hugging Face model directory or a .gguf file; None: the embedded model.
    #[staticmethod]
    #[pyo3(signature = (path=None))]
    fn load(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Model> {
        let inner = py.detach(|| load_model(path.as_deref())).map_err(py_err)?;
        Ok(Model {
            inner: Arc::new(inner),
            path,
        })
    }

    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.path.clone()
    }
    #[getter]
    fn source(&self) -> String {
        self.inner.source.display().to_string()
    }
    #[getter]
    fn fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }
    #[getter]
    fn architecture(&self) -> String {
        self.inner.arch.kind().as_str().to_string()
    }
    #[getter]
    fn is_decoder(&self) -> bool {
        self.inner.arch.is_decoder()
    }
    #[getter]
    fn n_blocks(&self) -> usize {
        self.inner.n_blocks()
    }
    /// The size of every quantizable tensor at f32, in bytes.
    #[getter]
    fn fp_bytes(&self) -> u64 {
        qevo::plan::fp_bytes(&self.inner)
    }
    /// Quantizable tensors as JSON: name, role, rows, cols.
    fn tensors_json(&self) -> PyResult<String> {
        let rows: Vec<_> = self
            .inner
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "role": t.role.to_string(), "rows": t.rows, "cols": t.cols,
                })
            })
            .collect();
        to_json(&rows)
    }
}

pub(crate) fn load_model(path: Option<&std::path::Path>) -> qevo::Result<qevo::Model> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => qevo::assets::default_model_dir(&qevo::assets::cache_root())?,
    };
    qevo::Model::load(&path)
}

/// The built-in hardware profiles, as JSON (name, description, workload, constraints).
#[pyfunction]
fn profiles_json() -> PyResult<String> {
    let mut out = Vec::new();
    for info in qevo::hw::list_builtins() {
        let p = qevo::hw::builtin(info.name).map_err(|e| py_err(e.into()))?;
        out.push(serde_json::to_value(&p).map_err(|e| QevoError::new_err(e.to_string()))?);
    }
    to_json(&out)
}

/// The search's settings with their defaults, as JSON (`qevo::search::Settings`): the
/// keywords `qevo.search` sends.
#[pyfunction]
fn settings_json() -> PyResult<String> {
    to_json(&qevo::search::Settings::default())
}

#[pymodule]
fn _qevo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("QevoError", m.py().get_type::<QevoError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Model>()?;
    m.add_class::<run::Outcome>()?;
    m.add_class::<worker::Worker>()?;
    m.add_function(wrap_pyfunction!(profiles_json, m)?)?;
    m.add_function(wrap_pyfunction!(settings_json, m)?)?;
    m.add_function(wrap_pyfunction!(run::search, m)?)?;
    m.add_function(wrap_pyfunction!(run::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(run::export, m)?)?;
    Ok(())
}
