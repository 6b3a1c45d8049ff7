//! Engine behaviour through the public API: seeds, duplicate elimination, archive,
//! termination criteria, the level-switch search, and errors from misbehaving problems.

use evo::operators::{CrossoverKind, LayerwiseCrossover, LevelSwitchMutation};
use evo::problems::{Knapsack, Zdt, ZdtKind};
use evo::{
    BoxError, Checkpoint, EvalContext, Evaluation, EvoError, GeneSpace, Genome, Nsga2, Problem,
    RunOptions, Stall, StopReason, Termination,
};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Mutex;

/// Records every batch it is asked to evaluate, and the archive size it was shown.
struct Recording<P> {
    inner: P,
    batches: Mutex<Vec<(u64, usize, Vec<Genome>)>>,
}

impl<P: Problem> Problem for Recording<P> {
    fn space(&self) -> &GeneSpace {
        self.inner.space()
    }
    fn n_objectives(&self) -> usize {
        self.inner.n_objectives()
    }
    fn evaluate(&self, batch: &[Genome], ctx: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        self.batches
            .lock()
            .unwrap()
            .push((ctx.generation, ctx.archive.len(), batch.to_vec()));
        self.inner.evaluate(batch, ctx)
    }
}

#[test]
fn offspring_never_duplicate_the_population_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck.json");
    // A small space (3^6 = 729 genomes) makes duplicates frequent.
    let p = Recording {
        inner: Knapsack::new(6, 3),
        batches: Mutex::new(Vec::new()),
    };
    let mut populations: Vec<Vec<Genome>> = Vec::new();
    let algo = Nsga2::new(20).with_termination(Termination::generations(15));
    let ck2 = ck.clone();
    algo.run(
        &p,
        1,
        RunOptions {
            checkpoint: Some(ck.clone()),
            observer: Some(Box::new(|_| {
                let c = Checkpoint::load(&ck2).unwrap();
                populations.push(c.population.into_iter().map(|i| i.genome).collect());
                ControlFlow::Continue(())
            })),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let batches = p.batches.into_inner().unwrap();
    assert_eq!(batches.len(), 16);
    for (g, _, batch) in &batches {
        let unique: HashSet<&Genome> = batch.iter().collect();
        assert_eq!(unique.len(), batch.len(), "duplicate inside batch {g}");
        if *g > 0 {
            let parents: HashSet<&Genome> = populations[*g as usize - 1].iter().collect();
            assert!(
                batch.iter().all(|c| !parents.contains(c)),
                "generation {g} re-proposed a population member"
            );
        }
    }
    for pop in &populations {
        assert_eq!(pop.iter().collect::<HashSet<_>>().len(), pop.len());
    }
}

#[test]
fn seed_genomes_lead_the_initial_population() {
    let z = Zdt::new(ZdtKind::Zdt1, 6, 8);
    let seeds = vec![
        Genome(vec![0; 6]),
        Genome(vec![7; 6]),
        Genome(vec![0; 6]), // duplicate, dropped
    ];
    let p = Recording {
        inner: z,
        batches: Mutex::new(Vec::new()),
    };
    Nsga2::new(10)
        .with_seeds(seeds.clone())
        .with_termination(Termination::generations(1))
        .run(&p, 4, RunOptions::default())
        .unwrap();
    let batches = p.batches.into_inner().unwrap();
    let first = &batches[0].2;
    assert_eq!(first.len(), 10);
    assert_eq!(&first[..2], &seeds[..2]);
    assert!(!first[2..].contains(&seeds[0]));

    let bad = Nsga2::new(10).with_seeds(vec![Genome(vec![8; 6])]);
    let z = Zdt::new(ZdtKind::Zdt1, 6, 8);
    assert!(matches!(
        bad.run(&z, 4, RunOptions::default()),
        Err(EvoError::Genome(_))
    ));
}

#[test]
fn problem_sees_the_archive_of_earlier_generations() {
    let p = Recording {
        inner: Knapsack::new(12, 5),
        batches: Mutex::new(Vec::new()),
    };
    let r = Nsga2::new(16)
        .with_termination(Termination::generations(8))
        .run(&p, 2, RunOptions::default())
        .unwrap();
    let batches = p.batches.into_inner().unwrap();
    assert_eq!(batches[0].1, 0);
    // The archive shown with generation g's batch is the one recorded after g − 1.
    for (g, shown, _) in &batches[1..] {
        assert_eq!(*shown, r.history[*g as usize - 1].front_size);
    }
}

#[test]
fn archive_holds_every_non_dominated_feasible_solution_evaluated() {
    let p = Recording {
        inner: Knapsack::new(12, 8),
        batches: Mutex::new(Vec::new()),
    };
    let r = Nsga2::new(16)
        .with_termination(Termination::generations(10))
        .run(&p, 3, RunOptions::default())
        .unwrap();
    let all: Vec<Genome> = p
        .batches
        .into_inner()
        .unwrap()
        .into_iter()
        .flat_map(|b| b.2)
        .collect();
    assert_eq!(all.len() as u64, r.evaluations);
    let ctx = EvalContext {
        generation: 0,
        archive: &[],
    };
    let evals = p.inner.evaluate(&all, &ctx).unwrap();
    let feasible: Vec<Vec<f64>> = evals
        .into_iter()
        .filter(|e| e.violation == 0.0)
        .map(|e| e.objectives)
        .collect();
    let mut expect = evo::problems::non_dominated(&feasible);
    let mut got = r.front();
    let key = |v: &Vec<f64>| (v[0] as i64, v[1] as i64);
    expect.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expect);
}

