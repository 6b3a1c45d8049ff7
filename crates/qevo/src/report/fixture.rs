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

/// A plan's cells over `blocks` blocks: q6_k embedding, per block int8 attention and
/// int4 FFN (int2 down in odd blocks), f16 output.
pub(crate) fn cells(blocks: usize) -> Vec<TensorCell> {
    let cell = |block, role: &str, format: &str, bits| TensorCell {
        block,
        role: role.into(),
        format: format.into(),
        bits,
    };
    let mut v = vec![cell(None, "embedding", "q6_k", 6.5625)];
    for b in 0..blocks {
        for role in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            v.push(cell(Some(b), role, "int8-sym-channel", 8.0625));
        }
        for role in ["ffn_gate", "ffn_up"] {
            v.push(cell(Some(b), role, "int4-asym-g64", 4.3125));
        }
        let down = if b % 2 == 1 {
            ("int2-asym-g32", 2.5625)
        } else {
            ("q4_k", 4.5)
        };
        v.push(cell(Some(b), "ffn_down", down.0, down.1));
    }
    v.push(cell(None, "output", "f16", 16.0));
    v
}

/// Three front plans, two uniform baselines, 13 generations, two constraints.
// One piece: literal test data.
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
        quality: Default::default(),
        title: "qevo report".into(),
        model: "assets/tiny-llama".into(),
        fingerprint: "sha256:abcd".into(),
        target: "arm-neon".into(),
        seed: 42,
        qevo_version: "0.1.0".into(),
        fp,
        recommended: Some(rec),
        closest: None,
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
        plan_tensors: cells(2),
        front,
        front_plans: vec![
            "attention_q int8-sym-channel, ffn_down q6_k".into(),
            "attention_q int8-sym-channel, ffn_down int4-asym-g64".into(),
            "attention_q int4-sym-g128, ffn_down int2-asym-g32".into(),
        ],
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
        matched: vec![MatchedRow {
            size_of: "q4_0".into(),
            size_bytes: 1_000_000,
            uniform_kl: 0.05,
            evolved_kl: Some(0.012),
            lagrangian_kl: Some(0.02),
            random_kl: None,
            uniform_heldout_kl: 0.06,
            evolved_heldout_kl: Some(0.014),
            lagrangian_heldout_kl: Some(0.025),
            evolved_vs_uniform: Some(0.24),
            evolved_vs_lagrangian: Some(0.6),
            evolved_vs_random: None,
        }],
        refine: None,
        notes: vec!["fitness cache hit rate 45.5%".into()],
    }
}

/// The facts of a small search as a search would write them: three front plans (the
/// middle one recommended), a least-violating plan with one failing limit, every
/// baseline kind, three generations (the first without a feasible plan).
// One piece: literal test data.
pub(crate) fn input() -> ReportInput {
    let d = small();
    let mut fp = d.fp.clone();
    fp.label = "FP32".into();
    let front: Vec<Point> = d
        .front
        .iter()
        .enumerate()
        .map(|(i, p)| Point {
            label: format!("evolved #{i}"),
            feasible: true,
            ..p.clone()
        })
        .collect();
    let mut closest = point("least-violating", 0.3, 0.7, 400_000, 150.0, 0.1);
    closest.feasible = false;
    let check = |name: &str, limit: f64, value: f64| ConstraintRow {
        name: name.into(),
        limit,
        value,
        pass: value <= limit,
    };
    let mut random = vec![
        point("random #0", 0.03, 0.95, 900_000, 100.0, 0.35),
        point("random #1", 0.04, 0.94, 950_000, 104.0, 0.37),
        point("random #2", 0.001, 0.99, 2_500_000, 200.0, 0.9),
    ];
    random[2].feasible = false;
    let gen = |g: u64, fitness: Option<f64>| GenerationInput {
        generation: g,
        evaluations: 8 * (g + 1),
        hypervolume: fitness.map(|f| f / 2.0),
        best_kl: fitness.map(|f| 0.1 * (1.0 - f)),
        front_size: g as usize,
        cache_hits: g * 3,
        cache_lookups: g * 8,
        best_fitness: fitness,
        best_top1: fitness.map(|_| 0.95),
        best_size_bytes: fitness.map(|_| 1_500_000),
    };
    ReportInput {
        quality: Default::default(),
        schema_version: REPORT_SCHEMA_VERSION,
        model: d.model.clone(),
        fingerprint: d.fingerprint.clone(),
        target: d.target.clone(),
        seed: d.seed,
        qevo_version: d.qevo_version.clone(),
        prefill_tokens: 128,
        decode_tokens: 64,
        unit: "role".into(),
        formats: vec!["q4_0".into(), "q8_0".into()],
        fp,
        fp_checks: vec![
            check("max_latency_ms", 120.0, 450.0),
            check("max_memory_mb", 20.0, 6.5),
        ],
        front,
        recommended: Some(1),
        closest: Some(closest),
        plan: d.recommended_plan.clone(),
        tensors: d.plan_tensors.clone(),
        front_plans: d.front_plans.clone(),
        checks: vec![
            check("max_latency_ms", 120.0, 150.0),
            check("max_memory_mb", 20.0, 1.2),
        ],
        uniform: d.baselines[0].points.clone(),
        lagrangian: vec![point("lagrangian @ q4_0", 0.02, 0.95, 990_000, 104.0, 0.37)],
        random,
        matched: vec![MatchedInput {
            uniform: "q4_0".into(),
            size_bytes: 1_000_000,
            uniform_kl: 0.05,
            uniform_heldout_kl: 0.06,
            evolved_kl: Some(0.012),
            evolved_heldout_kl: Some(0.014),
            lagrangian_kl: Some(0.02),
            lagrangian_heldout_kl: Some(0.025),
            random_kl: Some(0.03),
        }],
        generations: vec![gen(0, None), gen(1, Some(0.6)), gen(2, Some(0.7))],
        caches: CacheCounts {
            fitness_hits: 6,
            fitness_lookups: 16,
            full_evaluations: 10,
            screenings: 4,
            screened_out: 2,
            surrogate_rejected: 5,
            surrogate_checked: 8,
            surrogate_spearman: Some(0.9),
        },
        sensitivity_cells: [4, 12],
        head_sampled: false,
        fp_heldout_perplexity: 13.5,
        tuned: Vec::new(),
        refine: Some(refine_summary()),
    }
}

