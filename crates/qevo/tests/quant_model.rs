//! Plans, the weight cache, activation fake-quant and the importance matrix on a small
//! random-weight Llama (hidden 256, so every GGML format applies).

mod common;

use common::*;
use qevo::calib::{calibrate_act_ranges, collect_imatrix, ActQuantHook, ActScheme, TokenWindows};
use qevo::eval::{Reference, WeightCache};
use qevo::model::{Model, NoHook};
use qevo::plan::TensorPlan;
use qevo::quant::*;

fn model(hidden: usize) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let o = LlamaOpts {
        hidden,
        inter: 2 * hidden,
        vocab: 96,
        ..Default::default()
    };
    write_llama_dir(dir.path(), &o, 11);
    let m = Model::load(dir.path()).unwrap();
    (dir, m)
}

fn windows(n: usize) -> TokenWindows {
    let ids: Vec<u32> = (0..n * 32).map(|i| ((i * 53 + 7) % 96) as u32).collect();
    TokenWindows::from_tokens(&ids, 32, n).unwrap()
}

#[test]
fn uniform_plan_size_is_exact_and_serde_round_trips() {
    let (_d, m) = model(256);
    let f = WeightFormat::parse("q4_k").unwrap();
    let plan = TensorPlan::uniform(&m, f, 8).unwrap();
    let want: u64 = m
        .tensors
        .iter()
        .map(|t| (t.rows * t.cols / 256 * 144) as u64)
        .sum();
    assert_eq!(plan.size_bytes(&m), want);
    assert_eq!(plan.bits_per_weight(&m), 4.5);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains("\"q4_k\""), "{json}");
    let back: TensorPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    assert_eq!(plan.choice("blk.0.attn_q.weight").unwrap().format, f);
    assert!(plan.choice("nope").is_none());
}

#[test]
fn plan_validation_names_the_tensor_at_fault() {
    let (_d, m) = model(64);
    // Rows of 64 and 128: q4_k is written as llama.cpp's fallback, q5_0, and iq1_s as
    // iq4_nl (which needs no importance matrix).
    let plan = TensorPlan::uniform(&m, WeightFormat::parse("q4_k").unwrap(), 16).unwrap();
    assert!(plan
        .resolved(&m)
        .unwrap()
        .iter()
        .all(|r| r.fell_back() && r.written == WeightFormat::parse("q5_0").unwrap()));
    let iq1 = TensorPlan::uniform(&m, WeightFormat::parse("iq1_s").unwrap(), 16).unwrap();
    assert!(iq1
        .resolved(&m)
        .unwrap()
        .iter()
        .all(|r| r.written == WeightFormat::parse("iq4_nl").unwrap()));

    let mut plan =
        TensorPlan::uniform(&m, WeightFormat::parse("int4-sym-g32").unwrap(), 16).unwrap();
    plan.entries[0].0 = "blk.9.attn_q.weight".into();
    let e = plan.validate(&m).unwrap_err().to_string();
    assert!(
        e.contains("blk.9.attn_q.weight") && e.contains("does not have"),
        "{e}"
    );

    let mut plan = TensorPlan::uniform(&m, WeightFormat::parse("q8_0").unwrap(), 16).unwrap();
    let (missing, _) = plan.entries.pop().unwrap();
    let e = plan.validate(&m).unwrap_err().to_string();
    assert!(e.contains(&missing) && e.contains("no entry"), "{e}");

    let mut plan = TensorPlan::uniform(&m, WeightFormat::parse("q8_0").unwrap(), 16).unwrap();
    plan.entries[1].1.act_bits = 6;
    assert!(plan
        .validate(&m)
        .unwrap_err()
        .to_string()
        .contains("activation bits 6"));

    let mut plan = TensorPlan::uniform(&m, WeightFormat::parse("q8_0").unwrap(), 16).unwrap();
    let dup = plan.entries[0].clone();
    plan.entries.push(dup);
    assert!(plan.validate(&m).unwrap_err().to_string().contains("twice"));
}

