//! A tuned plan exported as GGUF is the model tune scored: qevo reloads it to exactly the
//! tuned weights and re-scores it to the KL tune reported, and llama.cpp's
//! `llama-perplexity --kl-divergence` of the file agrees with qevo's KL of it under the
//! same protocol, and is lower than the untuned file's. The llama.cpp half skips when
//! its tools are absent.

mod common;

use common::llama_tools::{llama_tool, LlamaLogits};
use qevo::calib::TokenWindows;
use qevo::eval::Reference;
use qevo::export::{export_gguf, export_tuned_gguf};
use qevo::model::{Model, NoHook};
use qevo::plan::TensorPlan;
use qevo::plan::{resolve_ggml, ResolvedPlan};
use qevo::quant::{ggml, GgmlType, RoundingInputs, WeightFormat};
use qevo::tune::{tune, TuneConfig, TuneHooks, TuneOutcome, TuneSetup};
use std::path::Path;

fn reference(m: &Model, text: &str, n: usize) -> Reference {
    let w = TokenWindows::from_text(m, text, 64, n).unwrap();
    Reference::build(m, w, m.arch.vocab()).unwrap()
}

fn tuned(m: &Model, plan: &ResolvedPlan, held: &Reference) -> TuneOutcome {
    tuned_with(m, plan, held, false)
}

fn tuned_with(m: &Model, plan: &ResolvedPlan, held: &Reference, sub_scales: bool) -> TuneOutcome {
    let calib = reference(m, qevo::assets::CALIB_TEXT, 24);
    let setup = TuneSetup {
        model: m,
        plan,
        rounding: &RoundingInputs::default(),
        calibration: &calib,
        heldout: held,
    };
    let cfg = TuneConfig {
        steps: 16,
        lr: 5e-3,
        seed: 3,
        sub_scales,
        lr_sub: 0.2,
        ..TuneConfig::default()
    };
    tune(&setup, &cfg, TuneHooks::default()).unwrap()
}

#[test]
fn tuned_gguf_reloads_to_the_tuned_weights_and_rescores_to_the_reported_kl() {
    reload_and_rescore(GgmlType::Q4_0, false);
}

/// The same with trained q3_k sub-scales: the packed sub-scales are the ones scored.
#[test]
fn tuned_sub_scales_gguf_reloads_to_the_tuned_weights_and_rescores_to_the_reported_kl() {
    reload_and_rescore(GgmlType::Q3K, true);
}

fn reload_and_rescore(t: GgmlType, sub_scales: bool) {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(t), 16).unwrap();
    let plan = resolve_ggml(&m, &plan, false).unwrap();
    let held = reference(&m, qevo::assets::HELDOUT_TEXT, 8);
    let out = tuned_with(&m, &plan, &held, sub_scales);
    assert!(out.after.heldout.kl < out.before.heldout.kl);
    let path = dir.path().join("tuned.gguf");
    export_tuned_gguf(&m, &out.tuned, &path).unwrap();
    let back = Model::load(&path).unwrap();
    for (i, info) in m.tensors.iter().enumerate() {
        let want =
            ggml::dequantize(out.tuned.types[i], &out.tuned.bytes[i], info.params()).unwrap();
        let got = back.weight_values(i).unwrap();
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: reloaded weights differ from the tuned bytes",
            info.name
        );
    }
    let kl = held.score(&back, &back.weights, &NoHook).unwrap().kl;
    let rel = (kl - out.after.heldout.kl).abs() / out.after.heldout.kl;
    assert!(
        rel < 1e-5,
        "re-scored {kl} vs reported {}",
        out.after.heldout.kl
    );
}

/// llama.cpp's KLD of each file against the FP base (f32 export), on the same text.
fn llama_kld(ppl: &Path, base: &LlamaLogits, gguf: &Path, text: &Path) -> f64 {
    base.kl_to(&LlamaLogits::run(
        ppl,
        gguf,
        text,
        128,
        4,
        &gguf.with_extension("bin"),
    ))
}

#[test]
fn llama_cpp_measures_the_tuned_gguf_as_qevo_does() {
    let Some(ppl) = llama_tool("llama-perplexity", "tuned GGUF KLD") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let text = dir.path().join("heldout.txt");
    std::fs::write(&text, qevo::assets::HELDOUT_TEXT).unwrap();
    let none = RoundingInputs::default();
    let f32_plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::F32), 16).unwrap();
    let base_gguf = dir.path().join("f32.gguf");
    export_gguf(
        &m,
        &resolve_ggml(&m, &f32_plan, false).unwrap(),
        &none,
        &base_gguf,
    )
    .unwrap();
    let base = LlamaLogits::run(&ppl, &base_gguf, &text, 128, 4, &dir.path().join("f32.bin"));
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::Q4_0), 16).unwrap();
    let plan = resolve_ggml(&m, &plan, false).unwrap();
    let untuned_gguf = dir.path().join("q4_0.gguf");
    export_gguf(&m, &plan, &none, &untuned_gguf).unwrap();
    let out = tuned(&m, &plan, &reference(&m, qevo::assets::HELDOUT_TEXT, 4));
    let tuned_gguf = dir.path().join("q4_0-tuned.gguf");
    export_tuned_gguf(&m, &out.tuned, &tuned_gguf).unwrap();

    let theirs = llama_kld(&ppl, &base, &tuned_gguf, &text);
    let theirs_untuned = llama_kld(&ppl, &base, &untuned_gguf, &text);
    let back = Model::load(&tuned_gguf).unwrap();
    let bos = match &m.arch {
        qevo::model::Arch::Llama(c) if base.tokens.first() == c.bos_token_id.as_ref() => {
            c.bos_token_id
        }
        _ => None,
    };
    let ours = qevo::eval::llama_ppl::llama_cpp_kl_between(
        &m,
        (&back, &back.weights),
        &base.tokens,
        128,
        bos,
        Some(4),
    )
    .unwrap();
    println!("llama.cpp KLD: untuned {theirs_untuned:.6}, tuned {theirs:.6}; qevo KL of the tuned file {ours:.6}");
    // As in export_kld.rs: llama.cpp's 8-bit activation rounding adds a small floor.
    assert!(
        (theirs - ours).abs() <= 0.1 * ours + 2.5e-4,
        "llama.cpp {theirs} vs qevo {ours}"
    );
    assert!(
        theirs < theirs_untuned,
        "tuned {theirs} vs untuned {theirs_untuned}"
    );
}
