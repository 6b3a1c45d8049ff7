//! GGUF export end to end: the exported file, loaded back by qevo, holds bit for bit the
//! weights the plan is scored with in memory and gives the same KL; llama.cpp's own
//! Python reader sees every tensor's name, shape, type and values as qevo wrote them;
//! plans for another model and unsafe output paths are refused.

mod common;

use common::cycled;

use candle_core::{Device, Tensor};
use common::*;
use qevo::eval::{Reference, TokenWindows};
use qevo::export::{export_gguf, resolve_ggml, tensor_type_lines};
use qevo::model::gguf::{Gguf, Value};
use qevo::model::{Model, NoHook};
use qevo::quant::{GgmlType, TensorPlan, WeightCache, WeightFormat};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const TEXT: &str =
    "The quick brown fox jumps over the lazy dog. A model is quantized layer by layer, \
and the file it becomes must load in llama.cpp with the same weights it was scored with. \
Numbers like 12345 and symbols like {}[]() test the byte-level tokenizer too.";

fn uniform(m: &Model, t: GgmlType) -> TensorPlan {
    TensorPlan::uniform(m, WeightFormat::Ggml(t), 16).unwrap()
}

fn ggml(ts: &[GgmlType]) -> Vec<WeightFormat> {
    ts.iter().map(|&t| WeightFormat::Ggml(t)).collect()
}

/// A K-quant-sized llama (rows of 256) with the tiny fixture's byte-level tokenizer.
fn k_model_dir(dir: &Path) {
    let o = LlamaOpts {
        hidden: 256,
        inter: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 300,
        ..LlamaOpts::default()
    };
    write_llama_dir(dir, &o, 11);
    std::fs::copy(
        fixture("tiny_llama/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
}

fn assert_bit_identical(a: &[Tensor], b: &[Tensor], m: &Model) {
    for ((x, y), info) in a.iter().zip(b).zip(&m.tensors) {
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = x
            .iter()
            .zip(&y)
            .filter(|(p, q)| p.to_bits() != q.to_bits())
            .count();
        assert_eq!(
            diff, 0,
            "{}: {diff} values differ between memory and the GGUF",
            info.name
        );
    }
}

fn logits(m: &Model, w: &[Tensor], ids: &[u32]) -> Vec<f32> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.forward(w, &NoHook, &x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Exports `plan`, reloads the file and checks weights, logits, KL and sizes.
fn roundtrip(m: &Model, tplan: &TensorPlan, out: &Path) -> (f64, f64) {
    let plan = resolve_ggml(m, tplan, false).unwrap();
    let summary = export_gguf(m, &plan, None, out).unwrap();
    assert_eq!(
        summary.planned_tensor_bytes,
        tplan.size_bytes(m),
        "planned bytes vs plan.size_bytes()"
    );
    assert_eq!(
        summary.layout.file_bytes,
        std::fs::metadata(out).unwrap().len()
    );
    let back = Model::load(out).unwrap();
    assert_eq!(back.tensors, m.tensors);
    // The weights the evaluator scores the plan with.
    let mem = WeightCache::new(1 << 30).weights_for(m, tplan).unwrap();
    assert_bit_identical(&mem, &back.weights, m);
    let ids: Vec<u32> = m.encode(TEXT).unwrap();
    assert_eq!(
        back.encode(TEXT).unwrap(),
        ids,
        "GGUF tokenizer encodes differently"
    );
    let a = logits(m, &mem, &ids[..32]);
    let b = logits(&back, &back.weights, &ids[..32]);
    let err = rel_err(&b, &a);
    assert!(err <= 1e-5, "logits differ by {err} (relative)");
    let windows = TokenWindows::from_text(m, TEXT, 16, 8).unwrap();
    let reference = Reference::build(m, windows.clone(), 8).unwrap();
    let kl_mem = reference.score(m, &mem, &NoHook).unwrap().kl;
    let kl_file = reference.score(&back, &back.weights, &NoHook).unwrap().kl;
    assert!(
        (kl_mem - kl_file).abs() <= 1e-6 * kl_mem.abs().max(1e-6),
        "KL {kl_mem} in memory vs {kl_file} from file"
    );
    (kl_mem, kl_file)
}

#[test]
fn gguf_export_reloads_bit_identical_q8_0_from_hf_dir() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let plan = uniform(&m, GgmlType::Q8_0);
    let dir = tempfile::tempdir().unwrap();
    roundtrip(&m, &plan, &dir.path().join("q8.gguf"));
}

#[test]
fn gguf_export_reloads_bit_identical_k_quants_and_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m");
    k_model_dir(&src);
    let m = Model::load(&src).unwrap();
    for t in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q2K, GgmlType::F16] {
        let plan = uniform(&m, t);
        roundtrip(&m, &plan, &dir.path().join(format!("{t}.gguf")));
    }
    let cycle = [
        GgmlType::Q4K,
        GgmlType::Q8_0,
        GgmlType::Q3K,
        GgmlType::Q5_1,
        GgmlType::BF16,
        GgmlType::Q5K,
    ];
    let plan = cycled(&m, &ggml(&cycle));
    roundtrip(&m, &plan, &dir.path().join("mixed.gguf"));
    // The norm weights stay f32.
    let g = Gguf::open(&dir.path().join("mixed.gguf")).unwrap();
    assert_eq!(
        g.tensor("blk.0.attn_norm.weight").unwrap().type_name(),
        "f32"
    );
    assert_eq!(g.tensor("output_norm.weight").unwrap().type_name(), "f32");
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().type_name(), "q8_0");
    assert_eq!(g.tensor("token_embd.weight").unwrap().type_name(), "q4_k");
}

