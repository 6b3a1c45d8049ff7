//! The families people deploy, each a tiny random-weight model with its published
//! config.json keys (scaled in width and depth only), against transformers' logits, and
//! its GGUF as llama.cpp's own converter writes it (fixtures: tests/fixtures/families,
//! made by scripts/make_family_fixtures.py).

mod common;

use qevo::export::export_gguf;
use qevo::model::{Arch, LlamaConfig, Model, WindowLayers};
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::{GgmlType, RoundingInputs, WeightFormat};
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

fn read_le<T>(p: &Path, f: fn([u8; 4]) -> T) -> Vec<T> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f(c.try_into().unwrap()))
        .collect()
}

fn meta(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir(name).join("fixture.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

use common::{logits_of, rel_err};

fn logits(m: &Model, name: &str) -> Vec<f32> {
    logits_of(
        m,
        &read_le(&dir(name).join("input_ids.u32"), u32::from_le_bytes),
    )
}

fn config(m: &Model) -> &LlamaConfig {
    match &m.arch {
        Arch::Llama(c) => c,
        other => panic!("not a llama-family model: {other:?}"),
    }
}

/// The HF directory's logits and rope against transformers', within 1e-4 relative; the
/// model is returned for further checks.
fn check_hf(name: &str) -> Model {
    let m = Model::load(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = read_le(&dir(name).join("logits.f32"), f32::from_le_bytes);
    let err = rel_err(&logits(&m, name), &want);
    assert!(
        err <= 1e-4,
        "{name}: relative error {err} against transformers"
    );
    let rope = &meta(name)["rope"];
    let cfg = config(&m);
    if let Some(inv) = rope["inv_freq"].as_array() {
        let ours = cfg.rope.inv_freq(false);
        assert_eq!(ours.len(), inv.len(), "{name}: rotary frequencies");
        for (i, (a, b)) in ours.iter().zip(inv).enumerate() {
            let b = b.as_f64().unwrap();
            assert!(
                (a - b).abs() <= 1e-6 * b.abs(),
                "{name}: inv_freq[{i}] {a} vs transformers {b}"
            );
        }
    }
    let scaling = rope["attention_scaling"].as_f64().unwrap();
    assert!(
        (cfg.rope.attn_factor - scaling).abs() < 1e-6,
        "{name}: attention scaling"
    );
    m
}

/// The GGUF llama.cpp's converter wrote: transformers' logits where llama.cpp computes
/// as transformers does, else (a sliding window llama.cpp does not run) the same model
/// without its window, as llama.cpp runs it.
fn check_gguf(name: &str) -> Model {
    let path = dir(name).join("model.gguf");
    let m = Model::load(&path).unwrap_or_else(|e| panic!("{name} GGUF: {e}"));
    let ours = logits(&m, name);
    if meta(name)["gguf_agrees_with_transformers"]
        .as_bool()
        .unwrap()
    {
        let want = read_le(&dir(name).join("logits.f32"), f32::from_le_bytes);
        let err = rel_err(&ours, &want);
        assert!(
            err <= 1e-4,
            "{name} GGUF: relative error {err} against transformers"
        );
    } else {
        assert_eq!(
            config(&m).sliding_window,
            None,
            "{name}: llama.cpp runs no window"
        );
    }
    m
}

#[test]
fn llama32_llama3_rope_matches_transformers_from_hf_and_gguf() {
    let hf = check_hf("llama32");
    let gguf = check_gguf("llama32");
    // The converter's rope_freqs.weight holds the divisors qevo computes from the keys.
    let (a, b) = (
        config(&hf).rope.freq_factors(),
        config(&gguf).rope.freq_factors(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5 * x));
}

#[test]
fn qwen2_slides_only_layers_from_max_window_layers() {
    let m = check_hf("qwen25_window");
    let cfg = config(&m);
    assert_eq!(cfg.sliding_window, Some(4));
    assert_eq!(cfg.window_layers, WindowLayers::List(vec![false, true]));
    check_gguf("qwen25_window");
}

#[test]
fn qwen2_without_a_tie_key_keeps_its_lm_head() {
    let m = check_hf("qwen25_window");
    assert!(!config(&m).tie_embeddings);
    assert!(m.tensors.iter().any(|t| t.name == "output.weight"));
}

#[test]
fn linear_rope_scaling_applies_to_windowed_layers() {
    let m = check_hf("mistral_linear_window");
    assert_eq!(config(&m).rope_local, config(&m).rope);
    check_gguf("mistral_linear_window");
}

#[test]
fn qwen3_yarn_rope_matches_transformers_from_hf_and_gguf() {
    check_hf("qwen3_yarn");
    check_gguf("qwen3_yarn");
}

#[test]
fn phi4_mini_partial_longrope_matches_transformers_from_hf_and_gguf() {
    let m = check_hf("phi4_mini");
    assert_eq!(config(&m).rope.dims, 6);
    check_gguf("phi4_mini");
}

#[test]
fn smollm3_nope_layers_match_transformers_from_hf_and_gguf() {
    let m = check_hf("smollm3");
    assert_eq!(config(&m).no_rope_layers, vec![3]);
    check_gguf("smollm3");
}

#[test]
fn granite_multipliers_match_transformers_from_hf_and_gguf() {
    check_hf("granite");
    check_gguf("granite");
}

#[test]
fn olmo2_post_norms_match_transformers_from_hf_and_gguf() {
    check_hf("olmo2");
    check_gguf("olmo2");
}

#[test]
fn dynamic_ntk_rope_matches_transformers_within_max_positions() {
    check_hf("llama_dynamic");
    check_gguf("llama_dynamic");
}

/// Exports the family's HF model as GGUF (uniform `t`) with qevo's writer, reads it back,
/// and returns (source, file read back, file path) — the tempdir keeps the file alive.
fn export(name: &str, t: GgmlType, tmp: &Path) -> (Model, Model, PathBuf) {
    let m = Model::load(&dir(name)).unwrap();
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(t), 16).unwrap();
    let resolved = resolve_ggml(&m, &plan, false).unwrap();
    let out = tmp.join(format!("{name}-{t}.gguf"));
    export_gguf(&m, &resolved, &RoundingInputs::default(), &out)
        .unwrap_or_else(|e| panic!("{name}: export {e}"));
    let back = Model::load(&out).unwrap_or_else(|e| panic!("{name}: exported file {e}"));
    (m, back, out)
}

/// The families llama.cpp computes as transformers does, exported by qevo: the f32 file
/// gives the source's logits when qevo reads it back, and `llama-perplexity` on it
/// agrees with qevo's llama.cpp-protocol perplexity of the source (within 1%).
#[test]
fn exported_family_ggufs_run_in_llama_cpp_as_in_qevo() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    let words = "the river runs past the old mill and the small model tells us a story ";
    std::fs::write(&text, words.repeat(40)).unwrap();
    let ppl = common::llama_tools::llama_tool("llama-perplexity", "exported family GGUFs");
    for name in [
        "llama32",
        "qwen3_yarn",
        "phi4_mini",
        "smollm3",
        "granite",
        "olmo2",
        "llama_dynamic",
        "qwen3_moe",
        "mixtral",
    ] {
        let (m, back, out) = export(name, GgmlType::F32, tmp.path());
        let err = rel_err(&logits(&back, name), &logits(&m, name));
        assert!(err <= 1e-5, "{name}: exported f32 file differs by {err}");
        let Some(ppl) = &ppl else { continue };
        let base = common::llama_tools::LlamaLogits::run(
            ppl,
            &out,
            &text,
            64,
            4,
            &out.with_extension("logits"),
        );
        let bos = config(&m)
            .bos_token_id
            .filter(|b| base.tokens.first() == Some(b));
        let ours = qevo::eval::llama_ppl::llama_cpp_perplexity(&m, &base.tokens, 64, bos, None)
            .unwrap()
            .perplexity;
        let theirs = base.perplexity();
        println!("{name}: llama-perplexity {theirs:.4}, qevo {ours:.4}");
        assert!(
            (ours - theirs).abs() <= 0.01 * theirs,
            "{name}: {theirs} vs {ours}"
        );
    }
}

/// A quantized export keeps a family's rope factor tensors and its stacked experts:
/// the file read back has the source's rope and tensors.
#[test]
fn quantized_family_ggufs_keep_their_rope_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama32", "phi4_mini", "qwen3_moe"] {
        let (m, back, _) = export(name, GgmlType::Q8_0, tmp.path());
        assert_eq!(
            back.tensors, m.tensors,
            "{name}: stacked experts read back as written"
        );
        let (a, b) = (&config(&m).rope, &config(&back).rope);
        assert_eq!((a.theta, a.dims), (b.theta, b.dims), "{name}");
        assert!((a.attn_factor - b.attn_factor).abs() < 1e-6, "{name}");
        // The file holds the factors as f32.
        let (fa, fb) = (a.inv_freq(false), b.inv_freq(false));
        assert!(
            fa.iter().zip(&fb).all(|(x, y)| (x - y).abs() <= 1e-6 * x),
            "{name}"
        );
    }
}

