//! The top-k + tail KL that the reference keeps against the exact KL over the whole
//! vocabulary, on the embedded model quantized to q4_k and q2_k: the approximation is a
//! lower bound and must stay within a few percent of the exact value at k = 64.

use qevo::eval::{exact_kl, for_each_logits, Reference, TokenWindows};
use qevo::model::{Model, NoHook};
use qevo::quant::{GgmlType, TensorPlan, WeightCache, WeightFormat};
use std::path::Path;

#[test]
fn topk_kl_error_is_small() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let m = Model::load(&dir).unwrap();
    let windows = TokenWindows::from_text(&m, qevo::assets::CALIB_TEXT, 128, 4).unwrap();
    let vocab = m.arch.vocab();
    let mut fp = Vec::new();
    for_each_logits(&m, &m.weights, &NoHook, &windows, 0..windows.len(), 4, |_, l| {
        fp.extend_from_slice(l);
        Ok(())
    })
    .unwrap();
    for (t, k, max_rel) in [(GgmlType::Q4K, 64, 0.05), (GgmlType::Q2K, 64, 0.05), (GgmlType::Q4K, 8, 0.5)] {
        let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(t), 16).unwrap();
        let w = WeightCache::new(usize::MAX).weights_for(&m, &plan).unwrap();
        let mut q = Vec::new();
        for_each_logits(&m, &w, &NoHook, &windows, 0..windows.len(), 4, |_, l| {
            q.extend_from_slice(l);
            Ok(())
        })
        .unwrap();
        let exact = exact_kl(&fp, &q, vocab);
        let approx = Reference::build(&m, windows.clone(), k).unwrap().score(&m, &w, &NoHook).unwrap().kl;
        let rel = (exact - approx) / exact;
        println!("{t} k={k}: exact KL {exact:.6}, top-k+tail {approx:.6}, relative gap {rel:.4}");
        assert!(approx <= exact * (1.0 + 1e-6), "top-k + tail must not exceed the exact KL");
        assert!(rel <= max_rel, "{t} k={k}: gap {rel}");
    }
}
