//! Engine benchmarks (run with `cargo bench -p evo`):
//! 1. overhead per generation (population 64, 200 genes, 4 objectives) with a trivial
//!    evaluator, against the 1 ms target, with and without hypervolume tracking and
//!    checkpointing;
//! 2. evaluations NSGA-II needs to reach 95% of the true hypervolume on an enumerable
//!    knapsack, against random search (same budget, and until it gets there).

use evo::operators::{RandomSampling, Rng, Sampling};
use evo::problems::{HashProblem, Knapsack};
use evo::{hypervolume, Archive, EvalContext, Individual, Nsga2, Problem, RunOptions, Termination};
use rand::SeedableRng;
use std::time::Instant;

fn overhead() {
    const GENS: u64 = 300;
    let p = HashProblem::new(200, 8, 4);
    // The evaluator's own cost, measured on the same batch sizes, is subtracted.
    let mut rng = Rng::seed_from_u64(0);
    let batch: Vec<_> = (0..64)
        .map(|_| RandomSampling.sample(p.space(), &mut rng))
        .collect();
    let ctx = EvalContext {
        generation: 0,
        archive: &[],
    };
    let t = Instant::now();
    for _ in 0..GENS {
        std::hint::black_box(p.evaluate(&batch, &ctx).unwrap());
    }
    let eval_ms = t.elapsed().as_secs_f64() * 1e3 / GENS as f64;

    let dir = tempfile::tempdir().unwrap();
    let variants: [(&str, bool, bool); 3] = [
        ("engine only", false, false),
        ("+ 4-D hypervolume in history", true, false),
        ("+ hypervolume + checkpoint each generation", true, true),
    ];
    println!(
        "engine overhead per generation (pop 64, 200 genes, 4 objectives, {GENS} generations):"
    );
    println!("  trivial evaluator itself: {eval_ms:.4} ms/generation (subtracted below)");
    for (name, hv, ck) in variants {
        let mut algo = Nsga2::new(64).with_termination(Termination::generations(GENS));
        if hv {
            algo = algo.with_reference_point(vec![1.0; 4]);
        }
        let opts = RunOptions {
            checkpoint: ck.then(|| dir.path().join("bench.json")),
            ..RunOptions::default()
        };
        let t = Instant::now();
        let r = algo.run(&p, 1, opts).unwrap();
        let per_gen = t.elapsed().as_secs_f64() * 1e3 / (GENS + 1) as f64 - eval_ms;
        println!(
            "  {name:<45} {per_gen:.4} ms/generation  ({:.2}x the 1 ms target; final archive {})",
            per_gen / 1.0,
            r.archive.len()
        );
    }
    // Where the checkpoint time goes: serialising vs writing + fsync + rename.
    let path = dir.path().join("bench.json");
    let ck = evo::Checkpoint::load(&path).unwrap();
    const REPS: u32 = 30;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..REPS {
        bytes = std::hint::black_box(serde_json::to_vec(&ck).unwrap()).len();
    }
    let ser_ms = t.elapsed().as_secs_f64() * 1e3 / REPS as f64;
    let t = Instant::now();
    for _ in 0..REPS {
        ck.save(&path).unwrap();
    }
    let save_ms = t.elapsed().as_secs_f64() * 1e3 / REPS as f64;
    println!(
        "  checkpoint of {} KiB ({} history records): serialise {ser_ms:.3} ms, full atomic save (incl. fsync) {save_ms:.3} ms",
        bytes / 1024,
        ck.history.len()
    );
}

/// Evaluations random search needs to reach `target` hypervolume (None within `cap`),
/// and its hypervolume after `budget` evaluations.
fn random_search(
    p: &Knapsack,
    seed: u64,
    target: f64,
    budget: u64,
    cap: u64,
) -> (Option<u64>, f64) {
    let mut rng = Rng::seed_from_u64(seed);
    let mut archive = Archive::new();
    let ctx = EvalContext {
        generation: 0,
        archive: &[],
    };
    let reference = p.reference();
    let mut hv = 0.0;
    let mut hv_at_budget = None;
    let mut reached = None;
    for e in 1..=cap {
        let g = RandomSampling.sample(p.space(), &mut rng);
        let ev = p
            .evaluate(std::slice::from_ref(&g), &ctx)
            .unwrap()
            .remove(0);
        let ind = Individual {
            genome: g,
            objectives: ev.objectives,
            violation: ev.violation,
            estimated: false,
        };
        if archive.insert(&ind) {
            hv = hypervolume(&archive.objectives(), &reference);
        }
        if e == budget {
            hv_at_budget = Some(hv);
        }
        if reached.is_none() && hv >= target {
            reached = Some(e);
        }
        if reached.is_some() && hv_at_budget.is_some() {
            break;
        }
    }
    (reached, hv_at_budget.unwrap_or(hv))
}

fn knapsack_speed() {
    const CAP: u64 = 2_000_000;
    let p = Knapsack::new(24, 11);
    let truth = p.true_front();
    let hv_true = hypervolume(&truth, &p.reference());
    let target = 0.95 * hv_true;
    println!("\nknapsack (24 items, 2 objectives, 2 capacity constraints; true front {} points, HV {hv_true}):", truth.len());
    println!("  evaluations to reach 95% of the true hypervolume, NSGA-II (pop 100) vs random search (cap {CAP}):");
    let mut ratios = Vec::new();
    for seed in 1..=10u64 {
        let algo = Nsga2::new(100)
            .with_termination(Termination::generations(500))
            .with_reference_point(p.reference());
        let mut hit = None;
        let r = algo
            .run(
                &p,
                seed,
                RunOptions {
                    observer: Some(Box::new(|rec| {
                        if rec.hypervolume.unwrap_or(0.0) >= target {
                            hit = Some(rec.evaluations);
                            std::ops::ControlFlow::Break(())
                        } else {
                            std::ops::ControlFlow::Continue(())
                        }
                    })),
                    ..RunOptions::default()
                },
            )
            .unwrap();
        let nsga = hit.unwrap_or(r.evaluations);
        let (rs, rs_hv) = random_search(&p, seed, target, nsga, CAP);
        let ratio = rs.map(|e| e as f64 / nsga as f64);
        if let Some(x) = ratio {
            ratios.push(x);
        }
        println!(
            "  seed {seed:>2}: NSGA-II {nsga:>6}{}  random {:>9}  ratio {:>8}  random's HV at NSGA-II's budget: {:.3} of true",
            if hit.is_some() { "" } else { " (not reached)" },
            rs.map_or(format!(">{CAP}"), |e| e.to_string()),
            ratio.map_or("n/a".to_string(), |x| format!("{x:.1}x")),
            rs_hv / hv_true
        );
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        println!(
            "  median ratio random/NSGA-II over the {} seeds where random search got there: {:.1}x",
            ratios.len(),
            ratios[ratios.len() / 2]
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and then there is nothing to check.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    overhead();
    knapsack_speed();
}
