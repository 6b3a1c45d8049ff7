//! A search as an Optuna study: every plan the evolution scored, written in Optuna's
//! journal-storage file format (`optuna.storages.JournalStorage` over a
//! `JournalFileBackend`), so `optuna.load_study`, `optuna-dashboard FILE` and
//! `optuna.visualization.plot_pareto_front` / `plot_hypervolume_history` read a qevo
//! search as they read a study of their own.
//!
//! The file is one JSON object per line, each an operation Optuna replays in order
//! (`JournalOperation` in optuna/storages/journal/_storage.py):
//! - `CREATE_STUDY` (0) with the study name and four MINIMIZE (1) directions, then
//!   `SET_STUDY_SYSTEM_ATTR` (3) `study:metric_names` (the objective names Optuna's plots
//!   label axes with) and `SET_STUDY_USER_ATTR` (2) records of seed, target, model;
//! - per plan, in the order the evolution first scored it: `CREATE_TRIAL` (4);
//!   `SET_TRIAL_PARAM` (5) per gene, a `CategoricalDistribution` over the gene's choices
//!   (serialised as Optuna's `distribution_to_json` does) with the choice's index as the
//!   internal value; `SET_TRIAL_USER_ATTR` (8) per metric; `SET_TRIAL_SYSTEM_ATTR` (9)
//!   `constraints` = [violation] (Optuna's convention: ≤ 0 is feasible); and
//!   `SET_TRIAL_STATE_VALUES` (6): COMPLETE (1) with the four objectives for a fully
//!   scored plan, PRUNED (2) without values for one screening stopped (multi-fidelity:
//!   its screening KL is a user attribute).
//!
//! Trial ids are the order of creation (one study per file). Times are the caller's
//! `timestamp` for every record: qevo does not time single evaluations, and a fixed
//! timestamp keeps the file a pure function of the search.

use super::memo::Evaluated;
use super::space::SearchSpace;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use serde_json::{json, Value};
use std::path::Path;

/// Optuna's `JournalOperation` codes.
const CREATE_STUDY: u8 = 0;
const SET_STUDY_USER_ATTR: u8 = 2;
const SET_STUDY_SYSTEM_ATTR: u8 = 3;
const CREATE_TRIAL: u8 = 4;
const SET_TRIAL_PARAM: u8 = 5;
const SET_TRIAL_STATE_VALUES: u8 = 6;
const SET_TRIAL_USER_ATTR: u8 = 8;
const SET_TRIAL_SYSTEM_ATTR: u8 = 9;
/// `StudyDirection.MINIMIZE`, `TrialState.COMPLETE`, `TrialState.PRUNED`.
const MINIMIZE: u8 = 1;
const COMPLETE: u8 = 1;
const PRUNED: u8 = 2;

/// The objectives in `Scored::objectives` order.
pub const OBJECTIVE_NAMES: [&str; 4] = ["kl", "size_bytes", "latency_ms", "energy_mj"];

/// What the study is called and where it came from.
#[derive(Debug, Clone)]
pub struct StudyInfo {
    pub name: String,
    /// Recorded as study user attributes (seed, target, model, fingerprint, ...).
    pub attrs: Vec<(String, Value)>,
    /// ISO 8601 UTC time stamped on every trial (`iso_utc`).
    pub timestamp: String,
}

/// The journal's lines for `evaluations` over `space`.
pub fn journal_lines(
    space: &SearchSpace,
    evaluations: &[Evaluated],
    info: &StudyInfo,
) -> Vec<Value> {
    let op = |code: u8, mut fields: Value| {
        fields["op_code"] = json!(code);
        fields["worker_id"] = json!("qevo");
        fields
    };
    let mut out = vec![
        op(
            CREATE_STUDY,
            json!({"study_name": info.name, "directions": vec![MINIMIZE; 4]}),
        ),
        op(
            SET_STUDY_SYSTEM_ATTR,
            json!({"study_id": 0, "system_attr": {"study:metric_names": OBJECTIVE_NAMES}}),
        ),
    ];
    for (k, v) in &info.attrs {
        out.push(op(
            SET_STUDY_USER_ATTR,
            json!({"study_id": 0, "user_attr": {k: v}}),
        ));
    }
    let distributions = gene_distributions(space);
    for (trial, e) in evaluations.iter().enumerate() {
        out.push(op(
            CREATE_TRIAL,
            json!({"study_id": 0, "datetime_start": info.timestamp}),
        ));
        for (u, &level) in e.genome.iter().enumerate() {
            out.push(op(
                SET_TRIAL_PARAM,
                json!({
                    "trial_id": trial,
                    "param_name": space.units[u].name,
                    "param_value_internal": level,
                    "distribution": distributions[u],
                }),
            ));
        }
        for (k, v) in user_attrs(e) {
            out.push(op(
                SET_TRIAL_USER_ATTR,
                json!({"trial_id": trial, "user_attr": {k: v}}),
            ));
        }
        out.push(op(
            SET_TRIAL_SYSTEM_ATTR,
            json!({"trial_id": trial, "system_attr": {"constraints": [e.scored.violation]}}),
        ));
        let (state, values) = match e.scored.full {
            true => (COMPLETE, json!(e.scored.objectives())),
            false => (PRUNED, Value::Null),
        };
        out.push(op(
            SET_TRIAL_STATE_VALUES,
            json!({
                "trial_id": trial,
                "state": state,
                "values": values,
                "datetime_complete": info.timestamp,
            }),
        ));
    }
    out
}

