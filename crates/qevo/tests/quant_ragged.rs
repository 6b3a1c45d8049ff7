//! Every format applies to every shape: generic group formats on rows that are not a
//! multiple of the group size (ragged last group: its own scale and zero, exact sizes,
//! packed layout and packed-safetensors round trip), and GGML types whose block does not
//! divide the row (llama.cpp's fallbacks, through `WeightFormat::resolve`).

use qevo::eval::WeightCache;
use qevo::export::export_safetensors;
use qevo::model::synthetic::{write_llama_dir, LlamaShape};
use qevo::model::Model;
use qevo::plan::TensorPlan;
use qevo::quant::{GgmlType, IntFormat, Scheme, WeightFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Widths of real small models that no group size of 128 divides.
const WIDTHS: [usize; 4] = [576, 640, 896, 960];

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn group_formats() -> Vec<(WeightFormat, IntFormat, usize)> {
    WeightFormat::all()
        .into_iter()
        .filter_map(|f| match f {
            WeightFormat::Int(i) => match i.granularity {
                qevo::quant::Granularity::Group(g) => Some((f, i, g as usize)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn ragged_rows_round_trip_through_pack_and_unpack() {
    let rows = 3;
    for cols in WIDTHS {
        let x = data(rows * cols, cols as u64);
        for (f, _, _) in group_formats() {
            assert!(f.applies_to(rows, cols), "{f} at {cols}");
            let fake = f.fake_quant(&x, rows, cols, None).unwrap();
            let p = f.quantize(&x, rows, cols, None).unwrap();
            assert_eq!(p.format, f, "{f}: no fallback for generic formats");
            let back = f.dequantize(&p).unwrap();
            let diff = fake
                .iter()
                .zip(&back)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(diff, None, "{f} at {cols}: fake-quant and unpack differ");
        }
    }
}

#[test]
fn ragged_sizes_are_exact_to_the_byte() {
    let rows = 5;
    for cols in WIDTHS {
        for (f, i, g) in group_formats() {
            let groups = rows * cols.div_ceil(g);
            let b = i.bits as usize;
            let (scale, zeros) = match i.scheme {
                Scheme::Sym => (2, 0),
                Scheme::Asym => (2, (groups * b).div_ceil(8)),
                Scheme::Pow2 => (1, 0),
            };
            let want = groups * scale + zeros + (rows * cols * b).div_ceil(8);
            assert_eq!(
                f.tensor_bytes(rows, cols),
                Some(want as u64),
                "{f} at {cols}"
            );
            assert_eq!(i.group_count(rows, cols), groups, "{f} at {cols}");
            let p = f.quantize(&data(rows * cols, 1), rows, cols, None).unwrap();
            assert_eq!(p.bytes.len(), want, "{f} at {cols}");
            let bpw = f.bits_per_weight(cols) * (rows * cols) as f64 / 8.0;
            let bpw_bytes = (groups * scale) as f64
                + (groups * b) as f64 / 8.0 * (zeros > 0) as u8 as f64
                + (rows * cols * b) as f64 / 8.0;
            assert!(
                (bpw - bpw_bytes).abs() < 1e-6,
                "{f} at {cols}: {bpw} vs {bpw_bytes}"
            );
        }
    }
}

#[test]
fn ragged_last_group_scale_comes_from_its_own_values() {
    // 576 = 4·128 + 64: large values in the full groups, small ones in the ragged group.
    let (rows, cols) = (2, 576);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let c = i % cols;
            let v = ((i * 37 % 101) as f32 / 50.0) - 1.0;
            if c >= 512 {
                v * 1e-3
            } else {
                v * 10.0
            }
        })
        .collect();
    for name in ["int4-asym-g128", "int4-sym-g128", "int4-pow2-g128"] {
        let f = WeightFormat::parse(name).unwrap();
        let y = f.fake_quant(&x, rows, cols, None).unwrap();
        for r in 0..rows {
            let tail = r * cols + 512..(r + 1) * cols;
            let amax = x[tail.clone()].iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = x[tail.clone()]
                .iter()
                .zip(&y[tail])
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            // A 4-bit grid over the tail's own range: error ≤ one step (≈ 2·amax/7);
            // a scale shared with the large groups would round the tail to zero.
            assert!(
                err <= 2.0 * amax / 7.0,
                "{name} row {r}: err {err}, amax {amax}"
            );
            assert!(err < 0.5 * amax, "{name} row {r}");
        }
    }
}

#[test]
fn ggml_fallback_bytes_equal_the_fallback_type() {
    let (rows, cols) = (4, 576);
    let x = data(rows * cols, 9);
    for (t, fb) in [
        (GgmlType::Q4K, GgmlType::Q5_0),
        (GgmlType::Q5K, GgmlType::Q5_1),
        (GgmlType::Q6K, GgmlType::Q8_0),
        (GgmlType::Q3K, GgmlType::Q4_0),
        (GgmlType::Q2K, GgmlType::Q4_0),
    ] {
        let f = WeightFormat::Ggml(t);
        let r = f.resolve(rows, cols).unwrap();
        assert!(r.fell_back() && r.written == WeightFormat::Ggml(fb), "{t}");
        let ours = f.quantize(&x, rows, cols, None).unwrap();
        let direct = WeightFormat::Ggml(fb)
            .quantize(&x, rows, cols, None)
            .unwrap();
        assert_eq!(ours, direct, "{t}");
        assert_eq!(f.tensor_bytes(rows, cols), Some(direct.bytes.len() as u64));
        assert_eq!(
            f.fake_quant(&x, rows, cols, None).unwrap(),
            WeightFormat::Ggml(fb).dequantize(&direct).unwrap()
        );
    }
}

/// A random llama whose hidden size (576) and FFN width (960) no 128-group or 256-block
/// divides, like SmolLM2-135M.
fn model_576(dir: &std::path::Path) -> Model {
    let o = LlamaShape {
        hidden: 576,
        inter: 960,
        layers: 1,
        heads: 9,
        kv_heads: 3,
        vocab: 128,
        ..LlamaShape::default()
    };
    write_llama_dir(dir, &o, 11).unwrap();
    Model::load(dir).unwrap()
}

#[test]
fn quantize_int4_asym_g128_accepts_a_576_wide_model() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_576(&tmp.path().join("src"));
    let f = WeightFormat::parse("int4-asym-g128").unwrap();
    // What `qevo quantize --format int4-asym-g128` builds and scores.
    let plan = TensorPlan::uniform(&m, f, 16).unwrap();
    let w = WeightCache::new(usize::MAX).weights_for(&m, &plan).unwrap();
    assert_eq!(w.len(), m.tensors.len());
    let want: u64 = m
        .tensors
        .iter()
        .map(|t| f.tensor_bytes(t.rows, t.cols).unwrap())
        .sum();
    assert_eq!(plan.size_bytes(&m), want);
    // The packed safetensors hold the same values bit for bit.
    let out = tmp.path().join("out");
    let s = export_safetensors(&m, &plan, &out).unwrap();
    assert_eq!(s.planned_tensor_bytes, want);
    let back = Model::load(&out).unwrap();
    for ((a, b), t) in w.iter().zip(&back.weights).zip(&m.tensors) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.values().unwrap();
        let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{}: file differs from memory", t.name);
    }
}

#[test]
fn uniform_k_quant_plan_on_a_576_wide_model_prices_its_fallbacks() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_576(tmp.path());
    let plan = TensorPlan::uniform(&m, WeightFormat::Ggml(GgmlType::Q4K), 16).unwrap();
    let resolved = plan.resolved(&m).unwrap();
    let mut want = 0u64;
    for (r, t) in resolved.iter().zip(&m.tensors) {
        // Every row here is 576 or 960 wide: 32 divides both, 256 neither.
        assert!(r.fell_back(), "{}", t.name);
        assert_eq!(r.written, WeightFormat::Ggml(GgmlType::Q5_0), "{}", t.name);
        want += GgmlType::Q5_0.tensor_bytes(t.rows, t.cols).unwrap() as u64;
    }
    assert_eq!(plan.size_bytes(&m), want);
    WeightCache::new(usize::MAX).weights_for(&m, &plan).unwrap();
}
