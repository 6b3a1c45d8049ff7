//! compressed-tensors export end to end: every packed weight, decoded by a reader written
//! here from compressed-tensors' description (not qevo's decoder), equals bit for bit the
//! weight the plan is scored with; `config.json` has one config group per scheme with the
//! exact module names; what the layout cannot hold is refused naming the tensor; and, when
//! python3 has `torch` and `compressed_tensors`, the package itself decompresses the
//! directory to qevo's weights and transformers' logits match qevo's
//! (scripts/check_compressed_tensors.py).

mod common;

use candle_core::{DType, Device, Tensor};
use qevo::eval::WeightCache;
use qevo::export::{export_compressed_tensors, export_safetensors};
use qevo::model::synthetic::{write_llama_dir, LlamaShape};
use qevo::model::{Model, NoHook};
use qevo::plan::{TensorChoice, TensorPlan};
use qevo::quant::WeightFormat;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// Every bits × symmetry × strategy compressed-tensors holds, and f16 (stays float); the
/// embedding (tensor 0) is set to f16 by `ct_plan`, since no loader reads a packed one.
const CT_MIX: [&str; 12] = [
    "int4-sym-g128",
    "int3-asym-g64",
    "int8-asym-channel",
    "int5-sym-channel",
    "int2-asym-g32",
    "int6-asym-tensor",
    "int7-sym-g32",
    "f16",
    "int4-asym-g128",
    "int8-sym-tensor",
    "int6-sym-g64",
    "int7-asym-channel",
];

fn fmt(s: &str) -> WeightFormat {
    WeightFormat::parse(s).unwrap()
}

fn cycled(m: &Model, cycle: &[&str]) -> TensorPlan {
    let formats: Vec<WeightFormat> = cycle.iter().map(|s| fmt(s)).collect();
    common::cycled(m, &formats)
}

/// `cycle` over the tensors, the embedding f16.
fn ct_plan(m: &Model, cycle: &[&str]) -> TensorPlan {
    let mut p = cycled(m, cycle);
    assert_eq!(p.entries[0].0, "token_embd.weight");
    p.entries[0].1.format = fmt("f16");
    p
}

/// What transformers 5.24 loads: symmetric schemes, asymmetric only per tensor.
const TRANSFORMERS_MIX: [&str; 7] = [
    "int4-sym-g128",
    "int3-sym-g64",
    "int8-sym-channel",
    "int6-asym-tensor",
    "int2-sym-g32",
    "bf16",
    "int5-sym-tensor",
];

/// A random llama whose rows (256, 512) every group size divides; 3 layers and an odd
/// vocabulary so zero-point columns end mid-word.
fn synthetic_dir(dir: &Path) -> Model {
    let o = LlamaShape {
        hidden: 256,
        inter: 512,
        layers: 3,
        heads: 4,
        kv_heads: 2,
        vocab: 301,
        ..LlamaShape::default()
    };
    write_llama_dir(dir, &o, 11).unwrap();
    Model::load(dir).unwrap()
}

/// Hugging Face module of a canonical llama tensor name (the names transformers uses).
fn module(canonical: &str) -> String {
    let base = canonical.trim_end_matches(".weight");
    match base {
        "token_embd" => "model.embed_tokens".into(),
        "output" => "lm_head".into(),
        _ => {
            let (blk, part) = base.strip_prefix("blk.").unwrap().split_once('.').unwrap();
            let hf = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                p => panic!("unexpected tensor part {p}"),
            };
            format!("model.layers.{blk}.{hf}")
        }
    }
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Element `i` of a run of `bits`-bit values packed from bit `i·bits` of 32-bit words,
/// straddling a word boundary where it must (compressed-tensors' `unpack_from_int32`).
fn element(words: &[i32], i: usize, bits: usize) -> u32 {
    let (w, off) = (i * bits / 32, i * bits % 32);
    let mut v = (words[w] as u32 as u64) >> off;
    if off + bits > 32 {
        v |= (words[w + 1] as u32 as u64) << (32 - off);
    }
    (v & ((1u64 << bits) - 1)) as u32
}

