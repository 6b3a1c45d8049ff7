//! Forward-pass and evaluator throughput (issues: foundation, 14). Everything is a ratio to
//! a baseline measured in the same run, alternately with it, because the machine is shared
//! and noisy; each ratio is given in wall time and in process CPU time (which does not
//! count the time other processes hold the cores, so it is the steadier one there):
//!
//! - forward GFLOP/s as a ratio to an f32 matmul (512×768×3072) timed in the same run, on
//!   the embedded model, on a random GPT-2-small-shaped Llama (768 wide, 12 layers), and
//!   on a random SmolLM-135M-shaped Llama (576 wide, 30 layers, 49152 vocabulary, tied);
//!   the first two also against candle-transformers' llama (last-token logits);
//! - the evaluator: one `Evaluator::score` of a plan (cached weights; and with one newly
//!   quantized tensor) as a ratio to one plain forward over the same tokens with the same
//!   weights, and evaluations per second.
//!
//! The shapes are the search's defaults: 8 calibration windows of 128 tokens in one batch.
//! Like the `qevo` binary, it runs candle's element-wise ops on one thread
//! (`CANDLE_NUM_THREADS=1`); matrix products use every core.
//! Run: `cargo bench -p qevo --bench forward` (`-- quick`: skip the 135M model).

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use common::cpu_seconds;
use qevo::calib::ActQuantHook;
use qevo::calib::TokenWindows;
use qevo::calib::{calibrate_act_ranges, ActScheme};
use qevo::eval::WeightCache;
use qevo::eval::{auto_topk, Evaluator, Reference};
use qevo::model::synthetic::{write_llama_dir, LlamaShape};
use qevo::model::{Model, NoHook};
use qevo::plan::TensorChoice;
use qevo::quant::GgmlType;
use qevo::quant::WeightFormat;
use std::time::Instant;

const WINDOWS: usize = 8;
const SEQ: usize = 128;

fn best_of<F: FnMut()>(n: usize, mut f: F) -> f64 {
    f();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// FLOPs of one forward over `b` windows of `t` tokens with logits for all positions.
fn forward_flops(m: &Model, b: usize, t: usize) -> f64 {
    let linear: usize = m.tensors.iter().map(|x| x.macs_per_token()).sum();
    let head = if m.tied_output() {
        m.arch.vocab() * m.arch.hidden()
    } else {
        0
    };
    // Scores and weighted values over the whole t×t square (what a dense kernel does):
    // 2 · t² · (heads · head_dim) MACs per block.
    let attn = 2 * t * t * m.arch.hidden() * m.n_blocks();
    2.0 * b as f64 * ((linear + head) * t + attn) as f64
}

fn matmul_gflops(mm: &Matmul) -> f64 {
    mm.flops / best_of(10, || mm.run(1)) / 1e9
}

fn ids_for(m: &Model, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % m.arch.vocab()) as u32)
        .collect()
}

/// Wall and CPU seconds of one run of `f`.
fn time(f: &mut dyn FnMut()) -> (f64, f64) {
    let (t, c) = (Instant::now(), cpu_seconds());
    f();
    (t.elapsed().as_secs_f64(), cpu_seconds() - c)
}

