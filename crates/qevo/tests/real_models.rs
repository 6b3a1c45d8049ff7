//! Full-model check, run by scripts/check_real_models.sh (ignored in the normal suite):
//! qevo's perplexity on a real GGUF under llama.cpp's protocol, on the token ids
//! `llama-tokenize` produced for the same text, against the figure `llama-perplexity`
//! printed. Using llama.cpp's ids keeps the tokenizer out of this comparison; it
//! measures the architecture and the dequantized weights.

use qevo::eval::llama_ppl::llama_cpp_perplexity;
use qevo::model::Model;
use qevo::quant::RoundingInputs;
use std::path::PathBuf;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

#[test]
#[ignore = "needs a real GGUF and llama.cpp's figures; run scripts/check_real_models.sh"]
fn real_gguf_perplexity_matches_llama_perplexity() {
    let (Some(model), Some(ids), Some(want)) = (
        env("QEVO_REAL_GGUF"),
        env("QEVO_PPL_IDS"),
        env("QEVO_LLAMA_PPL"),
    ) else {
        println!("skipped: set QEVO_REAL_GGUF, QEVO_PPL_IDS and QEVO_LLAMA_PPL (scripts/check_real_models.sh does)");
        return;
    };
    let ctx: usize = env("QEVO_PPL_CTX").map_or(512, |v| v.parse().unwrap());
    let chunks: Option<usize> = env("QEVO_PPL_CHUNKS").map(|v| v.parse().unwrap());
    let want: f64 = want.parse().unwrap();
    let text = std::fs::read_to_string(&ids).unwrap();
    let tokens: Vec<u32> = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|t| t.trim().parse().unwrap())
        .collect();
    let m = Model::load(&PathBuf::from(&model)).unwrap();
    let bos = match m.arch {
        qevo::model::Arch::Llama(ref c) if tokens.first() == c.bos_token_id.as_ref() => {
            c.bos_token_id
        }
        _ => None,
    };
    let got = llama_cpp_perplexity(&m, &tokens, ctx, bos, chunks).unwrap();
    let rel = (got.perplexity - want).abs() / want;
    println!(
        "{model}: qevo perplexity {:.4} over {} chunks of {ctx} ({} scored tokens), llama-perplexity {want:.4}, relative difference {:.3}%",
        got.perplexity,
        got.chunks,
        got.scored_tokens,
        rel * 100.0
    );
    assert!(rel <= 0.01, "perplexity differs by {:.3}%", rel * 100.0);
}

/// Exports a real GGUF (`QEVO_EXPORT_SRC`) into `QEVO_EXPORT_DIR` as uniform q8_0 and
/// uniform q4_k (rows that are not whole q4_k blocks get llama.cpp's fallback type), for
/// scripts/check_real_models.sh to run through `llama-perplexity` and the check above.
#[test]
#[ignore = "needs a real GGUF; run scripts/check_real_models.sh"]
fn real_gguf_export_for_llama_cpp() {
    use qevo::export::export_gguf;
    use qevo::plan::resolve_ggml;
    use qevo::plan::TensorPlan;
    use qevo::quant::{GgmlType, WeightFormat};
    let (Some(src), Some(dir)) = (env("QEVO_EXPORT_SRC"), env("QEVO_EXPORT_DIR")) else {
        println!(
            "skipped: set QEVO_EXPORT_SRC and QEVO_EXPORT_DIR (scripts/check_real_models.sh does)"
        );
        return;
    };
    let src = PathBuf::from(src);
    let m = Model::load(&src).unwrap();
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    for t in [GgmlType::Q8_0, GgmlType::Q4K] {
        let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(t), 16).unwrap();
        let resolved = resolve_ggml(&m, &plan, false).unwrap();
        let out = PathBuf::from(&dir).join(format!("{stem}-qevo-{t}.gguf"));
        let s = export_gguf(&m, &resolved, &RoundingInputs::default(), &out).unwrap();
        println!(
            "exported {} ({} planned bytes, {} tensors written in a fallback type)",
            out.display(),
            s.planned_tensor_bytes,
            s.fallbacks.len()
        );
    }
}