#[test]
fn cache_counts_hits_and_misses_and_matches_direct_quantization() {
    let (_d, m) = model(256);
    let cache = WeightCache::new(usize::MAX);
    let f = WeightFormat::parse("int4-asym-g64").unwrap();
    let a = cache.get(&m, 1, f).unwrap();
    let b = cache.get(&m, 1, f).unwrap();
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    assert_eq!(s.bytes, m.tensors[1].params() * 4);
    let want = f
        .fake_quant(
            &m.weight_values(1).unwrap(),
            m.tensors[1].rows,
            m.tensors[1].cols,
            None,
        )
        .unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    assert_eq!(b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
}

#[test]
fn cache_evicts_least_recently_used_within_budget() {
    let (_d, m) = model(256);
    let one = m.tensors[1].params() * 4;
    assert_eq!(m.tensors[1].params(), m.tensors[4].params());
    let f = WeightFormat::parse("q8_0").unwrap();
    let g = WeightFormat::parse("int8-sym-channel").unwrap();
    // q8_0 is held as its block bytes, the int8 format as f32: room for one of each.
    let (rows, cols) = (m.tensors[1].rows, m.tensors[1].cols);
    let q8 = f.tensor_bytes(rows, cols).unwrap() as usize;
    let cache = WeightCache::new(one + q8);
    cache.get(&m, 1, f).unwrap();
    cache.get(&m, 1, g).unwrap();
    cache.get(&m, 1, f).unwrap(); // hit: (1, g) is now the oldest
    cache.get(&m, 4, f).unwrap(); // evicts (1, g)
    let s = cache.stats();
    assert!(s.bytes <= 2 * one && s.entries == 2, "{s:?}");
    cache.get(&m, 1, f).unwrap(); // still there
    cache.get(&m, 1, g).unwrap(); // was evicted
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (2, 4));
}

#[test]
fn prefill_then_weights_for_is_all_hits() {
    let (_d, m) = model(256);
    let cache = WeightCache::new(usize::MAX);
    let f = WeightFormat::parse("q4_0").unwrap();
    let pairs: Vec<_> = (0..m.tensors.len()).map(|i| (i, f)).collect();
    cache.prefill(&m, &pairs).unwrap();
    let misses = cache.stats().misses;
    let plan = TensorPlan::uniform(&m, f, 16).unwrap();
    let w = cache.weights_for(&m, &plan).unwrap();
    m.check_weights(&w).unwrap();
    let s = cache.stats();
    assert_eq!(s.misses, misses);
    assert_eq!(s.hits, m.tensors.len() as u64);
}

