//! Forward-pass throughput (issue: foundation). Prints GFLOP/s of qevo's forward on the
//! embedded model and on a random GPT-2-small-shaped Llama (768 wide, 12 layers, 512
//! tokens), as ratios to the f32 matmul rate and to candle-transformers' llama forward,
//! both measured in the same run on the same weights. Run: `cargo bench -p qevo --bench forward`.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use qevo::model::synthetic::{write_llama_dir, LlamaShape};
use qevo::model::{Model, NoHook};
use std::time::Instant;

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

/// FLOPs of one forward over `t` tokens with logits for all positions.
fn forward_flops(m: &Model, t: usize) -> f64 {
    let linear: usize = m.tensors.iter().map(|x| x.macs_per_token()).sum();
    let head = if m.tied_output() {
        m.arch.vocab() * m.arch.hidden()
    } else {
        0
    };
    // Scores and weighted values: 2 · t² · (heads · head_dim) MACs per block.
    let attn = 2 * t * t * m.arch.hidden() * m.n_blocks();
    2.0 * ((linear + head) * t + attn) as f64
}

fn matmul_gflops() -> f64 {
    let a = Tensor::randn(0f32, 1.0, (512, 768), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (3072, 768), &Device::Cpu).unwrap();
    let secs = best_of(10, || {
        let _ = a.matmul(&b.t().unwrap()).unwrap();
    });
    2.0 * 512.0 * 768.0 * 3072.0 / secs / 1e9
}

fn bench_model(label: &str, dir: &std::path::Path, t: usize, reps: usize, matmul: f64) {
    let m = Model::load(dir).unwrap();
    let ids: Vec<u32> = (0..t)
        .map(|i| ((i * 7919) % m.arch.vocab()) as u32)
        .collect();
    let x = Tensor::from_slice(&ids, (1, t), &Device::Cpu).unwrap();
    let ours = best_of(reps, || {
        let _ = m.forward(&m.weights, &NoHook, &x).unwrap();
    });
    // Same work as candle-transformers (logits of the last position only).
    let ours_last = best_of(reps, || {
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
    let ct = best_of(reps, || {
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu)
                .unwrap();
        let _ = theirs.forward(&x, 0, &mut cache).unwrap();
    });
    let gflops = forward_flops(&m, t) / ours / 1e9;
    println!(
        "{label:<34} tokens {t:>4}  forward {:>8.2} ms  {:>7.1} GFLOP/s  ratio to matmul {:.2}  \
         last-token forward {:>8.2} ms vs candle-transformers {:>8.2} ms: ratio {:.2}",
        ours * 1e3,
        gflops,
        gflops / matmul,
        ours_last * 1e3,
        ct * 1e3,
        ct / ours_last
    );
}

fn main() {
    let matmul = matmul_gflops();
    println!("f32 matmul 512x768x3072: {matmul:.1} GFLOP/s (same run, best of 10)");
    let tmp = tempfile::tempdir().unwrap();
    let embedded = qevo::assets::default_model_dir(tmp.path()).unwrap();
    match Model::load(&embedded) {
        Ok(_) => bench_model("embedded model", &embedded, 256, 5, matmul),
        Err(e) => println!("embedded model unavailable: {e}"),
    }
    let dir = tmp.path().join("gpt2-small-shaped");
    let shape = LlamaShape {
        hidden: 768,
        inter: 3072,
        layers: 12,
        heads: 12,
        kv_heads: 12,
        vocab: 32000,
        max_positions: 1024,
        ..Default::default()
    };
    write_llama_dir(&dir, &shape, 1).unwrap();
    bench_model("random GPT-2-small-shaped llama", &dir, 512, 3, matmul);
}
