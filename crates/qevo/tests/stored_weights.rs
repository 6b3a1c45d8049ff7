//! Weights held as stored: 16-bit matrices stay 16-bit and every reader sees exactly
//! the values an all-f32 load gives; `Model::inspect` lists from the headers what
//! `Model::load` loads; a plan drawn block by block from a small cache scores the same
//! bits as its whole weight set.

use qevo::calib::TokenWindows;
use qevo::eval::Reference;
use qevo::eval::{PlanWeights, WeightCache};
use qevo::model::{Model, NoHook};
use qevo::plan::TensorPlan;
use qevo::quant::WeightFormat;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn embedded() -> (tempfile::TempDir, PathBuf) {
    let cache = tempfile::tempdir().unwrap();
    let dir = qevo::assets::default_model_dir(cache.path()).unwrap();
    (cache, dir)
}

/// A copy of the HF directory `src` whose f16/bf16 tensors are widened to f32.
fn widened_copy(src: &Path, dst: &Path) {
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in st.tensors() {
        let wide: Vec<u8> = match v.dtype() {
            Dtype::F16 => v
                .data()
                .chunks_exact(2)
                .flat_map(|c| {
                    half::f16::from_le_bytes([c[0], c[1]])
                        .to_f32()
                        .to_le_bytes()
                })
                .collect(),
            Dtype::BF16 => v
                .data()
                .chunks_exact(2)
                .flat_map(|c| {
                    half::bf16::from_le_bytes([c[0], c[1]])
                        .to_f32()
                        .to_le_bytes()
                })
                .collect(),
            _ => v.data().to_vec(),
        };
        data.push((name, v.shape().to_vec(), wide));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
}

fn windows(m: &Model) -> TokenWindows {
    TokenWindows::from_text(m, qevo::assets::HELDOUT_TEXT, 64, 2).unwrap()
}

#[test]
fn f16_weights_stay_f16_and_read_as_an_f32_load_reads_them() {
    let (_c, dir) = embedded();
    let wide_dir = tempfile::tempdir().unwrap();
    widened_copy(&dir, wide_dir.path());
    let half = Model::load(&dir).unwrap();
    let wide = Model::load(wide_dir.path()).unwrap();
    assert!(half.weights.iter().all(|w| w.encoding() == "f16"));
    assert_eq!(half.weight_bytes() * 2, wide.weight_bytes());
    assert_eq!(half.fingerprint, wide.fingerprint);
    for i in 0..half.tensors.len() {
        assert_eq!(
            half.weight_values(i).unwrap(),
            wide.weight_values(i).unwrap()
        );
    }
    // The forward pass and a quantized plan score the same bits.
    let w = windows(&half);
    let fp = |m: &Model| {
        let r = Reference::build(m, w.clone(), 16).unwrap();
        let plan = TensorPlan::uniform(m, WeightFormat::parse("q4_k").unwrap(), 16).unwrap();
        let q = WeightCache::new(usize::MAX).weights_for(m, &plan).unwrap();
        (r.fp.ppl, r.score(m, &q, &NoHook).unwrap())
    };
    let (a, b) = (fp(&half), fp(&wide));
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert_eq!(format!("{:?}", a.1), format!("{:?}", b.1));
}

#[test]
fn inspect_lists_from_the_headers_what_load_loads() {
    let (_c, dir) = embedded();
    let paths = [
        dir,
        fixture("tiny_llama"),
        fixture("tiny_llama/tiny_llama.gguf"),
        fixture("tiny_phi3"),
        fixture("tiny_qwen3"),
        fixture("tiny_gemma2"),
        fixture("tiny_gpt2"),
        fixture("tiny_bert"),
    ];
    for p in paths {
        let s = Model::inspect(&p).unwrap();
        let m = Model::load(&p).unwrap();
        assert_eq!(s.tensors, m.tensors, "{}", p.display());
        assert_eq!(s.stored, m.stored, "{}", p.display());
        assert_eq!(s.aux_params, m.aux_params(), "{}", p.display());
        assert_eq!(s.tied_output, m.tied_output(), "{}", p.display());
        let file_bytes: usize = s.stored.iter().map(|x| x.bytes).sum();
        assert!(file_bytes > 0, "{}", p.display());
    }
}

#[test]
fn a_plan_drawn_block_by_block_from_a_small_cache_scores_the_same_bits() {
    let (_c, dir) = embedded();
    let m = Model::load(&dir).unwrap();
    let r = Reference::build(&m, windows(&m), 16).unwrap();
    let f = WeightFormat::parse("q4_k").unwrap();
    let plan = TensorPlan::uniform(&m, f, 16).unwrap();
    let whole = WeightCache::new(usize::MAX).weights_for(&m, &plan).unwrap();
    let want = r.score(&m, &whole, &NoHook).unwrap();
    // Room for one tensor at a time: every block is made again on each use.
    let small = WeightCache::new(m.tensors[0].params() * 4);
    let formats = vec![f; m.tensors.len()];
    let lazy = PlanWeights::new(&small, &m, formats).unwrap();
    let got = r.score_weights(&m, &lazy, &NoHook).unwrap();
    assert_eq!(format!("{want:?}"), format!("{got:?}"));
    assert!(small.stats().bytes <= m.tensors[0].params() * 4);
}
