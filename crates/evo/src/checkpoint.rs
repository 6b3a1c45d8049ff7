//! Checkpoints: the complete search state, written atomically after every generation,
//! from which a resumed run continues bit-exactly.

use crate::operators::Rng;
use crate::{Archive, EvoError, GenerationRecord, Individual};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Format version written into every checkpoint.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Everything a run needs to continue: population, archive, RNG position, adaptive
/// operator state, counters and history. Serialised as JSON; every f64 in it is finite
/// (the engine rejects non-finite evaluations) and round-trips bit-exactly
/// (serde_json's `float_roundtrip`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub seed: u64,
    pub n_objectives: usize,
    pub levels: Vec<u16>,
    pub pop_size: usize,
    /// Generations of offspring completed (0 = only the initial population).
    pub generation: u64,
    pub evaluations: u64,
    /// Mutation rate for the next generation.
    pub mutation_rate: f64,
    /// Wall time accumulated by all sessions of this run; not part of the exact-resume
    /// guarantee (it only feeds the wall-time criterion).
    pub elapsed_s: f64,
    pub rng: Rng,
    pub population: Vec<Individual>,
    pub archive: Archive,
    pub history: Vec<GenerationRecord>,
    /// The problem's own state (`Problem::save_state`) as of this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_state: Option<serde_json::Value>,
}

impl Checkpoint {
    /// Reads and parses a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint, EvoError> {
        let bytes = std::fs::read(path).map_err(|source| EvoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ck: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|source| EvoError::CheckpointParse {
                path: path.to_path_buf(),
                source,
            })?;
        if ck.format != CHECKPOINT_FORMAT {
            return Err(EvoError::CheckpointMismatch {
                path: path.to_path_buf(),
                what: format!(
                    "format {} (this engine reads {CHECKPOINT_FORMAT})",
                    ck.format
                ),
            });
        }
        Ok(ck)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<(), EvoError> {
        let bytes = serde_json::to_vec(self).map_err(|source| EvoError::CheckpointParse {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomic(path, &bytes)
    }
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvoError> {
    write_atomic_with(path, |w| w.write_all(bytes)).map_err(|source| EvoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Streams `fill` into a temporary file beside `path`, flushes it to disk, then renames
/// it over `path`, so readers (and a resumed run after a kill) see either the old or the
/// new complete file, never a torn one; on failure the temporary file is removed. The
/// one atomic write of the workspace: qevo's `fsutil` wraps it.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        {
            let mut w = std::io::BufWriter::new(&mut file);
            fill(&mut w)?;
            w.flush()?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, RngCore, SeedableRng};

    #[test]
    fn f64_values_round_trip_bit_exactly_through_json() {
        let mut rng = Rng::seed_from_u64(77);
        let mut vals: Vec<f64> = (0..20000)
            .map(|_| f64::from_bits(rng.next_u64()))
            .filter(|x| x.is_finite())
            .collect();
        vals.extend((0..5000).map(|_| rng.random::<f64>()));
        vals.extend([
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            5e-324,
            0.1 + 0.2,
            1.0 / 3.0,
        ]);
        let json = serde_json::to_string(&vals).unwrap();
        let back: Vec<f64> = serde_json::from_str(&json).unwrap();
        assert_eq!(vals.len(), back.len());
        for (a, b) in vals.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back as {b:e}");
        }
    }

    #[test]
    fn rng_state_round_trips_mid_stream() {
        let mut rng = Rng::seed_from_u64(5);
        for _ in 0..1001 {
            rng.next_u32();
        }
        let json = serde_json::to_string(&rng).unwrap();
        let mut back: Rng = serde_json::from_str(&json).unwrap();
        for _ in 0..100 {
            assert_eq!(rng.next_u64(), back.next_u64());
        }
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ck.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let bad = dir.path().join("missing-dir").join("ck.json");
        assert!(matches!(write_atomic(&bad, b"x"), Err(EvoError::Io { .. })));
    }
}
