//! GGUF export end to end: the exported file, loaded back by qevo, holds bit for bit the
//! weights the plan is scored with in memory and gives the same KL; llama.cpp's own
//! Python reader sees every tensor's name, shape, type and values as qevo wrote them;
//! plans for another model and unsafe output paths are refused.

mod common;

use common::cycled;
use qevo::quant::RoundingInputs;

use candle_core::{Device, Tensor};
use common::*;
use qevo::calib::TokenWindows;
use qevo::eval::Reference;
use qevo::eval::WeightCache;
use qevo::export::{export_gguf, tensor_type_lines};
use qevo::model::gguf::{Gguf, Value};
use qevo::model::{Model, NoHook};
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::{GgmlType, WeightFormat};
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
        // A reloaded f16 tensor is held as stored; its values are the widened ones.
        let (x, y) = (f32_values(x), f32_values(y));
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
    let summary = export_gguf(m, &plan, &RoundingInputs::default(), out).unwrap();
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
    assert_bit_identical(&mem, &back.weights.tensors().unwrap(), m);
    let ids: Vec<u32> = m.encode(TEXT).unwrap();
    assert_eq!(
        back.encode(TEXT).unwrap(),
        ids,
        "GGUF tokenizer encodes differently"
    );
    let a = logits(m, &mem, &ids[..32]);
    let b = logits(&back, &back.weights.tensors().unwrap(), &ids[..32]);
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

/// qevo's output rounding exports the bytes it scored: the plan file's record of the
/// calibration tokens reproduces the input moments, and the file loads back bit-identical
/// to the weights the evaluator scored (which differ from llama.cpp's block rounding).
#[test]
fn output_rounded_export_reloads_the_scored_weights() {
    use qevo::calib::OutputRounding;
    use qevo::quant::gptq::DEFAULT_DAMP;
    let m = Model::load(&fixture("tiny_llama")).unwrap();
    let windows = TokenWindows::from_text(&m, TEXT, 16, 8).unwrap();
    let record = OutputRounding::new(&windows, DEFAULT_DAMP);
    let from_file: OutputRounding =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    assert_eq!(from_file, record);
    let inputs = |r: &OutputRounding| RoundingInputs {
        imatrix: Vec::new(),
        moments: r.moments(&m).unwrap(),
    };
    let tplan = uniform(&m, GgmlType::Q4_0);
    let scored = WeightCache::new(1 << 30)
        .with_rounding(inputs(&record))
        .weights_for(&m, &tplan)
        .unwrap();
    let block = WeightCache::new(1 << 30).weights_for(&m, &tplan).unwrap();
    let differ = scored.iter().zip(&block).filter(|(a, b)| {
        let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
        a.to_vec1::<f32>().unwrap() != b.to_vec1::<f32>().unwrap()
    });
    assert!(differ.count() > 0, "output rounding changed nothing");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4_0-output.gguf");
    let plan = resolve_ggml(&m, &tplan, false).unwrap();
    export_gguf(&m, &plan, &inputs(&from_file), &out).unwrap();
    let back = Model::load(&out).unwrap();
    assert_bit_identical(&scored, &back.weights.tensors().unwrap(), &m);
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
    export_gguf(&m, &plan, &RoundingInputs::default(), &out).unwrap();
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
    let e = export_gguf(&m, &plan, &RoundingInputs::default(), &src)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overwrite the source"), "{e}");
    // The same file through another spelling of its path.
    let e = export_gguf(
        &m,
        &plan,
        &RoundingInputs::default(),
        &dir.path().join(".").join("m.gguf"),
    )
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
    let e = export_gguf(
        &m,
        &plan,
        &RoundingInputs::default(),
        &hf.join("model.safetensors"),
    )
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
    export_gguf(&m, &plan, &RoundingInputs::default(), &out).unwrap();
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

/// Every Llama-family fixture: directory, llama.cpp architecture, and whether a
/// llama.cpp-layout GGUF of it is committed beside it.
const ARCH_FIXTURES: [(&str, &str, bool); 7] = [
    ("tiny_llama", "llama", true),
    ("tiny_mistral", "llama", false),
    ("tiny_qwen2", "qwen2", false),
    ("tiny_qwen3", "qwen3", true),
    ("tiny_gemma2", "gemma2", true),
    ("tiny_gemma3", "gemma3", true),
    ("tiny_phi3", "phi3", true),
];

const ARCH_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0];

