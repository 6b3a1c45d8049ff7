//! `run.json`: how this process ran a search — its wall times and the counters of the
//! caches that live in one process (the prefix and weight caches, which a resumed
//! process starts empty). None of it is reproducible: two runs of one seed differ here,
//! and a resumed run differs from an uninterrupted one. It lives beside `report.json`
//! so that `report.json` stays a pure function of the seed and inputs, byte for byte
//! the same after a kill and `--resume`; the report's time and cache lines are drawn
//! from this file when it is there, and left out when it is not.

use super::Result;
use crate::error::Error;
use crate::search::{SearchOutcome, StageSeconds};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file a search writes its [`RunRecord`] to, beside `report.json`.
pub const RUN_RECORD_FILE: &str = "run.json";

/// Version of the `run.json` layout; [`read_run`] refuses other versions.
pub const RUN_SCHEMA_VERSION: u32 = 1;

/// How one process ran a search: wall times and per-process cache counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    /// The evolution's wall seconds, and the whole search's.
    pub search_seconds: f64,
    pub total_seconds: f64,
    pub stage_seconds: StageSeconds,
    pub caches: ProcessCaches,
    /// Wall seconds of each tuned front plan, in the order of `ReportInput::tuned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuned_seconds: Vec<f64>,
}

/// Counters of the caches one process holds: the prefix cache (block outputs) and the
/// weight cache (quantized tensors). The fitness memo's counters are not here: the
/// checkpoint carries that memo, so they are the same after a resume (`report.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessCaches {
    pub prefix_hits: u64,
    pub prefix_lookups: u64,
    pub weight_hits: u64,
    pub weight_lookups: u64,
    /// Block passes the prefix cache skipped, and those it ran.
    pub blocks_reused: u64,
    pub blocks_run: u64,
    /// Full scores that continued their screening score.
    pub segments_reused: u64,
}

impl RunRecord {
    /// This process's wall times and cache counters of a finished search.
    pub fn of(o: &SearchOutcome) -> RunRecord {
        let (ps, ws) = (&o.prefix_stats, &o.weight_stats);
        RunRecord {
            schema_version: RUN_SCHEMA_VERSION,
            search_seconds: o.search_seconds,
            total_seconds: o.total_seconds,
            stage_seconds: o.stage_seconds,
            caches: ProcessCaches {
                prefix_hits: ps.hits,
                prefix_lookups: ps.hits + ps.misses,
                weight_hits: ws.hits,
                weight_lookups: ws.hits + ws.misses,
                blocks_reused: ps.blocks_reused,
                blocks_run: ps.blocks_run,
                segments_reused: ps.segments_reused,
            },
            tuned_seconds: o.tuned.iter().map(|t| t.seconds).collect(),
        }
    }
}

/// Reads `dir/run.json`: None when the file is absent (a directory copied without it,
/// or written before it existed), an error naming the file when it is unreadable or of
/// another version.
pub fn read_run(dir: &Path) -> Result<Option<RunRecord>> {
    let path = dir.join(RUN_RECORD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e).into()),
    };
    let run: RunRecord = serde_json::from_str(&text)
        .map_err(|e| Error::format(&path, format!("not a qevo run record: {e}")))?;
    if run.schema_version != RUN_SCHEMA_VERSION {
        return Err(Error::config(
            &path,
            "schema_version",
            format!(
                "version {} is not supported (expected {RUN_SCHEMA_VERSION})",
                run.schema_version
            ),
        )
        .into());
    }
    Ok(Some(run))
}