#[test]
fn gguf_export_writes_llama_metadata_and_tokenizer_from_hf() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let plan = resolve_ggml(&m, &uniform(&m, GgmlType::Q8_0), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    export_gguf(&m, &plan, None, &out).unwrap();
    let ours = Gguf::open(&out).unwrap();
    // llama.cpp's converter output for the same model is the reference.
    let theirs = Gguf::open(&fixture("tiny_llama/tiny_llama.gguf")).unwrap();
    for key in [
        "general.architecture",
        "llama.context_length",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.rope.dimension_count",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
    ] {
        assert_eq!(ours.get(key), theirs.get(key), "{key}");
    }
    assert_eq!(ours.get("general.file_type"), Some(&Value::U32(7)));
    let names: Vec<&str> = ours.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = theirs.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want, "tensor order");
}

#[test]
fn gguf_export_from_gguf_source_keeps_unknown_metadata() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture GGUF plus a key no tool knows.
    let src_path = dir.path().join("src.gguf");
    let src = Gguf::open(&fixture("tiny_llama/tiny_llama.gguf")).unwrap();
    let mut w = qevo::export::GgufWriter {
        metadata: src.metadata.clone(),
        ..Default::default()
    };
    w.set(
        "qevo.test.custom",
        Value::Array(vec![Value::String("kept".into())]),
    );
    for t in &src.tensors {
        w.tensors.push(qevo::export::GgufTensorOut {
            name: t.name.clone(),
            dims: t.dims.clone(),
            type_id: t.type_id,
            bytes: src.tensor_bytes(t).to_vec(),
        });
    }
    w.write(&src_path).unwrap();
    let m = Model::load(&src_path).unwrap();
    let plan = uniform(&m, GgmlType::Q4_0);
    let (kl_mem, _) = roundtrip(&m, &plan, &dir.path().join("q4.gguf"));
    assert!(kl_mem > 0.0);
    let out = Gguf::open(&dir.path().join("q4.gguf")).unwrap();
    assert_eq!(
        out.get("qevo.test.custom"),
        Some(&Value::Array(vec![Value::String("kept".into())]))
    );
    assert_eq!(out.get("general.name"), src.get("general.name"));
    assert_eq!(out.get("general.file_type"), Some(&Value::U32(2)));
}

#[test]
fn gguf_export_refuses_plan_for_another_model() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    k_model_dir(&other);
    let big = Model::load(&other).unwrap();
    // Same names, other shapes: q4_k's blocks do not divide this model's rows of 64, so
    // each tensor is written as llama.cpp's fallback for it, q5_0, and recorded as such.
    let r = resolve_ggml(&m, &uniform(&big, GgmlType::Q4K), false).unwrap();
    assert!(r.types.iter().all(|&t| t == GgmlType::Q5_0));
    assert_eq!(r.fallbacks.len(), m.tensors.len());
    // A tensor this model does not have.
    let mut p = uniform(&m, GgmlType::Q8_0);
    let c = p.entries[0].1;
    p.entries.push(("blk.9.attn_q.weight".into(), c));
    let e = resolve_ggml(&m, &p, false).unwrap_err().to_string();
    assert!(
        e.contains("blk.9.attn_q.weight") && e.contains("another model"),
        "{e}"
    );
    // A tensor the plan forgot.
    let mut p = uniform(&m, GgmlType::Q8_0);
    p.entries.retain(|(n, _)| n != "output.weight");
    let e = resolve_ggml(&m, &p, false).unwrap_err().to_string();
    assert!(e.contains("output.weight"), "{e}");
}

