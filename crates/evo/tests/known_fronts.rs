//! Benchmarks with known answers: discretised ZDT1–3 and an enumerable bi-objective
//! knapsack. The final archive must come close to the exact front (IGD) and cover at
//! least 95% of its hypervolume.

use evo::problems::{Knapsack, Zdt, ZdtKind};
use evo::{hypervolume, igd, Nsga2, RunOptions, Termination};

struct Outcome {
    igd: f64,
    hv_ratio: f64,
}

fn run_zdt(kind: ZdtKind, seed: u64) -> Outcome {
    let p = Zdt::new(kind, 30, 256);
    let truth = p.true_front();
    let algo = Nsga2::new(100)
        .with_termination(Termination::generations(300))
        .with_reference_point(p.reference());
    let r = algo.run(&p, seed, RunOptions::default()).unwrap();
    let front = r.front();
    let out = Outcome {
        igd: igd(&front, &truth),
        hv_ratio: hypervolume(&front, &p.reference()) / hypervolume(&truth, &p.reference()),
    };
    eprintln!(
        "{kind:?} seed {seed}: IGD {:.5}, HV ratio {:.5}, archive {}, true front {}, evals {}",
        out.igd,
        out.hv_ratio,
        front.len(),
        truth.len(),
        r.evaluations
    );
    out
}

#[test]
fn zdt1_front_is_found() {
    let o = run_zdt(ZdtKind::Zdt1, 1);
    assert!(o.igd < 0.01, "IGD {}", o.igd);
    assert!(o.hv_ratio >= 0.95, "HV ratio {}", o.hv_ratio);
}

#[test]
fn zdt2_front_is_found() {
    let o = run_zdt(ZdtKind::Zdt2, 2);
    assert!(o.igd < 0.01, "IGD {}", o.igd);
    assert!(o.hv_ratio >= 0.95, "HV ratio {}", o.hv_ratio);
}

#[test]
fn zdt3_front_is_found() {
    let o = run_zdt(ZdtKind::Zdt3, 3);
    assert!(o.igd < 0.01, "IGD {}", o.igd);
    assert!(o.hv_ratio >= 0.95, "HV ratio {}", o.hv_ratio);
}

#[test]
fn knapsack_front_is_found() {
    let p = Knapsack::new(24, 11);
    let truth = p.true_front();
    let algo = Nsga2::new(100)
        .with_termination(Termination::generations(100))
        .with_reference_point(p.reference());
    let r = algo.run(&p, 5, RunOptions::default()).unwrap();
    let front = r.front();
    let hv_true = hypervolume(&truth, &p.reference());
    let ratio = hypervolume(&front, &p.reference()) / hv_true;
    // IGD normalised by the true front's profit range so the threshold is scale-free.
    let scale = truth.iter().map(|v| -v[0]).fold(0.0, f64::max);
    let nigd = igd(&front, &truth) / scale;
    let exact = front.iter().filter(|f| truth.contains(f)).count();
    eprintln!(
        "knapsack: normalised IGD {nigd:.5}, HV ratio {ratio:.5}, archive {} ({exact} exact), true front {}, evals {}",
        front.len(),
        truth.len(),
        r.evaluations
    );
    assert!(nigd < 0.01, "normalised IGD {nigd}");
    assert!(ratio >= 0.95, "HV ratio {ratio}");
    // Every archive member is feasible and no archive member dominates a true-front point.
    for m in &r.archive {
        assert_eq!(m.violation, 0.0);
        assert!(!truth
            .iter()
            .any(|t| evo::dominance::dominates(&m.objectives, t)));
    }
}
