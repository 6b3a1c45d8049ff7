//! Small hand-made reports shared by the report tests.

use super::*;

pub(crate) fn point(label: &str, kl: f64, top1: f64, size: u64, lat: f64, en: f64) -> Point {
    Point {
        label: label.into(),
        kl,
        heldout_kl: None,
        perplexity: None,
        top1,
        size_bytes: size,
        latency_ms: lat,
        energy_mj: en,
        feasible: true,
    }
}

/// A history row; the floats are hypervolume, best KL, fitness, top-1, compression
/// and cache hit rate, in that order.
fn gen(g: usize, evals: u64, front: usize, floats: [f64; 6]) -> GenerationRow {
    let [hv, kl, fit, top1, c, hit] = floats;
    GenerationRow {
        generation: g,
        evaluations: evals,
        hypervolume: hv,
        best_kl: kl,
        front_size: front,
        fitness: fit,
        top1,
        compression: c,
        cache_hit_rate: hit,
    }
}

/// Three front plans, two uniform baselines, 13 generations, two constraints.
pub(crate) fn small() -> ReportData {
    let mut fp = point("fp32", 0.0, 1.0, 6_000_000, 450.0, 2.1);
    fp.perplexity = Some(12.34);
    fp.feasible = false;
    let mut rec = point("mix-b", 0.012, 0.964, 1_000_000, 110.0, 0.4);
    rec.heldout_kl = Some(0.014);
    rec.perplexity = Some(12.8);
    let mut c = point("mix-c", 0.2, 0.8, 500_000, 60.0, 0.2);
    c.feasible = false;
    let front = vec![
        point("mix-a", 0.0004, 0.995, 3_000_000, 250.0, 1.2),
        rec.clone(),
        c,
    ];
    let history = (0..=12)
        .map(|g| match g {
            0 => gen(0, 32, 4, [0.4, 0.1, 0.62, 0.921, 2.1, 0.0]),
            10 => gen(10, 352, 9, [0.7, 0.02, 0.74, 0.943, 3.2, 0.41]),
            12 => gen(12, 416, 10, [0.71, 0.012, 0.75, 0.964, 6.0, 0.455]),
            g => gen(
                g,
                32 * (g as u64 + 1),
                5,
                [
                    0.4 + 0.03 * g as f64,
                    0.1 / (g as f64 + 1.0),
                    0.7,
                    0.93,
                    3.0,
                    0.3,
                ],
            ),
        })
        .collect();
    ReportData {
        title: "qevo report".into(),
        model: "assets/tiny-llama".into(),
        fingerprint: "sha256:abcd".into(),
        target: "arm-neon".into(),
        seed: 42,
        qevo_version: "0.1.0".into(),
        fp,
        recommended: Some(rec),
        recommended_plan: vec![
            PlanRow {
                unit: "embedding".into(),
                weight_format: "q6_k".into(),
                weight_bits: 6.5625,
                act_bits: 8,
                scheme: "GGML block".into(),
            },
            PlanRow {
                unit: "attention_q".into(),
                weight_format: "int8-sym-ch".into(),
                weight_bits: 8.0,
                act_bits: 8,
                scheme: "SYMMETRIC".into(),
            },
            PlanRow {
                unit: "ffn_down".into(),
                weight_format: "int4-asym-g64".into(),
                weight_bits: 4.5,
                act_bits: 8,
                scheme: "ASYMMETRIC".into(),
            },
        ],
        front,
        baselines: vec![Series {
            name: "uniform".into(),
            points: vec![
                point("q8_0", 0.002, 0.99, 2_000_000, 180.0, 0.8),
                point("q4_0", 0.05, 0.93, 1_000_000, 105.0, 0.38),
            ],
        }],
        history,
        constraints: vec![
            ConstraintRow {
                name: "memory MB".into(),
                limit: 2.0,
                value: 1.0,
                pass: true,
            },
            ConstraintRow {
                name: "latency ms".into(),
                limit: 120.0,
                value: 110.0,
                pass: true,
            },
        ],
        notes: vec!["fitness cache hit rate 45.5%".into()],
    }
}

/// A report of a search that produced nothing: no front, baselines, history or plan.
pub(crate) fn empty() -> ReportData {
    ReportData {
        recommended: None,
        recommended_plan: vec![],
        front: vec![],
        baselines: vec![],
        history: vec![],
        constraints: vec![],
        notes: vec![],
        ..small()
    }
}

/// A search-sized report (25 front plans, three baselines, 120 generations) made
/// from smooth formulas, for eyeballing the plots.
pub(crate) fn large() -> ReportData {
    let fp_size = 7_000_000_000u64;
    let mk = |label: String, c: f64, kl: f64, feasible: bool| {
        let mut p = point(
            &label,
            kl,
            1.0 - kl.sqrt() / 3.0,
            (fp_size as f64 / c) as u64,
            450.0 / c.sqrt() + 20.0,
            2100.0 / c,
        );
        p.feasible = feasible;
        p
    };
    let front: Vec<Point> = (0..25)
        .map(|i| {
            let c = 1.6 + i as f64 * 0.5;
            mk(
                format!("g{i:02}"),
                c,
                2e-4 * (0.33 * i as f64).exp(),
                c > 3.0,
            )
        })
        .collect();
    let curve = |name: &str, cs: &[f64], worse: f64| Series {
        name: name.into(),
        points: cs
            .iter()
            .map(|&c| {
                mk(
                    format!("{name}-{c}"),
                    c,
                    worse * 2e-4 * (0.66 * (c - 1.6)).exp(),
                    c > 3.0,
                )
            })
            .collect(),
    };
    // A fixed low-discrepancy scatter stands in for random search.
    let random = Series {
        name: "random search".into(),
        points: (0..40)
            .map(|i| {
                let u = (i as f64 * 0.618_033_988_75).fract();
                let v = (i as f64 * 0.754_877_666_25).fract();
                let c = 1.6 + u * 12.0;
                mk(
                    format!("r{i}"),
                    c,
                    2e-4 * (0.66 * (c - 1.6)).exp() * (1.5 + 6.0 * v),
                    c > 3.0,
                )
            })
            .collect(),
    };
    let history = (0..120)
        .map(|g| {
            let t = g as f64;
            gen(
                g,
                64 * (g as u64 + 1),
                5 + g.min(20),
                [
                    0.9 - 0.5 * (-t / 25.0).exp(),
                    0.05 * (-t / 15.0).exp() + 2e-4,
                    0.6 + 0.27 * (1.0 - (-t / 20.0).exp()),
                    0.92 + 0.044 * (1.0 - (-t / 20.0).exp()),
                    2.1 + 2.1 * (1.0 - (-t / 20.0).exp()),
                    0.78 * (1.0 - (-t / 10.0).exp()),
                ],
            )
        })
        .collect();
    let mut d = small();
    d.fp = point("fp32", 0.0, 1.0, fp_size, 470.0, 2100.0);
    d.recommended = Some(front[10].clone());
    d.front = front;
    d.baselines = vec![
        curve("uniform", &[2.0, 3.5, 4.0, 6.4, 7.1, 8.0], 3.0),
        curve("lagrangian", &[2.5, 4.5, 6.5, 8.5, 10.5], 1.4),
        random,
    ];
    d.history = history;
    d
}