#[test]
fn gguf_export_refuses_format_gguf_cannot_hold() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let mut p = uniform(&m, GgmlType::Q8_0);
    p.entries[3].1.format = WeightFormat::parse("int4-asym-g32").unwrap();
    let e = resolve_ggml(&m, &p, false).unwrap_err().to_string();
    assert!(
        e.contains("int4-asym-g32") && e.contains("not a GGML type") && e.contains(&p.entries[3].0),
        "{e}"
    );
    // --fallback: the nearest GGML type by bits per weight, reported.
    let r = resolve_ggml(&m, &p, true).unwrap();
    assert_eq!(r.fallbacks.len(), 1);
    assert_eq!(r.fallbacks[0].tensor, p.entries[3].0);
    assert_eq!(r.fallbacks[0].planned, "int4-asym-g32");
    let bpw = p.entries[3].1.format.bits_per_weight(m.tensors[3].cols);
    let got = r.fallbacks[0].exported.bits_per_weight();
    for t in GgmlType::ALL {
        assert!(
            (t.bits_per_weight() - bpw).abs() >= (got - bpw).abs(),
            "{t} is nearer to {bpw} than {got}"
        );
    }
}

#[test]
fn gguf_export_never_overwrites_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    std::fs::copy(fixture("tiny_llama/tiny_llama.gguf"), &src).unwrap();
    let before = std::fs::read(&src).unwrap();
    let m = Model::load(&src).unwrap();
    let plan = resolve_ggml(&m, &uniform(&m, GgmlType::Q8_0), false).unwrap();
    let e = export_gguf(&m, &plan, None, &src).unwrap_err().to_string();
    assert!(e.contains("overwrite the source"), "{e}");
    // The same file through another spelling of its path.
    let e = export_gguf(&m, &plan, None, &dir.path().join(".").join("m.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("overwrite the source"), "{e}");
    assert_eq!(std::fs::read(&src).unwrap(), before);
    // Into an HF source directory, over one of its files.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny_llama").join(f), hf.join(f)).unwrap();
    }
    let m = Model::load(&hf).unwrap();
    let e = export_gguf(&m, &plan, None, &hf.join("model.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("overwrite the source"), "{e}");
}

#[test]
fn tensor_types_recipe_lists_every_tensor_once() {
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let mut p = uniform(&m, GgmlType::Q4_0);
    p.entries[0].1.format = WeightFormat::Ggml(GgmlType::Q8_0);
    let plan = resolve_ggml(&m, &p, false).unwrap();
    let r = tensor_type_lines(&m, &plan);
    assert_eq!(r.lines.len(), m.tensors.len());
    assert_eq!(r.lines[0], r"^token_embd\.weight$=q8_0");
    assert!(r
        .lines
        .contains(&r"^blk\.1\.ffn_down\.weight$=q4_0".to_string()));
    assert_eq!(r.base, GgmlType::Q4_0);
    assert_eq!(r.token_embedding, Some(GgmlType::Q8_0));
    let cmd = r.command("plan.txt");
    assert!(
        cmd.contains("--tensor-type-file plan.txt") && cmd.ends_with(" Q4_0"),
        "{cmd}"
    );
    assert!(cmd.contains("--token-embedding-type q8_0"), "{cmd}");
}

/// The exported file through llama.cpp's own reader (PyPI `gguf`).
#[test]
fn gguf_export_matches_llama_cpp_python_reader() {
    if !std::process::Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("NOTICE: skipping: python3 with the `gguf` and `numpy` packages is not available (pip install gguf numpy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m");
    k_model_dir(&src);
    let m = Model::load(&src).unwrap();
    let cycle = [
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q8_0,
        GgmlType::Q5K,
        GgmlType::Q3K,
        GgmlType::Q2K,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ];
    let plan = resolve_ggml(&m, &cycled(&m, &ggml(&cycle)), false).unwrap();
    let out = dir.path().join("mixed.gguf");
    export_gguf(&m, &plan, None, &out).unwrap();
    let g = Gguf::open(&out).unwrap();
    let mut tensors = Vec::new();
    for (i, t) in g.tensors.iter().enumerate() {
        let values = format!("t{i}.f32");
        let v = g.dequantize(t).unwrap();
        std::fs::write(
            dir.path().join(&values),
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let planned = m
            .tensor_index(&t.name)
            .map(|j| plan.types[j].name())
            .unwrap_or("f32");
        tensors.push(serde_json::json!({"name": t.name, "shape": t.shape(), "type": planned, "values": values}));
    }
    assert_eq!(
        tensors.len(),
        m.tensors.len() + 2 * 2 + 1,
        "quantized + norms"
    );
    let expected = serde_json::json!({
        "tensors": tensors,
        "n_tokens": 300,
        "metadata": {
            "general.architecture": "llama",
            "llama.embedding_length": 256,
            "llama.block_count": 2,
            "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2,
            "tokenizer.ggml.model": "gpt2",
        }
    });
    let exp_path = dir.path().join("expected.json");
    std::fs::write(&exp_path, serde_json::to_string(&expected).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_gguf_export.py");
    let res = std::process::Command::new("python3")
        .arg(&script)
        .arg(&out)
        .arg(&exp_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "check_gguf_export.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}
