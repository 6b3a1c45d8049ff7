//! Packed-safetensors export end to end: the directory, loaded back by `Model::load`, holds
//! bit for bit the weights the plan is scored with in memory and gives the same KL; the
//! packed sections add up to the plan's size; GGML block formats, GGUF sources, the source
//! directory as output, and truncated sections are refused with errors naming the cause.

mod common;

use candle_core::Tensor;
use common::f32_values;
use qevo::calib::TokenWindows;
use qevo::eval::Reference;
use qevo::eval::WeightCache;
use qevo::export::export_safetensors;
use qevo::model::synthetic::{write_llama_dir, LlamaShape};
use qevo::model::{Model, NoHook};
use qevo::plan::TensorPlan;
use qevo::quant::WeightFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

const MIXED: [&str; 7] = [
    "int4-asym-g128",
    "int8-sym-channel",
    "int3-pow2-g32",
    "int2-asym-g64",
    "f16",
    "int5-sym-tensor",
    "bf16",
];

fn fmt(s: &str) -> WeightFormat {
    WeightFormat::parse(s).unwrap()
}

/// Tensor `i` in the format named `cycle[i % len]`.
fn cycled(m: &Model, cycle: &[&str]) -> TensorPlan {
    let formats: Vec<WeightFormat> = cycle.iter().map(|s| fmt(s)).collect();
    common::cycled(m, &formats)
}

/// A random llama with hidden 256 (every group size divides every row).
fn synthetic_dir(dir: &Path) -> Model {
    let o = LlamaShape {
        hidden: 256,
        inter: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 300,
        ..LlamaShape::default()
    };
    write_llama_dir(dir, &o, 7).unwrap();
    Model::load(dir).unwrap()
}

fn windows(vocab: usize, seed: u64) -> TokenWindows {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let toks: Vec<u32> = (0..96).map(|_| rng.random_range(0..vocab as u32)).collect();
    TokenWindows::from_tokens(&toks, 24, 4).unwrap()
}

fn assert_bit_identical(a: &[Tensor], b: &[Tensor], m: &Model) {
    assert_eq!(a.len(), b.len());
    for ((x, y), info) in a.iter().zip(b).zip(&m.tensors) {
        // f16 tensors (kept as stored) are compared by their widened values.
        let (x, y) = (f32_values(x), f32_values(y));
        assert_eq!(x.len(), y.len(), "{}", info.name);
        let diff = x
            .iter()
            .zip(&y)
            .filter(|(p, q)| p.to_bits() != q.to_bits())
            .count();
        assert_eq!(
            diff, 0,
            "{}: {diff} values differ between memory and the file",
            info.name
        );
    }
}

/// Bytes of all U8 tensors in `dir/model.safetensors`.
fn u8_bytes(dir: &Path) -> u64 {
    let data = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .iter()
        .filter(|(_, v)| v.dtype() == Dtype::U8)
        .map(|(_, v)| v.data().len() as u64)
        .sum()
}

/// Exact bytes of the plan's generic-integer tensors.
fn int_plan_bytes(m: &Model, plan: &TensorPlan) -> u64 {
    plan.entries
        .iter()
        .filter(|(_, c)| matches!(c.format, WeightFormat::Int(_)))
        .map(|(n, c)| {
            let t = &m.tensors[m.tensor_index(n).unwrap()];
            c.format.tensor_bytes(t.rows, t.cols).unwrap()
        })
        .sum()
}

struct RoundTrip {
    file_u8_bytes: u64,
    int_plan_bytes: u64,
    planned_bytes: u64,
    plan_size: u64,
    kl_mem: f64,
    kl_file: f64,
}

