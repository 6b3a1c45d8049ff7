//! `plan::mix_plan` against llama-quantize itself: for every file type qevo writes, the
//! per-tensor types llama-quantize chose for an f16 GGUF (qevo's export of the model)
//! must equal the mix qevo computes, with an importance matrix and, for the types whose
//! rules depend on one, without. Two models: the embedded one (4 layers, 2 query heads
//! per KV head, untied) and a tied 8-layer model with 4 query heads per KV head and
//! 576-wide rows-of-tokens embedding, so the GQA, tied-output and layer-rank rules all
//! fire. Skipped, with a message, when llama.cpp's tools are not built.

mod common;

use common::llama_tools::{llama_tool, run_tool};
use common::{write_llama_dir, LlamaOpts};
use qevo::calib::{Imatrix, ImatrixEntry};
use qevo::export::export_gguf;
use qevo::model::gguf::Gguf;
use qevo::model::Model;
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::plan::{mix_plan, LlamaFtype};
use qevo::quant::{GgmlType, RoundingInputs, WeightFormat};
use std::path::Path;

/// Types whose rules read whether an importance matrix is given (and which llama-quantize
/// accepts without one).
const WITHOUT_IMATRIX: [LlamaFtype; 6] = [
    LlamaFtype::Q4_0,
    LlamaFtype::Q5_0,
    LlamaFtype::IQ4_NL,
    LlamaFtype::IQ4_XS,
    LlamaFtype::Q4_K_M,
    LlamaFtype::Q2_K,
];

fn f16_gguf(model: &Model, out: &Path) {
    let plan = TensorPlan::uniform(model, WeightFormat::Ggml(GgmlType::F16), 16).unwrap();
    let plan = resolve_ggml(model, &plan, false).unwrap();
    export_gguf(model, &plan, &RoundingInputs::default(), out).unwrap();
}

/// An importance matrix of ones for every block tensor (its values do not change the
/// mix, only its presence does).
fn ones_imatrix(model: &Model, out: &Path) {
    let entries = model
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk."))
        .map(|t| {
            let e = ImatrixEntry {
                sums: vec![1.0; t.cols],
                count: 1,
            };
            (t.name.clone(), e)
        })
        .collect();
    let im = Imatrix {
        entries,
        datasets: vec!["ones".into()],
        chunk_count: 1,
        chunk_size: 1,
        ..Imatrix::default()
    };
    im.write_gguf(out).unwrap();
}

/// The tensor types llama-quantize wrote for `ftype`, by qevo tensor name.
fn llama_types(
    tool: &Path,
    base: &Path,
    imatrix: Option<&Path>,
    ftype: LlamaFtype,
    dir: &Path,
) -> Vec<(String, GgmlType)> {
    let out = dir.join(format!("{ftype}-{}.gguf", imatrix.is_some()));
    let (b, o) = (base.to_str().unwrap(), out.to_str().unwrap());
    let mut args = Vec::new();
    if let Some(im) = imatrix {
        args.extend(["--imatrix", im.to_str().unwrap()]);
    }
    args.extend([b, o, ftype.name(), "1"]);
    run_tool(tool, &args);
    let g = Gguf::open(&out).unwrap();
    g.tensors
        .iter()
        .map(|t| (t.name.clone(), GgmlType::from_gguf_id(t.type_id).unwrap()))
        .collect()
}

fn check_model(model: &Model, tool: &Path, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (base, im) = (dir.path().join("base.gguf"), dir.path().join("im.gguf"));
    f16_gguf(model, &base);
    ones_imatrix(model, &im);
    let runs = LlamaFtype::ALL
        .iter()
        .map(|&f| (f, true))
        .chain(WITHOUT_IMATRIX.iter().map(|&f| (f, false)));
    let mut wrong = Vec::new();
    for (ftype, with) in runs {
        let types = llama_types(tool, &base, with.then_some(im.as_path()), ftype, dir.path());
        let plan = mix_plan(model, ftype, with);
        for (name, c) in &plan.entries {
            let theirs = types.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            if theirs.map(WeightFormat::Ggml) != Some(c.format) {
                wrong.push(format!(
                    "{what} {ftype} (imatrix {with}) {name}: qevo {}, llama.cpp {theirs:?}",
                    c.format
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn mix_plan_matches_llama_quantize_on_the_embedded_model() {
    let Some(tool) = llama_tool("llama-quantize", "mix_plan_matches_llama_quantize") else {
        return;
    };
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    check_model(&Model::load(&assets).unwrap(), &tool, "embedded");
}

#[test]
fn mix_plan_matches_llama_quantize_on_a_tied_gqa4_model() {
    let Some(tool) = llama_tool("llama-quantize", "mix_plan_matches_llama_quantize") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = LlamaOpts {
        hidden: 256,
        inter: 576,
        layers: 8,
        heads: 8,
        kv_heads: 2,
        vocab: 300,
        tie: true,
        ..LlamaOpts::default()
    };
    write_llama_dir(dir.path(), &o, 5);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(
        fixtures.join("tiny_llama/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    check_model(&Model::load(dir.path()).unwrap(), &tool, "tied gqa4");
}