#[test]
fn cache_holds_ggml_types_as_block_bytes_and_decodes_the_fake_quantized_values() {
    let (_d, m) = model(256);
    let cache = WeightCache::new(usize::MAX);
    let f = WeightFormat::parse("q4_k").unwrap();
    let (rows, cols) = (m.tensors[1].rows, m.tensors[1].cols);
    let a = cache.get(&m, 1, f).unwrap();
    let b = cache.get(&m, 1, f).unwrap();
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    // 4.5 bits a weight held, not 32.
    assert_eq!(s.bytes as u64, f.tensor_bytes(rows, cols).unwrap());
    let want = f
        .fake_quant(&m.weight_values(1).unwrap(), rows, cols, None)
        .unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    assert_eq!(b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
}

#[test]
fn non_finite_weight_is_an_error_naming_the_tensor() {
    let (_d, mut m) = model(256);
    let i = m.tensor_index("blk.1.ffn_down.weight").unwrap();
    let mut v = m.weight_values(i).unwrap();
    v[3] = f32::NAN;
    let t = candle_core::Tensor::from_vec(
        v,
        (m.tensors[i].rows, m.tensors[i].cols),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    m.weights.set(i, t).unwrap();
    let cache = WeightCache::new(usize::MAX);
    let plan = TensorPlan::uniform(&m, WeightFormat::parse("q6_k").unwrap(), 16).unwrap();
    let e = cache.weights_for(&m, &plan).unwrap_err().to_string();
    assert!(
        e.contains("blk.1.ffn_down.weight") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn activation_quant_16_bits_is_identity_and_fewer_bits_cost_more() {
    let (_d, m) = model(256);
    let calib = windows(4);
    let reference = Reference::build(&m, windows(4), 16).unwrap();
    let ranges = calibrate_act_ranges(&m, &calib, None).unwrap();
    assert!(
        ranges.ranges[0].is_none(),
        "untied embedding is no linear input"
    );
    assert!(ranges.ranges[1..].iter().all(|r| r.is_some()));
    let n = m.tensors.len();
    let fp = reference.score(&m, &m.weights, &NoHook).unwrap();
    let h16 = ActQuantHook::new(&ranges, vec![16; n], ActScheme::Sym);
    assert_eq!(reference.score(&m, &m.weights, &h16).unwrap(), fp);
    let mut last = 0.0;
    for bits in [8u8, 4] {
        for scheme in [ActScheme::Sym, ActScheme::Asym] {
            let h = ActQuantHook::new(&ranges, vec![bits; n], scheme);
            let kl = reference.score(&m, &m.weights, &h).unwrap().kl;
            assert!(kl > 0.0 && kl.is_finite(), "{bits} {scheme:?}");
            if scheme == ActScheme::Sym {
                assert!(kl > last, "{bits}-bit KL {kl} not above {last}");
                last = kl;
            }
        }
    }
}

#[test]
fn percentile_ranges_lie_inside_min_max() {
    let (_d, m) = model(64);
    let w = windows(3);
    let mm = calibrate_act_ranges(&m, &w, None).unwrap();
    let pc = calibrate_act_ranges(&m, &w, Some(99.9)).unwrap();
    for (a, b) in mm.ranges.iter().zip(&pc.ranges) {
        if let (Some(a), Some(b)) = (a, b) {
            assert!(b.0 >= a.0 && b.1 <= a.1 && b.0 < b.1, "{a:?} {b:?}");
        }
    }
    assert!(calibrate_act_ranges(&m, &w, Some(20.0)).is_err());
}

#[test]
fn imatrix_has_one_positive_value_per_input_column() {
    let (_d, m) = model(256);
    let im = collect_imatrix(&m, &windows(2))
        .unwrap()
        .for_model(&m)
        .unwrap();
    assert_eq!(im.len(), m.tensors.len());
    // token_embd is a lookup (llama-imatrix has no entry for it, even when tied).
    assert!(im[0].is_none());
    for (t, v) in m.tensors.iter().zip(&im).skip(1) {
        if !t.name.starts_with("blk.") && t.name != "output.weight" {
            continue;
        }
        let v = v.as_ref().unwrap();
        assert_eq!(v.len(), t.cols, "{}", t.name);
        assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0) && v.iter().any(|x| *x > 0.0));
    }
    // The cache quantizes K-quants with it.
    let f = WeightFormat::parse("q3_k").unwrap();
    let plain = WeightCache::new(usize::MAX).get(&m, 1, f).unwrap();
    let weighted = WeightCache::new(usize::MAX)
        .with_rounding(qevo::quant::RoundingInputs::imatrix(im))
        .get(&m, 1, f)
        .unwrap();
    let a = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = weighted.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(a, b);
}

#[test]
fn quantized_plan_scores_worse_than_fp_and_q8_beats_q2() {
    let (_d, m) = model(256);
    let reference = Reference::build(&m, windows(4), 16).unwrap();
    let cache = WeightCache::new(usize::MAX);
    let mut kls = Vec::new();
    for name in ["q8_0", "q4_k", "q2_k"] {
        let plan = TensorPlan::uniform(&m, WeightFormat::parse(name).unwrap(), 16).unwrap();
        let w = cache.weights_for(&m, &plan).unwrap();
        kls.push(reference.score(&m, &w, &NoHook).unwrap().kl);
    }
    assert!(
        kls[0] > 0.0 && kls[0] < kls[1] && kls[1] < kls[2],
        "{kls:?}"
    );
}