#[test]
fn stall_and_evaluation_budgets_stop_the_run() {
    let z = Zdt::new(ZdtKind::Zdt1, 4, 4);
    let stall = Nsga2::new(12)
        .with_reference_point(z.reference())
        .with_termination(Termination {
            max_generations: Some(10_000),
            stall: Some(Stall {
                generations: 5,
                min_improvement: 1e-9,
            }),
            ..Termination::default()
        })
        .run(&z, 1, RunOptions::default())
        .unwrap();
    assert_eq!(stall.stop, StopReason::Stall);
    let h = &stall.history;
    let n = h.len();
    assert!(n < 10_000);
    assert_eq!(h[n - 1].hypervolume, h[n - 6].hypervolume);

    let budget = Nsga2::new(12)
        .with_termination(Termination {
            max_evaluations: Some(100),
            ..Termination::default()
        })
        .run(&z, 1, RunOptions::default())
        .unwrap();
    assert_eq!(budget.stop, StopReason::Evaluations);
    assert!(budget.evaluations >= 100 && budget.evaluations < 100 + 12);

    let timed = Nsga2::new(12)
        .with_termination(Termination {
            max_time: Some(std::time::Duration::ZERO),
            ..Termination::default()
        })
        .run(&z, 1, RunOptions::default())
        .unwrap();
    assert_eq!(timed.stop, StopReason::WallTime);
    assert_eq!(timed.generations, 0);

    // Stall without a reference point is a configuration error.
    let no_ref = Nsga2::new(12).with_termination(Termination {
        stall: Some(Stall {
            generations: 3,
            min_improvement: 0.0,
        }),
        ..Termination::default()
    });
    assert!(matches!(
        no_ref.run(&z, 1, RunOptions::default()),
        Err(EvoError::Config(_))
    ));
}

/// A fixed-budget problem: maximise the even genes' levels and keep the odd genes near
/// level 2, while the level-switch mutation keeps Σ weight·level fixed.
struct FixedBudget {
    space: GeneSpace,
}

impl Problem for FixedBudget {
    fn space(&self) -> &GeneSpace {
        &self.space
    }
    fn n_objectives(&self) -> usize {
        2
    }
    fn evaluate(&self, batch: &[Genome], _: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        Ok(batch
            .iter()
            .map(|g| {
                let a: f64 = g.iter().step_by(2).map(|&l| l as f64).sum();
                let b: f64 = g
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|&l| (l as f64 - 2.0).powi(2))
                    .sum();
                Evaluation::feasible(vec![-a, b])
            })
            .collect())
    }
}

