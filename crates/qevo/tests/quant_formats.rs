//! Weight formats: round-trip error under per-format ceilings (the idea of ggml's
//! test-quantize-fns), property tests over random shapes and values, and the edge cases
//! (zero and constant rows, huge outliers, denormals, NaN/Inf, scale overflow).

use proptest::prelude::*;
use qevo::quant::{GgmlType, Granularity, IntFormat, Scheme, WeightFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box–Muller: the rand crate's normal distribution lives in rand_distr.
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    (a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64)
        .sqrt()
}

/// Ceiling of the round-trip RMSE on standard-normal data (64 × 256), per GGML type.
/// Each is about 1.3× the value measured when the table was written (seed 1).
const GGML_RMSE: [(GgmlType, f64); 19] = [
    (GgmlType::F32, 0.0),
    (GgmlType::F16, 3e-4),
    (GgmlType::BF16, 2.5e-3),
    (GgmlType::Q8_0, 7e-3),
    (GgmlType::Q6K, 2.4e-2),
    (GgmlType::Q5K, 4.8e-2),
    (GgmlType::Q5_1, 4.9e-2),
    (GgmlType::Q5_0, 5.5e-2),
    (GgmlType::Q4K, 9.7e-2),
    (GgmlType::Q4_1, 1.0e-1),
    (GgmlType::Q4_0, 1.1e-1),
    (GgmlType::Q3K, 2.0e-1),
    (GgmlType::Q2K, 3.8e-1),
    (GgmlType::Iq4Nl, 1.0e-1),
    (GgmlType::Iq4Xs, 1.0e-1),
    (GgmlType::Iq3S, 2.0e-1),
    (GgmlType::Iq3Xxs, 2.5e-1),
    (GgmlType::Iq2S, 3.5e-1),
    (GgmlType::Iq1M, 7.5e-1),
];

/// Ceiling for generic formats on the same data: the RMSE of uniform rounding
/// (step/√12) with the step a group's range implies, times a safety factor. `amax` is a
/// generous bound of the group maximum of 64·256 standard normals per granularity.
fn int_rmse_ceiling(f: IntFormat) -> f64 {
    let amax = match f.granularity {
        Granularity::Tensor => 5.0,
        Granularity::Channel => 4.0,
        Granularity::Group(_) => 3.5,
    };
    let qmax = ((1 << (f.bits - 1)) - 1) as f64;
    let step = match f.scheme {
        Scheme::Sym => amax / qmax,
        Scheme::Pow2 => 2.0 * amax / qmax,
        Scheme::Asym => 2.0 * amax / ((1 << f.bits) - 1) as f64,
    };
    // Rounding error never exceeds the data's own RMS (1): at 2 bits most values round to 0.
    (1.3 * step / 12f64.sqrt()).min(1.05)
}

/// Every format that quantizes without an importance matrix (all but iq2_xxs / iq2_xs).
fn plain_formats() -> Vec<WeightFormat> {
    WeightFormat::all()
        .into_iter()
        .filter(|f| !f.requires_imatrix())
        .collect()
}