/// llama.cpp runs no window for qwen2 or llama: exporting a windowed model is refused
/// naming the key, never written to compute something else.
#[test]
fn exporting_a_window_llama_cpp_lacks_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["qwen25_window", "mistral_linear_window"] {
        let m = Model::load(&dir(name)).unwrap();
        let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::F32), 16).unwrap();
        let resolved = resolve_ggml(&m, &plan, false).unwrap();
        let e = export_gguf(
            &m,
            &resolved,
            &RoundingInputs::default(),
            &tmp.path().join("x.gguf"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sliding_window"), "{name}: {e}");
    }
}

#[test]
fn qwen3_moe_experts_match_transformers_from_hf_and_gguf() {
    let m = check_hf("qwen3_moe");
    let gate = m
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_gate_exps.weight")
        .unwrap();
    assert_eq!((gate.rows, gate.cols), (8 * 16, 32));
    // Only the 2 of 8 experts a token runs are counted.
    assert_eq!(gate.macs_per_token(), 2 * 16 * 32);
    check_gguf("qwen3_moe");
}

#[test]
fn mixtral_experts_match_transformers_from_hf_and_gguf() {
    check_hf("mixtral");
    check_gguf("mixtral");
}

/// A copy of fixture `name` with `edit` applied to its config.json; loading it must fail
/// with a message naming `key`.
fn refused_naming(name: &str, key: &str, edit: impl Fn(&mut serde_json::Value)) {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(dir(name).join(f), tmp.path().join(f)).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = match Model::load(tmp.path()) {
        Ok(_) => panic!("{name}: edited config loaded (expected an error naming {key})"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(key) && e.contains("config.json"), "{name}: {e}");
}

#[test]
fn new_config_keys_are_validated_naming_the_key() {
    refused_naming("llama32", "rope_scaling.factor", |c| {
        c["rope_scaling"]["factor"] = (-2.0).into()
    });
    refused_naming("llama32", "rope_scaling.high_freq_factor", |c| {
        c["rope_scaling"]["high_freq_factor"] = 0.5.into()
    });
    refused_naming("phi4_mini", "rope_scaling.short_factor", |c| {
        c["rope_scaling"]["short_factor"] = serde_json::json!([1.0, 2.0])
    });
    refused_naming("phi4_mini", "partial_rotary_factor", |c| {
        c["partial_rotary_factor"] = 0.1.into()
    });
    refused_naming("qwen3_yarn", "rope_scaling.warp", |c| {
        c["rope_scaling"]["warp"] = 1.into()
    });
    refused_naming("qwen3_moe", "num_experts", |c| {
        c["num_experts"] = 1_000_000_000u64.into()
    });
    refused_naming("qwen3_moe", "num_experts_per_tok", |c| {
        c["num_experts_per_tok"] = 9.into()
    });
    refused_naming("smollm3", "no_rope_layers", |c| {
        c["no_rope_layers"] = serde_json::json!([1, 1, 2, 0])
    });
    refused_naming("qwen25_window", "max_window_layers", |c| {
        c["max_window_layers"] = (-1).into()
    });
}

/// A family qevo does not run is refused naming the key and listing what is supported.
#[test]
fn an_unsupported_family_lists_the_supported_ones() {
    refused_naming("mixtral", "architectures", |c| {
        c["architectures"] = serde_json::json!(["GptOssForCausalLM"])
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["Lfm2ForCausalLM"]}"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), b"").unwrap();
    let e = Model::load(tmp.path()).err().unwrap().to_string();
    assert!(
        e.contains("Lfm2ForCausalLM") && e.contains("Qwen3MoeForCausalLM"),
        "{e}"
    );
}
