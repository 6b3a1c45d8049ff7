//! What the fuzz targets share: a scratch directory on tmpfs where the library's
//! path-taking readers find the fuzzed bytes, copies of the committed tiny fixtures next
//! to them, and the tiny llama model loaded once for the checks that need a model.
//!
//! The targets only call the library's public entry points, exactly as the CLI does, and
//! discard the result: any input may be refused, none may panic, abort, hang or ask for
//! memory its size does not justify (libFuzzer's -rss_limit_mb / -malloc_limit_mb).

use qevo::Model;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A per-process directory, on /dev/shm when there is one: every execution rewrites
/// a file in it, and tmpfs keeps that off the disk.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        remove_stale(&base);
        let d = base.join(format!("qevo-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

/// libFuzzer ends a process with exit(), so no destructor removes its scratch
/// directory; the next process removes those whose process is gone (fork mode starts
/// one per job).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("qevo-fuzz-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A committed test fixture (crates/qevo/tests/fixtures/...).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/qevo/tests/fixtures")
        .join(rel)
}

/// Writes `bytes` to `rel` under the scratch directory and returns its path.
pub fn put(rel: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("scratch subdirectory");
    }
    std::fs::write(&p, bytes).expect("scratch write");
    p
}

/// A scratch directory `name` holding copies of fixture files (`from` → `to`), made once
/// per process; the target then writes its fuzzed file next to them.
pub fn model_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = scratch().join(name);
    if !d.is_dir() {
        std::fs::create_dir_all(&d).expect("scratch model directory");
        for (from, to) in files {
            let src = fixture(from);
            if src.exists() {
                std::fs::copy(&src, d.join(to)).expect("copy fixture");
            }
        }
    }
    d
}

/// The tiny llama fixture, loaded once.
pub fn tiny_llama() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(&fixture("tiny_llama")).expect("tiny_llama fixture loads"))
}
