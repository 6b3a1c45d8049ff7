//! The embedded default model and texts: compiled into the binary so `qevo search` works
//! on a fresh clone, unpacked once into a cache directory because the loader memory-maps.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const FILES: [(&str, &[u8]); 3] = [
    ("config.json", include_bytes!("../../../assets/config.json")),
    (
        "model.safetensors",
        include_bytes!("../../../assets/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../../assets/tokenizer.json"),
    ),
];

/// Calibration text of the default model.
pub const CALIB_TEXT: &str = include_str!("../../../assets/calib.txt");
/// Held-out text of the default model.
pub const HELDOUT_TEXT: &str = include_str!("../../../assets/heldout.txt");

/// Where the embedded model is unpacked: `$QEVO_CACHE_DIR`, else `$XDG_CACHE_HOME/qevo`,
/// else `~/.cache/qevo`, else the temporary directory. Shared by the CLI and the Python
/// package, so both unpack it once.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("QEVO_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("qevo");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("qevo");
    }
    std::env::temp_dir().join("qevo")
}

/// Writes the embedded model under `cache_root/qevo-default-<hash>/` (once) and returns it.
pub fn default_model_dir(cache_root: &Path) -> Result<PathBuf> {
    let mut h: u64 = 0xcbf29ce484222325;
    for (_, bytes) in FILES {
        for &b in bytes.iter().step_by(97) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= bytes.len() as u64;
    }
    let dir = cache_root.join(format!("qevo-default-{h:016x}"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (name, bytes) in FILES {
        let p = dir.join(name);
        let fresh = std::fs::metadata(&p)
            .map(|m| m.len() == bytes.len() as u64)
            .unwrap_or(false);
        if !fresh {
            crate::fsutil::write_atomic(&p, bytes)?;
        }
    }
    Ok(dir)
}
