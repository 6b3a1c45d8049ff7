//! `qevo profiles`, `qevo profiles show`, `qevo cost` and `qevo profile-host`: the hardware
//! side on its own, without a search.

use crate::commands::load_model;
use crate::table::Table;
use anyhow::{anyhow, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};
use qevo::hw::{self, Workload};
use qevo::model::{NoHook, Quantized, Role};
use qevo::quant::{GgmlType, TensorChoice, WeightFormat};
use qevo::plan::{price, UserLimits};
use std::path::Path;
use std::time::Instant;

pub fn list() -> Result<()> {
    let mut t = Table::new(&["profile", "description"]);
    for p in hw::list_builtins() {
        t.row(vec![p.name.to_string(), p.description]);
    }
    print!("{}", t.render());
    println!("Use `qevo profiles show NAME` for a profile's numbers and their sources, or pass --target FILE.toml.");
    Ok(())
}

pub fn show(name: &str) -> Result<()> {
    match hw::builtin_source(name) {
        Ok(text) => print!("{text}"),
        Err(_) => {
            let p = hw::resolve_profile(name).map_err(|e| anyhow!("{e}"))?;
            print!("{}", hw::profile_to_toml(&p).map_err(|e| anyhow!("{e}"))?);
        }
    }
    Ok(())
}

pub fn cost(
    model: Option<&Path>,
    plan: &Path,
    target: &str,
    prefill: Option<u64>,
    decode: Option<u64>,
) -> Result<()> {
    let m = load_model(model)?;
    let plan = qevo::search::output::read_plan_file(plan)?;
    plan.validate(&m)?;
    let profile = hw::resolve_profile(target).map_err(|e| anyhow!("{e}"))?;
    let workload = Workload {
        prefill_tokens: prefill.unwrap_or(profile.workload.prefill_tokens),
        decode_tokens: decode.unwrap_or(profile.workload.decode_tokens),
    };
    let choices = plan.per_tensor(&m)?;
    let priced = price(
        &m,
        &choices,
        &profile,
        &workload,
        &UserLimits::default(),
        None,
    )?;
    let (c, violation, checks) = (priced.cost, priced.violation, priced.checks);
    println!("model:     {}", m.source.display());
    println!(
        "target:    {} ({} prompt + {} generated tokens)",
        profile.name, workload.prefill_tokens, workload.decode_tokens
    );
    println!(
        "size:      {} bytes ({:.3} MB, {:.4} bits/weight)",
        plan.size_bytes(&m),
        plan.size_bytes(&m) as f64 / 1e6,
        plan.bits_per_weight(&m)
    );
    println!(
        "latency:   {:.3} ms (prefill {:.3} ms, decode {:.3} ms, {:.3} ms/token)",
        c.latency_ms, c.prefill_ms, c.decode_ms, c.latency_per_token_ms
    );
    println!(
        "energy:    {:.4} mJ ({:.5} mJ/token)",
        c.energy_mj, c.energy_per_token_mj
    );
    println!("memory:    {:.3} MB peak", c.peak_memory_bytes as f64 / 1e6);
    let mut t = Table::new(&["constraint", "limit", "value", "pass"]);
    for k in &checks {
        t.row(vec![
            k.name.clone(),
            format!("{:.4}", k.limit),
            format!("{:.4}", k.value),
            if k.pass { "yes".into() } else { "NO".into() },
        ]);
    }
    print!("{}", t.render());
    println!(
        "{}",
        if violation <= 0.0 {
            "all constraints pass"
        } else {
            "constraints FAIL"
        }
    );
    Ok(())
}

