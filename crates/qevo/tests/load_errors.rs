//! Bad model input gets a clear error naming the file and the problem, never a panic.

mod common;

use common::*;
use qevo::model::Model;
use std::path::Path;

fn err_of(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites `dir/model.safetensors` (f32) with `edit` applied to tensor `target`.
fn rewrite_tensor(dir: &Path, target: &str, edit: impl Fn(&mut Vec<f32>)) {
    let mut w = Weights::new(1);
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    for (name, view) in parsed.tensors() {
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if name == target {
            edit(&mut v);
        }
        w.tensors.insert(name.clone(), (view.shape().to_vec(), v));
    }
    w.write(&dir.join("model.safetensors")).unwrap();
}

fn good_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_llama_dir(d.path(), &LlamaOpts::default(), 1);
    d
}

#[test]
fn missing_model_path_is_named() {
    let d = tempfile::tempdir().unwrap();
    let e = err_of(&d.path().join("nope"));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn missing_config_is_named() {
    let d = good_dir();
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = err_of(d.path());
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn missing_weights_file_is_named() {
    let d = good_dir();
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = err_of(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_safetensors_is_named() {
    let d = good_dir();
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("invalid safetensors"),
        "{e}"
    );
}

#[test]
fn safetensors_header_lying_about_offsets_is_rejected() {
    let d = good_dir();
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(header).unwrap();
    // Point the first tensor's data past the end of the file.
    let first = json
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    json[&first]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
    let new_header = serde_json::to_string(&json).unwrap();
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend(new_header.as_bytes());
    out.extend(&bytes[8 + n..]);
    std::fs::write(&p, out).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("invalid safetensors"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_against_config_names_the_tensor() {
    let d = good_dir();
    let cfg_path = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["intermediate_size"] = serde_json::json!(256);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains("does not match"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let d = good_dir();
    let cfg_path = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("MambaForCausalLM") && e.contains("unsupported architecture"),
        "{e}"
    );
}

#[test]
fn missing_config_key_is_named() {
    let d = good_dir();
    let cfg_path = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = err_of(d.path());
    assert!(e.contains("hidden_size") && e.contains("missing"), "{e}");
}

#[test]
fn nan_weight_names_the_tensor() {
    let d = tempfile::tempdir().unwrap();
    let o = LlamaOpts::default();
    write_llama_dir(d.path(), &o, 1);
    // Rewrite with one NaN in a known tensor.
    rewrite_tensor(d.path(), "model.layers.1.mlp.up_proj.weight", |v| {
        v[5] = f32::NAN
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn tokenizer_larger_than_vocabulary_is_rejected() {
    let d = good_dir();
    // A word-level tokenizer with more tokens than the 96-row embedding.
    let vocab: serde_json::Map<String, serde_json::Value> = (0..200)
        .map(|i| (format!("w{i}"), serde_json::json!(i)))
        .collect();
    let tk = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(d.path().join("tokenizer.json"), tk.to_string()).unwrap();
    let e = err_of(d.path());
    assert!(
        e.contains("tokenizer has 200 tokens") && e.contains("96"),
        "{e}"
    );
}

#[test]
fn invalid_tokenizer_json_is_named() {
    let d = good_dir();
    std::fs::write(d.path().join("tokenizer.json"), "{not json").unwrap();
    let e = err_of(d.path());
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn gguf_file_that_is_not_gguf_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.gguf");
    std::fs::write(&p, b"this is not a model").unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("model.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
}

/// A finite but huge norm weight (1e38) loads, but its activations overflow f32: every
/// score must be an error naming the block, never "perplexity NaN" or "KL 0".
#[test]
fn overflowing_activations_are_an_error_naming_the_block() {
    let d = tempfile::tempdir().unwrap();
    let o = LlamaOpts {
        vocab: 300,
        ..LlamaOpts::default()
    };
    write_llama_dir(d.path(), &o, 1);
    rewrite_tensor(
        d.path(),
        "model.layers.0.post_attention_layernorm.weight",
        |v| v.iter_mut().for_each(|x| *x = 1e38),
    );
    let m = Model::load(d.path()).unwrap();
    let toks: Vec<u32> = (0..64).map(|i| (i * 7 % 300) as u32).collect();
    let windows = qevo::calib::TokenWindows::from_tokens(&toks, 16, 4).unwrap();
    let e = qevo::eval::Reference::build(&m, windows, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.0") && e.contains("not finite"), "{e}");
}
