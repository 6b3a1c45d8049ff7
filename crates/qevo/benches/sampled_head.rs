//! The sampled output layer against the full one (`eval::head`): the same plan scored in
//! one process on the same windows through a full reference and a sampled one, a whole
//! pass each (a prefix-cached score runs fewer blocks and the same head, so gains more).
//! Printed: seconds of each, the speed-up as a ratio, and the two KLs with their
//! relative difference.
//!
//! Measured (AMD EPYC, 2 cores, quiet): Gemma-3-270M, 2 windows of 512, uniform q4_k:
//! full head 5.57 s, sampled 2.78 s (2.00×); KL 0.27095 against 0.26215 (−3.25%).
//!
//! Run: `cargo bench -p qevo --bench sampled_head -- MODEL [WINDOWS] [FORMAT]` (defaults:
//! 2 windows of 512 tokens of the embedded calibration text, uniform q4_k).

use qevo::calib::TokenWindows;
use qevo::eval::head::SAMPLE_ROWS;
use qevo::eval::{auto_topk, PlanWeights, Reference, WeightCache};
use qevo::model::{Model, NoHook};
use qevo::quant::WeightFormat;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = args.first().map(std::path::PathBuf::from);
    let windows: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let format = args.get(2).map_or("q4_k", String::as_str);
    let model = match &path {
        Some(p) => Model::load(p),
        None => Model::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets"
        ))),
    }
    .expect("model");
    let seq = 512.min(model.arch.max_positions());
    let text = qevo::assets::CALIB_TEXT;
    let w = TokenWindows::from_text(&model, text, seq, windows).expect("windows");
    let k = auto_topk(model.arch.vocab(), w.tokens(), 64);
    let full = Reference::build(&model, w.clone(), k).expect("full reference");
    let sampled = Reference::build_sampled(&model, w, k, SAMPLE_ROWS).expect("sampled");
    let f = WeightFormat::parse(format).expect("format");
    let cache = WeightCache::new(4 << 30);
    let formats = vec![f; model.tensors.len()];
    let plan = PlanWeights::new(&cache, &model, formats).expect("plan");
    // Warm the weight cache so neither score pays for quantizing.
    full.score_weights(&model, &plan, &NoHook).expect("warm");
    let time = |r: &Reference| {
        let t = Instant::now();
        let m = r.score_weights(&model, &plan, &NoHook).expect("score");
        (t.elapsed().as_secs_f64(), m.kl)
    };
    let (tf, kf) = time(&full);
    let (ts, ks) = time(&sampled);
    println!(
        "{} windows of {seq}, vocab {}, top-{k} + {SAMPLE_ROWS} rows, uniform {format}",
        full.windows.len(),
        model.arch.vocab()
    );
    println!(
        "whole pass: full head {tf:.2} s, sampled head {ts:.2} s: {:.2}x",
        tf / ts
    );
    println!(
        "KL: full {kf:.5}, sampled {ks:.5} ({:+.2}%)",
        100.0 * (ks - kf) / kf
    );
}
