//! Quantize+dequantize throughput of every weight format, in GB/s of f32 input, with GGML
//! types compared to candle's `QTensor::quantize` + `dequantize` measured in the same run,
//! and the time to build the full format table (every tensor × every applicable format)
//! of the embedded model (or, if its assets are placeholders, of random tensors with the
//! same shapes), and the dequantize throughput of the IQ types (qevo's own decoders) as a
//! ratio to q4_k's (candle's) in the same run, and the quantize-only throughput of qevo's
//! own GGML quantizers (iq1_s, iq2_xs, iq2_xxs with an importance matrix only) against
//! candle's ports on one thread, as a ratio.
//! Run: `cargo bench --workspace --bench quant` (`-- quantize` or `-- iq` for one group).

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use qevo::quant::{ggml, GgmlType, WeightFormat};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Sum of uniforms: near-normal, cheap.
    (0..n)
        .map(|_| (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0)
        .collect()
}

/// Best wall time of `reps` runs, seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// (name, rows, cols, row-major f32 data) of every quantizable tensor.
type Tensors = Vec<(String, usize, usize, Vec<f32>)>;

fn shapes() -> (String, Tensors) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    if let Ok(m) = qevo::Model::load(&dir) {
        let t = m
            .tensors
            .iter()
            .zip(&m.weights)
            .map(|(i, w)| (i.name.clone(), i.rows, i.cols, w.values().unwrap()))
            .collect();
        return ("embedded model".into(), t);
    }
    let (h, f, v) = (256, 768, 2048);
    let mut t = vec![("token_embd.weight".to_string(), v, h)];
    for b in 0..4 {
        for (n, r, c) in [
            ("attn_q", h, h),
            ("attn_k", 128, h),
            ("attn_v", 128, h),
            ("attn_output", h, h),
            ("ffn_gate", f, h),
            ("ffn_up", f, h),
            ("ffn_down", h, f),
        ] {
            t.push((format!("blk.{b}.{n}.weight"), r, c));
        }
    }
    t.push(("output.weight".to_string(), v, h));
    let t = t
        .into_iter()
        .enumerate()
        .map(|(i, (n, r, c))| (n, r, c, data(r * c, i as u64)))
        .map(|(n, r, c, d)| (n, r, c, d.iter().map(|x| x * 0.05).collect()))
        .collect();
    (
        "random tensors with the embedded model's shapes (assets are placeholders)".into(),
        t,
    )
}

// One piece: a linear list of benchmark groups.
fn main() {
    if std::env::args().any(|a| a == "iq") {
        iq_dequantize();
        return;
    }
    if std::env::args().any(|a| a == "quantize") {
        quantize_vs_candle();
        return;
    }
    let (rows, cols) = (512, 4096);
    let x = data(rows * cols, 1);
    let gb = (x.len() * 4) as f64 / 1e9;
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "input: [{rows}, {cols}] f32 = {:.1} MB; best of 3 runs",
        gb * 1e3
    );
    println!(
        "{:<18} {:>10} {:>14} {:>12} {:>8}",
        "format", "fake GB/s", "pack+unp GB/s", "candle GB/s", "ratio"
    );
    let src = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
    for f in WeightFormat::all()
        .into_iter()
        .filter(|f| !f.requires_imatrix())
    {
        let fake = best(3, || {
            std::hint::black_box(f.fake_quant(&x, rows, cols, None).unwrap());
        });
        let pack = best(3, || {
            let p = f.quantize(&x, rows, cols, None).unwrap();
            std::hint::black_box(f.dequantize(&p).unwrap());
        });
        match f.ggml().and_then(|t| t.candle_dtype()) {
            Some(dtype) => {
                let candle = best(3, || {
                    let q = QTensor::quantize(&src, dtype).unwrap();
                    std::hint::black_box(q.dequantize(&Device::Cpu).unwrap());
                });
                println!(
                    "{:<18} {:>10.2} {:>14.2} {:>12.3} {:>7.2}x",
                    f.name(),
                    gb / fake,
                    gb / pack,
                    gb / candle,
                    candle / pack
                );
            }
            None => println!("{:<18} {:>10.2} {:>14.2}", f.name(), gb / fake, gb / pack),
        }
    }

    let (what, tensors) = shapes();
    let formats: Vec<WeightFormat> = WeightFormat::all()
        .into_iter()
        .filter(|f| !f.requires_imatrix())
        .collect();
    let pairs: Vec<(usize, WeightFormat)> = tensors
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            formats
                .iter()
                .filter(|f| f.applies_to(t.1, t.2))
                .map(move |f| (i, *f))
        })
        .collect();
    let params: usize = tensors.iter().map(|t| t.1 * t.2).sum();
    let run = |filter: &(dyn Fn(&WeightFormat) -> bool + Sync)| {
        let t = Instant::now();
        pairs
            .par_iter()
            .filter(|p| filter(&p.1))
            .for_each(|&(i, f)| {
                let (name, r, c, d) = &tensors[i];
                std::hint::black_box(f.fake_quant_named(name, d, *r, *c, None).unwrap());
            });
        t.elapsed().as_secs_f64()
    };
    let all = run(&|_| true);
    let generic = run(&|f| f.ggml().is_none());
    let ggml = run(&|f| f.ggml().is_some());
    println!(
        "\nfull format table of the {what}: {} tensors, {params} params, {} (tensor, format) pairs",
        tensors.len(),
        pairs.len()
    );
    let bytes: usize = pairs
        .iter()
        .map(|&(i, _)| tensors[i].1 * tensors[i].2 * 4)
        .sum();
    println!(
        "  all formats:     {all:.2} s ({:.2} GB/s of f32 input)",
        bytes as f64 / 1e9 / all
    );
    println!("  generic only:    {generic:.2} s");
    println!("  GGML only:       {ggml:.2} s");
    quantize_vs_candle();
    iq_dequantize();
}

