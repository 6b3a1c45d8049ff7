//! Turns a search outcome into the report module's data: the tables printed at the end
//! of `qevo search` and the files `pareto.svg`, `convergence.svg`, `report.html`.

use crate::table::Table;
use anyhow::Result;
use qevo::quant::{Scheme, WeightFormat};
use qevo::report::{self, ConstraintRow, GenerationRow, PlanRow, Point, ReportData, Series};
use qevo::search::problem::Scored;
use qevo::search::{SearchConfig, SearchOutcome};
use qevo::Model;
use std::path::Path;

fn scheme_name(f: &WeightFormat) -> String {
    match f {
        WeightFormat::Int(i) => match i.scheme {
            Scheme::Sym => "SYMMETRIC",
            Scheme::Asym => "ASYMMETRIC",
            Scheme::Pow2 => "POWER_OF_TWO",
        }
        .to_string(),
        WeightFormat::Ggml(g) if g.is_quantized() => "GGML block".to_string(),
        WeightFormat::Ggml(_) => "FLOAT".to_string(),
    }
}

fn point(label: &str, s: &Scored, heldout_kl: Option<f64>) -> Point {
    Point {
        label: label.to_string(),
        kl: s.metrics.kl,
        heldout_kl,
        perplexity: Some(s.metrics.ppl),
        top1: s.metrics.top1,
        size_bytes: s.size_bytes,
        latency_ms: s.latency_ms,
        energy_mj: s.energy_mj,
        feasible: s.violation <= 0.0,
    }
}

pub fn report_data(model: &Model, cfg: &SearchConfig, o: &SearchOutcome) -> ReportData {
    let fp = Point {
        label: "FP32".into(),
        kl: 0.0,
        heldout_kl: Some(0.0),
        perplexity: Some(o.fp.ppl),
        top1: 1.0,
        size_bytes: o.fp.size_bytes,
        latency_ms: o.fp.latency_ms,
        energy_mj: o.fp.energy_mj,
        feasible: true,
    };
    let front: Vec<Point> = o
        .front
        .iter()
        .enumerate()
        .map(|(i, f)| point(&format!("evolved #{i}"), &f.scored, Some(f.heldout.kl)))
        .collect();
    let recommended = o.recommended.map(|i| front[i].clone());
    let recommended_plan: Vec<PlanRow> = match o.recommended {
        Some(i) => {
            let g = &o.front[i].genome;
            o.space
                .units
                .iter()
                .enumerate()
                .map(|(u, unit)| {
                    let c = o.space.choices[u][g[u] as usize];
                    let cols = model.tensors[unit.tensors[0]].cols;
                    PlanRow {
                        unit: unit.name.clone(),
                        weight_format: c.format.name(),
                        weight_bits: c.format.bits_per_weight(cols),
                        act_bits: c.act_bits,
                        scheme: scheme_name(&c.format),
                    }
                })
                .collect()
        }
        None => vec![],
    };
    let mut baselines = vec![Series {
        name: "uniform".into(),
        points: o
            .uniform
            .iter()
            .map(|b| point(&b.name, &b.scored, None))
            .collect(),
    }];
    if !o.lagrangian.is_empty() {
        baselines.push(Series {
            name: "lagrangian".into(),
            points: o
                .lagrangian
                .iter()
                .map(|b| point(&b.name, &b.scored, None))
                .collect(),
        });
    }
    if !o.random.is_empty() {
        let objs: Vec<Vec<f64>> = o.random.iter().map(|b| b.scored.objectives()).collect();
        let feas: Vec<bool> = o.random.iter().map(|b| b.scored.violation <= 0.0).collect();
        let keep = qevo::search::pareto_indices(&objs, &feas);
        baselines.push(Series {
            name: "random search".into(),
            points: keep
                .iter()
                .map(|&i| point(&o.random[i].name, &o.random[i].scored, None))
                .collect(),
        });
    }
    let history: Vec<GenerationRow> = o
        .history
        .iter()
        .map(|r| {
            let best = o.convergence.iter().find(|b| b.generation == r.generation);
            GenerationRow {
                generation: r.generation as usize,
                evaluations: r.evaluations,
                hypervolume: r.hypervolume.unwrap_or(0.0),
                best_kl: r.best.as_ref().map(|b| b[0]).unwrap_or(f64::NAN),
                front_size: r.front_size,
                fitness: best.map(|b| b.fitness).unwrap_or(f64::NAN),
                top1: best.map(|b| b.top1).unwrap_or(f64::NAN),
                compression: best
                    .map(|b| o.fp.size_bytes as f64 / b.size_bytes.max(1) as f64)
                    .unwrap_or(f64::NAN),
                cache_hit_rate: if r.problem.cache_lookups > 0 {
                    r.problem.cache_hits as f64 / r.problem.cache_lookups as f64
                } else {
                    0.0
                },
            }
        })
        .filter(|r| r.best_kl.is_finite() && r.fitness.is_finite())
        .collect();
    let constraints: Vec<ConstraintRow> = o
        .recommended
        .map(|i| {
            o.front[i]
                .scored
                .checks
                .iter()
                .map(|c| ConstraintRow {
                    name: c.name.clone(),
                    limit: c.limit,
                    value: c.value,
                    pass: c.pass,
                })
                .collect()
        })
        .unwrap_or_default();
    let fs = &o.fitness_stats;
    let ps = &o.prefix_stats;
    let ws = &o.weight_stats;
    let rate = |h: u64, n: u64| {
        if n > 0 {
            100.0 * h as f64 / n as f64
        } else {
            0.0
        }
    };
    let notes = vec![
        format!(
            "fitness cache: {} hits / {} lookups ({:.1}%); {} full evaluations, {} screenings, {} screened out",
            fs.hits,
            fs.lookups,
            rate(fs.hits, fs.lookups),
            fs.full_evaluations,
            fs.screenings,
            fs.screened_out
        ),
        format!(
            "prefix cache: {} hits / {} lookups ({:.1}%); weight cache: {} hits / {} lookups ({:.1}%)",
            ps.hits,
            ps.hits + ps.misses,
            rate(ps.hits, ps.hits + ps.misses),
            ws.hits,
            ws.hits + ws.misses,
            rate(ws.hits, ws.hits + ws.misses)
        ),
        format!(
            "search {:.1} s, total {:.1} s; FP perplexity calibration {:.3}, held-out {:.3}",
            o.search_seconds, o.total_seconds, o.fp.ppl, o.fp.heldout_ppl
        ),
        format!(
            "workload: {} prompt + {} generated tokens; units: {:?}; formats: {}",
            cfg.workload.prefill_tokens,
            cfg.workload.decode_tokens,
            cfg.space.unit,
            cfg.space.formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
        ),
    ];
    ReportData {
        title: format!(
            "qevo search: {} on {}",
            model.source.display(),
            cfg.target.name
        ),
        model: model.source.display().to_string(),
        fingerprint: model.fingerprint.clone(),
        target: cfg.target.name.clone(),
        seed: o.seed,
        qevo_version: env!("CARGO_PKG_VERSION").to_string(),
        fp,
        recommended,
        recommended_plan,
        front,
        baselines,
        history,
        constraints,
        notes,
    }
}

