//! Closing figures for a real model (run on demand: `QEVO_EXPORT_MODEL=dir cargo test
//! --release --test export_measure -- --ignored --nocapture`): for uniform q4_k, q8_0,
//! q6_k and a mixed plan, the exported GGUF's sizes against `plan.size_bytes()` and its
//! re-evaluated KL against the in-memory KL (asserted equal).

use qevo::calib::TokenWindows;
use qevo::eval::Reference;
use qevo::eval::WeightCache;
use qevo::export::export_gguf;
use qevo::model::{Model, NoHook, Role};
use qevo::plan::resolve_ggml;
use qevo::plan::{TensorChoice, TensorPlan};
use qevo::quant::RoundingInputs;
use qevo::quant::{GgmlType, WeightFormat};
use std::path::PathBuf;

#[test]
#[ignore = "needs QEVO_EXPORT_MODEL (an HF llama dir with heldout.txt)"]
fn export_measure_sizes_and_kl_on_a_real_model() {
    let Some(dir) = std::env::var_os("QEVO_EXPORT_MODEL").map(PathBuf::from) else {
        panic!("set QEVO_EXPORT_MODEL");
    };
    let m = Model::load(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("heldout.txt")).unwrap();
    let windows = TokenWindows::from_text(&m, &text, 128, 16).unwrap();
    let reference = Reference::build(&m, windows, 32).unwrap();
    let out = tempfile::tempdir().unwrap();
    let g = |t| WeightFormat::Ggml(t);
    let mixed = TensorPlan {
        entries: m
            .tensors
            .iter()
            .map(|t| {
                let f = match t.role {
                    Role::Embedding | Role::Output => g(GgmlType::Q6K),
                    Role::AttnV | Role::FfnDown => g(GgmlType::Q5K),
                    _ => g(GgmlType::Q4K),
                };
                (
                    t.name.clone(),
                    TensorChoice {
                        format: f,
                        act_bits: 16,
                    },
                )
            })
            .collect(),
    };
    let plans = [
        (
            "q4_k",
            TensorPlan::uniform(&m, g(GgmlType::Q4K), 16).unwrap(),
        ),
        (
            "q8_0",
            TensorPlan::uniform(&m, g(GgmlType::Q8_0), 16).unwrap(),
        ),
        (
            "q6_k",
            TensorPlan::uniform(&m, g(GgmlType::Q6K), 16).unwrap(),
        ),
        ("mixed q6_k emb/out, q5_k v/down, q4_k rest", mixed),
    ];
    println!("| plan | plan.size_bytes() | planned tensor bytes in file | other tensors | header+padding | file bytes | KL in memory | KL from file |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, plan) in plans {
        let resolved = resolve_ggml(&m, &plan, false).unwrap();
        let path = out.path().join("m.gguf");
        let s = export_gguf(&m, &resolved, &RoundingInputs::default(), &path).unwrap();
        assert_eq!(s.planned_tensor_bytes, plan.size_bytes(&m));
        let mem = WeightCache::new(1 << 30).weights_for(&m, &plan).unwrap();
        let kl_mem = reference.score(&m, &mem, &NoHook).unwrap().kl;
        let back = Model::load(&path).unwrap();
        let kl_file = reference.score(&back, &back.weights, &NoHook).unwrap().kl;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {kl_mem:.9} | {kl_file:.9} |",
            plan.size_bytes(&m),
            s.planned_tensor_bytes,
            s.other_tensor_bytes,
            s.layout.header_bytes + s.layout.padding_bytes,
            s.layout.file_bytes
        );
        assert!(
            (kl_mem - kl_file).abs() <= 1e-9 + 1e-6 * kl_mem,
            "{name}: {kl_mem} vs {kl_file}"
        );
    }
}
