//! Counts and tensor sets in model files are checked against what the file holds:
//! a huge layer count is an error naming its key (never a huge allocation), a config
//! with fewer layers than the checkpoint or a tensor nobody uses is an error naming
//! the tensors, and an unknown architecture names its key and the supported ones.

use qevo::model::Model;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn err_of(p: &Path) -> String {
    match Model::load(p) {
        Ok(_) => panic!("loading {} should fail", p.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of a fixture's HF files in a temp dir, with config.json edited by `edit`.
fn hf_copy(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(name).join(f), d.path().join(f)).unwrap();
    }
    let p = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, cfg.to_string()).unwrap();
    d
}

/// A copy of a fixture GGUF with metadata `key` (a u32 or a string) rewritten in place.
fn gguf_patched(name: &str, key: &str, value: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let mut bytes = std::fs::read(fixture(name).join(format!("{name}.gguf"))).unwrap();
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend(key.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{key} not in {name}.gguf"))
        + needle.len()
        + 4; // value type
    bytes[at..at + value.len()].copy_from_slice(value);
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.gguf");
    std::fs::write(&p, bytes).unwrap();
    (d, p)
}

#[test]
fn config_num_hidden_layers_1e9_is_an_error_not_an_allocation() {
    let d = hf_copy("tiny_llama", |c| {
        c["num_hidden_layers"] = 1_000_000_000u64.into()
    });
    let e = err_of(d.path());
    assert!(
        e.contains("num_hidden_layers") && e.contains("1000000000") && e.contains("2 blocks"),
        "{e}"
    );
}

#[test]
fn config_num_hidden_layers_1e9_in_a_new_family_is_an_error() {
    let d = hf_copy("tiny_gemma3", |c| {
        c["num_hidden_layers"] = 1_000_000_000u64.into();
        c.as_object_mut().unwrap().remove("layer_types");
    });
    let e = err_of(d.path());
    assert!(e.contains("num_hidden_layers"), "{e}");
}

#[test]
fn gguf_block_count_1e9_is_an_error_not_an_allocation() {
    let (_d, p) = gguf_patched(
        "tiny_llama",
        "llama.block_count",
        &1_000_000_000u32.to_le_bytes(),
    );
    let e = err_of(&p);
    assert!(
        e.contains("llama.block_count") && e.contains("2 blocks"),
        "{e}"
    );
}

#[test]
fn gguf_block_count_u32_max_is_an_error_not_an_allocation() {
    let (_d, p) = gguf_patched("tiny_gemma2", "gemma2.block_count", &u32::MAX.to_le_bytes());
    let e = err_of(&p);
    assert!(
        e.contains("gemma2.block_count") && e.contains("4294967295"),
        "{e}"
    );
}

#[test]
fn config_with_fewer_layers_than_checkpoint_names_unused_tensors() {
    let d = hf_copy("tiny_llama", |c| c["num_hidden_layers"] = 1.into());
    let e = err_of(d.path());
    assert!(
        e.contains("model.layers.1.") && e.contains("not used") && e.contains("9 tensor(s)"),
        "{e}"
    );
}

#[test]
fn gguf_with_fewer_blocks_than_tensors_names_unused_tensors() {
    let (_d, p) = gguf_patched("tiny_qwen3", "qwen3.block_count", &1u32.to_le_bytes());
    let e = err_of(&p);
    assert!(e.contains("blk.1.") && e.contains("not used"), "{e}");
}

#[test]
fn unknown_extra_tensor_is_named() {
    let d = hf_copy("tiny_mistral", |_| {});
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra = [0u8; 16];
    let mut views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().collect();
    views.push((
        "model.layers.0.mystery.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &extra).unwrap(),
    ));
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&p, out).unwrap();
    let e = err_of(d.path());
    assert!(e.contains("model.layers.0.mystery.weight"), "{e}");
}

#[test]
fn unknown_gguf_architecture_names_key_and_supported() {
    // "llama" → "mamba": same length, so the file stays valid.
    let (_d, p) = gguf_patched(
        "tiny_llama",
        "general.architecture",
        b"\x05\0\0\0\0\0\0\0mamba",
    );
    let e = err_of(&p);
    assert!(
        e.contains("general.architecture") && e.contains("mamba") && e.contains("gemma3"),
        "{e}"
    );
}

#[test]
fn unknown_model_type_names_key_and_supported() {
    let d = hf_copy("tiny_llama", |c| {
        c.as_object_mut().unwrap().remove("architectures");
        c["model_type"] = "mamba".into();
    });
    let e = err_of(d.path());
    assert!(
        e.contains("model_type") && e.contains("mamba") && e.contains("Gemma3ForCausalLM"),
        "{e}"
    );
}