/// Best (wall, CPU) times of `a` and of `b`, run alternately (so both see the same load).
/// CPU time does not count the time other processes hold the cores, so on a shared
/// machine its ratios are the steadier ones.
type Best = ((f64, f64), (f64, f64));
fn interleaved(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> Best {
    a();
    b();
    let min = |x: (f64, f64), y: (f64, f64)| (x.0.min(y.0), x.1.min(y.1));
    let inf = (f64::INFINITY, f64::INFINITY);
    (0..reps)
        .map(|_| (time(&mut a), time(&mut b)))
        .fold((inf, inf), |acc, y| (min(acc.0, y.0), min(acc.1, y.1)))
}

/// Forward GFLOP/s over `b` windows of `t` tokens as a ratio to the matmul, timed
/// alternately with a run of matmuls of about the same length.
fn bench_forward(label: &str, m: &Model, b: usize, t: usize, reps: usize, matmul: &Matmul) {
    let x = Tensor::from_vec(ids_for(m, b * t), (b, t), &Device::Cpu).unwrap();
    let flops = forward_flops(m, b, t);
    let calls = ((flops / matmul.flops) as usize).max(1);
    let (mm, fw) = interleaved(
        reps,
        || matmul.run(calls),
        || {
            let _ = m.forward(&m.weights, &NoHook, &x).unwrap();
        },
    );
    let work = matmul.flops * calls as f64;
    let (rate, gflops) = (work / mm.0 / 1e9, flops / fw.0 / 1e9);
    let cpu_ratio = (flops / fw.1) / (work / mm.1);
    println!(
        "{label:<40} {b:>2} x {t:>3} tokens  forward {:>8.2} ms  {:>6.1} GFLOP/s  \
         ratio to matmul {:.2} wall, {cpu_ratio:.2} CPU time (matmul {rate:.0} GFLOP/s alongside)",
        fw.0 * 1e3,
        gflops,
        gflops / rate
    );
}

/// The baseline product, 512×768 by 768×3072.
struct Matmul {
    a: Tensor,
    b: Tensor,
    flops: f64,
}

impl Matmul {
    fn new() -> Self {
        Matmul {
            a: Tensor::randn(0f32, 1.0, (512, 768), &Device::Cpu).unwrap(),
            b: Tensor::randn(0f32, 1.0, (3072, 768), &Device::Cpu).unwrap(),
            flops: 2.0 * 512.0 * 768.0 * 3072.0,
        }
    }
    fn run(&self, calls: usize) {
        for _ in 0..calls {
            let _ = self.a.matmul(&self.b.t().unwrap()).unwrap();
        }
    }
}

/// qevo's last-token forward against candle-transformers' llama on the same weights.
fn bench_candle_transformers(label: &str, dir: &std::path::Path, m: &Model, t: usize) {
    let x = Tensor::from_vec(ids_for(m, t), (1, t), &Device::Cpu).unwrap();
    let ours = best_of(3, || {
        let mut h = m.embed(&m.weights, &x).unwrap();
        for b in 0..m.n_blocks() {
            h = m.block(b, &m.weights, &NoHook, &h).unwrap();
        }
        let last = h.i((.., t - 1..t, ..)).unwrap().contiguous().unwrap();
        let _ = m.head(&m.weights, &NoHook, &last).unwrap();
    });
    let cfg: candle_transformers::models::llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let files = [dir.join("model.safetensors")];
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let theirs = candle_transformers::models::llama::Llama::load(vb, &cfg).unwrap();
    let ct = best_of(3, || {
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu)
                .unwrap();
        let _ = theirs.forward(&x, 0, &mut cache).unwrap();
    });
    println!(
        "{label:<40}  1 x {t:>3} tokens  last-token forward {:>8.2} ms vs candle-transformers \
         {:>8.2} ms: ratio {:.2}",
        ours * 1e3,
        ct * 1e3,
        ct / ours
    );
}

/// Every tensor in q8_0 (any row of 32-multiples; the search's shapes), activations FP.
fn base_choices(m: &Model) -> Vec<TensorChoice> {
    m.tensors
        .iter()
        .map(|_| TensorChoice {
            format: WeightFormat::Ggml(GgmlType::Q8_0),
            act_bits: 16,
        })
        .collect()
}

