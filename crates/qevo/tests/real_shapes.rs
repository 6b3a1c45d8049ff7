//! Random-weight models in real shapes (`scripts/make_real_shape_models.py` writes them to
//! `${QEVO_MODELS:-~/.cache/qevo/models}/shapes/`): what the headers say, what a load
//! holds, and the memory estimate, at 135M and 1B scale. Ignored: CI never makes or
//! downloads gigabytes. Run with
//! `cargo test --release -p qevo --test real_shapes -- --ignored` after the script.

use qevo::model::Model;
use qevo::search::memory::{search_memory, MemoryShape};
use qevo::search::SearchConfig;
use std::path::PathBuf;

fn shape_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("QEVO_MODELS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/qevo/models"),
        PathBuf::from,
    );
    let d = root.join("shapes").join(name);
    assert!(
        d.join("model.safetensors").exists(),
        "{} is missing: run scripts/make_real_shape_models.py {name}",
        d.display()
    );
    d
}

/// Headers and load agree, the bf16 weights stay in the mapped file (none held), and
/// the search's estimate counts them so.
fn check(name: &str, blocks: usize, params: u64) {
    let dir = shape_dir(name);
    let s = Model::inspect(&dir).unwrap();
    assert_eq!(s.arch.n_blocks(), blocks);
    let n: u64 = s.tensors.iter().map(|t| t.params() as u64).sum();
    assert_eq!(n, params);
    assert!(s.stored.iter().all(|x| x.dtype == "bf16"));
    assert_eq!(s.stored_bytes() as u64, 2 * params);
    let cfg = SearchConfig::with_defaults().unwrap();
    let est = search_memory(&MemoryShape::of_summary(&s), &cfg, None, None).unwrap();
    assert_eq!(est.model, 4 * s.aux_params as u64);
    let m = Model::load(&dir).unwrap();
    assert_eq!(m.tensors, s.tensors);
    assert_eq!(m.weight_bytes() as u64, 2 * params);
    assert_eq!(m.held_weight_bytes(), 0);
    assert_eq!(
        MemoryShape::of_model(&m).weight_bytes,
        MemoryShape::of_summary(&s).weight_bytes
    );
}

#[test]
#[ignore = "needs scripts/make_real_shape_models.py smollm2-135m (270 MB)"]
fn smollm2_135m_shape() {
    // 49152 x 576 tied embedding + 30 blocks of 576-wide attention (9/3 heads) and a
    // 1536-wide MLP.
    let block = 2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576;
    check("smollm2-135m", 30, 49152 * 576 + 30 * block);
}

#[test]
#[ignore = "needs scripts/make_real_shape_models.py llama-3.2-1b (2.5 GB)"]
fn llama_3_2_1b_shape() {
    let block = 2 * 2048 * 2048 + 2 * 512 * 2048 + 3 * 8192 * 2048;
    check("llama-3.2-1b", 16, 128256 * 2048 + 16 * block);
}
