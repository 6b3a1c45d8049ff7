//! Every file a finished search leaves in its output directory, written by one function
//! for both front ends (`qevo search --out`, Python's `SearchResult.save`): `plan.json` /
//! `plan.yaml` (the recommended plan, or the least-violating one), `imatrix.gguf` (when
//! the plans were scored with one: exports need it for the scored bytes), `front.json`,
//! `history.jsonl`, the tuned front plans (`tuned/front-N.gguf`, `tuned.json`) and the
//! report (`report.json`, `run.json`, the SVGs, `report.html`).

use super::{write_report, ReportData, ReportInput, Result, RunRecord};
use crate::error::Error;
use crate::fsutil::write_atomic;
use crate::model::Model;
use crate::search::output::{
    prepare_out_dir, scored_plan_file, write_front, write_history, write_plan,
};
use crate::search::{SearchConfig, SearchOutcome};
use std::path::Path;

/// Writes every output of `o` into `dir` (created if missing) and returns the report's
/// data, for a front end to print.
pub fn write_all(
    dir: &Path,
    model: &Model,
    cfg: &SearchConfig,
    o: &SearchOutcome,
) -> Result<ReportData> {
    prepare_out_dir(dir)?;
    if let Some(f) = o.chosen() {
        let unit = o.space.mode.as_str();
        write_plan(dir, &scored_plan_file(model, o, f, &cfg.target.name, unit))?;
    }
    if let Some(im) = &o.imatrix {
        im.write_gguf(&dir.join("imatrix.gguf"))?;
    }
    write_front(dir, model, o, &cfg.target.name)?;
    write_history(dir, o)?;
    write_tuned(dir, model, cfg, o)?;
    write_report(
        dir,
        &ReportInput::from_outcome(model, cfg, o)?,
        &RunRecord::of(o),
    )
}

/// The tuned front plans as GGUFs under `dir/tuned/`, and `dir/tuned.json`: the training
/// settings and each plan's scores before and after.
fn write_tuned(dir: &Path, model: &Model, cfg: &SearchConfig, o: &SearchOutcome) -> Result<()> {
    if o.tuned.is_empty() {
        return Ok(());
    }
    let sub = dir.join("tuned");
    std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
    let mut rows = Vec::new();
    for e in &o.tuned {
        let file = sub.join(format!("front-{}.gguf", e.front_index));
        crate::export::export_tuned_gguf(model, &e.tuned, &file)?;
        rows.push(serde_json::json!({
            "front_index": e.front_index,
            "size_bytes": e.size_bytes,
            "before": e.before,
            "after": e.after,
            "seconds": e.seconds,
            "gguf": file,
        }));
    }
    let tune_cfg = cfg.tune_front.tune_config(cfg.evolution.seed);
    let v = serde_json::json!({ "config": tune_cfg, "tuned": rows });
    let path = dir.join("tuned.json");
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::serialize(&path, e))?;
    Ok(write_atomic(&path, text.as_bytes())?)
}