/// Quantize-only throughput (GB/s of f32 input) of qevo's own GGML quantizers
/// (`quant::ggml_quants`, byte-identical with llama.cpp) against candle's ports
/// (`QTensor::quantize`, `quantize_imatrix` for the K-quants) on the same data in the same
/// run, plain and with an importance matrix. Both on one thread, so the ratio compares the
/// code, not the thread count; the two alternate per type, best of 5 each.
fn quantize_vs_candle() {
    let (rows, cols) = (256, 4096);
    let x = data(rows * cols, 5);
    let im: Vec<f32> = data(cols, 6).iter().map(|v| v * v + 0.01).collect();
    let gb = (x.len() * 4) as f64 / 1e9;
    let src = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "\nquantize only, [{rows}, {cols}] f32 on one thread, GB/s of input, best of 5; \
         ratio = candle time / qevo time (> 1: qevo faster)"
    );
    println!(
        "{:<8} {:>9} {:>11} {:>7} {:>12} {:>14} {:>7}",
        "type", "qevo", "candle", "ratio", "qevo+imat", "candle+imat", "ratio"
    );
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.3}", gb / s));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(ours), Some(theirs)) => format!("{:.2}x", theirs / ours),
        _ => "-".to_string(),
    };
    for t in GgmlType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let f = WeightFormat::Ggml(t);
        let time = |imatrix: Option<&[f32]>| {
            pool.install(|| {
                best(5, || {
                    std::hint::black_box(f.quantize(&x, rows, cols, imatrix).unwrap());
                })
            })
        };
        let candle = |imatrix: bool| {
            let dtype = t.candle_dtype()?;
            if imatrix && !matches!(dtype.block_size(), 256) {
                return None; // candle weights only its K-quants
            }
            Some(pool.install(|| {
                best(5, || {
                    let q = if imatrix {
                        QTensor::quantize_imatrix(&src, &im, dtype).unwrap()
                    } else {
                        QTensor::quantize(&src, dtype).unwrap()
                    };
                    std::hint::black_box(q);
                })
            }))
        };
        let ours = (!t.requires_imatrix()).then(|| time(None));
        let theirs = candle(false);
        let (ours_im, theirs_im) = (Some(time(Some(&im))), candle(true));
        println!(
            "{:<8} {:>9} {:>11} {:>7} {:>12} {:>14} {:>7}",
            t.name(),
            cell(ours),
            cell(theirs),
            ratio(ours, theirs),
            cell(ours_im),
            cell(theirs_im),
            ratio(ours_im, theirs_im)
        );
    }
}

/// Random blocks of an IQ type: uniform bytes with an f16 block scale of 0.01
/// (iq1_m keeps its scale in the top nibbles of its last four u16 words).
fn random_blocks(t: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut b: Vec<u8> = (0..n_blocks * t.block_bytes())
        .map(|_| rng.random())
        .collect();
    let d = half::f16::from_f32(0.01).to_bits();
    for blk in b.chunks_exact_mut(t.block_bytes()) {
        if t == GgmlType::Iq1M {
            let tail = blk.len() - 8;
            for k in 0..4 {
                let w = &mut blk[tail + 2 * k..tail + 2 * k + 2];
                w[1] = (w[1] & 0x0f) | ((((d >> (4 * k)) & 0xf) as u8) << 4);
            }
        } else {
            blk[..2].copy_from_slice(&d.to_le_bytes());
        }
    }
    b
}

/// Dequantize throughput (GB/s of f32 output) of every IQ type (qevo's own decoders;
/// candle has none), as a ratio to q4_k's through the same entry point (`quant::ggml::dequantize`). On one thread, and
/// q4_k re-measured right before each type, so that a shared, busy machine disturbs the
/// ratio as little as possible.
fn iq_dequantize() {
    let (rows, cols) = (256, 4096);
    let n = rows * cols;
    let gb = (n * 4) as f64 / 1e9;
    let x = data(n, 3);
    let q4k = WeightFormat::Ggml(GgmlType::Q4K)
        .quantize(&x, rows, cols, None)
        .unwrap()
        .bytes;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let time = |t: GgmlType, b: &[u8]| {
        pool.install(|| {
            best(7, || {
                std::hint::black_box(ggml::dequantize(t, b, n).unwrap());
            })
        })
    };
    println!(
        "\ndequantize [{rows}, {cols}] on one thread, GB/s of f32 output, best of 7; \
         q4_k (candle) measured right before each type"
    );
    println!(
        "{:<10} {:>8} {:>10} {:>8}",
        "type", "GB/s", "q4_k GB/s", "ratio"
    );
    for t in GgmlType::EVERY
        .into_iter()
        .filter(|t| t.candle_dtype().is_none())
    {
        let b = random_blocks(t, n / t.block_len(), t.gguf_id() as u64);
        let base = time(GgmlType::Q4K, &q4k);
        let s = time(t, &b);
        println!(
            "{:<10} {:>8.2} {:>10.2} {:>7.2}x",
            t.name(),
            gb / s,
            gb / base,
            base / s
        );
    }
}