/// The HF directory and, where committed, the GGUF of one fixture.
fn arch_sources(fx: &str, has_gguf: bool) -> Vec<PathBuf> {
    let mut v = vec![fixture(fx)];
    if has_gguf {
        v.push(fixture(&format!("{fx}/{fx}.gguf")));
    }
    v
}

#[test]
fn gguf_export_every_architecture_reloads_with_equal_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (fx, arch, has_gguf) in ARCH_FIXTURES {
        for (s, src) in arch_sources(fx, has_gguf).iter().enumerate() {
            let m = Model::load(src).unwrap();
            for t in ARCH_TYPES {
                let out = dir.path().join(format!("{fx}-{s}-{t}.gguf"));
                roundtrip(&m, &uniform(&m, t), &out);
                let g = Gguf::open(&out).unwrap();
                assert_eq!(
                    g.get("general.architecture"),
                    Some(&Value::String(arch.into())),
                    "{}",
                    src.display()
                );
            }
        }
    }
}

/// Keys the exporter writes from config.json agree with the GGUF written the way
/// llama.cpp's converter writes it (`scripts/make_fixtures.py`); the sliding-window
/// pattern is compared by what qevo reads from it, since the two spell it differently.
#[test]
fn gguf_export_hf_metadata_matches_the_converter_layout() {
    let dir = tempfile::tempdir().unwrap();
    for (fx, _, has_gguf) in ARCH_FIXTURES {
        if !has_gguf {
            continue;
        }
        let m = Model::load(&fixture(fx)).unwrap();
        let out = dir.path().join(format!("{fx}.gguf"));
        let plan = resolve_ggml(&m, &uniform(&m, GgmlType::F32), false).unwrap();
        export_gguf(&m, &plan, &RoundingInputs::default(), &out).unwrap();
        let ours = Gguf::open(&out).unwrap();
        let theirs = Gguf::open(&fixture(&format!("{fx}/{fx}.gguf"))).unwrap();
        for (key, v) in &theirs.metadata {
            let skip = ["general.name", "general.file_type"].contains(&key.as_str())
                || key.ends_with("sliding_window_pattern");
            if !skip {
                assert_eq!(ours.get(key), Some(v), "{fx}: {key}");
            }
        }
        let back = Model::load(&out).unwrap();
        let conv = Model::load(&fixture(&format!("{fx}/{fx}.gguf"))).unwrap();
        if let (qevo::model::Arch::Llama(a), qevo::model::Arch::Llama(b)) = (&back.arch, &conv.arch)
        {
            for l in 0..a.n_layers {
                assert_eq!(a.window_of(l), b.window_of(l), "{fx}: layer {l} window");
            }
        }
    }
}

/// A copy of a fixture directory with config.json edited.
fn edited_fixture(dir: &Path, fx: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let d = dir.join(fx);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(fx).join(f), d.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(fixture(fx).join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    d
}

/// An edit of a fixture's config.json.
type ConfigEdit = fn(&mut serde_json::Value);

#[test]
fn gguf_export_refuses_what_llama_cpp_cannot_express() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, ConfigEdit); 3] = [
        ("tiny_qwen2", "sliding_window", |c| {
            c["use_sliding_window"] = true.into();
            c["sliding_window"] = 8.into();
        }),
        ("tiny_gemma2", "query_pre_attn_scalar", |c| {
            c["query_pre_attn_scalar"] = 64.into();
        }),
        ("tiny_mistral", "sliding_window", |c| {
            c["sliding_window"] = 16.into();
        }),
    ];
    for (fx, key, edit) in cases {
        let src = edited_fixture(dir.path(), fx, edit);
        let m = Model::load(&src).unwrap();
        let plan = resolve_ggml(&m, &uniform(&m, GgmlType::Q8_0), false).unwrap();
        let out = dir.path().join(format!("{fx}.gguf"));
        let e = export_gguf(&m, &plan, &RoundingInputs::default(), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("llama.cpp"), "{fx}: {e}");
        assert!(!out.exists());
    }
}