/// Exports, reloads and checks weights, KL and sizes.
fn roundtrip(m: &Model, plan: &TensorPlan, out: &Path, w: TokenWindows) -> RoundTrip {
    let s = export_safetensors(m, plan, out).unwrap();
    let back = Model::load(out).unwrap();
    assert_eq!(back.tensors, m.tensors);
    let mem = WeightCache::new(usize::MAX).weights_for(m, plan).unwrap();
    assert_bit_identical(&mem, &back.weights.tensors().unwrap(), m);
    let reference = Reference::build(m, w, 8).unwrap();
    let kl_mem = reference.score(m, &mem, &NoHook).unwrap().kl;
    let kl_file = reference.score(&back, &back.weights, &NoHook).unwrap().kl;
    assert_eq!(
        kl_mem.to_bits(),
        kl_file.to_bits(),
        "KL {kl_mem} in memory vs {kl_file} reloaded"
    );
    let r = RoundTrip {
        file_u8_bytes: u8_bytes(out),
        int_plan_bytes: int_plan_bytes(m, plan),
        planned_bytes: s.planned_tensor_bytes,
        plan_size: plan.size_bytes(m),
        kl_mem,
        kl_file,
    };
    assert_eq!(
        r.file_u8_bytes, r.int_plan_bytes,
        "packed bytes in the file"
    );
    assert_eq!(s.packed_bytes, r.int_plan_bytes);
    assert_eq!(r.planned_bytes, r.plan_size, "planned bytes vs plan size");
    r
}

#[test]
fn packed_safetensors_reload_bit_identical_with_same_kl() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = cycled(&m, &MIXED);
    let out = dir.path().join("packed");
    let r = roundtrip(&m, &plan, &out, windows(300, 3));
    assert!(
        r.kl_mem > 0.0,
        "a mixed plan with 2-bit tensors loses something"
    );

    // The directory says what it is, and the layout file lists every integer tensor.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization_config"]["quant_method"], "qevo-int");
    assert_eq!(cfg["hidden_size"], 256);
    let q: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("quantization_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(q["quant_method"], "qevo-int");
    let listed = q["tensors"].as_array().unwrap();
    let n_int = plan
        .entries
        .iter()
        .filter(|(_, c)| matches!(c.format, WeightFormat::Int(_)))
        .count();
    assert_eq!(listed.len(), n_int);
    let e = listed
        .iter()
        .find(|e| e["format"] == "int4-asym-g128")
        .unwrap();
    assert_eq!(e["bits"], 4);
    assert_eq!(e["scheme"], "asym");
    assert_eq!(e["group_size"], 128);
    assert_eq!(e["scale_dtype"], "f16");
    assert!(e["sections"]["zeros"].as_u64().unwrap() > 0);
    let p = listed
        .iter()
        .find(|e| e["format"] == "int3-pow2-g32")
        .unwrap();
    assert_eq!(p["scale_dtype"], "i8_exponent");
    assert!(p["sections"].get("zeros").is_none());
    // Float tensors keep their HF name and dtype; norms stay f32.
    let data = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    let f16_name = plan
        .entries
        .iter()
        .position(|(_, c)| c.format == fmt("f16"))
        .map(|i| &m.tensors[i].name)
        .unwrap();
    assert_eq!(f16_name, "blk.0.attn_output.weight");
    assert_eq!(
        st.tensor("model.layers.0.self_attn.o_proj.weight")
            .unwrap()
            .dtype(),
        Dtype::F16
    );
    assert_eq!(
        st.tensor("model.layers.0.input_layernorm.weight")
            .unwrap()
            .dtype(),
        Dtype::F32
    );
    assert!(st.tensor("model.embed_tokens.weight.codes").is_ok());
}

#[test]
fn safetensors_export_refuses_ggml_block_formats() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let mut plan = cycled(&m, &MIXED);
    plan.entries[3].1.format = fmt("q4_k");
    let out = dir.path().join("packed");
    let err = export_safetensors(&m, &plan, &out).unwrap_err().to_string();
    assert!(err.contains(&plan.entries[3].0), "{err}");
    assert!(err.contains("GGUF"), "{err}");
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn safetensors_export_refuses_the_source_dir_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let m = synthetic_dir(&src);
    let plan = cycled(&m, &MIXED);
    let before = std::fs::read(src.join("model.safetensors")).unwrap();
    for out in [src.clone(), src.join(".").join("..").join("src")] {
        let err = export_safetensors(&m, &plan, &out).unwrap_err().to_string();
        assert!(err.contains("overwrite the source"), "{err}");
    }
    assert_eq!(
        std::fs::read(src.join("model.safetensors")).unwrap(),
        before
    );
}