/// Per gene, the string `optuna.distributions.distribution_to_json` writes for a
/// `CategoricalDistribution` over its choices (Python's json.dumps spacing).
fn gene_distributions(space: &SearchSpace) -> Vec<String> {
    space
        .choices
        .iter()
        .map(|choices| {
            let names: Vec<String> = choices
                .iter()
                .map(|c| Value::String(choice_label(c)).to_string())
                .collect();
            format!(
                "{{\"name\": \"CategoricalDistribution\", \"attributes\": {{\"choices\": [{}]}}}}",
                names.join(", ")
            )
        })
        .collect()
}

/// A choice as the categorical value Optuna shows: the format, and the activation width
/// when activations are quantized ("q4_k", "int4-sym-g32 a8").
fn choice_label(c: &crate::plan::TensorChoice) -> String {
    match c.act_bits {
        16 => c.format.name(),
        a => format!("{} a{a}", c.format.name()),
    }
}

/// The study a search becomes: named after model, target and seed, with where it came
/// from as study attributes.
pub fn study_info(
    model: &crate::Model,
    outcome: &super::SearchOutcome,
    target: &str,
    timestamp: String,
) -> StudyInfo {
    let model_name = model
        .source
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| model.source.display().to_string());
    StudyInfo {
        name: format!("qevo {model_name} on {target}, seed {}", outcome.seed),
        attrs: vec![
            ("model".into(), json!(model.source.display().to_string())),
            ("model_fingerprint".into(), json!(model.fingerprint)),
            ("target".into(), json!(target)),
            ("seed".into(), json!(outcome.seed)),
            (
                "unit".into(),
                json!(format!("{:?}", outcome.space.mode).to_lowercase()),
            ),
            ("qevo_version".into(), json!(env!("CARGO_PKG_VERSION"))),
        ],
        timestamp,
    }
}

/// The metrics Optuna shows next to a trial.
fn user_attrs(e: &Evaluated) -> Vec<(&'static str, Value)> {
    let s = &e.scored;
    vec![
        ("generation", json!(e.generation)),
        ("fidelity", json!(if s.full { "full" } else { "screening" })),
        ("kl", json!(s.metrics.kl)),
        ("top1", json!(s.metrics.top1)),
        ("ppl", json!(s.metrics.ppl)),
        ("size_bytes", json!(s.size_bytes)),
        ("latency_ms", json!(s.latency_ms)),
        ("energy_mj", json!(s.energy_mj)),
        ("peak_memory_bytes", json!(s.peak_memory_bytes)),
        ("violation", json!(s.violation)),
    ]
}

/// Writes the journal file atomically (a fresh study; an existing file is replaced).
pub fn write_journal(
    path: &Path,
    space: &SearchSpace,
    evaluations: &[Evaluated],
    info: &StudyInfo,
) -> Result<()> {
    let mut text = String::new();
    for line in journal_lines(space, evaluations, info) {
        let s = serde_json::to_string(&line).map_err(|e| Error::serialize(path, e))?;
        text.push_str(&s);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// `unix_seconds` as the ISO 8601 UTC time Optuna writes (`isoformat(timespec=
/// "microseconds")` of an aware datetime).
pub fn iso_utc(unix_seconds: u64) -> String {
    let (year, month, day, secs) = crate::hw::host::utc_civil(unix_seconds);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000000+00:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_utc_matches_known_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00.000000+00:00");
        assert_eq!(iso_utc(1_798_761_599), "2026-12-31T23:59:59.000000+00:00");
    }
}