pub fn profile_host(out: &Path) -> Result<()> {
    eprintln!("measuring this machine (matmul rates per format, memory bandwidth)...");
    let m =
        hw::host::measure_host(&hw::host::HostOptions::default()).map_err(|e| anyhow!("{e}"))?;
    let mut p = hw::host::host_profile(&m);
    let mut t = Table::new(&["mode", "prefill GMAC/s", "decode GMAC/s"]);
    for c in &p.compute {
        t.row(vec![
            c.format
                .clone()
                .unwrap_or_else(|| format!("w{}a{}", c.weight_bits, c.act_bits)),
            format!("{:.1}", c.peak_macs_per_s / 1e9),
            format!("{:.1}", c.decode_rate() / 1e9),
        ]);
    }
    print!("{}", t.render());
    println!("memory bandwidth {:.1} GB/s", p.mem_bandwidth_gb_per_s);
    // Two costs the roofline cannot see, calibrated on the uniform q4_k plan at 1 and 128 tokens
    // (measured minus predicted matmul time) and then checked on the other nine plans:
    // a fixed cost per layer call, and element-wise work per token per block.
    let model = load_model(None)?;
    let calib = calibration_plan(&model);
    p.layer_overhead_us = 0.0;
    p.block_other_ns_per_token = 0.0;
    let (pred1, meas1) = predict_and_measure(&model, &p, &calib.1, 1)?;
    let (pred128, meas128) = predict_and_measure(&model, &p, &calib.1, 128)?;
    let blocks = model.n_blocks() as f64;
    let per_token_ms = ((meas128 - pred128) - (meas1 - pred1)) / 127.0;
    p.block_other_ns_per_token = (per_token_ms * 1e6 / blocks).max(0.0);
    let mut unit = p.clone();
    unit.layer_overhead_us = 1.0;
    unit.block_other_ns_per_token = 0.0;
    let calls_ms_per_us = predict_only(&model, &unit, &calib.1, 1)? - pred1;
    let fixed_ms = (meas1 - pred1) - p.block_other_ns_per_token * 1e-6 * blocks;
    p.layer_overhead_us = if calls_ms_per_us > 0.0 {
        (fixed_ms / calls_ms_per_us).max(0.0)
    } else {
        0.0
    };
    println!(
        "calibrated on q4_k: layer overhead {:.2} us per call, element-wise work {:.0} ns per token per block",
        p.layer_overhead_us, p.block_other_ns_per_token
    );
    let text = hw::host::host_profile_toml(&m).map_err(|e| anyhow!("{e}"))?;
    // host_profile_toml writes the uncalibrated values; put the calibrated ones in place.
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("layer_overhead_us =") {
                format!(
                    "layer_overhead_us = {}  # calibrated in a forward pass; one lone call: {:.2}\n",
                    p.layer_overhead_us, m.layer_overhead_us
                )
            } else if l.starts_with("block_other_ns_per_token =") {
                format!("block_other_ns_per_token = {}\n", p.block_other_ns_per_token)
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    hw::save_profile_text(out, &text).map_err(|e| anyhow!("{e}"))?;
    let saved = hw::load_profile(out).map_err(|e| anyhow!("{e}"))?;
    if saved.layer_overhead_us != p.layer_overhead_us
        || saved.block_other_ns_per_token != p.block_other_ns_per_token
    {
        anyhow::bail!(
            "{}: the calibrated values did not survive writing",
            out.display()
        );
    }
    println!("profile written to {}", out.display());
    predict_vs_measure(&model, &p)
}

/// The plan the element-wise term is calibrated on (excluded from the error median).
fn calibration_plan(m: &qevo::Model) -> (String, Vec<GgmlType>) {
    ("q4_k".into(), vec![GgmlType::Q4K; m.tensors.len()])
}

/// Predicted ms of one forward pass over `tokens` tokens under `types`.
fn predict_only(
    m: &qevo::Model,
    profile: &hw::Profile,
    types: &[GgmlType],
    tokens: usize,
) -> Result<f64> {
    let choices: Vec<TensorChoice> = types
        .iter()
        .map(|&g| TensorChoice {
            format: WeightFormat::Ggml(g),
            act_bits: 16,
        })
        .collect();
    let workload = Workload {
        prefill_tokens: tokens as u64,
        decode_tokens: 0,
    };
    Ok(price(
        m,
        &choices,
        profile,
        &workload,
        &UserLimits::default(),
        None,
    )?
    .cost
    .prefill_ms)
}

/// Predicted and measured ms of one forward pass over `tokens` tokens under `types`.
fn predict_and_measure(
    m: &qevo::Model,
    profile: &hw::Profile,
    types: &[GgmlType],
    tokens: usize,
) -> Result<(f64, f64)> {
    let toks = m.encode(qevo::assets::CALIB_TEXT)?;
    let w = quantized(m, types)?;
    let ids = Tensor::from_slice(&toks[..tokens], (1, tokens), &Device::Cpu)?;
    let measured = time_forward(m, &w, &ids)?;
    Ok((predict_only(m, profile, types, tokens)?, measured))
}

/// The embedded model under one GGML type per tensor, on candle's quantized kernels.
fn quantized(m: &qevo::Model, types: &[GgmlType]) -> Result<Quantized> {
    let mut matmuls = Vec::with_capacity(types.len());
    let mut tables = Vec::with_capacity(types.len());
    for ((w, info), t) in m.weights.iter().zip(&m.tensors).zip(types) {
        let dtype = t
            .candle_dtype()
            .ok_or_else(|| anyhow!("{t} has no candle kernel"))?;
        let q = QTensor::quantize(w, dtype)?;
        tables.push(if info.role == Role::Embedding {
            Some(q.dequantize(&Device::Cpu)?)
        } else {
            None
        });
        matmuls.push(QMatMul::from_qtensor(q)?);
    }
    Ok(Quantized { matmuls, tables })
}

/// Best-of-5 wall time of one forward pass, in ms.
fn time_forward(m: &qevo::Model, w: &Quantized, ids: &Tensor) -> Result<f64> {
    m.forward_with(w, &NoHook, ids)?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        m.forward_with(w, &NoHook, ids)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// Predicted (cost model on the measured host profile) vs measured wall time of forward
/// passes of the embedded model under uniform and mixed plans, on real quantized kernels.
fn predict_vs_measure(m: &qevo::Model, profile: &hw::Profile) -> Result<()> {
    let n = m.tensors.len();
    let mut plans: Vec<(String, Vec<GgmlType>)> = vec![calibration_plan(m)];
    plans.extend(
        [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q6K,
            GgmlType::Q5K,
            GgmlType::Q4_0,
            GgmlType::Q3K,
            GgmlType::Q2K,
        ]
        .iter()
        .map(|&t| (t.name().to_string(), vec![t; n])),
    );
    let mixed: Vec<GgmlType> = m
        .tensors
        .iter()
        .map(|t| match t.role {
            Role::Embedding | Role::Output | Role::AttnV | Role::FfnDown => GgmlType::Q6K,
            _ => GgmlType::Q4K,
        })
        .collect();
    plans.push(("mixed q6_k/q4_k".into(), mixed));
    let mut t = Table::new(&["plan", "tokens", "predicted ms", "measured ms", "error"]);
    let mut errors: Vec<(usize, f64)> = Vec::new();
    for (i, (name, types)) in plans.iter().enumerate() {
        for tokens in [128usize, 1] {
            let (pred, meas) = predict_and_measure(m, profile, types, tokens)?;
            let err = (pred - meas) / meas;
            let calibration = i == 0;
            if !calibration {
                errors.push((tokens, err.abs()));
            }
            t.row(vec![
                if calibration {
                    format!("{name} (calibration)")
                } else {
                    name.clone()
                },
                tokens.to_string(),
                format!("{pred:.3}"),
                format!("{meas:.3}"),
                format!("{:+.1}%", err * 100.0),
            ]);
        }
    }
    println!(
        "\nPredicted vs measured forward passes of the embedded model (candle quantized kernels):"
    );
    print!("{}", t.render());
    for tokens in [128usize, 1] {
        let mut e: Vec<f64> = errors
            .iter()
            .filter(|x| x.0 == tokens)
            .map(|x| x.1)
            .collect();
        e.sort_by(|a, b| a.total_cmp(b));
        println!(
            "median absolute prediction error, {tokens} token(s), calibration excluded: {:.1}%",
            e[e.len() / 2] * 100.0
        );
    }
    Ok(())
}