#[test]
fn round_trip_rmse_is_under_each_formats_ceiling() {
    let (rows, cols) = (64, 256);
    let x = normal(rows * cols, 1);
    let mut report = Vec::new();
    for f in plain_formats() {
        let y = f.fake_quant(&x, rows, cols, None).unwrap();
        let e = rmse(&x, &y);
        let ceiling = match f {
            WeightFormat::Ggml(t) => GGML_RMSE.iter().find(|r| r.0 == t).unwrap().1,
            WeightFormat::Int(i) => int_rmse_ceiling(i),
        };
        report.push(format!(
            "{f}: {e:.5} (ceiling {ceiling:.5}){}",
            if e > ceiling { " FAIL" } else { "" }
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        !report.iter().any(|r| r.ends_with("FAIL")),
        "{}",
        report.join("\n")
    );
}

#[test]
fn more_bits_never_raise_group_rmse() {
    let x = normal(32 * 256, 2);
    for scheme in [Scheme::Sym, Scheme::Asym, Scheme::Pow2] {
        let mut last = f64::INFINITY;
        for bits in 2..=8 {
            let f = WeightFormat::Int(IntFormat {
                bits,
                scheme,
                granularity: Granularity::Group(32),
            });
            let e = rmse(&x, &f.fake_quant(&x, 32, 256, None).unwrap());
            assert!(e < last, "{f}: {e} >= {last}");
            last = e;
        }
    }
}

#[test]
fn zero_rows_stay_zero_in_every_format() {
    let x = vec![0f32; 4 * 256];
    for f in plain_formats() {
        let y = f.fake_quant(&x, 4, 256, None).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{f}");
    }
}

/// Worst relative error of reproducing a group's largest value: half a step for scales
/// that fit the value (sym/asym up to f16 rounding), a whole step when pow2 rounds the
/// scale up to a power of two. GGML K-quants add 6-bit sub-scale and min quantization.
fn max_value_tolerance(f: WeightFormat) -> f32 {
    match f {
        WeightFormat::Int(i) => {
            let qmax = ((1 << (i.bits - 1)) - 1) as f32;
            match i.scheme {
                Scheme::Pow2 => 1.0 / qmax,
                _ => 0.5 / qmax + 2e-3,
            }
        }
        // iq3_* / iq2_* / iq1_*: magnitudes snap to a lattice under a 4-bit (iq1: 3-bit)
        // sub-scale times llama.cpp's fudge factor (iq1_m: 1.1125, so a constant lands about
        // 11% off), so a constant group lands up to a quarter off.
        WeightFormat::Ggml(t)
            if ["iq3", "iq2", "iq1"]
                .iter()
                .any(|p| t.name().starts_with(p)) =>
        {
            0.35
        }
        WeightFormat::Ggml(_) => match f.compute_bits() {
            2 | 3 => 0.1,
            _ => 0.02,
        },
    }
}

fn check_all(bad: Vec<String>) {
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn constant_rows_are_reproduced_closely() {
    let mut bad = Vec::new();
    for c in [0.37f32, -2.5] {
        let x = vec![c; 4 * 256];
        // Every format, K-quants included: llama.cpp's current quantizers (which qevo's
        // are) keep a constant sub-block's value (candle's older ports zeroed it).
        for f in plain_formats() {
            let y = f.fake_quant(&x, 4, 256, None).unwrap();
            let err = y.iter().map(|v| (v - c).abs()).fold(0f32, f32::max) / c.abs();
            if err > max_value_tolerance(f) {
                bad.push(format!("{f} on constant {c}: relative error {err}"));
            }
        }
    }
    check_all(bad);
}

#[test]
fn huge_outliers_are_kept_and_stay_finite() {
    let mut x = normal(4 * 256, 3);
    x[37] = 1.0e4;
    x[300] = -3.0e3;
    let mut bad = Vec::new();
    for f in plain_formats() {
        let y = f.fake_quant(&x, 4, 256, None).unwrap();
        if !y.iter().all(|v| v.is_finite()) {
            bad.push(format!("{f}: non-finite output"));
        }
        // The outlier sets its group's scale, so it is reproduced like a group maximum.
        let rel = (y[37] - x[37]).abs() / x[37];
        let tol = max_value_tolerance(f).max(if f.compute_bits() <= 3 { 0.35 } else { 0.0 });
        if rel > tol {
            bad.push(format!(
                "{f}: outlier 1e4 reconstructed as {} ({rel} > {tol})",
                y[37]
            ));
        }
    }
    check_all(bad);
}

#[test]
fn denormal_inputs_give_finite_tiny_outputs() {
    let x: Vec<f32> = (0..4 * 256)
        .map(|i| {
            f32::from_bits(1 + (i as u32 * 7919) % 100_000) * if i % 2 == 0 { 1.0 } else { -1.0 }
        })
        .collect();
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let mut bad = Vec::new();
    for f in plain_formats() {
        let y = f.fake_quant(&x, 4, 256, None).unwrap();
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Nothing may blow up: outputs stay finite and no further from the input than the
        // input's own magnitude (most formats flush such values to zero).
        if !y.iter().all(|v| v.is_finite()) || err > amax {
            bad.push(format!("{f}: error {err:e} (amax {amax:e})"));
        }
    }
    check_all(bad);
}

#[test]
fn nan_and_inf_give_an_error_naming_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = normal(4 * 256, 4);
        x[256 + 5] = bad;
        for f in plain_formats() {
            let e = f
                .quantize_named("blk.2.ffn_up.weight", &x, 4, 256, None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("blk.2.ffn_up.weight") && e.contains("row 1, column 5"),
                "{f}: {e}"
            );
            let e = f
                .fake_quant_named("blk.2.ffn_up.weight", &x, 4, 256, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("blk.2.ffn_up.weight"), "{f}: {e}");
        }
    }
}

#[test]
fn values_beyond_f16_scales_give_an_error_not_garbage() {
    let x = vec![1.0e6f32; 256];
    let f = WeightFormat::parse("int2-sym-tensor").unwrap();
    let e = f
        .quantize_named("token_embd.weight", &x, 1, 256, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token_embd.weight") && e.contains("scale range"),
        "{e}"
    );
    // Power-of-two scales reach far beyond f16 and handle it.
    let p = WeightFormat::parse("int2-pow2-tensor").unwrap();
    let y = p.fake_quant(&x, 1, 256, None).unwrap();
    assert!(y.iter().all(|&v| (v - 1.0e6).abs() <= 1.0e6), "{}", y[0]);
}

#[test]
fn empty_shape_and_bad_imatrix_are_errors() {
    let e = WeightFormat::parse("q4_k")
        .unwrap()
        .quantize_named("t", &[], 0, 96, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty") && e.contains('t'), "{e}");
    let x = normal(2 * 256, 5);
    let e = WeightFormat::parse("q4_k")
        .unwrap()
        .quantize_named("t", &x, 2, 256, Some(&[1.0; 100]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("importance"), "{e}");
}

#[test]
fn imatrix_is_used_where_llama_cpp_uses_it_and_ignored_by_others() {
    let x = normal(8 * 256, 6);
    let mut im = vec![1.0f32; 256];
    for (i, v) in im.iter_mut().enumerate() {
        *v = if i % 7 == 0 { 50.0 } else { 0.5 };
    }
    for t in GgmlType::ALL.into_iter().filter(|t| !t.requires_imatrix()) {
        let f = WeightFormat::Ggml(t);
        let with = f.quantize(&x, 8, 256, Some(&im)).unwrap();
        let without = f.quantize(&x, 8, 256, None).unwrap();
        assert_eq!(with.bytes != without.bytes, t.supports_imatrix(), "{t}");
    }
    // An all-zero importance (unused tensor) falls back to the plain quantizer.
    let f = WeightFormat::parse("q4_k").unwrap();
    assert_eq!(
        f.quantize(&x, 8, 256, Some(&[0.0; 256])).unwrap(),
        f.quantize(&x, 8, 256, None).unwrap()
    );
}

#[test]
fn packed_bytes_decode_to_fake_quant_for_every_format() {
    let x = normal(6 * 256, 7);
    for f in plain_formats() {
        let p = f.quantize(&x, 6, 256, None).unwrap();
        assert_eq!(p.bytes.len() as u64, f.tensor_bytes(6, 256).unwrap(), "{f}");
        let d = f.dequantize(&p).unwrap();
        let fq = f.fake_quant(&x, 6, 256, None).unwrap();
        assert!(
            d.iter().zip(&fq).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{f}"
        );
        let mut short = p.clone();
        short.bytes.pop();
        assert!(f.dequantize(&short).is_err(), "{f}");
    }
}

fn int_formats() -> Vec<IntFormat> {
    plain_formats()
        .into_iter()
        .filter_map(|f| match f {
            WeightFormat::Int(i) => Some(i),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Generic formats: pack → unpack equals fake_quant bit for bit, the size is exact, and
    /// every value is within the scheme's error bound of its input.
    #[test]
    fn int_formats_round_trip_within_their_bound(
        fi in 0usize..105,
        rows in 1usize..5,
        cols_i in 0usize..8,
        log_scale in -6.0f32..6.0,
        seed in any::<u64>(),
    ) {
        let f = int_formats()[fi];
        // 96, 200 and 576 leave a ragged last group for some group sizes.
        let cols = [32usize, 64, 96, 128, 200, 256, 384, 576][cols_i];
        let scale = 10f32.powf(log_scale / 2.0);
        let x: Vec<f32> = normal(rows * cols, seed).iter().map(|v| v * scale).collect();
        let w = WeightFormat::Int(f);
        prop_assume!(w.applies_to(rows, cols));
        let p = w.quantize(&x, rows, cols, None);
        prop_assert!(p.is_ok(), "{} [{}, {}]: {:?}", w, rows, cols, p.err());
        let p = p.unwrap();
        prop_assert_eq!(p.bytes.len() as u64, w.tensor_bytes(rows, cols).unwrap());
        let d = w.dequantize(&p).unwrap();
        let fq = w.fake_quant(&x, rows, cols, None).unwrap();
        prop_assert!(d.iter().zip(&fq).all(|(a, b)| a.to_bits() == b.to_bits()));
        let glen = f.group_len(rows, cols);
        let qmax = ((1 << (f.bits - 1)) - 1) as f32;
        // Groups never cross a row (tensor granularity: one group of everything).
        let row_len = if f.granularity == Granularity::Tensor { glen } else { cols };
        let groups = x
            .chunks(row_len)
            .zip(d.chunks(row_len))
            .flat_map(|(xr, dr)| xr.chunks(glen).zip(dr.chunks(glen)));
        for (g, (xs, ys)) in groups.enumerate() {
            let lo = xs.iter().fold(0f32, |a, &v| a.min(v));
            let hi = xs.iter().fold(0f32, |a, &v| a.max(v));
            let amax = lo.abs().max(hi.abs());
            // Scale rounding up to f16 adds at most 2^-10 relative.
            let bound = match f.scheme {
                Scheme::Sym => 0.5 * amax / qmax * (1.0 + 1e-3),
                Scheme::Pow2 => amax / qmax,
                Scheme::Asym => (hi - lo) / ((1 << f.bits) - 1) as f32 * (1.0 + 1e-3),
            } * 1.0001 + 1e-30;
            for (a, b) in xs.iter().zip(ys) {
                prop_assert!((a - b).abs() <= bound, "{} group {}: {} -> {} (bound {})", w, g, a, b, bound);
            }
        }
    }

    /// GGML formats on random shapes: exact size, finite values, dequantize(quantize) = fake_quant.
    #[test]
    fn ggml_formats_round_trip_on_random_shapes(
        ti in 0usize..13,
        rows in 1usize..4,
        blocks in 1usize..3,
        seed in any::<u64>(),
    ) {
        let t = GgmlType::ALL[ti];
        let cols = blocks * 256;
        let x = normal(rows * cols, seed);
        let f = WeightFormat::Ggml(t);
        let p = f.quantize(&x, rows, cols, None).unwrap();
        prop_assert_eq!(p.bytes.len() as u64, f.tensor_bytes(rows, cols).unwrap());
        let d = f.dequantize(&p).unwrap();
        prop_assert!(d.iter().all(|v| v.is_finite()));
        let fq = f.fake_quant(&x, rows, cols, None).unwrap();
        prop_assert_eq!(d, fq);
    }
}

#[test]
fn ggml_preset_holds_every_type_llama_cpp_loads_and_qevo_quantizes() {
    let preset = qevo::search::space::parse_formats("ggml").unwrap();
    for t in GgmlType::ALL.into_iter().filter(|t| t.is_quantized()) {
        // Types that cannot quantize without an imatrix stay out of the preset.
        assert_eq!(
            preset.contains(&WeightFormat::Ggml(t)),
            !t.requires_imatrix(),
            "{t}"
        );
    }
    assert!(preset.contains(&WeightFormat::Ggml(GgmlType::F16)));
    assert!(preset.iter().all(|f| f.can_quantize()));
    // Types that require an imatrix are chosen by name (and scored with --imatrix).
    let named = qevo::search::space::parse_formats("q4_k,iq1_s").unwrap();
    assert_eq!(named[1], WeightFormat::Ggml(GgmlType::Iq1S));
}

#[test]
fn types_that_need_an_imatrix_refuse_without_one_naming_the_tensor() {
    let x = normal(2 * 256, 9);
    for t in [GgmlType::Iq2Xxs, GgmlType::Iq2Xs, GgmlType::Iq1S] {
        let f = WeightFormat::Ggml(t);
        assert!(f.requires_imatrix());
        let e = f
            .quantize_named("blk.0.ffn_up.weight", &x, 2, 256, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("blk.0.ffn_up.weight") && e.contains("importance matrix"),
            "{e}"
        );
        let im = vec![1.0f32; 256];
        let p = f
            .quantize_named("blk.0.ffn_up.weight", &x, 2, 256, Some(&im))
            .unwrap();
        let y = f.dequantize(&p).unwrap();
        assert!(rmse(&x, &y) < 0.6, "{t}: {}", rmse(&x, &y));
    }
}