/// `Evaluator::score` against one plain forward over the same windows and weights.
fn bench_evaluator(label: &str, m: &Model, reps: usize) {
    let windows = TokenWindows::from_tokens(&ids_for(m, WINDOWS * SEQ), SEQ, WINDOWS).unwrap();
    let ranges = calibrate_act_ranges(m, &windows, None).unwrap();
    let k = auto_topk(m.arch.vocab(), windows.tokens(), 64);
    let reference = Reference::build(m, windows.clone(), k).unwrap();
    // Prefix cache off: every score runs every block, as a plan that changes block 0 does.
    let ev = Evaluator::new(
        m,
        reference,
        WeightCache::new(8 << 30),
        ranges,
        ActScheme::Asym,
        0,
    );
    let base = base_choices(m);
    let w: Vec<Tensor> = base
        .iter()
        .enumerate()
        .map(|(i, c)| ev.weights.get(m, i, c.format).unwrap())
        .collect();
    let x = windows.batch(0, WINDOWS).unwrap();
    let hook = ActQuantHook::new(&ev.ranges, vec![16; base.len()], ActScheme::Asym);
    let forward = || {
        let _ = m.forward(&w, &hook, &x).unwrap();
    };
    let (plain, cached) = interleaved(reps, forward, || {
        ev.score(&base, WINDOWS).unwrap();
    });
    // A new (tensor, format) pair each time: the evaluator quantizes it first. The
    // largest block tensors (ffn_down of successive blocks) are the ones changed.
    let blocks: Vec<usize> = (0..m.tensors.len())
        .filter(|&i| m.tensors[i].name.ends_with("ffn_down.weight"))
        .collect();
    let mut next = blocks.iter().cycle();
    let (plain2, changed) = interleaved(reps.min(blocks.len() - 1), forward, || {
        let mut c = base.clone();
        c[*next.next().unwrap()].format = WeightFormat::Ggml(GgmlType::Q4_0);
        ev.score(&c, WINDOWS).unwrap();
    });
    let plain = (plain.0.min(plain2.0), plain.1.min(plain2.1));
    println!(
        "{label:<40} evaluator: plain forward {:>8.2} ms; score (cached weights) {:>8.2} ms \
         = {:.2}x wall, {:.2}x CPU; score (one new tensor) {:>8.2} ms = {:.2}x wall, {:.2}x CPU; \
         {:.2} evaluations/s",
        plain.0 * 1e3,
        cached.0 * 1e3,
        cached.0 / plain.0,
        cached.1 / plain.1,
        changed.0 * 1e3,
        changed.0 / plain.0,
        changed.1 / plain.1,
        1.0 / changed.0
    );
}

fn main() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let quick = std::env::args().any(|a| a == "quick");
    let mm = Matmul::new();
    let matmul = matmul_gflops(&mm);
    println!("f32 matmul 512x768x3072: {matmul:.1} GFLOP/s (same run, best of 10)");
    let tmp = tempfile::tempdir().unwrap();
    let embedded = qevo::assets::default_model_dir(tmp.path()).unwrap();
    match Model::load(&embedded) {
        Ok(m) => {
            bench_forward("embedded model", &m, WINDOWS, SEQ, 7, &mm);
            bench_evaluator("embedded model", &m, 5);
            bench_candle_transformers("embedded model", &embedded, &m, 256);
        }
        Err(e) => println!("embedded model unavailable: {e}"),
    }
    let dir = tmp.path().join("gpt2-small-shaped");
    let gpt2 = LlamaShape {
        hidden: 768,
        inter: 3072,
        layers: 12,
        heads: 12,
        kv_heads: 12,
        vocab: 32000,
        max_positions: 1024,
        ..Default::default()
    };
    write_llama_dir(&dir, &gpt2, 1).unwrap();
    let m = Model::load(&dir).unwrap();
    bench_forward("random GPT-2-small-shaped llama", &m, WINDOWS, SEQ, 3, &mm);
    bench_candle_transformers("random GPT-2-small-shaped llama", &dir, &m, 512);
    drop(m);
    if quick {
        return;
    }
    let dir = tmp.path().join("smollm-135m-shaped");
    let smol = LlamaShape {
        hidden: 576,
        inter: 1536,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        vocab: 49152,
        max_positions: 2048,
        tie: true,
        ..Default::default()
    };
    write_llama_dir(&dir, &smol, 1).unwrap();
    let m = Model::load(&dir).unwrap();
    bench_forward("random SmolLM-135M-shaped llama", &m, WINDOWS, SEQ, 4, &mm);
    bench_evaluator("random SmolLM-135M-shaped llama", &m, 3);
}