/// How the process of [`input`]'s search ran: its wall times and per-process caches.
pub(crate) fn run() -> crate::report::RunRecord {
    crate::report::RunRecord {
        schema_version: crate::report::RUN_SCHEMA_VERSION,
        search_seconds: 1.5,
        total_seconds: 2.25,
        stage_seconds: crate::search::StageSeconds {
            prepare: 0.25,
            sensitivity: 0.5,
            uniform: 0.125,
            evolution: 1.5,
            finalize: 0.75,
            refine: 0.5,
            baselines: 0.0625,
        },
        caches: crate::report::ProcessCaches {
            prefix_hits: 30,
            prefix_lookups: 40,
            weight_hits: 90,
            weight_lookups: 100,
            blocks_reused: 12,
            blocks_run: 36,
            segments_reused: 3,
        },
        tuned_seconds: Vec::new(),
    }
}

/// A refine stage that started from the Lagrangian plan and made one swap.
fn refine_summary() -> crate::search::refine::RefineSummary {
    use crate::search::refine::{GeneChange, LimitScores, RefineStart, RefineStep, RefineStop};
    let at = |size_bytes, kl, validation_kl, heldout_kl| LimitScores {
        size_bytes,
        kl,
        validation_kl,
        heldout_kl,
    };
    let change = |unit: &str, from: &str, to: &str| GeneChange {
        unit: unit.into(),
        from: from.into(),
        to: to.into(),
    };
    crate::search::refine::RefineSummary {
        limit_bytes: 1_500_000,
        start: RefineStart::Lagrangian,
        start_scores: at(1_450_000, 0.02, 0.022, 0.025),
        lagrangian: Some(at(1_450_000, 0.02, 0.022, 0.025)),
        chosen: at(1_490_000, 0.015, 0.017, 0.02),
        steps: vec![RefineStep {
            changes: vec![
                change("ffn_up", "q4_k", "q3_k"),
                change("attn_v", "q4_k", "q6_k"),
            ],
            size_bytes: 1_490_000,
            kl: 0.015,
            validation_kl: 0.017,
        }],
        evaluations: 24,
        validations: 3,
        stop: RefineStop::NoImprovingMove,
    }
}

/// A report of a search that produced nothing: no front, baselines, history or plan.
pub(crate) fn empty() -> ReportData {
    ReportData {
        quality: Default::default(),
        recommended: None,
        recommended_plan: vec![],
        plan_tensors: vec![],
        front: vec![],
        front_plans: vec![],
        baselines: vec![],
        history: vec![],
        constraints: vec![],
        matched: vec![],
        notes: vec![],
        ..small()
    }
}

/// A search-sized report (25 front plans, three baselines, 120 generations) made
/// from smooth formulas, for eyeballing the plots.
// One piece: literal test data.
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
    d.front_plans = (0..front.len())
        .map(|i| format!("q4_k ×{}, q6_k ×{}, q8_0 ×2", 30 - i, 10 + i))
        .collect();
    d.front = front;
    d.plan_tensors = cells(24);
    d.baselines = vec![
        curve("uniform", &[2.0, 3.5, 4.0, 6.4, 7.1, 8.0], 3.0),
        curve("lagrangian", &[2.5, 4.5, 6.5, 8.5, 10.5], 1.4),
        random,
    ];
    d.history = history;
    d
}