/// Decodes one module from the file as compressed-tensors describes it:
/// `x = scale · ((u − 2^(b-1)) − zp)`, zp signed (`z − 2^(b-1)`, 0 when symmetric).
fn decode_module(st: &SafeTensors, module: &str, scheme: &serde_json::Value) -> Vec<f32> {
    let get = |p: &str| st.tensor(&format!("{module}.{p}")).unwrap();
    let bits = scheme["num_bits"].as_u64().unwrap() as usize;
    let half = 1i32 << (bits - 1);
    let shape = get("weight_shape");
    assert_eq!(shape.dtype(), Dtype::I64);
    let dims: Vec<i64> = shape
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (rows, cols) = (dims[0] as usize, dims[1] as usize);
    let packed = get("weight_packed");
    assert_eq!(packed.dtype(), Dtype::I32);
    let wpr = (cols * bits).div_ceil(32);
    assert_eq!(packed.shape(), &[rows, wpr]);
    let words = i32s(packed.data());
    let scale = get("weight_scale");
    let scales: Vec<f32> = scale
        .data()
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let groups_per_row = match scheme["strategy"].as_str().unwrap() {
        "group" => cols / scheme["group_size"].as_u64().unwrap() as usize,
        _ => 1,
    };
    let tensor = scheme["strategy"] == "tensor";
    let zp = |r: usize, g: usize| -> i32 {
        if scheme["symmetric"].as_bool().unwrap() {
            return 0;
        }
        let t = get("weight_zero_point");
        if tensor {
            return t.data()[0] as i8 as i32;
        }
        // [⌈rows·b/32⌉, G]: column g is the packed run of the rows' zero points.
        let all = i32s(t.data());
        let w = (rows * bits).div_ceil(32);
        assert_eq!(t.shape(), &[w, groups_per_row]);
        let col: Vec<i32> = (0..w).map(|k| all[k * groups_per_row + g]).collect();
        element(&col, r, bits) as i32 - half
    };
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = &words[r * wpr..(r + 1) * wpr];
        for c in 0..cols {
            let g = c * groups_per_row / cols;
            let s = if tensor {
                scales[0]
            } else {
                scales[r * groups_per_row + g]
            };
            let q = element(row, c, bits) as i32 - half;
            out.push(((q - zp(r, g)) as f32) * s);
        }
    }
    out
}

fn config(out: &Path) -> serde_json::Value {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    cfg["quantization_config"].clone()
}

/// Module name → its group's `weights` args.
fn schemes_by_module(qc: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    let mut map = BTreeMap::new();
    for g in qc["config_groups"].as_object().unwrap().values() {
        for t in g["targets"].as_array().unwrap() {
            let prev = map.insert(t.as_str().unwrap().to_string(), g["weights"].clone());
            assert!(prev.is_none(), "{t} targeted twice");
        }
    }
    map
}

#[test]
fn every_packed_weight_decodes_to_the_scored_weight() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = ct_plan(&m, &CT_MIX);
    let out = dir.path().join("ct");
    let s = export_compressed_tensors(&m, &plan, &out).unwrap();
    let qc = config(&out);
    let schemes = schemes_by_module(&qc);
    let distinct: std::collections::BTreeSet<String> = plan
        .entries
        .iter()
        .filter(|(_, c)| matches!(c.format, WeightFormat::Int(_)))
        .map(|(_, c)| c.format.name())
        .collect();
    assert_eq!(s.config_groups, distinct.len(), "one group per scheme");
    let data = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    let scored = WeightCache::new(usize::MAX).weights_for(&m, &plan).unwrap();
    let mut float = Vec::new();
    for (info, w) in m.tensors.iter().zip(&scored) {
        let want = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let name = module(&info.name);
        let got = match schemes.get(&name) {
            Some(scheme) => decode_module(&st, &name, scheme),
            None => {
                float.push(name.clone());
                let t = st.tensor(&format!("{name}.weight")).unwrap();
                assert_eq!(t.dtype(), Dtype::F16);
                t.data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect()
            }
        };
        let diff = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(diff, 0, "{}: {diff} values differ", info.name);
    }
    assert_eq!(qc["ignore"], serde_json::json!(float));
    assert_eq!(s.packed_tensors, m.tensors.len() - float.len());
    // The stored planned tensors are every `<module>.*` tensor: the plan's bytes plus
    // int32 row padding and the 16-byte weight_shape.
    let stored: u64 = st
        .tensors()
        .iter()
        .filter(|(n, _)| {
            m.tensors
                .iter()
                .any(|i| n.starts_with(&format!("{}.", module(&i.name))))
        })
        .map(|(_, v)| v.data().len() as u64)
        .sum();
    assert_eq!(s.planned_tensor_bytes, stored);
    assert!(stored > plan.size_bytes(&m), "{stored}");
}

/// Every file of an export directory, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The safetensors header's `__metadata__` was written from a hash map, whose order
/// changes with each map's random seed, so two exports of one plan could differ in bytes
/// (one in three did). Each export makes new maps, so four exports in one process
/// would show it; they must be the same files, for both packed formats.
#[test]
fn two_exports_of_one_plan_are_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = ct_plan(&m, &CT_MIX);
    type Export = fn(&Model, &TensorPlan, &Path) -> qevo::Result<()>;
    let exports: [(&str, Export); 2] = [
        ("ct", |m, p, o| export_compressed_tensors(m, p, o).map(drop)),
        ("int", |m, p, o| export_safetensors(m, p, o).map(drop)),
    ];
    for (what, export) in exports {
        let first = dir.path().join(format!("{what}-0"));
        export(&m, &plan, &first).unwrap();
        let want = files(&first);
        assert!(want.contains_key("model.safetensors"), "{what}");
        for k in 1..4 {
            let out = dir.path().join(format!("{what}-{k}"));
            export(&m, &plan, &out).unwrap();
            let got = files(&out);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (name, bytes) in &want {
                assert!(got[name] == *bytes, "{what} export {k}: {name} differs");
            }
        }
    }
}

fn refusal(m: &Model, dir: &Path, plan: &TensorPlan) -> String {
    let out = dir.join("refused");
    let e = export_compressed_tensors(m, plan, &out)
        .unwrap_err()
        .to_string();
    assert!(!out.join("config.json").exists(), "nothing written: {e}");
    e
}

