//! `search::budget` on the config.json of real 1B–8B models (tests/fixtures/real_configs):
//! shapes give the published parameter counts, evaluation counts follow the search's
//! stages, and seconds per evaluation scale with the model and the machine.

use qevo::hw::builtin;
use qevo::search::budget::{budget, evaluation_count, evaluation_seconds, ConfigShape};
use qevo::search::space::UnitMode;
use qevo::search::SearchConfig;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real_configs")
        .join(name)
}

fn shape(name: &str) -> ConfigShape {
    ConfigShape::read(&fixture(name)).unwrap()
}

#[test]
fn shapes_give_the_published_parameter_counts() {
    // Model cards: Llama-3.2-1B 1.24B (tied), Llama-3.1-8B 8.03B, Qwen2.5-7B 7.61B
    // (6.53B without embeddings), Mistral-7B 7.24B. Norms and Qwen's q/k/v biases are
    // not weight matrices, hence the 1% tolerance.
    for (file, published) in [
        ("llama-3.2-1b.json", 1.24e9),
        ("llama-3.1-8b.json", 8.03e9),
        ("qwen2.5-7b.json", 7.61e9),
        ("mistral-7b-v0.1.json", 7.24e9),
    ] {
        let p = shape(file).params() as f64;
        assert!(
            (p / published - 1.0).abs() < 0.01,
            "{file}: {p} vs {published}"
        );
    }
    let q = shape("qwen2.5-7b.json");
    let embeddings = 2 * q.vocab * q.hidden;
    let non_embedding = q.params() as f64 - embeddings as f64;
    assert!(
        (non_embedding / 6.53e9 - 1.0).abs() < 0.01,
        "{non_embedding}"
    );
    let l = shape("llama-3.2-1b.json");
    assert!(l.tie_embeddings && l.head_dim == 64 && l.n_kv_heads == 8);
    assert_eq!(shape("llama-3.1-8b.json").tensors().len(), 1 + 32 * 7 + 1);
}

#[test]
fn counts_follow_the_search_stages() {
    let cfg = SearchConfig::with_defaults().unwrap();
    let s = shape("llama-3.1-8b.json");
    let c = evaluation_count(&s, &cfg).unwrap();
    let evolution = 32 * (40 + 1);
    assert!(c.screened > evolution && c.full > evolution);
    assert!(c.heldout < c.full);
    // One gene per tensor: the same evolution, a larger sensitivity table.
    let mut per_tensor = cfg.clone();
    per_tensor.space.unit = UnitMode::Tensor;
    let t = evaluation_count(&s, &per_tensor).unwrap();
    assert!(t.screened - evolution > 20 * (c.screened - evolution));
    assert_eq!(t.full, c.full);
    // A size limit adds the refine stage: its moves in full, its checks on validation.
    assert_eq!(c.validation, qevo::search::finalize::SHORTLIST as u64);
    let mut limited = cfg.clone();
    limited.limits.max_size_mb = Some(4000.0);
    let r = evaluation_count(&s, &limited).unwrap();
    let moves = qevo::search::refine::max_evaluations(&limited);
    assert_eq!(r.full, c.full + moves);
    assert!(r.validation > c.validation);
}

#[test]
fn seconds_scale_with_the_model_and_the_machine() {
    let (cpu, gpu) = (
        builtin("arm-neon").unwrap(),
        builtin("jetson-orin").unwrap(),
    );
    let secs = |file: &str, m| evaluation_seconds(&shape(file), m, 8, 128).unwrap();
    let (small, big) = (
        secs("llama-3.2-1b.json", &cpu),
        secs("llama-3.1-8b.json", &cpu),
    );
    assert!(big > 4.0 * small && big < 10.0 * small, "{small} {big}");
    assert!(secs("qwen2.5-7b.json", &gpu) < secs("qwen2.5-7b.json", &cpu) / 10.0);
    // Eight windows cost eight one-window passes.
    let one = evaluation_seconds(&shape("mistral-7b-v0.1.json"), &cpu, 1, 128).unwrap();
    assert!((secs("mistral-7b-v0.1.json", &cpu) / one - 8.0).abs() < 1e-9);
    let cfg = SearchConfig::with_defaults().unwrap();
    let b = budget(&shape("qwen2.5-7b.json"), &cfg, &gpu).unwrap();
    assert!(b.total_seconds > b.count.full as f64 * b.full_seconds);
}

#[test]
fn other_architectures_are_refused_naming_the_file_and_key() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_gpt2");
    let e = ConfigShape::read(&dir).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("architectures"),
        "{e}"
    );
}

/// 10^18 generations wrapped the evaluation count past 2^64; it is refused naming the
/// setting.
#[test]
fn an_evaluation_count_past_u64_is_refused_not_wrapped() {
    let mut cfg = SearchConfig::with_defaults().unwrap();
    cfg.evolution.generations = 1_000_000_000_000_000_000;
    let e = evaluation_count(&shape("llama-3.1-8b.json"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("generations: "), "{e}");
}

/// 10^9 layers aborted on allocation and 9 heads over 7 KV heads were accepted: both are
/// refused before any per-layer work, naming the key.
#[test]
fn impossible_shapes_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-3.2-1b.json")).unwrap())
            .unwrap();
    for (key, value) in [
        ("num_hidden_layers", serde_json::json!(1_000_000_000u64)),
        ("num_key_value_heads", serde_json::json!(7)),
    ] {
        let mut cfg = base.clone();
        cfg[key] = value;
        if key == "num_key_value_heads" {
            cfg["num_attention_heads"] = serde_json::json!(9);
            cfg["head_dim"] = serde_json::json!(64);
        }
        let path = tmp.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        let e = ConfigShape::read(&path).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("config.json"), "{key}: {e}");
    }
}
