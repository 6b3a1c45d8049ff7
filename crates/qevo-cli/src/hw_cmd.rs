//! `qevo profiles`, `qevo profiles show`, `qevo cost`, `qevo profile-host` and
//! `qevo plan-cost`: the hardware side on its own, without a search.

use crate::commands::load_model;
use crate::table::Table;
use anyhow::Result;
use qevo::hw::{self, Workload};
use qevo::plan::{price, UserLimits};
use std::path::Path;

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
            let p = hw::resolve_profile(name)?;
            print!("{}", hw::profile_to_toml(&p)?);
        }
    }
    Ok(())
}

pub fn cost(
    model: Option<&Path>,
    plan: &Path,
    force: bool,
    target: &str,
    prefill: Option<u64>,
    decode: Option<u64>,
) -> Result<()> {
    let m = load_model(model)?;
    let (plan, _) = crate::commands::read_plan_for(plan, &m, force)?;
    let profile = hw::resolve_profile(target)?;
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
    let m = hw::host::measure_host(&hw::host::HostOptions::default())?;
    let measured = hw::host::host_profile(&m);
    let mut t = Table::new(&["mode", "prefill GMAC/s", "decode GMAC/s"]);
    for c in &measured.compute {
        t.row(vec![
            c.format
                .clone()
                .unwrap_or_else(|| format!("w{}a{}", c.weight_bits, c.act_bits)),
            format!("{:.1}", c.peak_macs_per_s / 1e9),
            format!("{:.1}", c.decode_rate() / 1e9),
        ]);
    }
    print!("{}", t.render());
    println!(
        "memory bandwidth {:.1} GB/s",
        measured.mem_bandwidth_gb_per_s
    );
    eprintln!("calibrating on forward passes of the embedded model...");
    let model = load_model(None)?;
    let opts = qevo::calib::host::CalibrateOptions::default();
    let cal = qevo::calib::host::calibrate(&model, &measured, &opts)?;
    println!(
        "calibrated on q4_k: layer overhead {:.2} us per call, element-wise work {:.0} ns per token per block",
        cal.profile.layer_overhead_us, cal.profile.block_other_ns_per_token
    );
    let text = qevo::calib::host::calibrated_profile_toml(&m, &cal)?;
    hw::save_profile_text(out, &text)?;
    if hw::load_profile(out)? != cal.profile {
        anyhow::bail!(
            "{}: the calibrated profile did not survive writing",
            out.display()
        );
    }
    println!("profile written to {}", out.display());
    print_timings(&cal);
    Ok(())
}

/// Predicted (calibrated host profile) against measured forward passes, per plan.
fn print_timings(cal: &qevo::calib::host::Calibration) {
    let mut t = Table::new(&["plan", "tokens", "predicted ms", "measured ms", "error"]);
    for p in &cal.timings {
        t.row(vec![
            if p.calibration {
                format!("{} (calibration)", p.plan)
            } else {
                p.plan.clone()
            },
            p.tokens.to_string(),
            format!("{:.3}", p.predicted_ms),
            format!("{:.3}", p.measured_ms),
            format!("{:+.1}%", p.error() * 100.0),
        ]);
    }
    println!(
        "\nPredicted vs measured forward passes of the embedded model (candle quantized kernels):"
    );
    print!("{}", t.render());
    for tokens in [cal.tokens, 1] {
        if let Some(e) = cal.median_abs_error(tokens) {
            println!(
                "median absolute prediction error, {tokens} token(s), calibration excluded: {:.1}%",
                e * 100.0
            );
        }
    }
}

/// The search settings `qevo plan-cost` prices.
pub struct PlanCostSearch {
    pub target: String,
    pub unit: qevo::search::space::UnitMode,
    pub population: usize,
    pub generations: u64,
    pub seq_len: usize,
    pub calib_windows: usize,
}