#[test]
fn safetensors_export_refuses_a_gguf_source() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama/tiny_llama.gguf");
    let m = Model::load(&fixture).unwrap();
    let plan = TensorPlan::uniform(&m, fmt("int8-sym-channel"), 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_safetensors(&m, &plan, &dir.path().join("o"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a Hugging Face source"), "{err}");
}

/// Rewrites `dir/model.safetensors` with tensor `name` cut by one byte.
fn truncate_tensor(dir: &Path, name: &str) {
    let path = dir.join("model.safetensors");
    let data = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            if n == name {
                let len = v.data().len() - 1;
                let t = TensorView::new(Dtype::U8, vec![len], &v.data()[..len]).unwrap();
                (n, t)
            } else {
                (n, v)
            }
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn truncated_codes_section_fails_load_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = cycled(&m, &MIXED);
    let out = dir.path().join("packed");
    export_safetensors(&m, &plan, &out).unwrap();
    let victim = "model.layers.0.self_attn.k_proj.weight.codes";
    truncate_tensor(&out, victim);
    let err = Model::load(&out).unwrap_err().to_string();
    assert!(err.contains(victim), "{err}");
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn packed_entry_that_contradicts_its_format_fails_load() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = cycled(&m, &MIXED);
    let out = dir.path().join("packed");
    export_safetensors(&m, &plan, &out).unwrap();
    let qpath = out.join("quantization_config.json");
    let mut q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&qpath).unwrap()).unwrap();
    q["tensors"][0]["format"] = "int6-asym-g128".into();
    let name = q["tensors"][0]["name"].as_str().unwrap().to_string();
    std::fs::write(&qpath, serde_json::to_string(&q).unwrap()).unwrap();
    let err = Model::load(&out).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
}

/// The embedded model with one mixed plan: the figures reported for the feature.
#[test]
fn embedded_model_mixed_plan_round_trip() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let m = Model::load(&assets).unwrap();
    let plan = cycled(&m, &MIXED);
    let text = std::fs::read_to_string(assets.join("heldout.txt")).unwrap();
    let w = TokenWindows::from_text(&m, &text, 64, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packed");
    let r = roundtrip(&m, &plan, &out, w);
    let back = Model::load(&out).unwrap();
    assert_eq!(
        back.encode("hello world").unwrap(),
        m.encode("hello world").unwrap()
    );
    eprintln!(
        "embedded model, plan {MIXED:?}: packed U8 bytes in file {} = int plan bytes {}; \
         planned bytes written {} = plan.size_bytes() {}; KL in memory {:.9} / reloaded {:.9}",
        r.file_u8_bytes, r.int_plan_bytes, r.planned_bytes, r.plan_size, r.kl_mem, r.kl_file
    );
}

#[test]
fn bert_encoder_exports_to_packed_safetensors_and_reloads_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_bert");
    let src = dir.path().join("bert");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), src.join(f)).unwrap();
    }
    let m = Model::load(&src).unwrap();
    let plan = cycled(&m, &MIXED);
    let out = dir.path().join("packed");
    // Encoder windows score 1 − cosine of pooled embeddings: equal bits, equal score.
    let r = roundtrip(&m, &plan, &out, windows(300, 5));
    assert!(r.kl_mem > 0.0, "2-bit tensors move the embeddings");
    // Position and token-type embeddings and LayerNorms are copied as stored.
    let data = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    let names = st.names();
    assert!(names
        .iter()
        .any(|n| n.ends_with("embeddings.position_embeddings.weight")));
    assert!(names
        .iter()
        .any(|n| n.ends_with("encoder.layer.1.output.LayerNorm.bias")));
}
