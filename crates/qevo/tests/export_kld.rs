//! The exported GGUF re-scores to the KL qevo reports, as llama.cpp measures it: the
//! embedded model is exported at f32 (the base) and in several plans;
//! `llama-perplexity --kl-divergence-base` writes llama.cpp's own log-probabilities for
//! each file on the same text and chunks; the KL between llama.cpp's base and quantized
//! distributions is compared with qevo's exact KL of the in-memory plan under the same
//! protocol (`eval::llama_ppl::llama_cpp_kl`). Skips when llama.cpp's tools are absent.

mod common;

use common::llama_tools::{llama_tool, LlamaLogits};
use qevo::eval::WeightCache;
use qevo::export::export_gguf;
use qevo::model::Model;
use qevo::plan::resolve_ggml;
use qevo::plan::TensorPlan;
use qevo::quant::RoundingInputs;
use qevo::quant::{GgmlType, WeightFormat};
use std::path::Path;

const CHUNKS: usize = 4;

/// llama.cpp's log-probabilities for `gguf` on `text`, in chunks of `ctx`.
fn llama_logits(ppl: &Path, gguf: &Path, text: &Path, ctx: usize, out: &Path) -> LlamaLogits {
    LlamaLogits::run(ppl, gguf, text, ctx, CHUNKS, out)
}

fn export(m: &Model, plan: &TensorPlan, out: &Path) {
    export_gguf(
        m,
        &resolve_ggml(m, plan, false).unwrap(),
        &RoundingInputs::default(),
        out,
    )
    .unwrap();
}

/// Exports `m` at f32 and in each plan, and checks llama.cpp's KLD of each export
/// against qevo's KL for the plan, printing the table.
fn check_plans(m: &Model, ppl: &Path, text: &Path, ctx: usize, plans: &[(&str, TensorPlan)]) {
    let dir = tempfile::tempdir().unwrap();
    let base_gguf = dir.path().join("f32.gguf");
    let f32_plan = TensorPlan::uniform(m, WeightFormat::Ggml(GgmlType::F32), 16).unwrap();
    export(m, &f32_plan, &base_gguf);
    let base = llama_logits(ppl, &base_gguf, text, ctx, &dir.path().join("f32.bin"));
    let bos = match &m.arch {
        qevo::model::Arch::Llama(c) if base.tokens.first() == c.bos_token_id.as_ref() => {
            c.bos_token_id
        }
        _ => None,
    };
    println!("| plan | llama.cpp KLD | qevo KL (same tokens, protocol) | ratio |");
    println!("|---|---|---|---|");
    let mut rows = Vec::new();
    for (name, plan) in plans {
        let path = dir.path().join(format!("{}.gguf", name.replace('/', "-")));
        export(m, plan, &path);
        let theirs = base.kl_to(&llama_logits(
            ppl,
            &path,
            text,
            ctx,
            &path.with_extension("bin"),
        ));
        let w = WeightCache::new(usize::MAX).weights_for(m, plan).unwrap();
        let ours = qevo::eval::llama_ppl::llama_cpp_kl(m, &w, &base.tokens, ctx, bos, Some(CHUNKS))
            .unwrap();
        println!(
            "| {name} | {theirs:.6} | {ours:.6} | {:.3} |",
            theirs / ours.max(1e-12)
        );
        rows.push((name.to_string(), theirs, ours));
    }
    // llama.cpp also rounds activations to 8 bits inside quantized matrix products
    // (q8_0 / q8_K), which adds a KL floor of its own, and keeps log-probs as 16-bit
    // codes. The q8_0 plan, whose weight error is smallest, measures that floor (1.6e-4
    // on the embedded model, 3.1e-3 on SmolLM2-135M); above it the two agree within 10%
    // (embedded model: q4_0 1.003x, q2_k 1.004x, q3_k 1.017x, q4_k 1.04x, mixed 1.08x).
    let floor = rows
        .iter()
        .find(|r| r.0 == "q8_0")
        .map_or(0.0, |r| 1.5 * (r.1 - r.2).abs())
        .max(2.5e-4);
    for (name, theirs, ours) in rows {
        assert!(
            (theirs - ours).abs() <= 0.1 * ours + floor,
            "{name}: llama.cpp KLD {theirs} vs qevo {ours} (activation floor {floor})"
        );
    }
}

#[test]
fn exported_gguf_kld_in_llama_cpp_matches_qevo_kl() {
    let Some(ppl) = llama_tool("llama-perplexity", "exported GGUF KLD") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&qevo::assets::default_model_dir(dir.path()).unwrap()).unwrap();
    let text = dir.path().join("heldout.txt");
    std::fs::write(&text, qevo::assets::HELDOUT_TEXT).unwrap();
    let g = WeightFormat::Ggml;
    let u = |t| TensorPlan::uniform(&m, g(t), 16).unwrap();
    let mixed = common::cycled(&m, &[g(GgmlType::Q4K), g(GgmlType::Q6K), g(GgmlType::Q5_0)]);
    let plans = [
        ("f16", u(GgmlType::F16)),
        ("q8_0", u(GgmlType::Q8_0)),
        ("q4_0", u(GgmlType::Q4_0)),
        ("q4_k", u(GgmlType::Q4K)),
        ("q3_k", u(GgmlType::Q3K)),
        ("q2_k", u(GgmlType::Q2K)),
        // iq1_m quantizes without an importance matrix (ggml's unweighted path).
        ("iq1_m", u(GgmlType::Iq1M)),
        ("q4_k/q6_k/q5_0", mixed),
    ];
    check_plans(&m, &ppl, &text, 128, &plans);
}

/// The closing-note figure on a real model (`QEVO_KLD_MODEL=model.gguf cargo test
/// --release --test export_kld -- --ignored --nocapture`), on the embedded held-out text
/// in chunks of 512. K-quants on rows not a multiple of 256 are written (and scored) as
/// llama.cpp's fallbacks.
#[test]
#[ignore = "needs QEVO_KLD_MODEL (a GGUF or HF model) and llama.cpp's tools"]
fn real_model_exported_gguf_kld_matches_qevo_kl() {
    let Some(ppl) = llama_tool("llama-perplexity", "real model KLD") else {
        return;
    };
    let path = std::env::var_os("QEVO_KLD_MODEL").expect("set QEVO_KLD_MODEL");
    let m = Model::load(Path::new(&path)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("heldout.txt");
    std::fs::write(&text, qevo::assets::HELDOUT_TEXT).unwrap();
    let g = WeightFormat::Ggml;
    let u = |t| TensorPlan::uniform(&m, g(t), 16).unwrap();
    let plans = [
        ("q8_0", u(GgmlType::Q8_0)),
        ("q4_k", u(GgmlType::Q4K)),
        ("q4_0", u(GgmlType::Q4_0)),
    ];
    check_plans(&m, &ppl, &text, 512, &plans);
}