/// At each uniform plan's size: the best KL of every method (calibration and held-out).
pub fn matched_table(o: &SearchOutcome) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    let mut t = Table::new(&[
        "size of",
        "MB",
        "uniform KL",
        "evolved KL",
        "lagrangian KL",
        "random KL",
        "uniform held-out",
        "evolved held-out",
        "lagrangian held-out",
    ]);
    for r in &o.matched {
        t.row(vec![
            r.uniform.clone(),
            format!("{:.3}", r.size_bytes as f64 / 1e6),
            format!("{:.4}", r.uniform_kl),
            f(r.evolved_kl),
            f(r.lagrangian_kl),
            f(r.random_kl),
            format!("{:.4}", r.uniform_heldout_kl),
            f(r.evolved_heldout_kl),
            f(r.lagrangian_heldout_kl),
        ]);
    }
    t.render()
}

pub fn print_tables(model: &Model, cfg: &SearchConfig, o: &SearchOutcome) {
    let d = report_data(model, cfg, o);
    println!("{}", report::header_text(&d));
    println!("Recommended plan\n{}", report::recommended_table(&d));
    println!("Performance against FP\n{}", report::performance_table(&d));
    println!("Constraints\n{}", report::constraints_table(&d));
    println!(
        "Pareto front ({} plans)\n{}",
        d.front.len(),
        report::front_table(&d)
    );
    println!("Baselines\n{}", report::baseline_table(&d));
    if !o.matched.is_empty() {
        println!(
            "At matched sizes (KL to FP, nats/token)\n{}",
            matched_table(o)
        );
    }
    println!("Convergence\n{}", report::convergence_table(&d));
    for n in &d.notes {
        println!("{n}");
    }
}

pub fn write_report(
    dir: &Path,
    model: &Model,
    cfg: &SearchConfig,
    o: &SearchOutcome,
) -> Result<()> {
    let mut d = report_data(model, cfg, o);
    if !o.matched.is_empty() {
        d.notes.push(format!(
            "At matched sizes (KL to FP):\n{}",
            matched_table(o)
        ));
    }
    let write = |name: &str, s: String| qevo::fsutil::write_atomic(&dir.join(name), s.as_bytes());
    write("pareto.svg", report::pareto_svg(&d)?)?;
    write("convergence.svg", report::convergence_svg(&d)?)?;
    write("report.html", report::html(&d)?)?;
    Ok(())
}