/// Phi-3: q, k, v are written separately (llama.cpp's phi3 accepts them), so each keeps
/// its own type; gate and up share llama.cpp's fused `ffn_up` and must share a type.
#[test]
fn gguf_export_phi3_fuses_gate_and_up_of_one_type_only() {
    let m = Model::load(&fixture("tiny_phi3")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut p = uniform(&m, GgmlType::Q8_0);
    let set = |p: &mut TensorPlan, name: &str, t: GgmlType| {
        p.entries
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .format = WeightFormat::Ggml(t);
    };
    set(&mut p, "blk.0.attn_q.weight", GgmlType::F16);
    set(&mut p, "blk.0.attn_v.weight", GgmlType::F32);
    set(&mut p, "blk.1.ffn_gate.weight", GgmlType::F16);
    set(&mut p, "blk.1.ffn_up.weight", GgmlType::F16);
    let out = dir.path().join("mixed.gguf");
    roundtrip(&m, &p, &out);
    let g = Gguf::open(&out).unwrap();
    assert!(g.tensor("blk.0.attn_qkv.weight").is_none());
    assert!(g.tensor("blk.0.ffn_gate.weight").is_none());
    let up = g.tensor("blk.1.ffn_up.weight").unwrap();
    assert_eq!((up.type_name(), up.shape()), ("f16", vec![256, 64]));
    set(&mut p, "blk.1.ffn_up.weight", GgmlType::Q8_0);
    let plan = resolve_ggml(&m, &p, false).unwrap();
    let e = export_gguf(
        &m,
        &plan,
        &RoundingInputs::default(),
        &dir.path().join("bad.gguf"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("blk.1.ffn_gate.weight")
            && e.contains("blk.1.ffn_up.weight")
            && e.contains("f16")
            && e.contains("q8_0"),
        "{e}"
    );
}

/// `llama-perplexity` on an exported file, and qevo's `llama_cpp_perplexity` of `model`
/// (the source, holding the weights the plan quantizes to) on llama.cpp's own token ids
/// for the text: (llama.cpp, qevo). Comparing with the source rather than the file read
/// back catches a layout error that the exporter and qevo's GGUF reader would share.
fn both_perplexities(
    model: &Model,
    ppl: &Path,
    gguf: &Path,
    text: &Path,
    ctx: usize,
) -> (f64, f64) {
    let logits = gguf.with_extension("logits");
    let base = common::llama_tools::LlamaLogits::run(ppl, gguf, text, ctx, 4, &logits);
    let (theirs, ids) = (base.perplexity(), base.tokens);
    let bos = match &model.arch {
        qevo::model::Arch::Llama(c) if ids.first() == c.bos_token_id.as_ref() => c.bos_token_id,
        _ => None,
    };
    let ours = qevo::eval::llama_ppl::llama_cpp_perplexity(model, &ids, ctx, bos, None)
        .unwrap()
        .perplexity;
    (theirs, ours)
}

/// Llama with `attention_bias`: llama.cpp's converter permutes q/k biases with their
/// weights, so the exporter must, and qevo's GGUF reader must undo it.
#[test]
fn gguf_export_llama_permutes_q_k_biases_with_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("biased");
    let o = LlamaOpts {
        vocab: 300,
        qkv_bias: true,
        ..LlamaOpts::default()
    };
    write_llama_dir(&src, &o, 5);
    std::fs::copy(
        fixture("tiny_llama/tokenizer.json"),
        src.join("tokenizer.json"),
    )
    .unwrap();
    let m = Model::load(&src).unwrap();
    for t in [GgmlType::F32, GgmlType::Q8_0] {
        let out = dir.path().join(format!("{t}.gguf"));
        roundtrip(&m, &uniform(&m, t), &out);
    }
    let Some(ppl) = common::llama_tools::llama_tool("llama-perplexity", "llama q/k biases") else {
        return;
    };
    let text = dir.path().join("text.txt");
    std::fs::write(&text, &heldout_text()[..3000]).unwrap();
    let (theirs, ours) = both_perplexities(&m, &ppl, &dir.path().join("f32.gguf"), &text, 64);
    println!("llama with q/k/v/o biases, f32: llama-perplexity {theirs:.4}, qevo {ours:.4}");
    assert!((ours - theirs).abs() <= 0.01 * theirs, "{theirs} vs {ours}");
}

fn heldout_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/heldout.txt"))
        .unwrap()
}