#[test]
fn level_switch_search_keeps_every_genome_on_budget() {
    let levels = vec![5u16; 16];
    let weights: Vec<u64> = (0..16).map(|i| [100, 100, 250, 250][i % 4]).collect();
    let space = GeneSpace::with_weights(levels, weights).unwrap();
    let start = Genome(vec![2; 16]);
    let budget = space.budget(&start);
    let p = Recording {
        inner: FixedBudget { space },
        batches: Mutex::new(Vec::new()),
    };
    // Seeds on budget, no crossover, level switches only: every evaluated genome, i.e.
    // the seed and its descendants, must be on budget. Initial sampling would not be,
    // so this is a (1 + 8) search from a single seed, as in EvoPress.
    let algo = Nsga2::new(1)
        .with_offspring_size(8)
        .with_seeds(vec![start])
        .with_crossover(LayerwiseCrossover::new(CrossoverKind::Uniform, 0.0))
        .with_mutation(LevelSwitchMutation { switches: 2 })
        .with_termination(Termination::generations(30));
    let r = algo.run(&p, 6, RunOptions::default()).unwrap();
    let batches = p.batches.into_inner().unwrap();
    let mut n = 0;
    for (_, _, batch) in &batches {
        for g in batch {
            assert_eq!(p.inner.space.budget(g), budget);
            n += 1;
        }
    }
    assert!(n > 100, "only {n} genomes evaluated");
    // It trades odd genes' accuracy for even genes' levels: the start had −Σ even = −16.
    assert!(r.history.last().unwrap().best.as_ref().unwrap()[0] < -16.0);
    assert!(r.archive.len() > 1);
}

/// Returns a configurable kind of wrong answer.
struct Broken(u8, GeneSpace);

impl Problem for Broken {
    fn space(&self) -> &GeneSpace {
        &self.1
    }
    fn n_objectives(&self) -> usize {
        2
    }
    fn evaluate(&self, batch: &[Genome], _: &EvalContext) -> Result<Vec<Evaluation>, BoxError> {
        let ok = || Evaluation::feasible(vec![0.0, 1.0]);
        Ok(match self.0 {
            0 => vec![ok(); batch.len() - 1],
            1 => vec![Evaluation::feasible(vec![0.0]); batch.len()],
            2 => vec![Evaluation::feasible(vec![f64::NAN, 0.0]); batch.len()],
            3 => vec![
                Evaluation {
                    objectives: vec![0.0, 0.0],
                    violation: -1.0,
                    estimated: false,
                };
                batch.len()
            ],
            _ => return Err("model file missing".into()),
        })
    }
}

#[test]
fn misbehaving_problems_give_typed_errors() {
    let algo = Nsga2::new(6).with_termination(Termination::generations(2));
    for kind in 0..4 {
        let p = Broken(kind, GeneSpace::uniform(4, 3).unwrap());
        let e = algo.run(&p, 1, RunOptions::default()).unwrap_err();
        assert!(
            matches!(e, EvoError::BadEvaluation { generation: 0, .. }),
            "{kind}: {e}"
        );
    }
    let p = Broken(9, GeneSpace::uniform(4, 3).unwrap());
    let e = algo.run(&p, 1, RunOptions::default()).unwrap_err();
    assert!(e.to_string().contains("model file missing"));
    assert!(matches!(
        Nsga2::new(0).run(&p, 1, RunOptions::default()),
        Err(EvoError::Config(_))
    ));
}

#[test]
fn adaptive_mutation_rate_is_recorded_and_moves_with_success() {
    let p = Zdt::new(ZdtKind::Zdt1, 20, 64);
    let r = Nsga2::new(40)
        .with_termination(Termination::generations(60))
        .run(&p, 8, RunOptions::default())
        .unwrap();
    let rates: Vec<f64> = r.history.iter().map(|h| h.mutation_rate).collect();
    // Generation 0 and 1 use the initial rate (1 gene in 20); later rates follow the
    // success-based rule: up while many offspring survive, down as survival falls.
    assert_eq!(rates[0], 0.05);
    assert_eq!(rates[1], 0.05);
    for w in r.history.windows(2) {
        let s = w[0].survived as f64 / w[0].batch.max(1) as f64;
        if w[0].generation >= 1 {
            let (before, after) = (w[0].mutation_rate, w[1].mutation_rate);
            if s > 0.2 {
                assert!(
                    after >= before,
                    "gen {}: s {s} rate {before} -> {after}",
                    w[0].generation
                );
            } else if s < 0.2 {
                assert!(
                    after <= before,
                    "gen {}: s {s} rate {before} -> {after}",
                    w[0].generation
                );
            }
        }
    }
    let distinct: HashSet<u64> = rates.iter().map(|r| r.to_bits()).collect();
    assert!(distinct.len() > 5, "rate barely adapted: {rates:?}");
}