fn with(m: &Model, base: &str, tensor: usize, choice: TensorChoice) -> TensorPlan {
    let mut p = ct_plan(m, &[base]);
    p.entries[tensor].1 = choice;
    p
}

#[test]
fn plans_compressed_tensors_cannot_express_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let name = |i: usize| m.tensors[i].name.clone();
    let pick = |f: &str, act| TensorChoice {
        format: fmt(f),
        act_bits: act,
    };
    let cases = [
        (
            with(&m, "int4-sym-g128", 2, pick("int4-pow2-g128", 16)),
            2,
            "power-of-two",
        ),
        (
            with(&m, "int4-sym-g128", 3, pick("q4_k", 16)),
            3,
            "GGML block format",
        ),
        (
            with(&m, "int4-sym-g128", 4, pick("int8-sym-channel", 8)),
            4,
            "activations",
        ),
    ];
    for (plan, t, why) in cases {
        let e = refusal(&m, dir.path(), &plan);
        assert!(e.contains(&name(t)) && e.contains(why), "{e}");
    }
    // A ragged last group: 64 does not divide the 200 columns of a 200-wide MLP's down
    // projection.
    let rdir = dir.path().join("ragged");
    let o = LlamaShape {
        hidden: 64,
        inter: 200,
        ..LlamaShape::default()
    };
    write_llama_dir(&rdir, &o, 3).unwrap();
    let rm = Model::load(&rdir).unwrap();
    let e = refusal(&rm, dir.path(), &ct_plan(&rm, &["int4-sym-g64"]));
    assert!(e.contains("ffn_down") && e.contains("ragged"), "{e}");
    // No loader reads a packed embedding back.
    let e = refusal(&m, dir.path(), &cycled(&m, &["int8-sym-channel"]));
    assert!(e.contains("token_embd") && e.contains("embedding"), "{e}");
}

#[test]
fn qevo_int_still_holds_what_compressed_tensors_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let plan = ct_plan(&m, &["int4-pow2-g128", "int3-pow2-g32"]);
    assert!(export_compressed_tensors(&m, &plan, &dir.path().join("ct")).is_err());
    assert!(export_safetensors(&m, &plan, &dir.path().join("qevo-int")).is_ok());
}

fn python_has(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Exports `plan`, writes qevo's weights (and, with `logits`, qevo's logits on a fixed
/// sequence) beside it, and runs scripts/check_compressed_tensors.py on the directory.
fn python_check(m: &Model, plan: &TensorPlan, dir: &Path, logits: bool) -> String {
    let out = dir.join("ct");
    export_compressed_tensors(m, plan, &out).unwrap();
    let scored = WeightCache::new(usize::MAX).weights_for(m, plan).unwrap();
    let expected: Vec<(String, Vec<usize>, Vec<f32>)> = m
        .tensors
        .iter()
        .zip(&scored)
        .map(|(info, w)| {
            let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let name = format!("{}.weight", module(&info.name));
            (name, vec![info.rows, info.cols], v)
        })
        .collect();
    let weights = dir.join("expected.safetensors");
    write_f32_safetensors(&weights, &expected);
    let ids: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % 301).collect();
    let mut spec = serde_json::json!({"weights": weights, "ids": ids});
    if logits {
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let v = m.forward(&scored, &NoHook, &t).unwrap();
        let v = v.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let bytes: Vec<u8> = v
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let path = dir.join("logits.f32");
        std::fs::write(&path, bytes).unwrap();
        spec["logits"] = serde_json::json!(path);
    }
    let spec_path = dir.join("expected.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_compressed_tensors.py");
    let res = std::process::Command::new("python3")
        .arg(&script)
        .arg(&out)
        .arg(&spec_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).to_string();
    let stderr = String::from_utf8_lossy(&res.stderr);
    println!("{stdout}");
    assert!(
        res.status.success(),
        "check_compressed_tensors.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("decompress bit for bit"), "{stdout}");
    stdout
}

/// The `compressed_tensors` package decompresses every scheme of the export to qevo's
/// weights; transformers loads a plan of the schemes it reads and its logits agree with
/// qevo's (scripts/check_compressed_tensors.py).
#[test]
fn compressed_tensors_package_reads_the_export() {
    if !python_has("torch, compressed_tensors, safetensors") {
        println!(
            "NOTICE: skipping: python3 with torch and compressed-tensors is not available \
             (pip install torch compressed-tensors transformers)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = synthetic_dir(&dir.path().join("src"));
    let all = dir.path().join("all");
    std::fs::create_dir_all(&all).unwrap();
    python_check(&m, &ct_plan(&m, &CT_MIX), &all, false);
    if !python_has("transformers") {
        println!("NOTICE: skipping the transformers half: transformers is not installed");
        return;
    }
    let tf = dir.path().join("transformers");
    std::fs::create_dir_all(&tf).unwrap();
    let out = python_check(&m, &ct_plan(&m, &TRANSFORMERS_MIX), &tf, true);
    assert!(out.contains("transformers logits match"), "{out}");
}