/// The source under a name without "phi3": llama.cpp sets special-token attributes by
/// `general.name`, and for a "phi3" name looks up `</s>`, which the 300-token fixture
/// vocabulary lacks, and fails to load (real Phi-3 vocabularies have it).
fn renamed_source(dir: &Path, src: &Path) -> PathBuf {
    let name = src
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("phi3", "p3");
    if !src.to_string_lossy().contains("phi3") {
        return src.to_path_buf();
    }
    let dst = dir.join(format!("renamed-{name}"));
    if src.is_dir() {
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
        return dst;
    }
    let g = Gguf::open(src).unwrap();
    let mut w = qevo::export::GgufWriter {
        metadata: g.metadata.clone(),
        ..Default::default()
    };
    w.set("general.name", Value::String(name));
    for t in &g.tensors {
        w.tensors.push(qevo::export::GgufTensorOut {
            name: t.name.clone(),
            dims: t.dims.clone(),
            type_id: t.type_id,
            bytes: g.tensor_bytes(t).to_vec(),
        });
    }
    w.write(&dst).unwrap();
    dst
}

/// llama.cpp loads every architecture's export and computes what qevo computes: its
/// perplexity on a short text is within 1% of qevo's under the same protocol.
#[test]
fn gguf_export_every_architecture_runs_in_llama_cpp() {
    const TEST: &str = "gguf_export_every_architecture_runs_in_llama_cpp";
    let Some(ppl) = common::llama_tools::llama_tool("llama-perplexity", TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, &heldout_text()[..3000]).unwrap();
    for (fx, arch, has_gguf) in ARCH_FIXTURES {
        for (s, src) in arch_sources(fx, has_gguf).iter().enumerate() {
            let src = renamed_source(dir.path(), src);
            let mut m = Model::load(&src).unwrap();
            let source_weights = m.weights.clone();
            // Every type from the HF directory; the GGUF source at q8_0.
            let types: &[GgmlType] = if s == 0 {
                &ARCH_TYPES
            } else {
                &[GgmlType::Q8_0]
            };
            for &t in types {
                let out = dir.path().join(format!("{fx}-{s}-{t}.gguf"));
                let tplan = uniform(&m, t);
                m.weights = source_weights.clone();
                let plan = resolve_ggml(&m, &tplan, false).unwrap();
                export_gguf(&m, &plan, &RoundingInputs::default(), &out).unwrap();
                m.weights = qevo::model::StoredWeights::from_tensors(
                    WeightCache::new(1 << 30).weights_for(&m, &tplan).unwrap(),
                );
                let (theirs, ours) = both_perplexities(&m, &ppl, &out, &text, 64);
                let rel = (ours - theirs).abs() / theirs;
                println!(
                    "{arch} ({fx}, {} source, {t}): llama-perplexity {theirs:.4}, qevo {ours:.4}, {:.3}% apart",
                    if s == 0 { "HF" } else { "GGUF" },
                    rel * 100.0
                );
                assert!(rel <= 0.01, "{fx} {t}: {theirs} vs {ours}");
            }
        }
    }
}