/// `host` measured now, else a built-in profile or a profile TOML.
fn machine(name: &str) -> Result<hw::Profile> {
    match name {
        "host" => {
            eprintln!("measuring this machine (matmul rates, memory bandwidth)...");
            let m = hw::host::measure_host(&hw::host::HostOptions::default())?;
            Ok(hw::host::host_profile(&m))
        }
        _ => Ok(hw::resolve_profile(name)?),
    }
}

pub fn plan_cost(config: &Path, machines: &[String], s: &PlanCostSearch) -> Result<()> {
    use qevo::search::budget::{budget, ConfigShape};
    let shape = ConfigShape::read(config)?;
    let mut cfg = qevo::search::SearchConfig::for_target(hw::resolve_profile(&s.target)?)?;
    cfg.space.unit = s.unit;
    cfg.evolution.population = s.population;
    cfg.evolution.generations = s.generations;
    cfg.data.seq_len = s.seq_len;
    cfg.data.calib_windows = s.calib_windows;
    cfg.validate().map_err(crate::flag_names)?;
    println!(
        "{}: {} layers, hidden {}, {} heads ({} kv), vocab {}, {:.2}B weight parameters{}",
        config.display(),
        shape.n_layers,
        shape.hidden,
        shape.n_heads,
        shape.n_kv_heads,
        shape.vocab,
        shape.params() as f64 / 1e9,
        if shape.tie_embeddings {
            ", tied output"
        } else {
            ""
        }
    );
    let d = &cfg.data;
    println!(
        "search: unit {}, target {}, population {}, {} generations; windows of {} tokens: {} full, {} screening, {} held-out, {} validation",
        s.unit.as_str(), s.target, s.population, s.generations, d.seq_len, d.calib_windows, d.screen_windows, d.heldout_windows, d.validation_windows
    );
    print_memory(&shape, &cfg);
    let mut t = Table::new(&[
        "machine",
        "screened",
        "full (at most)",
        "held-out",
        "validation",
        "s/screen",
        "s/full",
        "s/held-out",
        "s/validation",
        "total (no caches)",
    ]);
    for name in machines {
        let b = budget(&shape, &cfg, &machine(name)?).map_err(crate::flag_names)?;
        t.row(vec![
            b.machine,
            b.count.screened.to_string(),
            b.count.full.to_string(),
            b.count.heldout.to_string(),
            b.count.validation.to_string(),
            format!("{:.3}", b.screen_seconds),
            format!("{:.3}", b.full_seconds),
            format!("{:.3}", b.heldout_seconds),
            format!("{:.3}", b.validation_seconds),
            duration(b.total_seconds),
        ]);
    }
    print!("{}", t.render());
    println!("Counts follow the search's stages without the fitness memo or prefix cache, which only lower them; seconds are the roofline of the f32 forward over the windows on each machine's profile.");
    Ok(())
}

/// The search's memory on this machine: what it needs, what the default budget gives it,
/// or why it would be refused.
fn print_memory(shape: &qevo::search::budget::ConfigShape, cfg: &qevo::search::SearchConfig) {
    use qevo::mem::{available_bytes, gb};
    let available = available_bytes();
    let have = available.map_or("unknown".into(), gb);
    match qevo::search::memory::search_memory(&shape.memory_shape(), cfg, None, available) {
        Ok(m) => println!(
            "memory: needs at least {}, holds at most {} with the default budget ({}); available here: {have}",
            gb(m.needed()),
            gb(m.total()),
            m.parts()
        ),
        Err(e) => println!("memory: refused on this machine: {e}"),
    }
}

/// Seconds as `1h 02m`, `3m 20s` or `12.5 s`.
fn duration(s: f64) -> String {
    let m = (s / 60.0).floor() as u64;
    match m {
        0 => format!("{s:.1} s"),
        1..60 => format!("{m}m {:02.0}s", s - 60.0 * m as f64),
        _ => format!("{}h {:02}m", m / 60, m % 60),
    }
}
